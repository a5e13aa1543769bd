"""Pose edits, retargeting and smoothing: parsing with errors naming the field, and their effect through
prepare_poses (edits exactly where asked, easing, framing fit, limb lengths, stable ground, less jitter)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from steadydancer.pose import (
    BODY_NAMES,
    Pose,
    PoseEditError,
    PoseEdits,
    PoseSequence,
    SyntheticPoseDetector,
    photo_framing,
    prepare_poses,
    smooth_poses,
)
from steadydancer.pose.edits import ease_weight

W, H = 128, 192
REF_IMAGE = np.zeros((H, W, 3), np.uint8)
SYNTH = SyntheticPoseDetector(animate=True)
J = {name: i for i, name in enumerate(BODY_NAMES)}


def driving(n=24, width=320, height=180) -> PoseSequence:
    brightness = (100 + 80 * np.sin(np.arange(n) / 3)).astype(int)
    return PoseSequence([SYNTH(np.full((height, width, 3), b, np.uint8)) for b in brightness], width, height, 16.0)


def run(edits=None, **kw):
    kw.setdefault("num_frames", 17)
    return prepare_poses(REF_IMAGE, kw.pop("driving", None) or driving(), detector=SYNTH, width=W, height=H,
                         edits=edits, **kw)


def moved_joints(a: Pose, b: Pose) -> set[str]:
    return {BODY_NAMES[j] for j in np.flatnonzero(np.abs(a.body - b.body).max(axis=1) > 1e-9)}


def cropped(pose: Pose, keep: tuple[str, ...]) -> Pose:
    """The pose with every body joint but `keep` (and the hands and face) removed: a photo framed closer."""
    out = pose.copy()
    for name in BODY_NAMES:
        if name not in keep:
            out.body[J[name]], out.subset[J[name]] = -1.0, -1.0
    out.hands[:], out.face[:] = -1.0, -1.0
    return out


# ---------------------------------------------------------------------- parsing
@pytest.mark.parametrize("data, field", [
    ({"reference": {"right_wristt": [0.5, 0.5]}}, "pose_edits.reference.right_wristt"),
    ({"reference": {"nose": [0.5, 3.0]}}, "pose_edits.reference.nose"),
    ({"frames": [{"frame": 2, "joints": {"tail": [0.1, 0.1]}}]}, "pose_edits.frames[0].joints.tail"),
    ({"frames": [{"frame": -1, "joints": {}}]}, "pose_edits.frames[0].frame"),
    ({"frames": [{"joints": {}}]}, "pose_edits.frames[0].frame"),
    ({"frames": [{"frame": 1, "joints": {}, "ease": 99}]}, "pose_edits.frames[0].ease"),
    ({"retarget": {"fit": "ankles_up"}}, "pose_edits.retarget.fit"),
    ({"retarget": {"scale": 0}}, "pose_edits.retarget.scale"),
    ({"retarget": {"offset": [0, 5]}}, "pose_edits.retarget.offset[1]"),
    ({"retarget": {"stable_ground": "yes"}}, "pose_edits.retarget.stable_ground"),
    ({"smoothing": {"strength": 2}}, "pose_edits.smoothing.strength"),
    ({"colour": "red"}, "pose_edits: unknown field 'colour'"),
])
def test_bad_edits_are_refused_naming_the_field(data, field):
    with pytest.raises(PoseEditError, match=field.replace("[", r"\[").replace("]", r"\]")):
        PoseEdits.from_dict(data)


def test_more_frames_than_the_video_are_refused_naming_the_field():
    edits = PoseEdits.from_dict({"frames": [{"frame": 3, "joints": {}}, {"frame": 17, "joints": {"nose": None}}]})
    with pytest.raises(PoseEditError, match=r"pose_edits\.frames\[1\]\.frame: frame 17 is beyond the video's 17"):
        edits.check_frames(17)
    with pytest.raises(PoseEditError, match=r"frames\[1\]\.frame"):
        run(edits)


def test_json_round_trip_is_exact_and_canonical():
    data = {"reference": {"right_wrist": [0.25, 0.5], "left_ear": None}, "ease_frames": 2,
            "frames": [{"frame": 4, "joints": {"right_hand": [0.3, 0.6]}}],
            "retarget": {"fit": "waist_up", "scale": 1.5, "stable_ground": True}, "smoothing": {"strength": 0.25}}
    edits = PoseEdits.from_dict(data)
    assert edits.frames[0].ease == 2  # the object's default, written out explicitly
    again = PoseEdits.from_json(edits.to_json())
    assert again == edits and hash(again) == hash(edits) and again.to_json() == edits.to_json()
    assert PoseEdits.from_json("").is_empty and PoseEdits().to_json() == ""


# ---------------------------------------------------------------------- edits exactly where asked
def test_reference_wrist_edit_moves_only_that_joint_and_its_hand_in_the_first_frame():
    base = run(smooth_start_frames=4)
    edits = PoseEdits.from_dict({"reference": {"right_wrist": [0.2, 0.6]}})
    edited = run(edits, smooth_start_frames=4)
    np.testing.assert_allclose(edited.reference_pose.body[J["right_wrist"]], [0.2, 0.6])
    assert moved_joints(base.poses[0], edited.poses[0]) == {"right_wrist"}
    delta = np.array([0.2, 0.6]) - base.reference_pose.body[J["right_wrist"]]
    np.testing.assert_allclose(edited.poses[0].hands[1], base.poses[0].hands[1] + delta)  # the hand follows
    np.testing.assert_array_equal(edited.poses[0].hands[0], base.poses[0].hands[0])
    assert not np.array_equal(edited.positive[0], base.positive[0])


def test_reference_joint_removed_and_placed():
    edits = PoseEdits.from_dict({"reference": {"left_ear": None}})
    out = run(edits)
    assert not out.reference_pose.body_present[J["left_ear"]]
    placed = run(PoseEdits.from_dict({"reference": {"left_ear": None}, "frames": [
        {"frame": 0, "joints": {"left_ear": None}}]}))
    assert not placed.poses[0].body_present[J["left_ear"]] and placed.poses[1].body_present[J["left_ear"]]
    missing = run(PoseEdits.from_dict({"reference": {"left_ear": None}}), smooth_start_frames=2)
    assert not missing.poses[0].body_present[J["left_ear"]]
    back = run(PoseEdits.from_dict({"frames": [{"frame": 0, "joints": {"left_ear": None}},
                                               {"frame": 1, "joints": {}}]}))
    assert not back.poses[0].body_present[J["left_ear"]]


def test_frame_edit_hits_its_frame_exactly_and_eases_into_neighbours():
    base = run()
    target = [0.55, 0.3]
    edited = run(PoseEdits.from_dict({"frames": [{"frame": 8, "joints": {"nose": target}, "ease": 3}]}))
    np.testing.assert_allclose(edited.poses[8].body[J["nose"]], target)
    delta = np.array(target) - base.poses[8].body[J["nose"]]
    for k in range(17):
        weight = ease_weight(abs(k - 8), 3)
        np.testing.assert_allclose(edited.poses[k].body[J["nose"]], base.poses[k].body[J["nose"]] + weight * delta,
                                   atol=1e-12)
        assert moved_joints(base.poses[k], edited.poses[k]) == ({"nose"} if weight else set())
        # the face moves with the nose, as a group
        np.testing.assert_allclose(edited.poses[k].face, base.poses[k].face + weight * delta, atol=1e-12)
    steps = [abs(edited.poses[k + 1].body[J["nose"], 1] - edited.poses[k].body[J["nose"], 1]) for k in range(16)]
    base_steps = [abs(base.poses[k + 1].body[J["nose"], 1] - base.poses[k].body[J["nose"], 1]) for k in range(16)]
    assert max(steps) < abs(delta[1]) * 0.7 + max(base_steps)  # eased: no single-frame jump of the whole edit
    assert not np.array_equal(edited.negative[8], base.negative[8])  # negatives use the edited keypoints
    # long-video windows are drawn from the edited keypoints too
    assert not np.array_equal(np.asarray(edited.window(8, 9).pose_video), np.asarray(base.window(8, 9).pose_video))
    np.testing.assert_array_equal(np.asarray(edited.window(0, 1).pose_video), np.asarray(base.window(0, 1).pose_video))


def test_ease_weights_fall_smoothly_to_zero():
    weights = [ease_weight(d, 4) for d in range(7)]
    assert weights[0] == 1 and weights[5] == 0 and weights[6] == 0
    assert all(a > b for a, b in zip(weights[:5], weights[1:5]))


# ---------------------------------------------------------------------- retargeting
def test_photo_framing_from_the_lowest_visible_part():
    full = SYNTH(REF_IMAGE).with_size(W, H)
    assert photo_framing(full) == "full_body"
    assert photo_framing(cropped(full, tuple(n for n in BODY_NAMES if "ankle" not in n))) == "knees_up"  # no ankles
    waist = cropped(full, ("nose", "neck", "right_shoulder", "left_shoulder", "right_elbow", "left_elbow",
                           "right_hip", "left_hip"))
    assert photo_framing(waist) == "waist_up"
    assert photo_framing(cropped(full, ("nose", "neck", "right_shoulder", "left_shoulder"))) == "head_and_shoulders"


def waist_up_photo() -> Pose:
    """A waist-up photo: the synthetic skeleton enlarged 2.2x about its hips' centre, hips at 92% of the height."""
    pose = SYNTH(REF_IMAGE).with_size(W, H)
    hips = pose.body[[J["right_hip"], J["left_hip"]]].mean(axis=0)
    pose.body = (pose.body - hips) * 2.2 + np.array([0.5, 0.92])
    keep = ("nose", "neck", "right_shoulder", "left_shoulder", "right_hip", "left_hip", "right_eye", "left_eye")
    return cropped(pose, keep)


