"""Smoothing of jittery keypoints: a one-euro filter run forwards then backwards (no lag).

The one-euro filter is a low-pass whose cut-off rises with the point's speed: a still joint is smoothed hard (the
detector's jitter goes), a fast one little (the dance's motion stays). One ``strength`` from 0 (off) to 1 sets the
cut-off at rest. Each keypoint is filtered on its own; a frame where it is missing restarts its filter.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .keypoints import Pose

# Cut-off at rest (Hz) for strength 0+ and 1, interpolated geometrically; the speed term lets motion through.
LIGHT_CUTOFF_HZ = 8.0
HEAVY_CUTOFF_HZ = 0.3
SPEED_COEFFICIENT = 0.7   # cut-off added per unit of speed (fractions of the frame per second)
DERIVATIVE_CUTOFF_HZ = 1.0


def _alpha(cutoff: np.ndarray | float, fps: float) -> np.ndarray:
    return 1.0 / (1.0 + fps / (2.0 * math.pi * np.asarray(cutoff)))


def one_euro(values: np.ndarray, present: np.ndarray, fps: float, min_cutoff: float) -> np.ndarray:
    """One causal pass. values (T, P, 2), present (T, P) bool; missing points pass through unchanged."""
    out = values.copy()
    prev = np.zeros(values.shape[1:])
    speed = np.zeros(values.shape[1:2])
    live = np.zeros(values.shape[1], dtype=bool)  # the filter holds a value for this point
    for t in range(values.shape[0]):
        here = present[t]
        fresh = here & ~live
        prev[fresh], speed[fresh] = values[t][fresh], 0.0
        step = np.linalg.norm(values[t] - prev, axis=-1) * fps
        speed = np.where(here, speed + _alpha(DERIVATIVE_CUTOFF_HZ, fps) * (step - speed), speed)
        a = _alpha(min_cutoff + SPEED_COEFFICIENT * speed, fps)[:, None]
        filtered = prev + a * (values[t] - prev)
        out[t][here] = filtered[here]
        prev = np.where(here[:, None], filtered, prev)
        live = here
    return out


def smooth_poses(poses: Sequence[Pose], strength: float, fps: float) -> list[Pose]:
    """The poses with every keypoint (body, hands, face) smoothed over time; ``strength`` 0 returns copies."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"smoothing strength must be within [0, 1], got {strength}")
    if strength == 0.0 or len(poses) < 3:
        return [p.copy() for p in poses]
    min_cutoff = LIGHT_CUTOFF_HZ * (HEAVY_CUTOFF_HZ / LIGHT_CUTOFF_HZ) ** strength
    # (T, 18 + 42 + 68, 2), all in one array so one pass filters every point.
    values = np.stack([np.concatenate([p.body, p.hands.reshape(-1, 2), p.face]) for p in poses])
    present = np.stack([np.concatenate([p.body_present, p.hands_present.reshape(-1), p.face_present])
                        for p in poses])
    forward = one_euro(values, present, fps, min_cutoff)
    smoothed = one_euro(forward[::-1], present[::-1], fps, min_cutoff)[::-1]
    out = []
    for pose, points in zip(poses, smoothed):
        edited = pose.copy()
        n_body, n_hands = len(pose.body), pose.hands.size // 2
        edited.body[pose.body_present] = points[:n_body][pose.body_present]
        hands = points[n_body:n_body + n_hands].reshape(pose.hands.shape)
        edited.hands[pose.hands_present] = hands[pose.hands_present]
        edited.face[pose.face_present] = points[n_body + n_hands:][pose.face_present]
        out.append(edited)
    return out
