"""Negative poses for DC-CFG: per-frame aspect and scale perturbation about the neck, seeded."""

from __future__ import annotations

import numpy as np

from steadydancer.pose import Perturbation, Pose, SyntheticPoseDetector, negative_poses, perturb_pose, render_poses
from steadydancer.pose.negative import ASPECT_RANGE, SCALE_RANGE


def standing(width=640, height=360, rng=None, jitter=0.0) -> Pose:
    """The synthetic skeleton, with every body point moved by up to ``jitter`` pixels."""
    p = SyntheticPoseDetector()(np.zeros((height, width, 3), np.uint8))
    if rng is not None:
        p.body = p.body + rng.uniform(-jitter, jitter, p.body.shape) / [width, height]
    return p


def frames(n=40):
    rng = np.random.default_rng(7)
    out = [standing(624, 928, rng, 20) for _ in range(n)]
    out[3].body[9], out[3].subset[9] = -1, -1
    out[5].hands[1, 4] = -1
    return out


def factors(src: Pose, neg: Pose) -> np.ndarray:
    """Per-point (x, y) factors of the offsets from the neck, over present points far from it."""
    d0, d1 = src.body - src.body[1], neg.body - neg.body[1]
    ok = src.body_present & (np.abs(d0).min(axis=-1) > 1e-3)
    return d1[ok] / d0[ok]


def test_neck_fixed_and_factors_within_bounds():
    src = frames()
    neg = negative_poses(src, seed=123)
    seen_x, seen_y = [], []
    for s, n in zip(src, neg):
        np.testing.assert_array_equal(n.body[1], s.body[1])
        f = factors(s, n)
        fx, fy = f[:, 0], f[:, 1]
        assert np.ptp(fx) < 1e-9 and np.ptp(fy) < 1e-9  # one factor pair per frame, all points
        assert SCALE_RANGE[0] <= fy[0] <= SCALE_RANGE[1]
        assert ASPECT_RANGE[0] <= fx[0] / fy[0] <= ASPECT_RANGE[1]
        seen_x.append(fx[0] / fy[0])
        seen_y.append(fy[0])
        # hands follow the same transform
        ok = s.hands_present
        np.testing.assert_allclose((n.hands - n.body[1])[ok], (s.hands - s.body[1])[ok] * [fx[0], fy[0]],
                                   atol=1e-12)
    # frames are perturbed independently and cover the ranges
    assert len(set(np.round(seen_y, 6))) == len(src)
    assert min(seen_x) < 0.8 and max(seen_x) > 1.2 and min(seen_y) < 0.85 and max(seen_y) > 1.15


def test_missing_points_stay_missing():
    src = frames()
    neg = negative_poses(src, seed=1)
    assert neg[3].subset[9] == -1 and np.all(neg[3].body[9] == -1)
    assert np.all(neg[5].hands[1, 4] == -1)
    assert (neg[3].subset == src[3].subset).all()


def test_seed_reproducible_and_generator_accepted():
    src = frames(6)
    a, b, c = negative_poses(src, seed=5), negative_poses(src, seed=5), negative_poses(src, seed=6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.body, y.body)
    assert any(not np.allclose(x.body, z.body) for x, z in zip(a, c))
    g = negative_poses(src, np.random.default_rng(5))
    for x, y in zip(a, g):
        np.testing.assert_array_equal(x.body, y.body)
    np.testing.assert_array_equal(render_poses(a, 232, 156), render_poses(b, 232, 156))


def test_perturb_pose_exact_transform():
    p = standing(640, 360)
    q = perturb_pose(p, Perturbation(aspect=1.25, scale=0.8))
    np.testing.assert_allclose(q.body - p.body[1], (p.body - p.body[1]) * [1.0, 0.8], atol=1e-15)
    no_neck = standing(640, 360)
    no_neck.subset[1] = -1
    np.testing.assert_array_equal(perturb_pose(no_neck, Perturbation(1.3, 1.2)).body, no_neck.body)