def test_fit_to_a_waist_up_photo_puts_shoulders_and_hips_on_the_photos():
    photo = waist_up_photo()
    anchors = [J[n] for n in ("right_shoulder", "left_shoulder", "right_hip", "left_hip")]
    fitted = run(PoseEdits.from_dict({"retarget": {"fit": "auto"}}), reference_pose=photo)
    error = np.linalg.norm((fitted.poses[0].body[anchors] - photo.body[anchors]) * [W / H, 1], axis=-1)
    assert error.max() < 0.01
    # The dancer's proportions are kept: one scale for every bone.
    drv = driving()[0]
    ratios = [np.linalg.norm((fitted.poses[0].body[a] - fitted.poses[0].body[b]) * [W / H, 1])
              / np.linalg.norm((drv.body[a] - drv.body[b]) * [drv.aspect, 1]) for a, b in ((2, 3), (8, 9), (1, 0))]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)


def test_photo_limb_lengths_replace_the_dancers():
    photo = SYNTH(REF_IMAGE).with_size(W, H)
    photo.body[J["right_elbow"]] += [0.0, 0.08]  # a long upper arm on the photo
    out = run(PoseEdits.from_dict({"retarget": {"limb_lengths": "photo"}}), reference_pose=photo)
    sq = np.array([W / H, 1.0])
    photo_len = np.linalg.norm((photo.body[3] - photo.body[2]) * sq)
    for pose in out.poses:
        np.testing.assert_allclose(np.linalg.norm((pose.body[3] - pose.body[2]) * sq), photo_len, rtol=1e-9)
    plain = run(reference_pose=photo)
    lengths = [np.linalg.norm((p.body[3] - p.body[2]) * sq) for p in plain.poses]
    assert np.ptp(lengths) > 1e-4 or abs(lengths[0] - photo_len) > 1e-4  # it does change something


