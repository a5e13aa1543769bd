"""Bridging the start gap (temporal misalignment) between the reference and the driving clip.

The reference person's own pose and the first driving pose can differ a lot; the model
then has to jump between them in the first frames. Inference-side remedies (the paper's,
see ../shared/SPEC.md): interpolate a few poses from the reference pose to the first driving
pose (:func:`transition_poses`), or start the driving clip at the frame whose pose is
closest to the reference pose (:func:`choose_start_frame`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .align import align_poses
from .keypoints import NECK, Pose

MIN_COMMON_POINTS = 4


def _ease(t: float, easing: str) -> float:
    if easing == "linear":
        return t
    if easing == "cosine":  # slow out of the reference pose, slow into the driving pose
        return 0.5 - 0.5 * math.cos(math.pi * t)
    raise ValueError(f"easing must be 'linear' or 'cosine', got {easing!r}")


def _mix(a: np.ndarray, a_ok: np.ndarray, b: np.ndarray, b_ok: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    # Points present in both move linearly; a point present on one side only is shown
    # for the half of the transition nearer to that side.
    both = a_ok & b_ok
    out = np.full_like(a, -1.0)
    out[both] = (1.0 - t) * a[both] + t * b[both]
    only_a, only_b = a_ok & ~b_ok, b_ok & ~a_ok
    if t < 0.5:
        out[only_a] = a[only_a]
    else:
        out[only_b] = b[only_b]
    ok = both | (only_a if t < 0.5 else only_b)
    return out, ok


def interpolate_pose(start: Pose, end: Pose, t: float) -> Pose:
    """Pose a fraction ``t`` (0..1) of the way from ``start`` to ``end`` (same image frame)."""
    body, body_ok = _mix(start.body, start.body_present, end.body, end.body_present, t)
    hands, _ = _mix(start.hands, start.hands_present, end.hands, end.hands_present, t)
    face, _ = _mix(start.face, start.face_present, end.face, end.face_present, t)
    subset = np.where(body_ok, np.arange(len(body_ok), dtype=np.float64), -1.0)
    return Pose(body, subset, hands, face, end.width, end.height)


def transition_poses(start: Pose, end: Pose, num_frames: int, *, easing: str = "linear") -> list[Pose]:
    """``num_frames`` poses from ``start`` (first one, t = 0) towards ``end`` (t = k / num_frames,
    ``end`` itself excluded: it is the next frame of the clip).

    Both poses must be normalised to the same image (the aligned driving poses and the
    reference pose are).
    """
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    return [interpolate_pose(start, end, _ease(k / num_frames, easing)) for k in range(num_frames)]


def pose_distance(a: Pose, b: Pose, *, min_common: int = MIN_COMMON_POINTS) -> float:
    """Mean distance between the body points present in both poses, in units of image height
    (x scaled by ``a``'s aspect ratio). inf when fewer than ``min_common`` points are shared."""
    ok = a.body_present & b.body_present
    if ok.sum() < min_common:
        return math.inf
    scale = np.array([a.aspect, 1.0])
    return float(np.linalg.norm((a.body[ok] - b.body[ok]) * scale, axis=-1).mean())


def choose_start_frame(reference: Pose, driving: Sequence[Pose], search_range: int, *,
                       skip_missing: bool = True) -> tuple[int, np.ndarray]:
    """Index (within the first ``search_range`` frames) of the driving pose closest to the
    reference pose once aligned to it, and the distance of every candidate.

    Each candidate is aligned with itself as the align frame, so limb lengths and the neck
    position match the reference and the distance measures the difference in posture
    (limb directions) only. Candidates without a neck score inf; ties keep the earliest.
    """
    n = min(max(int(search_range), 1), len(driving))
    distances = np.full(n, np.inf)
    for i in range(n):
        if driving[i].body_present[NECK]:
            aligned = align_poses(reference, [driving[i]], 0, skip_missing=skip_missing)[0]
            distances[i] = pose_distance(reference, aligned)
    best = int(np.argmin(distances)) if np.isfinite(distances).any() else 0
    return best, distances
