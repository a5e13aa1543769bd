"""The files a job leaves: its working folder, the videos (result, poses, side by side), previews, thumbnails and the
audio they carry. Folders are per request and deleted when it ends; leftovers of a crash are pruned by age."""

import contextlib
import os
import shutil
import tempfile
import time
import uuid

import numpy as np

from steadydancer.defaults import OUTPUT_FPS
from steadydancer.video_io import AudioClip, delayed, read_audio, write_mp4, write_side_by_side_mp4

from .poses import PoseStep

OUTPUT_MAX_AGE_SECONDS = 2 * 3600  # leftovers of requests that never finished (a crash) are deleted after this
CANCELS_FOLDER = ".cancels"
RESULT_CRF = 18  # x264's quality of a result (lower is better; 18 is visually lossless)
# Tiny mode's results are encoded losslessly: two runs of one request (one process, or several ranks) can then be
# compared pixel for pixel; a lossy encoder turns a rounding difference in a noise video into blocks coded otherwise.
LOSSLESS_CRF = 0


class Workspaces:
    """One folder per request under `root`, named at random (nothing from the visitor is in it)."""

    def __init__(self, root: str | None = None, max_age: float = OUTPUT_MAX_AGE_SECONDS):
        self.root = root or tempfile.mkdtemp(prefix="steadydancer-outputs-")
        self.max_age = max_age
        self.cancels_dir = os.path.join(self.root, CANCELS_FOLDER)

    def new(self) -> str:
        self._prune()
        path = os.path.join(self.root, uuid.uuid4().hex[:12])
        os.makedirs(path)
        return path

    @contextlib.contextmanager
    def scoped(self):
        """A folder deleted when the request ends, whatever the outcome (the app publishes the outputs first)."""
        path = self.new()
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def count(self) -> int:
        try:
            return sum(1 for entry in os.scandir(self.root) if entry.is_dir() and entry.name[0] != ".")
        except OSError:
            return 0

    def _prune(self) -> None:
        cutoff = time.time() - self.max_age
        try:  # request folders, and cancel markers left by a cancel that came after its job ended
            entries = [e for e in os.scandir(self.root) if e.name[0] != "."]
            if os.path.isdir(self.cancels_dir):
                entries += list(os.scandir(self.cancels_dir))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.stat().st_mtime >= cutoff:
                    continue
                if entry.is_dir():
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.remove(entry.path)
            except OSError:
                continue


