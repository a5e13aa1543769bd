"""Whole-body DWPose detection through ONNX Runtime.

Two ONNX models from the Hub repo ``yzd-v/DWPose``: YOLOX-L (``yolox_l.onnx``, person
boxes, 1x3x640x640 letterboxed input) and DWPose's RTMPose-L (``dw-ll_ucoco_384.onnx``,
133 COCO-WholeBody keypoints from a 1x3x384x288 crop, decoded from SimCC vectors
``simcc_x`` 1x133x576 and ``simcc_y`` 1x133x768). As in the released preprocessing, each
image is first resized so its short side is 1024 (sides rounded to multiples of 64), only
the most prominent person (highest detector score) is kept, the whole image is used as the
box when no person is detected, and keypoints scoring at or below 0.35 are missing. In a
video, :meth:`DWPoseDetector.tracker` follows the person from frame to frame and runs YOLOX
only every few frames (see :mod:`steadydancer.pose.tracking`).

Why our own thin wrapper rather than rtmlib or controlnet_aux: the pre- and post-processing
is ~200 lines of numpy + OpenCV that we want to own exactly (the released thresholds and
resize rule, the OpenPose layout with the neck, one person only), the models must come from
the Hub files through ``hf_hub_download`` (cache, ``HF_HUB_OFFLINE``, local paths) rather
than a library's own download URLs, and neither library is needed for anything else: rtmlib
pulls the GUI build of OpenCV next to our headless one and controlnet_aux pulls torch-side
annotators, while mmcv/mmpose/mmdet are exactly the install pain this avoids. ONNX Runtime
runs the models on CUDA when its GPU build (``onnxruntime-gpu``) and a GPU are present,
otherwise on the CPU; :meth:`DWPoseDetector.to` moves them, e.g. into a ZeroGPU call.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from .detection import REDETECT_EVERY, PoseDetection
from .errors import DetectorModelError
from .image import ImageLike, load_image
from ..defaults import DWPOSE
from .keypoints import KEYPOINT_THRESHOLD, NUM_WHOLEBODY, Pose
from .tracking import PoseTracker

DWPOSE_REPO = DWPOSE.repo_id
DETECTOR_FILE = "yolox_l.onnx"
POSE_FILE = "dw-ll_ucoco_384.onnx"

DETECT_RESOLUTION = 1024         # short side of the image the models see (released)
DET_SCORE_THRESHOLD = 0.5        # person boxes kept above this score (released mmpose demo rule)
DET_NMS_IOU = 0.7
YOLOX_PAD_VALUE = 114
YOLOX_STRIDES = (8, 16, 32)
PERSON_CLASS = 0
BBOX_PADDING = 1.25              # the crop is the box enlarged by this factor
SIMCC_SPLIT_RATIO = 2.0          # SimCC bins per input pixel
POSE_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)  # RGB
POSE_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------- model files
def resolve_model_file(path_or_name: str | os.PathLike | None, default_name: str, *,
                       repo_id: str = DWPOSE_REPO, cache_dir: str | os.PathLike | None = None,
                       revision: str | None = None, local_files_only: bool = False) -> str:
    """Returns a local path to a DWPose ONNX file.

    ``path_or_name`` may be an existing file, or a file name inside ``repo_id`` (default
    ``default_name``) fetched with ``huggingface_hub.hf_hub_download``, which uses the HF
    cache and honours ``HF_HUB_OFFLINE``.
    """
    if path_or_name is not None and os.path.isfile(path_or_name):
        return os.fspath(path_or_name)
    name = os.fspath(path_or_name) if path_or_name is not None else default_name
    if os.sep in name or (os.altsep and os.altsep in name):
        raise DetectorModelError(f"DWPose model file not found: {name}")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - huggingface_hub is a project dependency
        raise DetectorModelError("huggingface_hub is needed to download the DWPose models") from None
    try:
        return hf_hub_download(repo_id, name, revision=DWPOSE.revision_for(repo_id, revision), cache_dir=cache_dir,
                               local_files_only=local_files_only)
    except Exception as e:  # offline, missing file, network: one clear message
        raise DetectorModelError(
            f"cannot get {name} from the Hub repo {repo_id} ({type(e).__name__}: {e}). "
            "Download it once with network access (it is then cached), or pass a local path."
        ) from None


def default_providers(device: str | None = None) -> list[str]:
    """ONNX Runtime providers: CUDA first when onnxruntime has it (and not ``device='cpu'``).

    ``onnxruntime.get_available_providers()`` lists what the installed build supports, not
    whether a GPU is usable (``onnxruntime-gpu`` lists CUDA on a machine without one), so the
    sessions check what they really got and fall back to the CPU (see :class:`DWPoseDetector`).
    """
    import onnxruntime as ort

    if device not in (None, "cpu", "cuda"):
        raise DetectorModelError(f"device must be None, 'cpu' or 'cuda', got {device!r}")
    if device == "cpu":
        return [CPU_PROVIDER]
    if CUDA_PROVIDER in ort.get_available_providers():
        return [CUDA_PROVIDER, CPU_PROVIDER]
    if device == "cuda":
        raise DetectorModelError("device='cuda' asked for but onnxruntime has no CUDA provider "
                                 "(install onnxruntime-gpu)")
    return [CPU_PROVIDER]


def _session(path: str, providers: Sequence[str], threads: int | None):
    """An InferenceSession on ``providers``; when a GPU provider cannot start (no GPU, missing CUDA
    libraries), the same model on the CPU, with a log line rather than ONNX Runtime's printed banner."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    providers = list(providers)
    try:
        return ort.InferenceSession(path, sess_options=options, providers=providers, enable_fallback=0)
    except Exception as e:
        if CPU_PROVIDER in providers and providers != [CPU_PROVIDER]:
            logger.warning("DWPose: %s could not start %s (%s: %s); running it on the CPU",
                           os.path.basename(path), providers[0], type(e).__name__, e)
            return _session(path, [CPU_PROVIDER], threads)
        raise DetectorModelError(f"cannot load the ONNX model {path} ({type(e).__name__}: {e})") from None


