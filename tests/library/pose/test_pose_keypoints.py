"""Keypoint data model: JSON round trip, schema validation, the synthetic detector, images."""

from __future__ import annotations

import json

import numpy as np
import pytest

from steadydancer.defaults import OUTPUT_FPS
from steadydancer.pose import (
    BODY_NAMES,
    Pose,
    PoseFormatError,
    PoseSequence,
    SyntheticPoseDetector,
    load_image,
    resample_indices,
)


def random_pose(rng: np.random.Generator, width=640, height=360, missing=()) -> Pose:
    body = rng.uniform(0.1, 0.9, (18, 2))
    subset = np.arange(18, dtype=np.float64)
    for j in missing:
        body[j], subset[j] = -1, -1
    hands = rng.uniform(0.1, 0.9, (2, 21, 2))
    hands[1, 3] = -1
    face = rng.uniform(0.1, 0.9, (68, 2))
    return Pose(body, subset, hands, face, width, height, body_scores=rng.uniform(0, 1, 18))


def assert_same_pose(a: Pose, b: Pose):
    for name in ("body", "subset", "hands", "face"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (a.width, a.height) == (b.width, b.height)


def test_sequence_json_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    seq = PoseSequence([random_pose(rng, missing=(9, 10)), random_pose(rng), Pose.empty(640, 360)], 640, 360, 29.97)
    path = tmp_path / "poses.json"
    seq.save(path)
    back = PoseSequence.load(path)
    assert len(back) == 3 and back.fps == 29.97 and (back.width, back.height) == (640, 360)
    for a, b in zip(seq, back):
        assert_same_pose(a, b)
    np.testing.assert_array_equal(back[0].body_scores, seq[0].body_scores)
    assert back[2].is_empty and not back[0].body_present[9]
    assert not back[0].hands_present[1, 3]
    data = json.loads(path.read_text())
    assert data["format"] == "steadydancer.pose_sequence" and data["version"] == 1
    assert len(data["frames"][0]["body"]) == 18 == len(BODY_NAMES)


def test_single_pose_json_round_trip(tmp_path):
    pose = random_pose(np.random.default_rng(1), 480, 720)
    pose.save(tmp_path / "ref.json")
    assert_same_pose(Pose.load(tmp_path / "ref.json"), pose)


def test_minimal_frame_derives_subset_and_missing_parts():
    body = [[0.5, 0.5]] * 17 + [[-1, -1]]
    seq = PoseSequence.from_dict({"format": "steadydancer.pose_sequence", "version": 1, "width": 10,
                                  "height": 20, "fps": None, "frames": [{"body": body}]})
    pose = seq[0]
    assert pose.subset.tolist() == list(range(17)) + [-1]
    assert not pose.hands_present.any() and not pose.face_present.any()
    assert seq.fps == OUTPUT_FPS and np.isfinite(seq.frame_times()).all()  # null: one pose per output frame


def test_coordinates_must_be_numbers_not_strings_or_booleans():
    for bad in ("0.5", True, None, [0.5]):
        body = [[0.5, 0.5]] * 17 + [[bad, 0.5]]
        with pytest.raises(PoseFormatError, match=r"frames\[0\].*numbers"):
            PoseSequence.from_dict({"format": "steadydancer.pose_sequence", "version": 1, "width": 10,
                                    "height": 20, "fps": 16, "frames": [{"body": body}]})


def test_released_key_names_are_accepted():
    frame = {"candidate": [[0.5, 0.5]] * 18, "subset": [[float(i) for i in range(18)]],
             "hands": [[[0.1, 0.2]] * 21] * 2, "faces": [[[0.3, 0.4]] * 68]}
    pose = Pose.from_dict(frame, width=100, height=50)
    assert pose.face.shape == (68, 2) and pose.subset[17] == 17


def _seq(**frame):
    base = {"body": [[0.5, 0.5]] * 18}
    base.update(frame)
    return {"format": "steadydancer.pose_sequence", "version": 1, "width": 64, "height": 64, "fps": 16,
            "frames": [base]}


@pytest.mark.parametrize("data,match", [
    ({"format": "other", "version": 1}, "'format' must be"),
    ({"format": "steadydancer.pose_sequence", "version": 7}, "unsupported 'version'"),
    ({**_seq(), "width": 0}, "width: expected a positive integer"),
    ({**_seq(), "fps": -3}, "fps: expected a frame rate between 1 and 1000"),
    ({**_seq(), "frames": {}}, "frames: expected a list"),
    (_seq(body=[[0.5, 0.5]] * 17), r"frames\[0\].body: expected shape \[18, 2\]"),
    (_seq(body=[[0.5, float("nan")]] * 18), "NaN"),
    (_seq(body="nope"), "nested lists of numbers"),
    (_seq(hands=[[[0, 0]] * 21]), r"frames\[0\].hands"),
    (_seq(face=[[0, 0]] * 60), r"frames\[0\].face: expected 68"),
    (_seq(subset=[0] * 5), r"subset: expected 18"),
])
def test_schema_errors_are_clear(data, match):
    with pytest.raises(PoseFormatError, match=match):
        PoseSequence.from_dict(data)


def test_missing_body_and_bad_files(tmp_path):
    with pytest.raises(PoseFormatError, match="missing 'body'"):
        PoseSequence.from_dict({**_seq(), "frames": [{"hands": None}]})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PoseFormatError, match="not valid JSON"):
        PoseSequence.load(bad)
    with pytest.raises(PoseFormatError, match="not found"):
        PoseSequence.load(tmp_path / "nothing.json")
    seq_file = tmp_path / "seq.json"
    PoseSequence([Pose.empty(8, 8)], 8, 8).save(seq_file)
    with pytest.raises(PoseFormatError, match="PoseSequence.load"):
        Pose.load(seq_file)


