"""A stand-in pose detector that needs no model weights. It produces FAKE poses.

:class:`SyntheticPoseDetector` ignores what the image shows: it returns a fixed, plausible
standing skeleton (body, hands and face) scaled to the image, optionally swinging the arms
by an angle derived from the image's mean brightness so that a video gives some motion.
It exists for the app's ``--tiny`` mode, tests and demos without the DWPose files; never use
it to drive a real generation.
"""

from __future__ import annotations

import math

import numpy as np

from .detection import PoseDetection
from .image import ImageLike, load_image
from .keypoints import NUM_FACE, NUM_HAND, Pose

# Standing person, OpenPose order; x from the body's centre line, y from the top of the
# head, both in units of the person's height (facing the camera: right side on the left).
_TEMPLATE = np.array([
    [0.000, 0.070], [0.000, 0.170],                      # nose, neck
    [-0.090, 0.170], [-0.120, 0.320], [-0.130, 0.460],   # right shoulder, elbow, wrist
    [0.090, 0.170], [0.120, 0.320], [0.130, 0.460],      # left shoulder, elbow, wrist
    [-0.055, 0.500], [-0.060, 0.730], [-0.060, 0.950],   # right hip, knee, ankle
    [0.055, 0.500], [0.060, 0.730], [0.060, 0.950],      # left hip, knee, ankle
    [-0.020, 0.055], [0.020, 0.055],                     # right eye, left eye
    [-0.040, 0.065], [0.040, 0.065],                     # right ear, left ear
])
PERSON_HEIGHT = 0.8  # fraction of the image height
TOP = 0.1            # head top, fraction of the image height


def _rotate(points: np.ndarray, centre: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    d = points - centre
    return centre + d @ np.array([[c, s], [-s, c]])


def _hand(wrist: np.ndarray, direction: np.ndarray, size: float) -> np.ndarray:
    """(21, 2): wrist then five fingers of four joints, fanned around ``direction``."""
    base = math.atan2(direction[1], direction[0])
    points = [wrist]
    for f, spread in enumerate(np.linspace(-0.6, 0.6, 5)):
        ang = base + spread
        unit = np.array([math.cos(ang), math.sin(ang)])
        for j in range(1, 5):
            points.append(wrist + unit * size * (0.35 + 0.18 * j) * (0.8 if f == 0 else 1.0))
    return np.array(points)


def _face(centre: np.ndarray, rx: float, ry: float) -> np.ndarray:
    """(68, 2) points on an ellipse around the face (placement only, not real landmarks)."""
    t = np.linspace(0, 2 * np.pi, NUM_FACE, endpoint=False)
    return centre + np.stack([rx * np.cos(t), ry * np.sin(t)], axis=-1)


class SyntheticPoseDetector:
    """Returns a FAKE, plausible skeleton scaled to the image (see the module docstring).

    Args:
        animate: raise the arms sideways by an angle that follows the image's mean brightness, so
            consecutive video frames differ; False gives the same pose for every image.
    """

    is_synthetic = True

    def __init__(self, animate: bool = False) -> None:
        self.animate = animate

    def detect(self, image: ImageLike) -> PoseDetection:
        """The fake skeleton, as the one person "found" in every image."""
        return PoseDetection(self(image), 1)

    def __call__(self, image: ImageLike) -> Pose:
        rgb = load_image(image)
        height, width = rgb.shape[:2]
        unit = PERSON_HEIGHT * height
        body = _TEMPLATE * unit + np.array([width / 2, TOP * height])  # pixels

        if self.animate:
            swing = float(rgb.mean()) / 255.0 * math.radians(100)  # 0 (arms down) .. 100 deg out
            for shoulder, chain, sign in ((2, [3, 4], 1.0), (5, [6, 7], -1.0)):
                body[chain] = _rotate(body[chain], body[shoulder], sign * swing)

        hands = np.stack([
            _hand(body[7], body[7] - body[6], 0.06 * unit),  # left hand, from the left wrist
            _hand(body[4], body[4] - body[3], 0.06 * unit),  # right hand
        ])
        face = _face(body[0] + np.array([0.0, -0.005 * unit]), 0.045 * unit, 0.06 * unit)

        scale = np.array([width, height], dtype=np.float64)
        return Pose(body / scale, np.arange(18, dtype=np.float64), hands / scale, face / scale,
                    width, height, np.ones(18), np.ones((2, NUM_HAND)), np.ones(NUM_FACE))