def _static_hw(shape: Sequence, default: tuple[int, int]) -> tuple[int, int]:
    h, w = (shape[2], shape[3]) if len(shape) == 4 else (None, None)
    return (h if isinstance(h, int) and h > 0 else default[0], w if isinstance(w, int) and w > 0 else default[1])


# ---------------------------------------------------------------------- geometry helpers
def resize_for_detection(image: np.ndarray, resolution: int = DETECT_RESOLUTION) -> np.ndarray:
    """Released rule: short side to ``resolution``, both sides rounded to multiples of 64."""
    h, w = image.shape[:2]
    k = float(resolution) / min(h, w)
    new_h = max(64, int(np.round(h * k / 64.0)) * 64)
    new_w = max(64, int(np.round(w * k / 64.0)) * 64)
    if (new_h, new_w) == (h, w):
        return image
    interpolation = cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA  # released: INTER_CUBIC when enlarging
    return cv2.resize(image, (new_w, new_h), interpolation=interpolation)


def letterbox(image_bgr: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """YOLOX input: keep aspect, resize to fit ``size`` (h, w), pad bottom/right with 114.

    Returns (1, 3, h, w) float32 (BGR, 0..255) and the resize ratio.
    """
    h, w = image_bgr.shape[:2]
    r = min(size[0] / h, size[1] / w)
    nh, nw = int(h * r), int(w * r)
    padded = np.full((size[0], size[1], 3), YOLOX_PAD_VALUE, dtype=np.uint8)
    padded[:nh, :nw] = cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32), r


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression. boxes (N, 4) xyxy; returns kept indices, best first."""
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        xx1, yy1 = np.maximum(x1[i], x1[order[1:]]), np.maximum(y1[i], y1[order[1:]])
        xx2, yy2 = np.minimum(x2[i], x2[order[1:]]), np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(xx2 - xx1, 0) * np.maximum(yy2 - yy1, 0)
        iou = inter / np.maximum(areas[i] + areas[order[1:]] - inter, 1e-12)
        order = order[1:][iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode_yolox(raw: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Raw YOLOX head output (A, 5 + classes) -> boxes (A, 4) xyxy and person scores (A,).

    Anchor-free decoding over the stride-8/16/32 grids (row-major, one anchor per cell):
    centre = (offset + cell) * stride, size = exp(log-size) * stride; score = objectness x
    person-class probability.
    """
    grids, strides = [], []
    for s in YOLOX_STRIDES:
        gh, gw = input_hw[0] // s, input_hw[1] // s
        xv, yv = np.meshgrid(np.arange(gw), np.arange(gh))
        grids.append(np.stack([xv, yv], -1).reshape(-1, 2))
        strides.append(np.full((gh * gw, 1), s))
    grid, stride = np.concatenate(grids).astype(np.float64), np.concatenate(strides).astype(np.float64)
    if raw.shape[0] != grid.shape[0]:
        raise DetectorModelError(f"YOLOX output has {raw.shape[0]} anchors, expected {grid.shape[0]} "
                                 f"for a {input_hw[1]}x{input_hw[0]} input")
    raw = raw.astype(np.float64)
    centre = (raw[:, :2] + grid) * stride
    size = np.exp(np.clip(raw[:, 2:4], -20.0, 20.0)) * stride
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    scores = raw[:, 4] * raw[:, 5 + PERSON_CLASS]
    return boxes, scores


