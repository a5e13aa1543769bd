"""Writes the example gallery's files into this directory: drawn characters (PIL) with their keypoints (the skeleton
each is drawn from, `ref_*.json`), dances written as keypoint JSON,
and one driving video of a drawn dancer with a synthesized beat (so the audio path has an example). Everything is
generated here; no third-party media. The dances are forward kinematics of a simple skeleton in the OpenPose-18
layout with parametric joint angles, at the output rate. Run from the repository root:

    python examples/make_examples.py

The app's example table (which file goes with which prompt) is `steadydancer_space/examples.py`.
"""

import json
import math
import os
import sys
from dataclasses import dataclass

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run as a script from anywhere

from steadydancer.video_io import AudioClip, write_mp4  # noqa: E402
from steadydancer.defaults import OUTPUT_FPS as FPS  # noqa: E402

DANCE_FRAMES = 96  # 6 s: room for the 81-frame default and the automatic start search

# Person proportions in units of the figure's height (head top at 0, soles at 1).
NOSE_Y, NECK_Y, HIP_Y = 0.07, 0.17, 0.50
SHOULDER_HALF, HIP_HALF = 0.09, 0.055
UPPER_ARM, FOREARM, THIGH, SHIN = 0.15, 0.14, 0.23, 0.24
HAND = 0.06


# ---------------------------------------------------------------------- skeleton
def _limb(start: np.ndarray, angle: float, length: float, side: float) -> np.ndarray:
    """End of a limb hanging `angle` radians outward from straight down (side -1: image left, +1: image right)."""
    return start + length * np.array([side * math.sin(angle), math.cos(angle)])


def _hand(wrist: np.ndarray, direction: np.ndarray, size: float) -> np.ndarray:
    base = math.atan2(direction[1], direction[0])
    points = [wrist]
    for finger, spread in enumerate(np.linspace(-0.6, 0.6, 5)):
        unit = np.array([math.cos(base + spread), math.sin(base + spread)])
        for joint in range(1, 5):
            points.append(wrist + unit * size * (0.35 + 0.18 * joint) * (0.8 if finger == 0 else 1.0))
    return np.array(points)