def test_pose_errors_are_value_errors():
    assert issubclass(PoseFormatError, ValueError)


@pytest.mark.parametrize("size", [(720, 480), (360, 640), (1024, 1024)])
def test_synthetic_detector_gives_a_full_plausible_skeleton(size):
    h, w = size
    det = SyntheticPoseDetector()
    pose = det(np.zeros((h, w, 3), np.uint8))
    assert (pose.width, pose.height) == (w, h) and det.is_synthetic
    assert pose.body_present.all() and pose.hands_present.all() and pose.face_present.all()
    assert np.all((pose.body >= 0) & (pose.body <= 1))
    px = pose.body * [w, h]
    assert px[0, 1] < px[1, 1] < px[8, 1] < px[9, 1] < px[10, 1]       # head above neck above hip, knee, ankle
    assert px[2, 0] < px[1, 0] < px[5, 0]                                # right shoulder on the image left
    assert 0.6 * h < px[10, 1] - px[0, 1] < 0.9 * h                      # person ~80 % of the height
    np.testing.assert_allclose(pose.hands[0, 0], pose.body[7])           # left hand at the left wrist
    np.testing.assert_allclose(pose.hands[1, 0], pose.body[4])


def test_synthetic_detector_animates_with_brightness():
    det = SyntheticPoseDetector(animate=True)
    dark, bright = det(np.zeros((90, 160, 3), np.uint8)), det(np.full((90, 160, 3), 200, np.uint8))
    assert np.allclose(dark.body[[0, 1, 8, 9, 10]], bright.body[[0, 1, 8, 9, 10]])  # legs, head fixed
    assert bright.body[4, 1] < dark.body[4, 1] and bright.body[7, 1] < dark.body[7, 1]  # wrists raised
    assert SyntheticPoseDetector()(np.full((90, 160, 3), 200, np.uint8)).body[4, 1] == pytest.approx(dark.body[4, 1])


def test_load_image_formats(tmp_path):
    from PIL import Image

    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 0  # transparent -> white
    assert load_image(rgba)[0, 0].tolist() == [255, 255, 255]
    assert load_image(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    img = Image.new("RGB", (6, 3), (10, 20, 30))
    img.save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png")[1, 1].tolist() == [10, 20, 30]
    # EXIF orientation 6 (rotate 90 cw to display): a 6x3 stored image shows as 3x6.
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "b.jpg", exif=exif)
    assert load_image(tmp_path / "b.jpg").shape == (6, 3, 3)


