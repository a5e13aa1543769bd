"""Person tracking through a video (PoseTracker) and the ONNX Runtime provider choice.

No DWPose weights here, so both models are numpy stand-ins plugged in where DWPoseDetector
opens its ONNX Runtime sessions; everything around them (resize, letterbox, YOLOX and SimCC
decoding, the affine crop and its inverse, the OpenPose layout) is the real code. The clip
shows a synthetic dancer that walks, bobs, grows and shrinks and swings its arms and a leg:
a blue silhouette (the "person" the detector stand-in boxes) with one small Gaussian marker
per COCO body and foot keypoint, told apart by its red / green ratio, which neither the
black background, the blue silhouette nor bilinear resampling changes. The pose stand-in
finds each marker in the crop it is given (weighted centroid), so a crop that misses part
of the person misses those keypoints, exactly what tracking must avoid.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from steadydancer.pose import DWPoseDetector, Pose, PoseDetection, PoseTracker, WholeBody  # noqa: E402
from steadydancer.pose import detector as detector_module  # noqa: E402
from steadydancer.pose.detector import POSE_MEAN, POSE_STD, crop_transform, default_providers  # noqa: E402
from steadydancer.pose.errors import DetectorModelError  # noqa: E402

SIZE = 1024          # frame side: the detection size itself, so per-frame detection does not resample
FRAMES = 48          # 3 s at 16 fps
SIGMA = 2.5          # marker radius (pixels)
N_MARKERS = 23       # COCO-WholeBody 0..22: body and feet
RATIOS = 0.1 + 0.85 * np.arange(N_MARKERS) / (N_MARKERS - 1)   # red / green of each marker
RATIO_BAND = 0.012   # half-width of a marker's ratio band in the stand-in (markers are 0.039 apart)
TOLERANCE = 0.0025   # tracked vs per-frame keypoints: 0.25 % of the frame side (2.6 px at 1024, where the
                     # person is 440-600 px tall); SimCC bins are ~1.1 px here, so two methods differ by ~1.5

# COCO order; x from the body's centre line, y from the head top, in person heights (the person
# faces the camera: its left is on the image's right).
TEMPLATE = np.array([
    [0.0, 0.075], [0.025, 0.055], [-0.025, 0.055], [0.06, 0.065], [-0.06, 0.065],   # nose, eyes, ears
    [0.11, 0.18], [-0.11, 0.18], [0.14, 0.33], [-0.14, 0.33], [0.15, 0.46], [-0.15, 0.46],  # arms
    [0.07, 0.52], [-0.07, 0.52], [0.075, 0.73], [-0.075, 0.73], [0.08, 0.93], [-0.08, 0.93],  # legs
    [0.11, 0.985], [0.14, 0.975], [0.075, 0.96], [-0.11, 0.985], [-0.14, 0.975], [-0.075, 0.96],  # feet
])
LIMBS = [(5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16), (15, 17), (15, 18),
         (16, 20), (16, 21), (5, 6), (11, 12)]


def _rotate(points, centre, angle):
    c, s = math.cos(angle), math.sin(angle)
    d = points - centre
    return centre + d @ np.array([[c, s], [-s, c]])


def dancer(t: int, period: int = FRAMES) -> tuple[np.ndarray, float, np.ndarray]:
    """Frame t's 23 keypoints (pixels), person height and head-top point."""
    phase = 2 * math.pi * t / period
    height = 520 + 80 * math.sin(phase + 1.0)
    centre_x = 512 + 200 * math.sin(phase)              # up to 26 px a frame sideways
    top = 990 - 0.985 * height - 15 * (1 + math.sin(2 * phase)) / 2
    points = TEMPLATE * height + np.array([centre_x, top])
    arm = 1.1 * (1 - math.cos(3 * phase)) / 2           # arms out, up to 63 degrees
    points[[7, 9]] = _rotate(points[[7, 9]], points[5], -arm)
    points[[8, 10]] = _rotate(points[[8, 10]], points[6], arm)
    leg = 0.6 * max(0.0, math.sin(2 * phase))           # left leg kicks sideways
    points[[13, 15, 17, 18, 19]] = _rotate(points[[13, 15, 17, 18, 19]], points[11], -leg)
    return points, height, np.array([centre_x, top])