def skeleton(arms: tuple[float, float, float, float], legs: tuple[float, float, float, float],
             lean: float = 0.0, bounce: float = 0.0, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Body (18, 2) and hands (2, 21, 2) in figure units, centred on x = 0.

    arms: (right upper, right fore, left upper, left fore) outward angles from hanging down, radians.
    legs: (right thigh, right shin, left thigh, left shin) outward angles.
    lean: torso tilt (radians, positive leans to image right); bounce: hips lowered by this much; shift: sideways.
    """
    hip_centre = np.array([shift, HIP_Y + bounce])
    up = np.array([math.sin(lean), -math.cos(lean)])
    across = np.array([math.cos(lean), math.sin(lean)])
    neck = hip_centre + up * (HIP_Y - NECK_Y)
    nose = neck + up * (NECK_Y - NOSE_Y)
    body = np.zeros((18, 2))
    body[0], body[1] = nose, neck
    body[2], body[5] = neck - across * SHOULDER_HALF, neck + across * SHOULDER_HALF
    body[8], body[11] = hip_centre - across * HIP_HALF, hip_centre + across * HIP_HALF
    for shoulder, elbow, wrist, (upper, fore), side in ((2, 3, 4, arms[:2], -1.0), (5, 6, 7, arms[2:], 1.0)):
        body[elbow] = _limb(body[shoulder], upper, UPPER_ARM, side)
        body[wrist] = _limb(body[elbow], fore, FOREARM, side)
    for hip, knee, ankle, (thigh, shin), side in ((8, 9, 10, legs[:2], -1.0), (11, 12, 13, legs[2:], 1.0)):
        body[knee] = _limb(body[hip], thigh, THIGH, side)
        body[ankle] = _limb(body[knee], shin, SHIN, side)
    body[14], body[15] = nose + up * 0.015 - across * 0.02, nose + up * 0.015 + across * 0.02  # eyes
    body[16], body[17] = nose - across * 0.042, nose + across * 0.042  # ears
    hands = np.stack([_hand(body[7], body[7] - body[6], HAND), _hand(body[4], body[4] - body[3], HAND)])
    return body, hands


REST_ARMS = (0.18, 0.1, 0.18, 0.1)
REST_LEGS = (0.05, 0.02, 0.05, 0.02)


def dance_pose(kind: str, t: float) -> dict:
    """Skeleton arguments of dance `kind` at time `t` seconds (smooth, periodic)."""
    beat = 2 * math.pi * t  # one cycle a second
    if kind == "rest":
        return dict(arms=REST_ARMS, legs=REST_LEGS)
    if kind == "wave":  # arms rise overhead in turn and wave, hips sway
        right = 1.6 + 1.1 * math.sin(beat * 0.5)
        left = 1.6 + 1.1 * math.sin(beat * 0.5 + math.pi)
        return dict(arms=(right, right + 0.5 * math.sin(beat * 1.5), left, left + 0.5 * math.sin(beat * 1.5 + 1.0)),
                    legs=(0.08, 0.03, 0.08, 0.03), lean=0.08 * math.sin(beat * 0.5), shift=0.03 * math.sin(beat * 0.5))
    if kind == "sway":  # side steps, arms swinging across, a bounce on each step
        s = math.sin(beat * 0.5)
        return dict(arms=(0.6 + 0.5 * s, 0.9 + 0.6 * s, 0.6 - 0.5 * s, 0.9 - 0.6 * s),
                    legs=(0.12 + 0.12 * max(s, 0), 0.05, 0.12 + 0.12 * max(-s, 0), 0.05),
                    lean=-0.06 * s, bounce=0.02 * abs(math.sin(beat)), shift=0.06 * s)
    if kind == "groove":  # bounce on every beat (120 bpm), elbows pumping, knees out
        b = math.sin(beat * 2)
        return dict(arms=(0.9 + 0.4 * b, 2.3 - 0.4 * b, 0.9 - 0.4 * b, 2.3 + 0.4 * b),
                    legs=(0.2, 0.02 - 0.1 * abs(b), 0.2, 0.02 - 0.1 * abs(b)),
                    lean=0.05 * math.sin(beat), bounce=0.03 * abs(b), shift=0.02 * math.sin(beat))
    raise ValueError(f"Unknown dance {kind!r}.")


def figure_points(kind: str, t: float, width: int, height: int, figure_height: float = 0.8, top: float = 0.1):
    """Body (18, 2) and hands (2, 21, 2) in pixels for a figure `figure_height` of the frame tall."""
    body, hands = skeleton(**dance_pose(kind, t))
    scale = figure_height * height
    offset = np.array([width / 2, top * height])
    return body * scale + offset, hands * scale + offset


def pose_json(kind: str, times, width: int, height: int, fps: float | None) -> dict:
    """A `steadydancer.pose_sequence` document of dance `kind` at `times` (hands included, face left out),
    coordinates rounded to 4 decimals."""
    frames = []
    for t in times:
        body, hands = figure_points(kind, t, width, height)
        norm = np.array([width, height], dtype=np.float64)
        frames.append({"body": np.round(body / norm, 4).tolist(), "hands": np.round(hands / norm, 4).tolist()})
    return {"format": "steadydancer.pose_sequence", "version": 1, "width": width, "height": height, "fps": fps,
            "frames": frames}


def dance_json(kind: str, num_frames: int = DANCE_FRAMES, width: int = 512, height: int = 768) -> dict:
    return pose_json(kind, [i / FPS for i in range(num_frames)], width, height, FPS)


# ---------------------------------------------------------------------- drawing
@dataclass(frozen=True)
class Style:
    skin: tuple
    hair: tuple
    top: tuple
    bottom: tuple
    shoes: tuple
    background: tuple
    floor: tuple
    dress: bool = False
    hood: bool = False


STYLES = {
    "red_dress": Style((236, 188, 150), (60, 35, 20), (200, 30, 45), (200, 30, 45), (40, 30, 30),
                       (225, 230, 240), (190, 195, 205), dress=True),
    "blue_hoodie": Style((190, 140, 100), (25, 20, 20), (40, 80, 170), (50, 50, 60), (240, 240, 240),
                         (235, 228, 215), (200, 190, 175), hood=True),
    "green_suit": Style((150, 100, 70), (20, 15, 10), (40, 140, 80), (40, 140, 80), (90, 60, 40),
                        (230, 236, 226), (196, 204, 190)),
}


def draw_character(body: np.ndarray, hands: np.ndarray, width: int, height: int, style: Style,
                   supersample: int = 2):
    """A flat-coloured person over a plain background with a floor, drawn from pixel keypoints (PIL image, RGB)."""
    from PIL import Image, ImageDraw

    s = supersample
    W, H = width * s, height * s
    image = Image.new("RGB", (W, H), style.background)
    draw = ImageDraw.Draw(image)
    floor_y = int(0.9 * H)
    draw.rectangle([0, floor_y, W, H], fill=style.floor)
    P = body * s
    unit = np.linalg.norm(P[1] - (P[8] + P[11]) / 2) / (HIP_Y - NECK_Y)  # pixels per figure height

    def seg(a, b, w, colour):
        w = max(1, int(w * unit))
        draw.line([tuple(a), tuple(b)], fill=colour, width=w)
        for p in (a, b):
            draw.ellipse([p[0] - w / 2, p[1] - w / 2, p[0] + w / 2, p[1] + w / 2], fill=colour)

    def disc(c, r, colour):
        r = r * unit
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=colour)

    # shadow, legs, shoes
    mid_x = (P[10, 0] + P[13, 0]) / 2
    draw.ellipse([mid_x - 0.16 * unit, floor_y - 0.01 * unit, mid_x + 0.16 * unit, floor_y + 0.03 * unit],
                 fill=tuple(int(c * 0.8) for c in style.floor))
    for hip, knee, ankle in ((8, 9, 10), (11, 12, 13)):
        seg(P[hip], P[knee], 0.075, style.bottom if not style.dress else style.skin)
        seg(P[knee], P[ankle], 0.06, style.bottom if not style.dress else style.skin)
        draw.ellipse([P[ankle, 0] - 0.05 * unit, P[ankle, 1] - 0.015 * unit, P[ankle, 0] + 0.05 * unit,
                      P[ankle, 1] + 0.035 * unit], fill=style.shoes)
    # torso (a dress flares from the waist to above the knees)
    up = (P[1] - (P[8] + P[11]) / 2) / np.linalg.norm(P[1] - (P[8] + P[11]) / 2)
    across = np.array([-up[1], up[0]])
    hips_c = (P[8] + P[11]) / 2
    torso = [P[2] - across * 0.01 * unit, P[5] + across * 0.01 * unit, P[11] + across * 0.02 * unit,
             P[8] - across * 0.02 * unit]
    if style.dress:
        knees_c = (P[9] + P[12]) / 2
        hem = hips_c + (knees_c - hips_c) * 0.85
        torso = [P[2], P[5], hips_c + across * 0.07 * unit, hem + across * 0.14 * unit - up * 0.0,
                 hem - across * 0.14 * unit, hips_c - across * 0.07 * unit]
    draw.polygon([tuple(p) for p in torso], fill=style.top)
    if style.hood:
        disc(P[1] - up * 0.005 * unit, 0.05, tuple(int(c * 0.85) for c in style.top))
    # neck and arms (sleeves over the upper arm), hands
    seg(P[1], P[1] + up * 0.05 * unit, 0.045, style.skin)
    for shoulder, elbow, wrist in ((2, 3, 4), (5, 6, 7)):
        seg(P[shoulder], P[elbow], 0.06, style.top)
        seg(P[elbow], P[wrist], 0.045, style.top if style.hood else style.skin)
    for hand in hands * s:
        for finger in range(5):
            seg(hand[0], hand[4 * finger + 4], 0.014, style.skin)
        disc(hand[0] + (hand[9] - hand[0]) * 0.45, 0.022, style.skin)
    # head: hair behind, face, eyes, mouth
    head_c = P[0] - up * 0.01 * unit
    disc(head_c - up * 0.012 * unit, 0.068, style.hair)
    draw.ellipse([head_c[0] - 0.05 * unit, head_c[1] - 0.062 * unit, head_c[0] + 0.05 * unit,
                  head_c[1] + 0.06 * unit], fill=style.skin)
    draw.chord([head_c[0] - 0.056 * unit, head_c[1] - 0.075 * unit, head_c[0] + 0.056 * unit,
                head_c[1] + 0.01 * unit], 180, 360, fill=style.hair)
    for eye in (P[14], P[15]):
        disc(eye + up * 0.005 * unit, 0.008, (30, 30, 40))
    draw.arc([head_c[0] - 0.02 * unit, head_c[1] + 0.012 * unit, head_c[0] + 0.02 * unit, head_c[1] + 0.04 * unit],
             20, 160, fill=(150, 60, 60), width=max(1, int(0.006 * unit)))
    return image.resize((width, height), Image.LANCZOS)


CHARACTER_SIZE = (384, 576)


def character_image(style_name: str, width: int = CHARACTER_SIZE[0], height: int = CHARACTER_SIZE[1]):
    body, hands = figure_points("rest", 0.0, width, height)
    return draw_character(body, hands, width, height, STYLES[style_name])


def character_json(width: int = CHARACTER_SIZE[0], height: int = CHARACTER_SIZE[1]) -> dict:
    """The keypoints `character_image` is drawn from: a reference keypoint file (one frame, no frame rate)."""
    return pose_json("rest", [0.0], width, height, None)


# ---------------------------------------------------------------------- close-up
# A cartoon framed waist up: a head CLOSEUP_HEAD times the dancer's (nose to neck, eyes, ears) over the dancer's
# torso, arms hidden under a poncho. The released per-part alignment guesses the unmeasured arms and legs from the
# measured parts, the big head's included, so the dance's arms swing out of the frame; the waist-up fit does not.
CLOSEUP_HEAD = 3.0
CLOSEUP_HIDDEN = (3, 4, 6, 7, 9, 10, 12, 13)  # elbows, wrists (under the poncho), knees, ankles (below the frame)
CLOSEUP_TOP, CLOSEUP_HIPS = 0.02, 0.9  # the head's top and the hips, fractions of the photo's height
CLOSEUP_STYLE = Style((225, 172, 130), (120, 60, 25), (235, 150, 40), (150, 40, 90), (0, 0, 0), (214, 232, 240),
                      (0, 0, 0))  # skin, hair, poncho, its bands, -, background, -


def closeup_points(width: int = CHARACTER_SIZE[0], height: int = CHARACTER_SIZE[1]) -> np.ndarray:
    """Body (18, 2) in pixels of the close-up character; hidden joints hold -1."""
    body, _ = skeleton(REST_ARMS, REST_LEGS)
    head = [0, 14, 15, 16, 17]
    body[head] = body[1] + (body[head] - body[1]) * CLOSEUP_HEAD  # the face scaled about the neck
    head_top = body[0, 1] - 0.75 * (body[1, 1] - body[0, 1])  # the hair's top (closeup_image)
    scale = (CLOSEUP_HIPS - CLOSEUP_TOP) / (HIP_Y - head_top) * height
    out = (body - np.array([0.0, head_top])) * scale + np.array([width / 2, CLOSEUP_TOP * height])
    out[list(CLOSEUP_HIDDEN)] = -1.0
    return out


def closeup_image(width: int = CHARACTER_SIZE[0], height: int = CHARACTER_SIZE[1], supersample: int = 2):
    """The close-up character drawn from :func:`closeup_points` (PIL image, RGB)."""
    from PIL import Image, ImageDraw

    style, s = CLOSEUP_STYLE, supersample
    P = closeup_points(width, height) * s
    image = Image.new("RGB", (width * s, height * s), style.background)
    draw = ImageDraw.Draw(image)
    unit = (P[8, 1] - P[1, 1]) / (HIP_Y - NECK_Y)  # pixels per figure height
    radius = 0.62 * (P[1, 1] - P[0, 1])  # a big round face about the nose, its chin above the neck
    centre = P[0] - np.array([0.0, 0.1 * radius])
    neck = 0.3 * radius
    draw.rectangle([P[1, 0] - neck, centre[1], P[1, 0] + neck, P[1, 1] + 0.1 * unit], fill=style.skin)
    # poncho: from the shoulders flaring past the hips, over the arms
    half = (P[5, 0] - P[2, 0]) / 2
    draw.polygon([(P[1, 0] - 1.3 * neck, P[1, 1] - 0.03 * unit), (P[1, 0] + 1.3 * neck, P[1, 1] - 0.03 * unit),
                  (P[5, 0] + 0.15 * half, P[5, 1] + 0.05 * unit), (P[11, 0] + 1.0 * half, height * s),
                  (P[8, 0] - 1.0 * half, height * s), (P[2, 0] - 0.15 * half, P[2, 1] + 0.05 * unit)],
                 fill=style.top)
    for stripe in (0.45, 0.7):  # the poncho's bands
        y = P[1, 1] + stripe * (height * s - P[1, 1])
        spread = 1.15 * half + stripe * 1.0 * half
        draw.line([(P[1, 0] - spread, y), (P[1, 0] + spread, y)], fill=style.bottom, width=int(0.02 * unit))
    # head: hair behind and on top, eyes at their keypoints, a smile
    draw.ellipse([centre[0] - 1.06 * radius, centre[1] - 1.1 * radius, centre[0] + 1.06 * radius,
                  centre[1] + 0.3 * radius], fill=style.hair)
    draw.ellipse([centre[0] - radius, centre[1] - 0.95 * radius, centre[0] + radius, centre[1] + radius],
                 fill=style.skin)
    draw.chord([centre[0] - 1.04 * radius, centre[1] - 1.1 * radius, centre[0] + 1.04 * radius,
                centre[1] - 0.25 * radius], 180, 360, fill=style.hair)
    for eye in (P[14], P[15]):
        r = 0.09 * radius
        draw.ellipse([eye[0] - r, eye[1] - r, eye[0] + r, eye[1] + r], fill=(30, 30, 40))
    draw.arc([P[0, 0] - 0.3 * radius, P[0, 1] + 0.15 * radius, P[0, 0] + 0.3 * radius, P[0, 1] + 0.55 * radius],
             20, 160, fill=(150, 60, 60), width=max(1, int(0.05 * radius)))
    return image.resize((width, height), Image.LANCZOS)


def closeup_json(width: int = CHARACTER_SIZE[0], height: int = CHARACTER_SIZE[1]) -> dict:
    """The close-up character's keypoints (a reference keypoint file; hidden joints -1, no hands)."""
    body = closeup_points(width, height)
    norm = np.where(body >= 0, body / np.array([width, height]), -1.0)
    return {"format": "steadydancer.pose_sequence", "version": 1, "width": width, "height": height, "fps": None,
            "frames": [{"body": np.round(norm, 4).tolist()}]}


# ---------------------------------------------------------------------- audio
def beat_audio(seconds: float, bpm: float = 120.0, rate: int = 44100) -> np.ndarray:
    """(1, samples) float32: a kick on every beat, a hi-hat between beats, a bass note per bar."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    out = np.zeros(n, np.float32)
    period = 60.0 / bpm
    rng = np.random.default_rng(0)
    for k in range(int(seconds / period) + 1):
        start = int(k * period * rate)
        length = min(n - start, int(0.25 * rate))
        if length <= 0:
            break
        tt = np.arange(length) / rate
        freq = 50 + 60 * np.exp(-tt * 30)
        out[start:start + length] += 0.8 * np.sin(2 * np.pi * np.cumsum(freq) / rate) * np.exp(-tt * 12)
        hat = int((k + 0.5) * period * rate)
        hl = min(n - hat, int(0.05 * rate))
        if hl > 0:
            out[hat:hat + hl] += 0.15 * rng.standard_normal(hl) * np.exp(-np.arange(hl) / rate * 80)
    bass = 0.2 * np.sin(2 * np.pi * 55 * t) * (0.5 + 0.5 * np.sign(np.sin(2 * np.pi * t / (4 * period))))
    return np.clip(out + bass.astype(np.float32), -1, 1)[None].astype(np.float32)


# ---------------------------------------------------------------------- gallery media
PREVIEW_FRAMES = 48  # 3 s of each dance in the gallery's moving thumbnails


def motion_preview(photo, kind: str, panel_height: int, frames: int = PREVIEW_FRAMES, poses=None) -> list:
    """Frames of a moving thumbnail: the example's photo beside the pose video it is given (drawn as the model sees
    poses), so a visitor sees what goes in. It shows inputs, never a result. `poses`: the poses to draw (normalised
    to CHARACTER_SIZE) instead of dance `kind` as danced."""
    import PIL.Image

    from steadydancer.pose import Pose, draw_pose

    panel = (panel_height * CHARACTER_SIZE[0] // CHARACTER_SIZE[1], panel_height)
    photo = photo.convert("RGB").resize(panel, PIL.Image.LANCZOS)
    out = []
    for i in range(frames):
        body, hands = figure_points(kind, i / FPS, *CHARACTER_SIZE)
        size = np.array(CHARACTER_SIZE, dtype=np.float64)
        pose = poses[i] if poses is not None else Pose.from_dict(
            {"body": (body / size).tolist(), "hands": (hands / size).tolist()},
            width=CHARACTER_SIZE[0], height=CHARACTER_SIZE[1])
        drawn = PIL.Image.fromarray(draw_pose(pose, CHARACTER_SIZE[1], CHARACTER_SIZE[0])).resize(panel)
        frame = PIL.Image.new("RGB", (2 * panel[0] + 4, panel[1]), (255, 255, 255))
        frame.paste(photo, (0, 0))
        frame.paste(drawn, (panel[0] + 4, 0))
        out.append(frame.quantize(colors=64, dither=PIL.Image.Dither.NONE))
    return out


def write_gif(path: str, frames: list) -> None:
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / FPS), loop=0,
                   optimize=True, disposal=1)


# Each example's character and dance (the app's table, `steadydancer_space/examples.py`, names the files).
GALLERY = (("red_dress", "wave"), ("blue_hoodie", "groove"), ("green_suit", "sway"))


# The close-up example's character and dance (its table entry runs the dance fitted waist up).
CLOSEUP_NAME, CLOSEUP_DANCE = "closeup_poncho", "sway"


def make_closeup_example(directory: str | os.PathLike) -> list[str]:
    """Writes the close-up example's photo, its keypoints and its thumbnail (the motion as fitted waist up, the way
    the example runs it); returns their paths."""
    from steadydancer.pose import PoseSequence
    from steadydancer.pose.retarget import fit_framing

    names = (f"ref_{CLOSEUP_NAME}.png", f"ref_{CLOSEUP_NAME}.json", f"thumb_{CLOSEUP_NAME}.gif")
    paths = [os.path.join(directory, name) for name in names]
    photo, keypoints = closeup_image(), closeup_json()
    photo.save(paths[0], optimize=True)
    with open(paths[1], "w", encoding="utf-8") as f:
        json.dump(keypoints, f, separators=(",", ":"))
    dance = PoseSequence.from_dict(pose_json(CLOSEUP_DANCE, [i / FPS for i in range(PREVIEW_FRAMES)],
                                             *CHARACTER_SIZE, FPS))
    fitted = fit_framing(PoseSequence.from_dict(keypoints).poses[0], dance.poses, 0, "waist_up")
    write_gif(paths[2], motion_preview(photo, CLOSEUP_DANCE, panel_height=150, poses=fitted))
    return paths


# ---------------------------------------------------------------------- all of it
def make_examples(directory: str | os.PathLike) -> list[str]:
    """Writes every example file into `directory`; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    written = []
    def write_json(name: str, document: dict) -> None:
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(document, f, separators=(",", ":"))
        written.append(path)

    for name in STYLES:
        path = os.path.join(directory, f"ref_{name}.png")
        character_image(name).save(path, optimize=True)
        written.append(path)
        write_json(f"ref_{name}.json", character_json())  # its keypoints, so no example needs the detector on it
    for kind in ("wave", "sway"):
        write_json(f"dance_{kind}.json", dance_json(kind))
    width, height = 288, 432
    frames = []
    for i in range(DANCE_FRAMES):
        body, hands = figure_points("groove", i / FPS, width, height)
        frames.append(np.asarray(draw_character(body, hands, width, height, STYLES["green_suit"])))
    path = os.path.join(directory, "drive_groove_beat.mp4")
    audio = AudioClip(beat_audio(DANCE_FRAMES / FPS), 44100)
    write_mp4(path, np.stack(frames), FPS, audio=audio, crf=30, preset="veryslow", threads=1)
    written.append(path)
    for name, kind in GALLERY:
        path = os.path.join(directory, f"thumb_{name}.gif")
        write_gif(path, motion_preview(character_image(name), kind, panel_height=150))
        written.append(path)
    written += make_closeup_example(directory)
    path = os.path.join(directory, "demo_inputs.gif")  # the first example, larger: the page's opening picture
    write_gif(path, motion_preview(character_image(GALLERY[0][0]), GALLERY[0][1], panel_height=260))
    written.append(path)
    return written


if __name__ == "__main__":
    for path in make_examples(HERE):
        print(f"{os.path.getsize(path) / 1024:7.1f} KB  {os.path.relpath(path)}")