@pytest.mark.parametrize("fps", [1e-9, 0.5, 1e6, float("inf")])
def test_sequence_frame_rate_is_bounded_before_use(fps):
    """The rate sizes the resampling to the output rate; an absurd one is refused, naming `fps`."""
    data = PoseSequence([Pose.empty(64, 64)] * 3, 64, 64, 16).to_dict()
    with pytest.raises(PoseFormatError, match=r"\.fps: expected a frame rate between 1 and 1000"):
        PoseSequence.from_dict({**data, "fps": fps})
    with pytest.raises(PoseFormatError, match="fps must be between 1 and 1000"):
        PoseSequence([Pose.empty(64, 64)] * 3, 64, 64, fps)


def test_resampling_is_bounded_by_the_count_asked_for():
    times = np.arange(3, dtype=np.float64) * 1e9  # three poses a billion seconds apart
    assert len(resample_indices(times, 16.0, max_count=81)) == 81


# ---------------------------------------------------------------------- a reference's keypoints
def test_reference_pose_loads_from_one_frame_of_the_schema(tmp_path):
    from steadydancer.pose import load_reference_pose

    pose = random_pose(np.random.default_rng(2), 384, 576)
    PoseSequence([pose], 384, 576).save(tmp_path / "ref.json")
    assert_same_pose(load_reference_pose(tmp_path / "ref.json"), pose)


@pytest.mark.parametrize("frames,match", [
    (2, r"reference_pose: expected one frame \(the reference image's pose\), got 2"),
    ([Pose.empty(64, 64)], r"reference_pose: no body point is present"),
    ("no neck", r"reference_pose: the neck \(body\[1\], between the shoulders\) is missing"),
])
def test_reference_pose_errors_name_the_parameter(tmp_path, frames, match):
    from steadydancer.pose import NoPersonInReferenceError, load_reference_pose

    rng = np.random.default_rng(3)
    if frames == "no neck":
        frames = [random_pose(rng, 64, 64, missing=(1,))]
    elif isinstance(frames, int):
        frames = [random_pose(rng, 64, 64) for _ in range(frames)]
    PoseSequence(frames, 64, 64).save(tmp_path / "ref.json")
    with pytest.raises((PoseFormatError, NoPersonInReferenceError), match=match):
        load_reference_pose(tmp_path / "ref.json", where="reference_pose")


@pytest.mark.parametrize("value,match", [(1e9, "coordinates are fractions of the frame.*got 1e\\+09"),
                                         (float("inf"), "contains NaN or infinity")])
def test_reference_coordinates_are_finite_and_bounded(tmp_path, value, match):
    from steadydancer.pose import load_reference_pose

    data = _seq()
    data["frames"][0]["body"][3] = [value, 0.5]
    (tmp_path / "ref.json").write_text(json.dumps(data))  # json writes inf as Infinity, which Python reads back
    with pytest.raises(PoseFormatError, match=r"ref\.json\.frames\[0\]\.body: " + match):
        load_reference_pose(tmp_path / "ref.json")


def _collapsed(pose: Pose, at=(0.5, 0.4)) -> Pose:
    """`pose` with every present body point moved to one place."""
    body = np.where(pose.body_present[:, None], np.array(at), pose.body)
    return Pose(body, pose.subset, pose.hands, pose.face, pose.width, pose.height)


def test_a_reference_with_every_joint_at_one_point_is_refused_before_generation(tmp_path):
    from steadydancer.pose import NoPersonInReferenceError, load_reference_pose

    pose = random_pose(np.random.default_rng(4), 64, 64)
    PoseSequence([_collapsed(pose)], 64, 64).save(tmp_path / "ref.json")
    with pytest.raises(NoPersonInReferenceError, match=r"reference_pose: every body point is at one place"):
        load_reference_pose(tmp_path / "ref.json", where="reference_pose")
    PoseSequence([pose], 64, 64).save(tmp_path / "ref.json")
    load_reference_pose(tmp_path / "ref.json", where="reference_pose")  # the same skeleton spread out is fine
