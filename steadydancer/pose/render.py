"""Drawing poses the way the released pipeline feeds them to the model.

Released style (../shared/SPEC.md): black canvas; each of the 17 OpenPose limbs a filled
ellipse (cv2.ellipse2Poly + cv2.fillConvexPoly) of half-width 4 px in its colour; the canvas
multiplied by 0.6; the 18 joints as filled circles of radius 4; hand edges as 2-px lines
coloured by hue = edge / 20; hand joints as filled circles of radius 4 in (0, 0, 255); no
face. The released code draws those colour triples into a BGR canvas and converts it to
RGB, so the RGB frames we return hold every triple channel-reversed (the first limb, listed
as (255, 0, 0), comes out blue). The canvas is twice the generation size.

What the model sees (:func:`pose_model_inputs`): the released code stores each canvas, reads
it back, resizes it with PIL bicubic to the reference photo's own size and only then with
torch bicubic (on [-1, 1] values, unclamped) to the generation size. :func:`render_poses`
gives 8-bit frames to show or save (one OpenCV bicubic resize of each canvas).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from .keypoints import Pose

if TYPE_CHECKING:
    import torch

# Limbs as 0-based OpenPose body index pairs; the released list has 19 entries but only
# the first 17 are drawn (the last two, ear-shoulder, never are).
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
         (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
# OpenPose colours, in the order the released code lists them (drawn as BGR).
COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
          (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
          (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
HAND_EDGES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
              (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18),
              (18, 19), (19, 20))
STICK_HALF_WIDTH = 4
JOINT_RADIUS = 4
HAND_LINE_THICKNESS = 2
HAND_JOINT_RADIUS = 4
HAND_JOINT_COLOR = (0, 0, 255)
LIMB_DIM = 0.6
_EPS = 0.01  # released hand rule: a point is drawn when its integer pixel coords exceed this


def _hsv_to_rgb(h: float) -> tuple[float, float, float]:
    # Full saturation and value; same float steps as matplotlib.colors.hsv_to_rgb so the
    # 0..255 values (rounded by OpenCV) match the released colours exactly.
    i = int(h * 6.0)
    f = (h * 6.0) - i
    q, t = 1.0 - f, f
    rgb = ((1.0, t, 0.0), (q, 1.0, 0.0), (0.0, 1.0, t), (0.0, q, 1.0), (t, 0.0, 1.0), (1.0, 0.0, q))[i % 6]
    return tuple(c * 255 for c in rgb)


_DIM_LUT = (np.arange(256, dtype=np.float64) * LIMB_DIM).astype(np.uint8)
_HAND_COLORS = tuple(_hsv_to_rgb(ie / float(len(HAND_EDGES))) for ie in range(len(HAND_EDGES)))


def _draw_body(canvas: np.ndarray, pose: Pose) -> np.ndarray:
    h, w = canvas.shape[:2]
    present = pose.body_present
    for i, (a, b) in enumerate(LIMBS):
        if not (present[a] and present[b]):
            continue
        xs = pose.body[[a, b], 0] * float(w)
        ys = pose.body[[a, b], 1] * float(h)
        mx, my = np.mean(xs), np.mean(ys)
        length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
        polygon = cv2.ellipse2Poly((int(mx), int(my)), (int(length / 2), STICK_HALF_WIDTH), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, COLORS[i])

    # Limbs dimmed, joints then drawn on top at full colour. Released: (canvas * 0.6).astype(uint8);
    # a lookup table gives the same truncated values much faster.
    canvas = cv2.LUT(canvas, _DIM_LUT)

    for j in range(len(present)):
        if not present[j]:
            continue
        x, y = pose.body[j]
        cv2.circle(canvas, (int(x * w), int(y * h)), JOINT_RADIUS, COLORS[j], thickness=-1)
    return canvas


def _draw_hands(canvas: np.ndarray, pose: Pose) -> np.ndarray:
    h, w = canvas.shape[:2]
    for peaks in pose.hands:  # (21, 2)
        pix = [(int(x * w), int(y * h)) for x, y in peaks]
        for ie, (a, b) in enumerate(HAND_EDGES):
            (x1, y1), (x2, y2) = pix[a], pix[b]
            if x1 > _EPS and y1 > _EPS and x2 > _EPS and y2 > _EPS:
                cv2.line(canvas, (x1, y1), (x2, y2), _HAND_COLORS[ie], thickness=HAND_LINE_THICKNESS)
        for x, y in pix:
            if x > _EPS and y > _EPS:
                cv2.circle(canvas, (x, y), HAND_JOINT_RADIUS, HAND_JOINT_COLOR, thickness=-1)
    return canvas


def _draw_face(canvas: np.ndarray, pose: Pose) -> np.ndarray:
    h, w = canvas.shape[:2]
    for x, y in pose.face:
        x, y = int(x * w), int(y * h)
        if x > _EPS and y > _EPS:
            cv2.circle(canvas, (x, y), 3, (255, 255, 255), thickness=-1)
    return canvas


def draw_pose(pose: Pose, height: int, width: int, *, draw_hands: bool = True,
              draw_face: bool = False) -> np.ndarray:
    """Draws one pose on a black canvas in the released style.

    Returns:
        (height, width, 3) uint8 RGB.
    """
    canvas = np.zeros((int(height), int(width), 3), dtype=np.uint8)  # BGR while drawing
    canvas = _draw_body(canvas, pose)
    if draw_hands:
        canvas = _draw_hands(canvas, pose)
    if draw_face:
        canvas = _draw_face(canvas, pose)
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)  # as the released frames


def render_poses(poses: Sequence[Pose], height: int, width: int, *, canvas_scale: int = 2,
                 resize: bool = True, draw_hands: bool = True, draw_face: bool = False) -> np.ndarray:
    """Renders poses at ``canvas_scale`` x the output size, then resizes (OpenCV bicubic) to it,
    for display.

    Args:
        height, width: output frame size (the generation size).
        canvas_scale: released value 2: drawing on a canvas twice as large makes the
            fixed 4-px strokes half as thick relative to the frame.
        resize: False returns the canvases themselves (what the released code stores). The
            model's input is not these frames resized here but :func:`render_pose_pixels`
            (float, through the reference photo's size, unclamped: its frames overshoot to
            about [-1.4, 1.5] at stroke edges, which uint8 cannot hold).

    Returns:
        (N, height, width, 3) uint8 RGB, or (N, canvas_scale * height, canvas_scale * width, 3)
        with ``resize=False``.
    """
    ch, cw = int(height) * canvas_scale, int(width) * canvas_scale
    oh, ow = (int(height), int(width)) if resize else (ch, cw)
    out = np.zeros((len(poses), oh, ow, 3), dtype=np.uint8)
    for i, pose in enumerate(poses):
        frame = draw_pose(pose, ch, cw, draw_hands=draw_hands, draw_face=draw_face)
        if (oh, ow) != (ch, cw):
            frame = cv2.resize(frame, (ow, oh), interpolation=cv2.INTER_CUBIC)
        out[i] = frame
    return out


@dataclass
class PoseModelInputs:
    """The pose inputs of :class:`~steadydancer.pipeline_steadydancer.SteadyDancerPipeline`, computed as the
    released ``generate`` computes them from its stored pose frames.

    Attributes:
        pose_video, negative_pose_video: (N, 3, height, width) float32 pixels in [-1, 1], not
            clamped (bicubic overshoot at stroke edges reaches about [-1.4, 1.5]).
        pose_image: (H_ref, W_ref, 3) uint8, the first pose frame at the reference photo's
            size: what the image encoder sees for the pose.
    """

    pose_video: "torch.Tensor"
    negative_pose_video: "torch.Tensor"
    pose_image: np.ndarray

    def pipeline_kwargs(self) -> dict:
        """``pose_video``, ``negative_pose_video`` and ``pose_image`` for the pipeline call."""
        return dict(pose_video=self.pose_video, negative_pose_video=self.negative_pose_video,
                    pose_image=self.pose_image)


def _canvas(pose: Pose, height: int, width: int, canvas_scale: int, jpeg_quality: int | None,
            draw_hands: bool = True, draw_face: bool = False) -> np.ndarray:
    canvas = draw_pose(pose, int(height) * canvas_scale, int(width) * canvas_scale, draw_hands=draw_hands,
                       draw_face=draw_face)
    if jpeg_quality is None:
        return canvas
    from ..pixels import jpeg_roundtrip

    return jpeg_roundtrip(canvas, jpeg_quality)


def render_pose_pixels(poses: Sequence[Pose], height: int, width: int, reference_size: tuple[int, int], *,
                       canvas_scale: int = 2, jpeg_quality: int | None = None, draw_hands: bool = True,
                       draw_face: bool = False) -> "torch.Tensor":
    """Poses as the model's pose video, frame by frame: each drawn on the canvas (``canvas_scale``
    x the generation size), resized with PIL bicubic to ``reference_size`` (the reference photo's
    (height, width)), then with torch bicubic to (height, width), unclamped.

    ``jpeg_quality``: pass each canvas through a JPEG file of that quality first, as the
    released code's stored frames (95); None keeps the canvases lossless.

    Only one frame is ever held at the reference's size, so a 4096x4096 photo costs one
    frame of it (about 300 MB while it is resized), not a video.

    Returns:
        (N, 3, height, width) float32 in [-1, 1].
    """
    import torch

    from ..pixels import pose_frame_pixels

    out = torch.empty(len(poses), 3, int(height), int(width))
    for i, pose in enumerate(poses):
        canvas = _canvas(pose, height, width, canvas_scale, jpeg_quality, draw_hands, draw_face)
        out[i] = pose_frame_pixels(canvas, reference_size, height, width)
    return out


def pose_model_inputs(poses: Sequence[Pose], negative_poses: Sequence[Pose], height: int, width: int,
                      reference_size: tuple[int, int], *, canvas_scale: int = 2,
                      jpeg_quality: int | None = None) -> PoseModelInputs:
    """The pipeline's pose inputs for ``poses`` and ``negative_poses`` with a reference photo of
    ``reference_size`` (height, width); see :func:`render_pose_pixels`."""
    from ..pixels import stored_frame

    first = _canvas(poses[0], height, width, canvas_scale, jpeg_quality)
    kwargs = dict(canvas_scale=canvas_scale, jpeg_quality=jpeg_quality)
    return PoseModelInputs(
        pose_video=render_pose_pixels(poses, height, width, reference_size, **kwargs),
        negative_pose_video=render_pose_pixels(negative_poses, height, width, reference_size, **kwargs),
        pose_image=np.array(stored_frame(first, reference_size)),
    )