def stamp(frames: np.ndarray, text: str) -> np.ndarray:
    """Burns `text` into the top of every frame, so a downloaded tiny-mode video says what it is."""
    import cv2

    frames = frames.copy()
    w = frames.shape[2]
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, 1 if w < 400 else 2
    (tw, th), base = cv2.getTextSize(text, font, 1.0, thickness)
    scale = min(1.0, (w - 4) / tw)  # fit the width
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    band = th + base + 4
    for frame in frames:
        frame[:band] = (frame[:band] * 0.3).astype(np.uint8)
        cv2.putText(frame, text, (2, th + 2), font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return frames


def write_pose_video(step: PoseStep, out_dir: str, tiny: bool, negative: bool = False) -> str:
    frames = step.prepared.negative if negative else step.prepared.positive
    if tiny:
        frames = stamp(frames, "TINY MODE - FAKE POSES")
    name = "negative_poses.mp4" if negative else "poses.mp4"
    return write_mp4(os.path.join(out_dir, name), frames, OUTPUT_FPS, preset="veryfast")


def write_result(frames: np.ndarray, step: PoseStep, seed: int, out_dir: str, audio: AudioClip | None,
                 lossless: bool = False) -> tuple[str, str]:
    """(the result, the side by side of photo, poses and result), both with `audio`. A `lossless` result plays in
    Chrome and Firefox, not in every player (H.264's High 4:4:4 Predictive profile)."""
    crf = LOSSLESS_CRF if lossless else RESULT_CRF
    video = write_mp4(os.path.join(out_dir, f"steadydancer_seed{seed}.mp4"), frames, OUTPUT_FPS, audio=audio, crf=crf)
    side_by_side = write_side_by_side_mp4(os.path.join(out_dir, f"steadydancer_seed{seed}_sbs.mp4"), frames,
                                          step.prepared.positive, step.reference, audio=audio)
    return video, side_by_side


def audio_note(step: PoseStep) -> str | None:
    """Why the audio is left out, or None when it is used."""
    p = step.prepared
    if not step.options.real_time and p.source_fps and abs(p.source_fps - OUTPUT_FPS) > 0.05:
        return (f"The audio is left out: 'every frame' plays the {p.source_fps:.3g} fps clip at 16 fps, "
                f"{p.source_fps / OUTPUT_FPS:.2f}x slower than its sound.")
    return None


def output_audio(step: PoseStep) -> AudioClip | None:
    """The driving video's sound for the clip (read before the generation, so a long one never needs the upload
    again), or None: no video, no audio track, or audio that would not match the motion."""
    p = step.prepared
    if step.driving_video is None or p.video_info is None or not p.video_info.has_audio or audio_note(step):
        return None
    lead_in = step.lead_in_seconds
    try:
        clip = read_audio(step.driving_video, start=p.start_time, duration=p.num_frames / OUTPUT_FPS - lead_in)
    except Exception as error:  # a broken audio track costs the sound, not the video
        print(f"steadydancer: the driving video's audio cannot be read ({type(error).__name__}); the result "
              "will be silent.", flush=True)
        return None
    return delayed(clip, lead_in) if clip is not None else None


def write_preview(denoised, step: int, directory: str) -> str:
    """A strip of 4 frames of the clean video step `step` predicts, by the Wan VAE's linear latent-to-RGB projection
    (no VAE decode: about a millisecond), as `preview_NNNN.png` in `directory`."""
    import PIL.Image

    from steadydancer.preview import preview_strip

    path = os.path.join(directory, f"preview_{step:04d}.png")
    PIL.Image.fromarray(preview_strip(denoised, max_frames=4, scale=2)).save(path + ".tmp", format="PNG")
    os.replace(path + ".tmp", path)  # whole files only: the app may read it at any moment
    return path


def write_frames_preview(frames: np.ndarray, index: int, directory: str, height: int = 96) -> str:
    """A strip of 4 evenly spaced frames of `frames` ((N, H, W, 3) uint8: a finished window of a long video) as
    `preview_NNNN.png` in `directory`, like the denoising previews of a single call."""
    import PIL.Image

    picks = np.linspace(0, len(frames) - 1, num=min(4, len(frames))).round().astype(int)
    strip = np.concatenate([frames[i] for i in picks], axis=1)  # (H, 4W, 3)
    image = PIL.Image.fromarray(strip)
    image = image.resize((max(1, image.width * height // image.height), height))
    path = os.path.join(directory, f"preview_{index:04d}.png")
    image.save(path + ".tmp", format="PNG")
    os.replace(path + ".tmp", path)  # whole files only: the app may read it at any moment
    return path


def latest_preview(directory: str) -> str | None:
    with contextlib.suppress(OSError):
        names = sorted(n for n in os.listdir(directory) if n.startswith("preview_") and n.endswith(".png"))
        return os.path.join(directory, names[-1]) if names else None
    return None


def thumbnail(video: str, height: int = 160) -> str:
    """A PNG of the video's middle frame beside it (for the visitor's history)."""
    import PIL.Image

    from steadydancer.pose import iter_video_frames, probe_video

    middle = probe_video(video).num_frames // 2
    for decoded in iter_video_frames(video, None, max_frames=middle + 1):
        image = decoded.image  # frames are decoded one at a time: a long video is never held whole
    frame = PIL.Image.fromarray(image)
    frame.thumbnail((height * 4, height))
    path = os.path.splitext(video)[0] + "_thumb.png"
    frame.save(path)
    return path


def write_bundle(path: str, files: dict[str, str | None], recipe: dict | None) -> str:
    """One zip of a result: `files` (name in the zip -> path; missing ones left out) and the recipe as JSON."""
    import json
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as bundle:  # the videos are compressed already
        for name, source in files.items():
            if source and os.path.exists(source):
                bundle.write(source, name + os.path.splitext(source)[1])
        if recipe is not None:
            bundle.writestr("recipe.json", json.dumps(recipe, indent=2, ensure_ascii=False))
    return path
