"""DWPose ONNX wrapper: pre/post-processing, thresholds and layout, on small test models.

The test models have the DWPose files' signatures (YOLOX: 1x3x640x640 -> 1x8400x85, or an
end-to-end ``dets``/``labels`` export; RTMPose: 1x3x384x288 -> simcc_x 1x133x576, simcc_y
1x133x768). The RTMPose stand-in really looks at its input: every keypoint's SimCC vectors
are the crop's red-channel column / row maxima, so the decoded location is the brightest
spot of the crop and checks the letterbox, box, affine crop, SimCC decoding and the mapping
back to the image. Its per-keypoint gains set the scores, to test the 0.35 threshold and
the COCO-WholeBody -> OpenPose layout.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from steadydancer.pose import (  # noqa: E402
    KEYPOINT_THRESHOLD,
    DWPoseDetector,
    Pose,
    PoseDetection,
    SyntheticPoseDetector,
    resolve_model_file,
)
from steadydancer.pose.detector import (  # noqa: E402
    DETECTOR_FILE,
    DWPOSE_REPO,
    POSE_FILE,
    crop_transform,
    decode_simcc,
    letterbox,
    resize_for_detection,
)
from steadydancer.pose.errors import DetectorModelError  # noqa: E402

COCO_BODY_NAMES = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
                   "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                   "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]
OPENPOSE_NAMES = ["nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
                  "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
                  "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear"]


# ---------------------------------------------------------------------- test models
def _save(graph, path) -> str:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def _constant_model(path, input_name, input_shape, outputs: dict[str, np.ndarray]) -> str:
    """Outputs fixed tensors (plus 0 x mean(input), so the input stays connected)."""
    nodes = [helper.make_node("ReduceMean", [input_name], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"])]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    outs = []
    for name, value in outputs.items():
        inits.append(numpy_helper.from_array(value, f"{name}_c"))
        if value.dtype == np.float32:
            nodes.append(helper.make_node("Add", [f"{name}_c", "z"], [name]))
            outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
        else:
            nodes.append(helper.make_node("Identity", [f"{name}_c"], [name]))
            outs.append(helper.make_tensor_value_info(name, TensorProto.INT64, list(value.shape)))
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)]
    graph = helper.make_graph(nodes, "const", inputs, outs, inits)
    return _save(graph, path)


# YOLOX raw head design: (level stride, grid x, grid y, dx, dy, w, h, objectness, class, class prob)
PERSON_A = (32, 12, 6, 0.5, 0.25, 200.0, 300.0, 0.9, 0, 0.95)   # score 0.855, the most prominent
PERSON_B = (16, 5, 30, 0.5, 0.5, 60.0, 120.0, 0.8, 0, 0.75)     # score 0.6
PERSON_LOW = (8, 40, 40, 0.5, 0.5, 30.0, 60.0, 0.6, 0, 0.7)     # score 0.42 < 0.5: dropped
CAR = (32, 2, 2, 0.5, 0.5, 100.0, 100.0, 0.99, 3, 0.99)         # not a person: ignored


def _anchor_index(stride, gx, gy):
    offset = {8: 0, 16: 80 * 80, 32: 80 * 80 + 40 * 40}[stride]
    return offset + gy * (640 // stride) + gx


def _design_box(d):
    stride, gx, gy, dx, dy, w, h = d[:7]
    cx, cy = (gx + dx) * stride, (gy + dy) * stride
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def yolox_raw_model(path, designs=(PERSON_A, PERSON_B, PERSON_LOW, CAR)) -> str:
    out = np.zeros((1, 8400, 85), np.float32)
    out[0, :, 2:4] = -5.0  # tiny boxes, zero scores elsewhere
    for stride, gx, gy, dx, dy, w, h, obj, cls, p in designs:
        row = out[0, _anchor_index(stride, gx, gy)]
        row[:4] = [dx, dy, np.log(w / stride), np.log(h / stride)]
        row[4], row[5 + cls] = obj, p
    return _constant_model(path, "images", [1, 3, 640, 640], {"output": out})


def yolox_dets_model(path) -> str:
    boxes = [(_design_box(PERSON_B), 0.6, 0), (_design_box(CAR), 0.98, 3), (_design_box(PERSON_A), 0.855, 0)]
    dets = np.array([[*b, s] for b, s, _ in boxes], np.float32)[None]
    labels = np.array([[lab for _, _, lab in boxes]], np.int64)
    return _constant_model(path, "input", [1, 3, 640, 640], {"dets": dets, "labels": labels})


def default_gains() -> np.ndarray:
    """Per-keypoint scores of the RTMPose stand-in (COCO-WholeBody order)."""
    g = np.zeros(133, np.float32)
    g[:17] = 0.5 + 0.01 * np.arange(17)     # body: each score tells which COCO point it is
    g[13] = 0.3499                          # left knee: just below the threshold
    g[15] = 0.3501                          # left ankle: just above
    g[17:23] = 0.9                          # feet (dropped by the OpenPose layout)
    g[23:91] = 0.2                          # face: missing
    g[91:112] = 0.9                         # left hand: present
    g[112:133] = 0.1                        # right hand: missing
    return g


def rtmpose_probe_model(path, gains=None) -> str:
    """simcc_x[k] = gain_k * colmax / max(colmax) with each column repeated twice (2 bins per
    pixel); simcc_y likewise with row maxima of the red channel."""
    gains = default_gains() if gains is None else gains
    nodes = [
        helper.make_node("Slice", ["input", "s0", "s1", "ax1"], ["red"]),                 # 1x1x384x288
        helper.make_node("ReduceMax", ["red"], ["col"], axes=[2], keepdims=0),          # 1x1x288
        helper.make_node("ReduceMax", ["red"], ["row"], axes=[3], keepdims=0),          # 1x1x384
    ]
    for name, n in (("col", 288), ("row", 384)):
        nodes += [
            helper.make_node("ReduceMax", [name], [f"{name}_max"], axes=[2], keepdims=1),
            helper.make_node("Div", [name, f"{name}_max"], [f"{name}_n"]),
            helper.make_node("Unsqueeze", [f"{name}_n", "ax3"], [f"{name}_u"]),          # 1x1xnx1
            helper.make_node("Concat", [f"{name}_u", f"{name}_u"], [f"{name}_2"], axis=3),  # 1x1xnx2
            helper.make_node("Reshape", [f"{name}_2", f"shape_{name}"], [f"{name}_r"]),   # 1x1x2n
            helper.make_node("Mul", [f"{name}_r", "gains"], ["simcc_x" if name == "col" else "simcc_y"]),
        ]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "s0"),
             numpy_helper.from_array(np.array([1], np.int64), "s1"),
             numpy_helper.from_array(np.array([1], np.int64), "ax1"),
             numpy_helper.from_array(np.array([3], np.int64), "ax3"),
             numpy_helper.from_array(np.array([1, 1, 576], np.int64), "shape_col"),
             numpy_helper.from_array(np.array([1, 1, 768], np.int64), "shape_row"),
             numpy_helper.from_array(gains.reshape(1, 133, 1).astype(np.float32), "gains")]
    graph = helper.make_graph(
        nodes, "rtmpose_probe", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 384, 288])],
        [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, 133, 576]),
         helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, 133, 768])], inits)
    return _save(graph, path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    return {"yolox": yolox_raw_model(d / "yolox.onnx"), "dets": yolox_dets_model(d / "dets.onnx"),
            "empty": yolox_raw_model(d / "empty.onnx", designs=(PERSON_LOW, CAR)),
            "pose": rtmpose_probe_model(d / "pose.onnx")}


def blob_image(width, height, x, y, sigma=4.0) -> np.ndarray:
    """Black RGB image with one white Gaussian spot centred at (x, y) pixels."""
    yy, xx = np.mgrid[0:height, 0:width]
    v = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    img = np.zeros((height, width, 3), np.uint8)
    img[...] = np.rint(255 * v)[..., None].astype(np.uint8)
    return img


# ---------------------------------------------------------------------- pieces
def test_resize_for_detection_short_side_and_multiples_of_64():
    for h, w in ((240, 320), (720, 1280), (1920, 1080), (1024, 1024), (333, 1000)):
        out = resize_for_detection(np.zeros((h, w, 3), np.uint8))
        k = 1024 / min(h, w)
        assert out.shape[0] % 64 == 0 and out.shape[1] % 64 == 0
        assert abs(out.shape[0] - h * k) <= 32 and abs(out.shape[1] - w * k) <= 32
        assert min(out.shape[:2]) == 1024


def test_letterbox_pads_bottom_right_with_114():
    img = np.full((300, 600, 3), 7, np.uint8)
    tensor, r = letterbox(img, (640, 640))
    assert tensor.shape == (1, 3, 640, 640) and tensor.dtype == np.float32
    assert r == pytest.approx(640 / 600)
    assert np.all(tensor[0, :, :320, :] == 7) and np.all(tensor[0, :, 320:, :] == 114)


def test_crop_transform_maps_box_to_crop_with_padding_and_aspect():
    box = np.array([100.0, 50.0, 200.0, 450.0])  # 100 x 400, taller than 288/384
    matrix, centre, scale = crop_transform(box, (288, 384))
    assert np.allclose(centre, [150, 250])
    assert np.allclose(scale, [400 * 1.25 * 0.75, 400 * 1.25])  # height x1.25, width from the aspect
    top_centre = matrix @ np.array([150, 250 - scale[1] / 2, 1])
    assert np.allclose(top_centre, [144, 0])


def test_decode_simcc_argmax_min_score_and_negative():
    sx = np.zeros((3, 576), np.float32)
    sy = np.zeros((3, 768), np.float32)
    sx[0, 101], sy[0, 40] = 0.8, 0.6
    sx[1, 10], sy[1, 20] = 0.9, 0.95
    locs, scores = decode_simcc(sx, sy)
    assert np.allclose(locs[0], [50.5, 20.0]) and scores[0] == pytest.approx(0.6)
    assert np.allclose(locs[1], [5.0, 10.0]) and scores[1] == pytest.approx(0.9)
    assert np.allclose(locs[2], [-0.5, -0.5]) and scores[2] == 0  # not positive -> -1 / split ratio


def test_from_wholebody_threshold_is_at_or_below():
    kp = np.tile([[10.0, 20.0]], (133, 1))
    scores = np.full(133, 0.9)
    scores[0] = KEYPOINT_THRESHOLD          # exactly at the threshold: missing
    scores[5] = 0.31                        # left shoulder: visible for the neck rule (> 0.3) ...
    pose = Pose.from_wholebody(kp, scores, 100, 100)
    assert pose.subset[0] == -1 and np.all(pose.body[0] == -1)
    assert pose.subset[5] == -1             # ... but missing itself (<= 0.35)
    assert pose.subset[1] == 1              # neck visible: both shoulders above 0.3


# ---------------------------------------------------------------------- detection
def test_detect_people_decodes_raw_yolox_and_keeps_persons_only(models):
    det = DWPoseDetector(models["yolox"], models["pose"], device="cpu")
    image = np.zeros((1024, 1344, 3), np.uint8)
    people = det.detect_people(image)
    r = 640 / 1344
    assert len(people) == 2
    assert people[0].score == pytest.approx(0.9 * 0.95, rel=1e-5)
    assert np.allclose(people[0].box, _design_box(PERSON_A) / r, atol=1e-3)
    assert np.allclose(people[1].box, _design_box(PERSON_B) / r, atol=1e-3)


def test_detect_people_end_to_end_dets_export(models):
    det = DWPoseDetector(models["dets"], models["pose"], device="cpu")
    people = det.detect_people(np.zeros((1024, 1344, 3), np.uint8))
    r = 640 / 1344
    assert [round(p.score, 3) for p in people] == [0.855, 0.6]
    assert np.allclose(people[0].box, _design_box(PERSON_A) / r, atol=1e-3)


@pytest.mark.parametrize("yolox", ["yolox", "dets", "empty"])
def test_detector_finds_the_bright_spot_and_converts_layout(models, yolox):
    # 320x240 frame, spot at (200, 100): inside PERSON_A's crop. With the "empty" detector
    # no box passes, so the whole image is the crop (released behaviour).
    det = DWPoseDetector(models[yolox], models["pose"], device="cpu")
    pose = det(blob_image(320, 240, 200.0, 100.0))
    assert (pose.width, pose.height) == (320, 240)
    gains = default_gains()

    expected = np.array([200.0 / 320, 100.0 / 240])
    # One crop pixel is ~0.5 frame pixels for PERSON_A's crop, ~1.4 for the whole frame.
    tol = (0.75 if yolox != "empty" else 1.5) / np.array([320.0, 240.0])
    present = pose.body_present
    assert np.all(np.abs(pose.body[present] - expected) <= tol)

    for j, name in enumerate(OPENPOSE_NAMES):
        if name == "neck":
            assert present[j] and pose.body_scores[j] == 1.0
            continue
        coco = COCO_BODY_NAMES.index(name)
        assert pose.body_scores[j] == pytest.approx(gains[coco], abs=1e-6), name
        assert present[j] == (gains[coco] > KEYPOINT_THRESHOLD), name
    assert not present[OPENPOSE_NAMES.index("left_knee")]
    assert present[OPENPOSE_NAMES.index("left_ankle")]
    assert np.all(pose.body[~present] == -1)

    assert pose.hands_present[0].all() and not pose.hands_present[1].any()  # [left, right]
    assert np.all(np.abs(pose.hands[0] - expected) <= tol)
    assert not pose.face_present.any() and np.all(pose.face == -1)


def test_keypoints_come_from_the_most_prominent_box(models):
    # A spot outside PERSON_A's crop (which spans about x 130..270, y 6..191 of this frame)
    # is invisible to the pose model when A's box is used, but found on the whole frame.
    image = blob_image(320, 240, 40.0, 220.0)
    spot = np.array([40.0 / 320, 220.0 / 240])
    boxed = DWPoseDetector(models["yolox"], models["pose"], device="cpu")(image)
    whole = DWPoseDetector(models["empty"], models["pose"], device="cpu")(image)
    assert np.all(np.abs(whole.body[whole.body_present] - spot) <= 1.5 / np.array([320.0, 240.0]))
    far = np.abs(boxed.body[boxed.body_present] - spot) * np.array([320.0, 240.0])
    assert np.all(far.max(axis=-1) > 20)


@pytest.mark.parametrize("yolox, people", [("yolox", 2), ("dets", 2), ("one", 1), ("empty", 0)])
def test_detect_reports_how_many_people_it_found(models, tmp_path, yolox, people):
    path = yolox_raw_model(tmp_path / "one.onnx", designs=(PERSON_A, PERSON_LOW)) if yolox == "one" else models[yolox]
    det = DWPoseDetector(path, models["pose"], device="cpu")
    image = blob_image(320, 240, 200.0, 100.0)
    found = det.detect(image)
    assert isinstance(found, PoseDetection) and found.num_people == people
    # `__call__` is the same detection, pose only; with no box the whole image still gives a pose.
    np.testing.assert_array_equal(found.pose.body, det(image).body)
    assert not found.pose.is_empty


def test_synthetic_detector_reports_its_one_fake_person():
    image = np.full((96, 64, 3), 120, np.uint8)
    found = SyntheticPoseDetector(animate=True).detect(image)
    assert found.num_people == 1
    np.testing.assert_array_equal(found.pose.body, SyntheticPoseDetector(animate=True)(image).body)


def test_bad_detector_signature_is_a_clear_error(tmp_path, models):
    bad = _constant_model(tmp_path / "bad.onnx", "images", [1, 3, 640, 640],
                          {"output": np.zeros((1, 10, 3), np.float32)})
    det = DWPoseDetector(bad, models["pose"], device="cpu")
    with pytest.raises(DetectorModelError, match="unexpected detector output"):
        det(np.zeros((64, 64, 3), np.uint8))


def test_model_files_local_path_and_offline_errors(tmp_path, models):
    assert resolve_model_file(models["pose"], POSE_FILE) == models["pose"]
    with pytest.raises(DetectorModelError, match="not found"):
        resolve_model_file(str(tmp_path / "missing" / "x.onnx"), POSE_FILE)
    with pytest.raises(DetectorModelError, match="yolox_l.onnx"):
        resolve_model_file(None, DETECTOR_FILE, cache_dir=tmp_path / "cache", local_files_only=True)
    with pytest.raises(DetectorModelError, match="no CUDA provider|CUDA"):
        import onnxruntime as ort
        if "CUDAExecutionProvider" in ort.get_available_providers():
            pytest.skip("CUDA available here")
        DWPoseDetector(models["yolox"], models["pose"], device="cuda")


# ---------------------------------------------------------------------- the real files
def _real_files():
    """The DWPose files from $DWPOSE_DIR or the HF cache, without any download."""
    d = os.environ.get("DWPOSE_DIR")
    if d and all(os.path.isfile(os.path.join(d, f)) for f in (DETECTOR_FILE, POSE_FILE)):
        return os.path.join(d, DETECTOR_FILE), os.path.join(d, POSE_FILE)
    try:
        return tuple(resolve_model_file(None, f, local_files_only=True) for f in (DETECTOR_FILE, POSE_FILE))
    except DetectorModelError:
        return None


def test_real_dwpose_files_signature_and_run():
    files = _real_files()
    if files is None:
        pytest.skip(f"DWPose ONNX files not available (set DWPOSE_DIR or cache {DWPOSE_REPO})")
    det = DWPoseDetector(*files, device="cpu")
    assert det.det_input_hw == (640, 640) and det.pose_input_wh == (288, 384)
    shapes = [tuple(o.shape) for o in det.pose_session.get_outputs()]
    assert shapes[0][1:] == (133, 576) and shapes[1][1:] == (133, 768)
    pose = det(np.zeros((360, 640, 3), np.uint8))  # nobody there
    assert isinstance(pose, Pose) and pose.body_present.sum() <= 2


def test_dwpose_downloads_are_pinned_to_a_commit_unless_told_otherwise(monkeypatch):
    """The DWPose repo loads at its pinned commit by default; an explicit revision wins; another repo (a mirror) is
    not given DWPose's commit."""
    import re

    import huggingface_hub

    from steadydancer.defaults import DWPOSE
    from steadydancer.pose.detector import resolve_model_file

    asked = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo_id, name, revision=None, **kw: asked.append((repo_id, revision)) or "/x")
    resolve_model_file(None, "yolox_l.onnx")
    resolve_model_file(None, "yolox_l.onnx", revision="v2")
    resolve_model_file(None, "yolox_l.onnx", repo_id="someone/dwpose-mirror")
    assert re.fullmatch(r"[0-9a-f]{40}", DWPOSE.revision)  # a commit, not a branch
    assert asked == [(DWPOSE.repo_id, DWPOSE.revision), (DWPOSE.repo_id, "v2"), ("someone/dwpose-mirror", None)]