def crop_transform(box: np.ndarray, input_wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-down crop of a box: (2, 3) affine image -> crop, and its centre and (w, h) scale.

    The box is enlarged by 1.25 and widened or heightened to the crop's aspect ratio, as in
    mmpose's GetBBoxCenterScale + TopdownAffine (no rotation).
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    scale = np.array([x2 - x1, y2 - y1]) * BBOX_PADDING
    aspect = input_wh[0] / input_wh[1]
    if scale[0] > scale[1] * aspect:
        scale = np.array([scale[0], scale[0] / aspect])
    else:
        scale = np.array([scale[1] * aspect, scale[1]])
    k = input_wh[0] / scale[0]  # == input_wh[1] / scale[1]
    matrix = np.array([[k, 0.0, input_wh[0] / 2 - k * centre[0]],
                       [0.0, k, input_wh[1] / 2 - k * centre[1]]])
    return matrix, centre, scale


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray,
                 split_ratio: float = SIMCC_SPLIT_RATIO) -> tuple[np.ndarray, np.ndarray]:
    """SimCC vectors (K, Wx), (K, Wy) -> crop-pixel keypoints (K, 2) and scores (K,).

    Location = argmax / split ratio; score = the smaller of the two maxima (mmpose rule);
    a keypoint whose score is not positive gets location -1.
    """
    x = np.argmax(simcc_x, axis=-1).astype(np.float64)
    y = np.argmax(simcc_y, axis=-1).astype(np.float64)
    scores = np.minimum(simcc_x.max(axis=-1), simcc_y.max(axis=-1)).astype(np.float64)
    locs = np.stack([x, y], axis=-1)
    locs[scores <= 0] = -1
    return locs / split_ratio, scores


# ---------------------------------------------------------------------- the detector
@dataclass
class PersonBox:
    box: np.ndarray  # (4,) xyxy in the detection image
    score: float


@dataclass
class WholeBody:
    """One person's COCO-WholeBody keypoints, before the OpenPose layout and the threshold."""

    keypoints: np.ndarray    # (133, 2) pixels of the image
    scores: np.ndarray       # (133,)
    num_people: int | None   # person boxes the detector kept; None when it did not run
    box: np.ndarray          # (4,) xyxy pixels of the image: the box the pose model cropped (before its padding)