def test_stable_ground_keeps_the_lower_foot_on_the_photos():
    seq = driving()
    for i, pose in enumerate(seq.poses):  # the dancer bobs up and down
        pose.body[pose.body_present] += [0.0, 0.05 * math.sin(i)]
    out = run(PoseEdits.from_dict({"retarget": {"stable_ground": True}}), driving=seq)
    photo_ground = out.reference_pose.body[[J["right_ankle"], J["left_ankle"]], 1].max()
    for pose in out.poses:
        assert abs(pose.body[[J["right_ankle"], J["left_ankle"]], 1].max() - photo_ground) < 1e-9
    loose = run(driving=seq)
    assert np.ptp([p.body[[10, 13], 1].max() for p in loose.poses]) > 0.01


def test_scale_and_offset_move_the_whole_motion_about_the_photos_neck():
    base = run()
    out = run(PoseEdits.from_dict({"retarget": {"scale": 0.5, "offset": [0.1, -0.05]}}))
    neck = base.reference_pose.body[1]
    for a, b in zip(base.poses, out.poses):
        present = a.body_present
        np.testing.assert_allclose(b.body[present], neck + 0.5 * (a.body[present] - neck) + [0.1, -0.05], atol=1e-12)


# ---------------------------------------------------------------------- smoothing
def test_smoothing_reduces_jitter_and_keeps_the_motion():
    rng = np.random.default_rng(0)
    seq = driving(48)
    clean = [p.copy() for p in seq.poses]
    for pose in seq.poses:
        pose.body[pose.body_present] += rng.normal(0, 0.01, (int(pose.body_present.sum()), 2))
    smoothed = smooth_poses(seq.poses, 0.6, 16.0)
    error = lambda poses: np.mean([np.abs(p.body - c.body).mean() for p, c in zip(poses, clean)])  # noqa: E731
    jitter = lambda poses: np.mean([np.abs(np.diff([p.body for p in poses], 2, axis=0)).mean()])  # noqa: E731
    assert jitter(smoothed) < 0.4 * jitter(seq.poses)
    assert error(smoothed) < 0.7 * error(seq.poses)
    for a, b in zip(smooth_poses(seq.poses, 0.0, 16.0), seq.poses):
        np.testing.assert_array_equal(a.body, b.body)
    out = run(PoseEdits.from_dict({"smoothing": {"strength": 0.6}}), driving=seq)
    plain = run(driving=seq)
    assert jitter(out.poses.poses) < jitter(plain.poses.poses)
