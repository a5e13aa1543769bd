"""Negative poses for the decoupled-condition guidance (DC-CFG).

The pose-guidance term needs a "wrong" pose condition: the aligned skeleton of each frame,
independently perturbed so it no longer fits the person (as released, ../shared/SPEC.md): x scaled by
U(0.6, 1.4), then everything scaled by U(0.7, 1.3), both about the neck, so the neck stays
where it was. A seeded numpy Generator makes the perturbation reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .keypoints import NECK, Pose

ASPECT_RANGE = (0.6, 1.4)
SCALE_RANGE = (0.7, 1.3)


@dataclass(frozen=True)
class Perturbation:
    """Per-frame factors: x is multiplied by ``aspect * scale`` and y by ``scale`` about the neck."""

    aspect: float
    scale: float


def perturb_pose(pose: Pose, perturbation: Perturbation) -> Pose:
    """Applies one perturbation about the pose's neck; missing points stay missing.

    A pose without a neck is returned unchanged (there is no centre to scale about).
    """
    out = pose.copy()
    if not pose.body_present[NECK]:
        return out
    # Scaling about a point is linear, so doing it on normalised coordinates is the same as
    # doing it in pixels.
    factors = np.array([perturbation.aspect * perturbation.scale, perturbation.scale])
    neck = pose.body[NECK].copy()

    def apply(points: np.ndarray, present: np.ndarray) -> np.ndarray:
        moved = neck + (points - neck) * factors
        return np.where(present[..., None], moved, -1.0)

    out.body = apply(pose.body, pose.body_present)
    out.hands = apply(pose.hands, pose.hands_present)
    out.face = apply(pose.face, pose.face_present)
    return out


def sample_perturbations(num_frames: int, rng: np.random.Generator, *,
                         aspect_range: tuple[float, float] = ASPECT_RANGE,
                         scale_range: tuple[float, float] = SCALE_RANGE) -> list[Perturbation]:
    """Draws per-frame factors: for each frame an aspect then a scale, in that order."""
    out = []
    for _ in range(num_frames):
        aspect = float(rng.uniform(*aspect_range))
        scale = float(rng.uniform(*scale_range))
        out.append(Perturbation(aspect, scale))
    return out


def negative_poses(poses: Sequence[Pose], seed: int | np.random.Generator | None = 0, *,
                   aspect_range: tuple[float, float] = ASPECT_RANGE,
                   scale_range: tuple[float, float] = SCALE_RANGE) -> list[Pose]:
    """Independently perturbed copy of every pose (same seed -> same result)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    perturbations = sample_perturbations(len(poses), rng, aspect_range=aspect_range, scale_range=scale_range)
    return [perturb_pose(p, q) for p, q in zip(poses, perturbations)]
