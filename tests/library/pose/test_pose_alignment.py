"""Alignment to the reference pose and released-style rendering,
against the released code's outputs in ../shared/fixtures/pose_alignment when present."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steadydancer.pose import (Pose, PoseError, align_poses, alignment_ratios, draw_pose, render_poses,
                               verify_pose_fixture)
from steadydancer.pose.fixture_check import load_alignment_fixture

from helpers.paths import SHARED_FIXTURES

FIXTURES = SHARED_FIXTURES
POSE_FIXTURE = FIXTURES / "pose_alignment"


def need_fixture():
    if not (POSE_FIXTURE / "alignment.json").is_file():
        pytest.skip(f"pose fixture not found at {POSE_FIXTURE} (shared fixtures are not checked in)")


def standing(width=640, height=360, rng=None, jitter=0.0) -> Pose:
    """A full skeleton in OpenPose order (normalised), optionally jittered."""
    px = np.array([[0, 70], [0, 170], [-90, 170], [-120, 320], [-130, 460], [90, 170], [120, 320],
                   [130, 460], [-55, 500], [-60, 730], [-60, 950], [55, 500], [60, 730], [60, 950],
                   [-20, 55], [20, 55], [-40, 65], [40, 65]], dtype=np.float64)
    if rng is not None:
        px = px + rng.normal(0, jitter, px.shape)
    px = px * (0.8 * height / 1000) + [width / 2, 0.1 * height]
    fingers = np.linspace(0, 20, 21)[:, None]
    hands = np.stack([px[7] + fingers * [1, 1], px[4] + fingers * [-1, 1]])
    face = px[0] + np.stack([np.cos(np.arange(68)), np.sin(np.arange(68))], -1) * 10
    s = np.array([width, height], dtype=np.float64)
    return Pose(px / s, np.arange(18.0), hands / s, face / s, width, height)


def square(p: Pose, points=None) -> np.ndarray:
    pts = p.body if points is None else points
    return pts * np.array([p.aspect, 1.0])


def dist(p: Pose, a: int, b: int) -> float:
    q = square(p)
    return float(np.linalg.norm(q[a] - q[b]))


# ---------------------------------------------------------------------- released fixture
def test_fixture_alignment_and_renders_match():
    need_fixture()
    lines = verify_pose_fixture(POSE_FIXTURE)
    by_name = {line.name: line for line in lines}
    assert by_name["align max_abs_err"].value < 1e-6
    assert by_name["render mismatched_pixels"].value == 0
    assert sum(1 for n in by_name if n.startswith("render_")) == len(list(POSE_FIXTURE.glob("render_*.png")))
    assert all(line.ok for line in lines), [str(line) for line in lines]


def test_fixture_residual_is_the_released_float32_centre():
    # Our float64 alignment differs from the released one by ~1e-8; emulating OpenCV's
    # float32 scaling centre reproduces it exactly, so nothing else differs.
    need_fixture()
    reference, driving, expected, align_frame, _ = load_alignment_fixture(POSE_FIXTURE)
    aligned = align_poses(reference, driving, align_frame, skip_missing=False, float32_centre=True)
    for src, ours, ref in zip(driving, aligned, expected):
        ok = src.body_present
        assert np.abs(ours.body[ok] - ref.body[ok]).max() < 1e-12
        assert np.abs(ours.hands - ref.hands).max() < 1e-12


def test_fixture_check_does_not_depend_on_frame_count(tmp_path):
    need_fixture()
    data = json.loads((POSE_FIXTURE / "alignment.json").read_text())
    keep = 5
    for key in ("driving_poses", "aligned_poses"):
        data[key] = data[key][:keep]
    (tmp_path / "alignment.json").write_text(json.dumps(data))
    for png in POSE_FIXTURE.glob("render_*.png"):
        if int(png.stem.split("_")[1]) < keep:
            shutil.copy(png, tmp_path / png.name)
    lines = verify_pose_fixture(tmp_path)
    assert all(line.ok for line in lines)
    # A wrong expectation is caught.
    data["aligned_poses"][1]["candidate"][4][0] += 1e-3
    (tmp_path / "alignment.json").write_text(json.dumps(data))
    assert not verify_pose_fixture(tmp_path)[0].ok


# ---------------------------------------------------------------------- alignment properties
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), align_index=st.integers(0, 4),
       ref_wh=st.sampled_from([(624, 928), (1024, 576), (480, 832)]),
       drv_wh=st.sampled_from([(640, 360), (1080, 1920), (512, 512)]))
def test_aligned_frame_takes_reference_lengths_and_neck(seed, align_index, ref_wh, drv_wh):
    rng = np.random.default_rng(seed)
    reference = standing(*ref_wh, rng=rng, jitter=20)
    driving = [standing(*drv_wh, rng=rng, jitter=20) for _ in range(5)]
    aligned = align_poses(reference, driving, align_index)
    a = aligned[align_index]
    assert (a.width, a.height) == ref_wh
    np.testing.assert_allclose(a.body[1], reference.body[1], atol=1e-12)  # necks coincide
    for i, j in ((0, 1), (2, 5)):  # single-segment parts: the lengths become the reference's
        assert dist(a, i, j) == pytest.approx(dist(reference, i, j), rel=1e-9)
    mid = lambda p: np.linalg.norm(square(p)[1] - (square(p)[8] + square(p)[11]) / 2)  # noqa: E731
    assert mid(a) == pytest.approx(mid(reference), rel=1e-9)
    # Every frame moves by the same neck offset (square coordinates of each image).
    shifts = [square(a_k)[1] - square(d)[1] for a_k, d in zip(aligned, driving)]
    np.testing.assert_allclose(shifts, np.repeat(shifts[:1], len(shifts), 0), atol=1e-12)


def test_limbs_keep_direction_and_scale_by_ratio():
    rng = np.random.default_rng(3)
    reference, drv = standing(624, 928, rng, 30), standing(640, 360, rng, 30)
    ratios = alignment_ratios(reference, drv)
    a = align_poses(reference, [drv])[0]
    for child, parent, part in ((3, 2, "arm_upper"), (4, 3, "arm_lower"), (10, 9, "leg_lower")):
        before = square(drv)[child] - square(drv)[parent]
        after = square(a)[child] - square(a)[parent]
        np.testing.assert_allclose(after, ratios[part] * before, rtol=1e-9, atol=1e-12)
    assert ratios["hand"] == pytest.approx((ratios["arm_upper"] + ratios["arm_lower"]) / 2)
    want_upper = (dist(reference, 2, 3) / dist(drv, 2, 3) + dist(reference, 5, 6) / dist(drv, 5, 6)) / 2
    assert ratios["arm_upper"] == pytest.approx(want_upper, rel=1e-12)
    hand_before = square(drv, drv.hands[1]) - square(drv)[4]
    hand_after = square(a, a.hands[1]) - square(a)[4]
    np.testing.assert_allclose(hand_after, ratios["hand"] * hand_before, rtol=1e-9, atol=1e-12)


def test_missing_points_stay_missing_and_skip_missing_ratios():
    reference = standing(624, 928)
    drv = standing(640, 360, np.random.default_rng(1), 25)
    drv.body[12], drv.subset[12] = -1, -1  # left knee missing in the align frame
    drv.hands[0, 5] = -1
    released = alignment_ratios(reference, drv, skip_missing=False)
    ours = alignment_ratios(reference, drv)
    assert ours["leg_upper"] == pytest.approx(dist(reference, 8, 9) / dist(drv, 8, 9), rel=1e-12)
    assert ours["leg_lower"] == pytest.approx(dist(reference, 9, 10) / dist(drv, 9, 10), rel=1e-12)
    assert released["leg_upper"] != pytest.approx(ours["leg_upper"], rel=1e-3)  # placeholder lengths
    a = align_poses(reference, [drv])[0]
    assert a.subset[12] == -1 and np.all(a.body[12] == -1) and np.all(a.hands[0, 5] == -1)
    # A part with no usable length at all takes the mean of the others.
    drv.body[[14, 16]], drv.subset[[14, 16]] = -1, -1
    r = alignment_ratios(reference, drv)
    others = [v for k, v in r.items() if k != "face_left"]
    assert r["face_left"] == pytest.approx(np.mean(others), rel=1e-12)


def test_zero_lengths_follow_the_released_nan_and_inf_rules():
    reference, drv = standing(624, 928), standing(640, 360)
    reference.body[0] = reference.body[1]
    drv.body[0] = drv.body[1]                       # 0 / 0 -> NaN -> 1
    r = alignment_ratios(reference, drv)
    assert r["neck"] == 1.0
    reference2 = standing(624, 928)                 # x / 0 -> inf -> mean of the finite ones
    r2 = alignment_ratios(reference2, drv)
    assert r2["neck"] == pytest.approx(np.mean([v for k, v in r2.items() if k != "neck"]), rel=1e-12)


def test_alignment_needs_necks():
    reference, drv = standing(), standing()
    drv.subset[1] = -1
    with pytest.raises(PoseError, match="no neck"):
        align_poses(reference, [drv])
    with pytest.raises(PoseError, match="outside"):
        align_poses(reference, [standing()], 3)


# ---------------------------------------------------------------------- rendering
def only_points(keep, width=200, height=100) -> Pose:
    p = standing(width, height)
    drop = [j for j in range(18) if j not in keep]
    p.body[drop], p.subset[drop] = -1, -1
    p.hands[:] = -1
    return p


def test_render_colours_are_the_channel_reversed_released_triples():
    # Only neck (1) and right shoulder (2): limb 0, listed (255, 0, 0), dimmed x0.6.
    p = only_points({1, 2}, 400, 300)
    img = draw_pose(p, 300, 400)
    neck = (p.body[1] * [400, 300]).astype(int)
    shoulder = (p.body[2] * [400, 300]).astype(int)
    mid = (neck + shoulder) // 2
    assert img[mid[1], mid[0]].tolist() == [0, 0, 153]                # blue in RGB, 255 * 0.6
    assert img[neck[1], neck[0]].tolist() == [0, 85, 255]             # joint 1 listed (255, 85, 0)
    assert img[shoulder[1], shoulder[0]].tolist() == [0, 170, 255]    # joint 2 listed (255, 170, 0)
    # Hard-edged primitives: only those colours (and black) appear.
    assert set(map(tuple, img.reshape(-1, 3).tolist())) == {(0, 0, 0), (0, 0, 153), (0, 85, 255), (0, 170, 255)}


def test_render_hands_red_joints_no_face_and_missing_not_drawn():
    p = only_points(set(), 400, 300)
    assert not draw_pose(p, 300, 400).any()  # nothing present: black
    p.hands[0, :] = -1
    p.hands[0, 0] = [0.5, 0.5]
    img = draw_pose(p, 300, 400)
    assert img[150, 200].tolist() == [255, 0, 0]                      # hand joint (0, 0, 255) listed
    assert draw_pose(p, 300, 400, draw_face=False).sum() == img.sum()  # the face is never drawn by default
    assert (draw_pose(p, 300, 400, draw_face=True) > 0).sum() > (img > 0).sum()


def test_render_size_and_canvas_scale():
    p = standing(624, 928)
    out = render_poses([p, p], 928 // 2, 624 // 2)
    assert out.shape == (2, 464, 312, 3) and out.dtype == np.uint8
    direct = render_poses([p], 464, 312, canvas_scale=1)[0]
    # Same skeleton; the 2x canvas makes strokes thinner relative to the frame.
    assert (out[0].max(-1) > 40).sum() < (direct.max(-1) > 40).sum()
    ys, xs = np.nonzero(out[0].max(-1) > 40)
    ys2, xs2 = np.nonzero(direct.max(-1) > 40)
    assert abs(ys.mean() - ys2.mean()) < 2 and abs(xs.mean() - xs2.mean()) < 2


def test_both_rebuilds_agree_when_nothing_is_missing():
    rng = np.random.default_rng(11)
    reference = standing(624, 928, rng, 25)
    driving = [standing(640, 360, rng, 25) for _ in range(4)]
    ours = align_poses(reference, driving, 1)
    released = align_poses(reference, driving, 1, skip_missing=False)
    for a, b in zip(ours, released):
        np.testing.assert_allclose(a.body, b.body, atol=1e-12)
        np.testing.assert_allclose(a.hands, b.hands, atol=1e-12)


def test_points_hang_from_the_nearest_present_ancestor():
    rng = np.random.default_rng(12)
    reference, anchor, frame = standing(624, 928, rng, 25), standing(640, 360, rng, 25), standing(640, 360, rng, 25)
    frame.body[3], frame.subset[3] = -1, -1  # right elbow lost in a later frame
    r = alignment_ratios(reference, anchor)
    ours = align_poses(reference, [anchor, frame])[1]
    released = align_poses(reference, [anchor, frame], skip_missing=False)[1]
    # The wrist keeps its direction from the shoulder, scaled by the lower-arm ratio.
    want = square(ours)[2] + r["arm_lower"] * (square(frame)[4] - square(frame)[2])
    np.testing.assert_allclose(square(ours)[4], want, atol=1e-12)
    # The released arithmetic hangs it from the placeholder instead (a different place).
    assert np.linalg.norm(square(released)[4] - square(ours)[4]) > 1e-3
    np.testing.assert_allclose(ours.body[[5, 6, 7, 8, 9, 10]], released.body[[5, 6, 7, 8, 9, 10]], atol=1e-12)


def test_frame_without_neck_is_rebuilt_about_an_estimated_neck():
    rng = np.random.default_rng(13)
    reference, anchor = standing(624, 928, rng, 25), standing(640, 360, rng, 25)
    side = anchor.copy()  # the anchor itself, seen with the left shoulder (and so the neck) hidden
    side.body[[1, 5]], side.subset[[1, 5]] = -1, -1
    full, partial = align_poses(reference, [anchor, side])
    ok = partial.body_present
    assert not ok[1] and not ok[5]
    # The estimated neck is exact here, so everything not hanging from the hidden shoulder
    # lands where the full frame puts it.
    same = ok.copy()
    same[[6, 7]] = False
    np.testing.assert_allclose(partial.body[same], full.body[same], atol=1e-12)
    np.testing.assert_allclose(partial.hands[1], full.hands[1], atol=1e-12)
    # The left elbow hangs from the neck over the merged shoulder + upper-arm segment.
    r = alignment_ratios(reference, anchor)
    want = square(full)[1] + r["arm_upper"] * (square(anchor)[6] - square(anchor)[1])
    np.testing.assert_allclose(square(partial)[6], want, atol=1e-12)


def test_a_driving_align_frame_with_every_joint_at_one_point_is_refused():
    frame = standing()
    body = np.where(frame.body_present[:, None], np.array([0.5, 0.4]), frame.body)
    collapsed = Pose(body, frame.subset, frame.hands, frame.face, frame.width, frame.height)
    with pytest.raises(PoseError, match=r"driving frame 1 has every body point at one place"):
        align_poses(standing(), [standing(), collapsed], align_index=1)
    assert len(align_poses(standing(), [standing(), collapsed], align_index=0)) == 2  # elsewhere it is one frame
