"""prepare_poses end to end: start-gap switches, lost frames, clear errors, sizing."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steadydancer.pose import (
    NoPersonInDrivingError,
    NoPersonInReferenceError,
    Pose,
    PoseDetection,
    PoseError,
    PoseSequence,
    SyntheticPoseDetector,
    align_poses,
    generation_size,
    generation_size_for_aspect,
    prepare_poses,
)

from helpers.paths import SHARED_FIXTURES

FIXTURES = SHARED_FIXTURES
W, H = 128, 192  # small generation size keeps the tests fast
REF_IMAGE = np.zeros((H, W, 3), np.uint8)  # black: the synthetic detector's arms-down pose
SYNTH = SyntheticPoseDetector(animate=True)


def driving_sequence(brightness, width=320, height=180, fps=16.0) -> PoseSequence:
    """Synthetic poses whose arm angle follows each frame's brightness (0 = arms down)."""
    poses = [SYNTH(np.full((height, width, 3), b, np.uint8)) for b in brightness]
    return PoseSequence(poses, width, height, fps)


def run(driving, **kw):
    kw.setdefault("detector", SYNTH)
    kw.setdefault("width", W)
    kw.setdefault("height", H)
    kw.setdefault("num_frames", 9)
    return prepare_poses(REF_IMAGE, driving, **kw)


BRIGHT = [200, 150, 220, 90, 180, 250, 0, 100, 230, 240, 120, 160, 200, 210, 190, 170]


# ---------------------------------------------------------------------- outputs
def test_outputs_shapes_flags_and_reference():
    out = run(driving_sequence(BRIGHT))
    assert out.positive.shape == out.negative.shape == (9, H, W, 3)
    assert out.positive.dtype == np.uint8 and out.positive.any()
    assert len(out.poses) == len(out.negative_poses) == 9 and (out.width, out.height) == (W, H)
    assert not out.lost.any() and not out.padded.any() and not out.transition.any()
    assert out.start_index == 0 and out.start_time == 0.0 and out.align_index == 0
    np.testing.assert_allclose(out.frame_times, np.arange(9) / 16)
    assert (out.reference_pose.width, out.reference_pose.height) == (W, H)
    assert len(out.driving_poses) == 9  # only what can be used is read
    assert not np.array_equal(out.positive, out.negative)
    for p, n in zip(out.poses, out.negative_poses):
        np.testing.assert_array_equal(p.body[1], n.body[1])  # negatives keep the neck
    again = run(driving_sequence(BRIGHT))
    np.testing.assert_array_equal(out.negative, again.negative)
    other = run(driving_sequence(BRIGHT), negative_seed=99)
    assert not np.array_equal(out.negative, other.negative)


def test_canvas_frames_for_float_resizing():
    seq = driving_sequence(BRIGHT)
    out = run(seq, resize_frames=False, num_frames=5)
    assert out.positive.shape == out.negative.shape == (5, 2 * H, 2 * W, 3)
    small = run(seq, num_frames=5)
    np.testing.assert_array_equal(cv2.resize(out.positive[2], (W, H), interpolation=cv2.INTER_CUBIC), small.positive[2])