def draw(points: np.ndarray, height: float, head_top: np.ndarray) -> np.ndarray:
    """RGB frame: blue silhouette (B) under the markers (R = ratio x G)."""
    import cv2

    blue = np.zeros((SIZE, SIZE), np.uint8)
    thick = max(2, int(0.05 * height))
    for a, b in LIMBS:
        cv2.line(blue, tuple(int(v) for v in points[a]), tuple(int(v) for v in points[b]), 255, thick)
    cv2.fillConvexPoly(blue, points[[5, 6, 12, 11]].astype(np.int32), 255)
    head = head_top + np.array([0.0, 0.065 * height])
    cv2.circle(blue, tuple(int(v) for v in head), int(0.065 * height), 255, -1)

    green = np.zeros((SIZE, SIZE), np.float64)
    red = np.zeros((SIZE, SIZE), np.float64)
    r = int(4 * SIGMA) + 1
    for k, (x, y) in enumerate(points):
        x0, y0 = int(round(x)), int(round(y))
        ys, xs = np.mgrid[max(y0 - r, 0):max(min(y0 + r + 1, SIZE), 0), max(x0 - r, 0):max(min(x0 + r + 1, SIZE), 0)]
        g = 255 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * SIGMA ** 2))
        patch = green[ys, xs]
        win = g > patch                                    # the nearest marker owns the pixel
        green[ys[win], xs[win]] = g[win]
        red[ys[win], xs[win]] = RATIOS[k] * g[win]
    return np.stack([np.rint(red), np.rint(green), blue], -1).astype(np.uint8)


def clip(frames=FRAMES, absent=(), cut=None):
    """Frames and true keypoints (None where absent); from frame ``cut`` on, the scene is mirrored."""
    images, truths = [], []
    for t in range(frames):
        if t in absent:
            images.append(np.zeros((SIZE, SIZE, 3), np.uint8))
            truths.append(None)
            continue
        points, height, top = dancer(t)
        if cut is not None and t >= cut:
            points, top = points * [-1, 1] + [SIZE, 0], top * [-1, 1] + [SIZE, 0]
        images.append(draw(points, height, top))
        truths.append(points)
    return images, truths


# ---------------------------------------------------------------------- model stand-ins
class _Arg:
    def __init__(self, name, shape):
        self.name, self.shape = name, shape


class PersonBoxSession:
    """YOLOX stand-in: one person box around the silhouette and markers (end-to-end dets/labels export)."""

    def __init__(self):
        self.calls = 0

    def get_inputs(self):
        return [_Arg("images", [1, 3, 640, 640])]

    def get_outputs(self):
        return [_Arg("dets", [1, 1, 5]), _Arg("labels", [1, 1])]

    def get_providers(self):
        return ["CPUExecutionProvider"]

    def run(self, _, feeds):
        self.calls += 1
        b, g = feeds["images"][0][0], feeds["images"][0][1]           # BGR; the letterbox pads with 114
        ys, xs = np.nonzero((b > 200) | ((g > 150) & (b < 50)))
        if len(xs) == 0:
            return [np.zeros((1, 1, 5), np.float32), np.zeros((1, 1), np.int64)]
        box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 0.9]
        return [np.array([[box]], np.float32), np.zeros((1, 1), np.int64)]