class DWPoseDetector:
    """DWPose (YOLOX-L + RTMPose-L whole-body) on ONNX Runtime; see the module docstring.

    Args:
        det_model: path to ``yolox_l.onnx`` or a file name in ``repo_id`` (default).
        pose_model: path to ``dw-ll_ucoco_384.onnx`` or a file name in ``repo_id`` (default).
        repo_id, revision, cache_dir, local_files_only: where to fetch missing files.
        device: None (CUDA when it works, else the CPU), "cpu" or "cuda" (an error without CUDA).
        providers: explicit ONNX Runtime providers (overrides ``device``).
        threads: intra-op threads per session (None: ONNX Runtime's default).
        detect_resolution: short side the image is resized to (released: 1024).
        det_score_threshold: minimum person-box score (released: 0.5).
        keypoint_threshold: keypoints at or below it are missing (released: 0.35).
        redetect_every: in a video (:meth:`tracker`, used by :func:`~steadydancer.pose.prepare_poses`),
            run the person detector on one frame in this many and follow the person's keypoints
            in between; 1 detects every frame (the released behaviour).

    Calling it with an RGB image returns the :class:`Pose` of the most prominent person,
    normalised to that image, or an empty pose when no keypoint passes the threshold;
    :meth:`detect` also returns the number of people found. ``providers`` lists the ONNX
    Runtime providers the sessions really run on.
    """

    def __init__(self, det_model: str | os.PathLike | None = None, pose_model: str | os.PathLike | None = None,
                 *, repo_id: str = DWPOSE_REPO, revision: str | None = None,
                 cache_dir: str | os.PathLike | None = None, local_files_only: bool = False,
                 device: str | None = None, providers: Sequence[str] | None = None,
                 threads: int | None = None, detect_resolution: int = DETECT_RESOLUTION,
                 det_score_threshold: float = DET_SCORE_THRESHOLD,
                 keypoint_threshold: float = KEYPOINT_THRESHOLD,
                 redetect_every: int = REDETECT_EVERY) -> None:
        kw = dict(repo_id=repo_id, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
        self.det_path = resolve_model_file(det_model, DETECTOR_FILE, **kw)
        self.pose_path = resolve_model_file(pose_model, POSE_FILE, **kw)
        self.threads = threads
        self.detect_resolution = int(detect_resolution)
        self.det_score_threshold = float(det_score_threshold)
        self.keypoint_threshold = float(keypoint_threshold)
        if int(redetect_every) < 1:
            raise ValueError(f"redetect_every must be >= 1, got {redetect_every}")
        self.redetect_every = int(redetect_every)
        self._load_sessions(list(providers) if providers is not None else default_providers(device), device)

        det_in = self.det_session.get_inputs()
        pose_in = self.pose_session.get_inputs()
        if len(det_in) != 1 or len(det_in[0].shape) != 4:
            raise DetectorModelError(f"{self.det_path}: expected one NCHW image input")
        if len(pose_in) != 1 or len(pose_in[0].shape) != 4:
            raise DetectorModelError(f"{self.pose_path}: expected one NCHW image input")
        if len(self.pose_session.get_outputs()) < 2:
            raise DetectorModelError(f"{self.pose_path}: expected two outputs (simcc_x, simcc_y)")
        self.det_input_hw = _static_hw(det_in[0].shape, (640, 640))
        ph, pw = _static_hw(pose_in[0].shape, (384, 288))
        self.pose_input_wh = (pw, ph)

    def _load_sessions(self, providers: list[str], device: str | None) -> None:
        det_session = _session(self.det_path, providers, self.threads)
        pose_session = _session(self.pose_path, providers, self.threads)
        # A CUDA provider whose libraries do not load is dropped silently by ONNX Runtime: ask what runs.
        actual = [p for p in pose_session.get_providers() if p in det_session.get_providers()]
        if device == "cuda" and CUDA_PROVIDER not in actual:
            raise DetectorModelError("device='cuda' asked for but ONNX Runtime could not start its CUDA provider "
                                     "(no GPU visible, or the CUDA / cuDNN libraries of onnxruntime-gpu are missing)")
        if providers[0] == CUDA_PROVIDER and CUDA_PROVIDER not in actual:
            logger.info("DWPose: CUDA is not usable here; running on the CPU")
        self.det_session, self.pose_session, self.providers = det_session, pose_session, actual

    def to(self, device: str | None) -> "DWPoseDetector":
        """Runs the models on ``device`` from now on (None: CUDA when it works); returns self.

        For ZeroGPU: build the detector on the CPU at start-up, where no GPU is attached, and
        call ``to("cuda")`` inside the GPU call, where the device exists.
        """
        providers = default_providers(device)
        if providers != self.providers:
            self._load_sessions(providers, device)
        return self

    def tracker(self, redetect_every: int | None = None, **kwargs) -> PoseTracker:
        """A :class:`~steadydancer.pose.tracking.PoseTracker` for one video (it keeps state between frames).

        ``redetect_every`` defaults to the detector's; ``kwargs`` go to the tracker.
        """
        every = self.redetect_every if redetect_every is None else redetect_every
        return PoseTracker(self, redetect_every=every, **kwargs)

    # -- YOLOX
    def detect_people(self, image_bgr: np.ndarray) -> list[PersonBox]:
        """Person boxes in ``image_bgr`` (the detection-size image), best first."""
        tensor, r = letterbox(image_bgr, self.det_input_hw)
        outputs = self.det_session.run(None, {self.det_session.get_inputs()[0].name: tensor})
        names = [o.name for o in self.det_session.get_outputs()]
        boxes, scores = self._parse_detections(outputs, names)
        boxes = boxes / r  # letterbox -> detection image
        keep = scores > self.det_score_threshold
        boxes, scores = boxes[keep], scores[keep]
        if len(boxes) == 0:
            return []
        order = nms(boxes, scores, DET_NMS_IOU)
        return [PersonBox(boxes[i], float(scores[i])) for i in order]

    def _parse_detections(self, outputs: list[np.ndarray], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        first = np.asarray(outputs[0])
        if first.ndim == 3 and first.shape[-1] > 5:  # raw head: (1, anchors, 5 + classes)
            return decode_yolox(first[0], self.det_input_hw)
        by_name = dict(zip(names, outputs))
        dets = np.asarray(by_name.get("dets", first))
        if dets.ndim == 3 and dets.shape[-1] == 5:  # end-to-end export: dets (1, N, 5), labels (1, N)
            dets = dets[0].astype(np.float64)
            boxes, scores = dets[:, :4], dets[:, 4]
            labels = by_name.get("labels")
            if labels is None and len(outputs) > 1:
                labels = outputs[1]
            if labels is not None:
                person = np.asarray(labels).reshape(-1)[: len(scores)] == PERSON_CLASS
                boxes, scores = boxes[person], scores[person]
            return boxes, scores
        raise DetectorModelError(f"{self.det_path}: unexpected detector output shape {list(first.shape)}; "
                                 "expected (1, anchors, 85) or dets (1, N, 5)")

    # -- RTMPose
    def estimate_keypoints(self, image_rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """133 whole-body keypoints of the person in ``box``.

        Returns (133, 2) pixel coordinates in ``image_rgb`` and (133,) scores.
        """
        w, h = self.pose_input_wh
        matrix, centre, scale = crop_transform(box, (w, h))
        crop = cv2.warpAffine(image_rgb, matrix, (w, h), flags=cv2.INTER_LINEAR)
        tensor = ((crop.astype(np.float32) - POSE_MEAN) / POSE_STD).transpose(2, 0, 1)[None]
        simcc_x, simcc_y = self.pose_session.run(None, {self.pose_session.get_inputs()[0].name:
                                                        np.ascontiguousarray(tensor)})[:2]
        if simcc_x.shape[1] != NUM_WHOLEBODY or simcc_y.shape[1] != NUM_WHOLEBODY:
            raise DetectorModelError(f"{self.pose_path}: expected {NUM_WHOLEBODY} keypoints, "
                                     f"got {simcc_x.shape[1]}")
        locs, scores = decode_simcc(simcc_x[0], simcc_y[0])
        # crop pixels -> image pixels
        keypoints = locs / np.array([w, h]) * scale + centre - scale / 2
        return keypoints, scores

    # -- the whole thing
    def __call__(self, image: ImageLike) -> Pose:
        return self.detect(image).pose

    def detect(self, image: ImageLike) -> PoseDetection:
        """The pose of the most prominent person and the number of person boxes found.

        ``num_people`` counts the boxes YOLOX kept; it can be 0 with a non-empty pose, as the
        whole image is then used as the box (released behaviour).
        """
        rgb = load_image(image)
        found = self.detect_wholebody(rgb)
        pose = Pose.from_wholebody(found.keypoints, found.scores, rgb.shape[1], rgb.shape[0], self.keypoint_threshold)
        return PoseDetection(pose, found.num_people)

    def detect_wholebody(self, image_rgb: np.ndarray, box: np.ndarray | None = None) -> WholeBody:
        """The 133 whole-body keypoints of one person in ``image_rgb``, in its pixels.

        Without ``box``: the released steps (resize to the detection size, YOLOX, RTMPose on the
        most prominent person's box, or on the whole image when there is none). With ``box``
        (xyxy pixels of ``image_rgb``, e.g. tracked from the previous frame): RTMPose only, and
        ``num_people`` is None.
        """
        height, width = image_rgb.shape[:2]
        if box is not None and min(height, width) <= self.detect_resolution:
            # The detection size would only upsample this image: crop straight from it and skip the
            # full-frame resize (60 ms at 720p, half a tracked frame). The crop then differs from the
            # released one by the resize's kernel and its sides' rounding to 64 (sub-pixel, <2 % aspect).
            box = np.asarray(box, dtype=np.float64).reshape(4)
            keypoints, scores = self.estimate_keypoints(image_rgb, box)
            return WholeBody(keypoints, scores, None, box)
        det_rgb = resize_for_detection(image_rgb, self.detect_resolution)
        dh, dw = det_rgb.shape[:2]
        to_det = np.array([dw / width, dh / height] * 2)
        people = None
        if box is None:
            found = self.detect_people(np.ascontiguousarray(det_rgb[..., ::-1]))  # YOLOX: BGR
            people = len(found)
            # Released behaviour: no box -> estimate on the whole image.
            det_box = found[0].box if found else np.array([0.0, 0.0, dw, dh])
        else:  # a larger image: keep the released anti-aliased downscale before cropping
            det_box = np.asarray(box, dtype=np.float64).reshape(4) * to_det
        keypoints, scores = self.estimate_keypoints(det_rgb, det_box)
        # The detection image spans the same field as the original.
        keypoints = keypoints / np.array([dw, dh]) * np.array([width, height])
        return WholeBody(keypoints, scores, people, det_box / to_det)