def test_video_input_with_progress(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "v.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 160, 96, "yuv420p"
        for i in range(20):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((96, 160, 3), 10 * i, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    calls = []
    out = run(str(path), num_frames=5, progress=lambda done, total: calls.append((done, total)))
    assert out.num_frames == 5 and out.video_info.fps == pytest.approx(25) and out.source_fps == pytest.approx(25)
    assert [c[0] for c in calls] == [1, 2, 3, 4, 5] and all(c[1] == 5 for c in calls)
    np.testing.assert_allclose(out.frame_times, [round(k / 16 * 25) / 25 for k in range(5)], atol=1e-3)


# ---------------------------------------------------------------------- start-gap switches
def test_align_switch():
    seq = driving_sequence(BRIGHT)
    off = run(seq, align=False)
    on = run(seq, align=True)
    for k in range(9):
        np.testing.assert_array_equal(off.poses[k].body, seq[k].body)  # untouched coordinates
    ref = on.reference_pose
    np.testing.assert_allclose(on.poses[0].body[1], ref.body[1], atol=1e-12)
    sq = lambda p, i, j: np.linalg.norm((p.body[i] - p.body[j]) * [p.aspect, 1])  # noqa: E731
    assert sq(on.poses[0], 0, 1) == pytest.approx(sq(ref, 0, 1), rel=1e-9)
    assert sq(on.poses[0], 2, 5) == pytest.approx(sq(ref, 2, 5), rel=1e-9)
    assert not np.array_equal(on.positive, off.positive)
    expected = align_poses(ref, seq.poses[:9], 0)
    for a, b in zip(on.poses, expected):
        np.testing.assert_array_equal(a.body, b.body)


def test_align_frame_is_selectable():
    seq = driving_sequence(BRIGHT)
    moved = seq.poses[3].copy()  # the dancer steps aside and leans in frame 3
    moved.body = moved.body * [1.0, 0.9] + [0.1, 0.0]
    moved.hands = moved.hands * [1.0, 0.9] + [0.1, 0.0]
    seq.poses[3] = moved
    out = run(seq, align_frame=3)
    assert out.align_index == 3
    np.testing.assert_allclose(out.poses[3].body[1], out.reference_pose.body[1], atol=1e-12)
    expected = align_poses(out.reference_pose, seq.poses[:9], 3)
    for a, b in zip(out.poses, expected):
        np.testing.assert_array_equal(a.body, b.body)
    assert not np.array_equal(out.positive, run(seq).positive)


@pytest.mark.parametrize("easing", ["linear", "cosine"])
def test_smooth_start_interpolates_from_the_reference_pose(easing):
    seq = driving_sequence(BRIGHT)
    plain = run(seq)
    n = 4
    out = run(seq, smooth_start_frames=n, smooth_start_easing=easing)
    assert out.num_frames == 9
    assert out.transition.tolist() == [True] * n + [False] * 5
    assert np.isnan(out.frame_times[:n]).all() and out.frame_times[n] == 0.0
    ref, first = out.reference_pose, plain.poses[0]
    np.testing.assert_allclose(out.poses[0].body, ref.body, atol=1e-12)
    for k in range(n):
        t = k / n if easing == "linear" else (1 - math.cos(math.pi * k / n)) / 2
        np.testing.assert_allclose(out.poses[k].body, (1 - t) * ref.body + t * first.body, atol=1e-12)
    for k in range(5):  # then the driving clip from its first frame
        np.testing.assert_allclose(out.poses[n + k].body, plain.poses[k].body, atol=1e-12)
    np.testing.assert_array_equal(out.positive[n], plain.positive[0])


def test_auto_start_picks_the_frame_closest_to_the_reference():
    seq = driving_sequence(BRIGHT)  # frame 6 is black: arms down like the reference
    out = run(seq, auto_start=True, search_range=10)
    assert out.start_index == 6 and out.align_index == 6
    assert out.start_time == pytest.approx(6 / 16)
    np.testing.assert_allclose(out.frame_times, (6 + np.arange(9)) / 16)
    np.testing.assert_allclose(out.poses[0].body, out.reference_pose.body, atol=1e-9)  # same posture
    limited = run(seq, auto_start=True, search_range=4)
    assert limited.start_index == 3  # the darkest of the first four frames
    assert run(seq, auto_start=False).start_index == 0


def test_start_gap_switches_combine():
    out = run(driving_sequence(BRIGHT), auto_start=True, search_range=10, smooth_start_frames=2)
    assert out.start_index == 6 and out.transition.sum() == 2 and out.frame_times[2] == pytest.approx(6 / 16)


# ---------------------------------------------------------------------- lost frames, errors
def with_lost(brightness, lost):
    seq = driving_sequence(brightness)
    for i in lost:
        seq.poses[i] = Pose.empty(seq.width, seq.height)
    return seq


def test_lost_frames_are_flagged_and_held():
    seq = with_lost(BRIGHT, [2, 3])
    out = run(seq)
    assert out.lost.tolist() == [False, False, True, True] + [False] * 5
    np.testing.assert_array_equal(out.positive[2], out.positive[1])
    np.testing.assert_array_equal(out.positive[3], out.positive[1])
    blank = run(seq, hold_lost_frames=False)
    assert not blank.positive[2].any() and blank.lost[2]


def test_lost_align_frame_falls_back_to_a_visible_one():
    out = run(with_lost(BRIGHT, [0]), hold_lost_frames=False)
    assert out.align_index == 1 and out.lost[0]


def test_no_person_in_most_driving_frames():
    with pytest.raises(NoPersonInDrivingError, match="no person"):
        run(with_lost(BRIGHT[:10], range(6)), num_frames=None)


def test_no_person_in_reference():
    def nobody(image):
        return Pose.empty(image.shape[1], image.shape[0])

    with pytest.raises(NoPersonInReferenceError, match="no person"):
        run(driving_sequence(BRIGHT), detector=nobody)
    shoulders_hidden = SYNTH(REF_IMAGE)
    shoulders_hidden.subset[1] = -1
    with pytest.raises(NoPersonInReferenceError, match="shoulders"):
        run(driving_sequence(BRIGHT), reference_pose=shoulders_hidden)
    assert issubclass(NoPersonInReferenceError, ValueError)


def test_bad_arguments():
    seq = driving_sequence(BRIGHT)
    with pytest.raises(PoseError, match="4n\\+1"):
        run(seq, num_frames=10)
    with pytest.raises(PoseError, match="smooth_start_frames"):
        run(seq, num_frames=5, smooth_start_frames=5)
    with pytest.raises(PoseError, match="detector"):
        run(seq, detector=None)
    with pytest.raises(PoseError, match="video path or a PoseSequence"):
        run(seq.poses)


# ---------------------------------------------------------------------- people counts
class CrowdDetector:
    """The synthetic pose, with three people "seen" in bright images and one in dark ones."""

    def __init__(self):
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        return PoseDetection(SYNTH(image), 3 if image.mean() > 128 else 1)

    def __call__(self, image):
        return self.detect(image).pose


def test_people_counts_of_the_reference_and_every_driving_frame_read(tmp_path):
    pytest.importorskip("av")
    from steadydancer.video_io import write_mp4

    # 25 fps source, bright on odd frames; the 16 fps resampling reads some of them.
    brightness = [230 if i % 2 else 20 for i in range(20)]
    path = write_mp4(tmp_path / "crowd.mp4", np.stack([np.full((96, 160, 3), b, np.uint8) for b in brightness]), 25)
    detector = CrowdDetector()
    bright_reference = np.full((H, W, 3), 230, np.uint8)
    out = prepare_poses(bright_reference, path, detector=detector, width=W, height=H, num_frames=9)
    read = np.rint(out.driving_poses.frame_times() * 25).astype(int)  # source frame of each pose read
    assert out.reference_people == 3
    assert out.driving_people.tolist() == [3 if i % 2 else 1 for i in read]
    assert 3 in out.driving_people and 1 in out.driving_people
    assert detector.calls == 1 + len(out.driving_poses)  # one detection per image, counted on the way

    # Nothing to count: keypoint input with a given reference pose, or a detector without `detect`.
    keypoints = run(driving_sequence(BRIGHT), detector=None, reference_pose=SYNTH(REF_IMAGE))
    assert keypoints.reference_people is None and keypoints.driving_people is None
    plain = prepare_poses(bright_reference, path, detector=lambda image: SYNTH(image), width=W, height=H, num_frames=5)
    assert plain.reference_people is None and plain.driving_people is None
    assert run(driving_sequence(BRIGHT), detector=CrowdDetector()).reference_people == 1  # dark reference


# ---------------------------------------------------------------------- keypoint input
def test_json_keypoints_drive_without_a_detector(tmp_path):
    seq = driving_sequence(BRIGHT, fps=30.0)
    seq.save(tmp_path / "drive.json")
    ref = SYNTH(REF_IMAGE)
    ref.save(tmp_path / "ref.json")
    out = run(PoseSequence.load(tmp_path / "drive.json"), detector=None,
              reference_pose=Pose.load(tmp_path / "ref.json"), num_frames=5)
    # 30 fps keypoints resampled to 16 fps: nearest frames of k / 16 s
    want = [min(round(k * 30 / 16 - 1e-9), len(BRIGHT) - 1) for k in range(5)]
    np.testing.assert_allclose(out.frame_times, np.array(want) / 30)
    every = run(PoseSequence.load(tmp_path / "drive.json"), detector=None, reference_pose=ref, fps=None,
                num_frames=None)
    assert every.num_frames == 17 and every.padded.sum() == 17 - len(BRIGHT)


def test_padding_short_clips():
    out = run(driving_sequence(BRIGHT[:3]), num_frames=9)
    assert out.padded.tolist() == [False] * 3 + [True] * 6
    np.testing.assert_array_equal(out.positive[8], out.positive[2])


# ---------------------------------------------------------------------- sizing
def test_generation_size_known_values():
    assert generation_size(576, 1024) == (576, 1024)
    assert generation_size(720, 1280, 1280 * 720) == (720, 1280)
    # The released float arithmetic: sqrt(832 * 480 * (480 / 832)) is 479.99999999999994,
    # so an exactly 832x480 reference gets 464 rows, as in the released code.
    assert generation_size(480, 832, 832 * 480) == (464, 832)
    fixture = FIXTURES / "pose_alignment" / "alignment.json"
    if fixture.is_file():  # the released code's size for a 480x720 reference
        data = json.loads(fixture.read_text())
        w0, h0 = data["reference_image_size_wh"]
        assert generation_size(h0, w0)[::-1] == tuple(data["reference_resized_wh_used_by_alignment"])


@settings(max_examples=200, deadline=None)
@given(aspect=st.floats(0.2, 5.0), area=st.sampled_from([1024 * 576, 832 * 480, 1280 * 720]))
def test_generation_size_properties(aspect, area):
    h, w = generation_size_for_aspect(aspect, area)
    assert h % 16 == 0 and w % 16 == 0 and h * w <= area
    # floor to multiples of 16 of the ideal sides sqrt(A r) and sqrt(A / r)
    assert h <= math.sqrt(area * aspect) < h + 16 and w <= math.sqrt(area / aspect) < w + 16


def test_default_size_comes_from_the_reference_aspect():
    ref = np.zeros((720, 480, 3), np.uint8)
    out = prepare_poses(ref, driving_sequence(BRIGHT), detector=SYNTH, num_frames=1)
    assert (out.height, out.width) == generation_size(720, 480)


def test_a_given_reference_pose_is_not_detected_on_the_photo(tmp_path):
    """A reference the detector cannot read: with its pose given, the detector only sees driving frames."""
    from steadydancer.pose import load_reference_pose
    from steadydancer.video_io import write_mp4

    photo = np.full((H, W, 3), 77, np.uint8)  # a grey no frame of the video has
    seen = []

    def blind_on_the_photo(image):
        seen.append(image)
        if np.all(image == 77):
            return Pose.empty(image.shape[1], image.shape[0])
        return SYNTH(image)

    video = write_mp4(tmp_path / "drive.mp4", np.stack([np.full((96, 160, 3), b, np.uint8) for b in BRIGHT]), 16)
    with pytest.raises(NoPersonInReferenceError, match="no person was found in the reference image"):
        prepare_poses(photo, video, detector=blind_on_the_photo, width=W, height=H, num_frames=5)
    given = SYNTH(np.zeros((H // 2, W // 2, 3), np.uint8))  # normalised to a smaller image of the same aspect
    PoseSequence([given], W // 2, H // 2).save(tmp_path / "ref.json")
    seen.clear()
    out = prepare_poses(photo, video, detector=blind_on_the_photo, width=W, height=H, num_frames=5,
                        reference_pose=load_reference_pose(tmp_path / "ref.json"))
    assert len(seen) == len(out.driving_poses) and not any(np.all(image == 77) for image in seen)
    np.testing.assert_array_equal(out.reference_pose.body, given.body)  # the given pose, at the generation size
    assert (out.reference_pose.width, out.reference_pose.height) == (W, H) and out.reference_people is None