class MarkerPoseSession:
    """RTMPose stand-in: each marker's weighted centroid in the crop, as one-hot SimCC vectors."""

    def __init__(self):
        self.calls = 0

    def get_inputs(self):
        return [_Arg("input", [1, 3, 384, 288])]

    def get_outputs(self):
        return [_Arg("simcc_x", [1, 133, 576]), _Arg("simcc_y", [1, 133, 768])]

    def get_providers(self):
        return ["CPUExecutionProvider"]

    def run(self, _, feeds):
        self.calls += 1
        x = feeds["input"][0]
        red = x[0] * POSE_STD[0] + POSE_MEAN[0]
        green = x[1] * POSE_STD[1] + POSE_MEAN[1]
        ratio = red / np.maximum(green, 1.0)
        simcc_x, simcc_y = np.zeros((1, 133, 576), np.float32), np.zeros((1, 133, 768), np.float32)
        ok = green > 100                     # uint8 rounding leaves the ratio exact enough only there
        for k in range(N_MARKERS):
            sim = np.where(ok, np.clip(1 - np.abs(ratio - RATIOS[k]) / RATIO_BAND, 0, 1) * green / 255, 0.0)
            peak = sim.max()
            if peak < 0.2:
                continue
            w = np.where(sim > peak / 2, sim, 0.0)
            ys, xs = np.mgrid[:384, :288]
            cx, cy = (w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()
            simcc_x[0, k, int(round(cx * 2))] = simcc_y[0, k, int(round(cy * 2))] = peak
        return [simcc_x, simcc_y]


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    """A DWPoseDetector on the stand-ins; returns (detector, person-box session, pose session)."""
    det_file, pose_file = tmp_path / "yolox_l.onnx", tmp_path / "dw-ll_ucoco_384.onnx"
    det_file.write_bytes(b"")
    pose_file.write_bytes(b"")
    sessions = {str(det_file): PersonBoxSession(), str(pose_file): MarkerPoseSession()}
    monkeypatch.setattr(detector_module, "_session", lambda path, providers, threads: sessions[path])
    det = DWPoseDetector(str(det_file), str(pose_file), device="cpu")
    return det, sessions[str(det_file)], sessions[str(pose_file)]


def _pixels(pose: Pose) -> np.ndarray:
    """(18, 2) body points in pixels, NaN where missing."""
    out = pose.body * np.array([pose.width, pose.height])
    out[~pose.body_present] = np.nan
    return out


def _run(detector, images):
    return [detector.detect(im) for im in images]


# ---------------------------------------------------------------------- tracking
def test_stand_in_finds_the_dancer(stand_in):
    # The stand-ins themselves: per-frame detection recovers every keypoint within 1.5 px (a SimCC bin is ~1.1 px).
    det, _, _ = stand_in
    images, truths = clip(frames=6)
    for image, truth in zip(images, truths):
        found = det.detect_wholebody(image)
        assert found.num_people == 1
        assert np.all(found.scores[:N_MARKERS] > 0.35) and np.all(found.scores[N_MARKERS:] == 0)
        assert np.abs(found.keypoints[:N_MARKERS] - truth).max() < 1.5


def test_tracking_matches_per_frame_detection_with_one_detection_in_eight(stand_in):
    det, boxes, poses = stand_in
    images, truths = clip()
    every_frame = _run(det, images)
    assert boxes.calls == FRAMES

    boxes.calls = poses.calls = 0
    tracker = det.tracker()
    tracked = _run(tracker, images)
    # The detector ran on frames 0, 8, 16, ...; the pose model once a frame; no track was lost.
    assert tracker.redetect_every == 8 and tracker.detector_runs == boxes.calls == FRAMES // 8
    assert poses.calls == FRAMES and tracker.lost == 0
    assert [d.tracked for d in tracked] == [t % 8 != 0 for t in range(FRAMES)]
    assert all(d.num_people == 1 for d in tracked)

    for t, (a, b, truth) in enumerate(zip(tracked, every_frame, truths)):
        np.testing.assert_array_equal(a.pose.body_present, b.pose.body_present)
        assert a.pose.body_present.sum() == 18
        diff = np.abs(_pixels(a.pose) - _pixels(b.pose))
        assert np.nanmax(diff) <= TOLERANCE * SIZE, t   # measured at most 1.55 px
        coco = [0, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]  # OpenPose order without the neck
        openpose = [0] + list(range(2, 18))
        assert np.abs(_pixels(a.pose)[openpose] - truth[coco]).max() < 1.5, t

    # Every tracked crop held the whole person: all 23 markers and the silhouette (head top to toes).
    tracker.reset()
    for t, image in enumerate(images):
        tracker.detect(image)
        _, centre, scale = crop_transform(tracker.box, det.pose_input_wh)
        low, high = centre - scale / 2, centre + scale / 2
        ys, xs = np.nonzero(image[..., 2] > 200)
        person = np.array([[xs.min(), ys.min()], [xs.max(), ys.max()]])
        assert np.all(person[0] >= low) and np.all(person[1] <= high), t
        assert np.all(truths[t] >= low) and np.all(truths[t] <= high), t


@pytest.mark.parametrize("every", [1, 4, 16])
def test_redetect_every_sets_the_detector_rate(stand_in, every):
    det, boxes, _ = stand_in
    images, _ = clip(frames=17)
    tracker = PoseTracker(det, redetect_every=every)
    out = _run(tracker, images)
    assert tracker.detector_runs == boxes.calls == math.ceil(17 / every) and tracker.lost == 0
    if every == 1:  # the released behaviour, bit for bit
        for a, image in zip(out, images):
            b = det.detect(image)
            assert not a.tracked and a.num_people == b.num_people
            np.testing.assert_array_equal(a.pose.body, b.pose.body)
            np.testing.assert_array_equal(a.pose.body_scores, b.pose.body_scores)


def test_lost_person_is_detected_again_on_the_same_frame(stand_in):
    # Frames 4-7: nobody. Frame 14: a cut to the mirrored scene, the dancer jumps from x ~ 700 to ~ 320,
    # outside the tracked crop.
    det, boxes, _ = stand_in
    images, truths = clip(frames=32, absent=range(4, 8), cut=14)
    every_frame = _run(det, images)
    boxes.calls = 0
    tracker = det.tracker()
    out, runs = [], []
    for image in images:
        out.append(tracker.detect(image))
        runs.append(tracker.detector_runs)
    # Detected: 0; 4, lost, and every empty frame after it (nobody to follow, as released); 8, the dancer
    # back; 14, lost at the cut and detected at once; then 22 and 30, every 8 frames again.
    assert np.flatnonzero(np.diff([0] + runs)).tolist() == [0, 4, 5, 6, 7, 8, 14, 22, 30]
    assert tracker.lost == 2 and boxes.calls == 9
    assert [d.num_people for d in out[4:8]] == [0] * 4 and not any(d.tracked for d in out[4:9])
    for t, (a, b) in enumerate(zip(out, every_frame)):
        np.testing.assert_array_equal(a.pose.body_present, b.pose.body_present)
        if truths[t] is None:
            assert a.pose.is_empty
        else:
            assert np.nanmax(np.abs(_pixels(a.pose) - _pixels(b.pose))) <= TOLERANCE * SIZE, t


@pytest.mark.parametrize("size", [(512, 512), (1536, 1536)])
def test_tracking_on_smaller_and_larger_frames(stand_in, size):
    # Smaller than the detection size: tracked crops come straight from the frame (no upsampling);
    # larger: from the released downscale. Both agree with per-frame detection.
    import cv2

    det, boxes, _ = stand_in
    images, _ = clip(frames=9)
    images = [cv2.resize(im, size, interpolation=cv2.INTER_AREA if size[0] < SIZE else cv2.INTER_CUBIC)
              for im in images]
    every_frame = _run(det, images)
    boxes.calls = 0
    tracker = det.tracker()
    out = _run(tracker, images)
    assert tracker.detector_runs == boxes.calls == 2 and tracker.lost == 0
    for a, b in zip(out, every_frame):
        np.testing.assert_array_equal(a.pose.body_present, b.pose.body_present)
        assert np.nanmax(np.abs(_pixels(a.pose) - _pixels(b.pose))) <= TOLERANCE * size[0]


def test_box_from_keypoints_rules(stand_in):
    det, _, _ = stand_in
    tracker = PoseTracker(det, margin=1.2, min_keypoints=6, min_box_size=0.05)
    keypoints = np.zeros((133, 2))
    scores = np.zeros(133)
    keypoints[:6] = [[100, 100], [200, 100], [150, 300], [120, 200], [180, 200], [150, 150]]
    scores[:5] = 0.9
    keypoints[100] = [260, 320]   # a confident hand point widens the box but is not a body point
    scores[100] = 0.8
    keypoints[50] = [900, 900]    # a face point at the threshold does not count
    scores[50] = det.keypoint_threshold
    assert tracker.box_from_keypoints(keypoints, scores, 640, 480) is None  # 5 body points: lost
    scores[5] = 0.5
    box = tracker.box_from_keypoints(keypoints, scores, 640, 480)
    # bbox (100, 100)-(260, 320), centre (180, 210), half (80, 110) x 1.2
    np.testing.assert_allclose(box, [180 - 96, 210 - 132, 180 + 96, 210 + 132])
    # Clipped to the image; a box too small to hold a person is degenerate.
    np.testing.assert_allclose(tracker.box_from_keypoints(keypoints - [150, 0], scores, 640, 480),
                               [0, 210 - 132, 180 - 150 + 96, 210 + 132])
    tiny = keypoints.copy()
    tiny[scores > 0.35] = [300, 300] + 0.01 * tiny[scores > 0.35]   # 2.2 x 2.2 px: below 5 % of 480
    assert tracker.box_from_keypoints(tiny, scores, 640, 480) is None
    with pytest.raises(ValueError):
        PoseTracker(det, redetect_every=0)


def test_prepare_poses_tracks_video_frames_only(tmp_path):
    av = pytest.importorskip("av")
    from steadydancer.pose import SyntheticPoseDetector, prepare_poses

    path = tmp_path / "v.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=16)
        s.width, s.height, s.pix_fmt = 160, 96, "yuv420p"
        for i in range(9):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((96, 160, 3), 20 * i, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)

    synth = SyntheticPoseDetector(animate=True)

    class Tracked:
        """Counts which images go to the detector itself and which to its per-video tracker."""

        def __init__(self):
            self.direct, self.trackers, self.tracked = 0, 0, 0

        def detect(self, image):
            self.direct += 1
            return synth.detect(image)

        def tracker(self):
            self.trackers += 1
            outer = self

            class _Tracker:
                def detect(self, image):
                    outer.tracked += 1
                    return PoseDetection(synth(image), 3, tracked=True)

            return _Tracker()

    det = Tracked()
    out = prepare_poses(np.zeros((192, 128, 3), np.uint8), str(path), detector=det, width=128, height=192,
                        num_frames=5)
    assert (det.direct, det.trackers, det.tracked) == (1, 1, 5)   # reference direct, the video tracked
    assert out.reference_people == 1 and out.driving_people.tolist() == [3] * 5


# ---------------------------------------------------------------------- providers
class _ProviderSession(PersonBoxSession):
    def __init__(self, providers):
        super().__init__()
        self.providers = providers

    def get_providers(self):
        return self.providers


@pytest.fixture
def fake_ort(monkeypatch, tmp_path):
    """onnxruntime with a mocked provider list and sessions; `state` sets what CUDA does."""
    import onnxruntime as ort

    state = {"available": ["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda": "works", "created": []}

    def session(path, sess_options=None, providers=None, **kwargs):
        state["created"].append((list(providers), kwargs.get("enable_fallback")))
        if "CUDAExecutionProvider" in providers and state["cuda"] == "raises":
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
        if "CUDAExecutionProvider" in providers and state["cuda"] == "dropped":  # libraries did not load
            providers = [p for p in providers if p != "CUDAExecutionProvider"]
        s = _ProviderSession(list(providers))
        s.get_inputs = (lambda shape: lambda: [_Arg("x", shape)])(
            [1, 3, 384, 288] if "pose" in str(path) else [1, 3, 640, 640])
        return s

    monkeypatch.setattr(ort, "get_available_providers", lambda: list(state["available"]))
    monkeypatch.setattr(ort, "InferenceSession", session)
    files = []
    for name in ("det.onnx", "pose.onnx"):
        (tmp_path / name).write_bytes(b"")
        files.append(str(tmp_path / name))
    return state, files


def test_default_providers_prefer_cuda_when_onnxruntime_has_it(fake_ort):
    state, _ = fake_ort
    assert default_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert default_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert default_providers("cpu") == ["CPUExecutionProvider"]
    state["available"] = ["AzureExecutionProvider", "CPUExecutionProvider"]   # the CPU build
    assert default_providers() == ["CPUExecutionProvider"]
    with pytest.raises(DetectorModelError, match="onnxruntime-gpu"):
        default_providers("cuda")
    with pytest.raises(DetectorModelError, match="device"):
        default_providers("gpu")


@pytest.mark.parametrize("cuda", ["works", "raises", "dropped"])
def test_sessions_run_on_cuda_or_fall_back_to_the_cpu(fake_ort, cuda, caplog):
    state, files = fake_ort
    state["cuda"] = cuda
    det = DWPoseDetector(*files)
    if cuda == "works":
        assert det.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
        assert len(state["created"]) == 2
    else:
        assert det.providers == ["CPUExecutionProvider"]
        with pytest.raises(DetectorModelError, match="CUDA"):
            DWPoseDetector(*files, device="cuda")
    if cuda == "raises":  # retried on the CPU by us, quietly (ONNX Runtime's own printed fallback is off)
        assert state["created"][:2] == [(["CUDAExecutionProvider", "CPUExecutionProvider"], 0),
                                        (["CPUExecutionProvider"], 0)]
        assert "running it on the CPU" in caplog.text
    assert all(fallback == 0 for _, fallback in state["created"])


def test_to_moves_the_sessions(fake_ort):
    # ZeroGPU: built on the CPU at start-up, moved to CUDA inside the GPU call.
    state, files = fake_ort
    det = DWPoseDetector(*files, device="cpu")
    assert det.providers == ["CPUExecutionProvider"] and len(state["created"]) == 2
    assert det.to("cuda") is det and det.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert det.to(None).providers[0] == "CUDAExecutionProvider" and len(state["created"]) == 4  # unchanged
    assert det.to("cpu").providers == ["CPUExecutionProvider"]
    state["cuda"] = "raises"
    with pytest.raises(DetectorModelError, match="CUDA"):
        det.to("cuda")
    assert det.providers == ["CPUExecutionProvider"]  # still usable where it was


def test_wholebody_box_is_the_posed_box(stand_in):
    det, _, _ = stand_in
    image = clip(frames=1)[0][0]
    found = det.detect_wholebody(image)
    assert isinstance(found, WholeBody) and found.num_people == 1
    ys, xs = np.nonzero(image[..., 2] > 200)
    # The person box (letterbox pixels, scaled back) holds the silhouette to within a letterbox pixel.
    assert found.box[0] <= xs.min() + 2 and found.box[2] >= xs.max() - 2
    again = det.detect_wholebody(image, found.box)
    assert again.num_people is None
    np.testing.assert_allclose(again.keypoints[:N_MARKERS], found.keypoints[:N_MARKERS], atol=1e-9)
