"""Keypoint data model (OpenPose layout) and its JSON schema.

A :class:`Pose` is one person in one image, in the layout the released SteadyDancer
preprocessing draws from: 18 OpenPose body points (COCO's 17 plus the neck), two hands of
21 points and 68 face points. Coordinates are normalised to the image the pose belongs to
(x by its width, y by its height); a missing point has both coordinates set to -1, and a
missing body point also has -1 in ``subset`` (the released renderer only reads
``subset``). A :class:`PoseSequence` is the per-frame list plus the frame size and rate.

JSON schema (``PoseSequence.save`` / ``PoseSequence.load``)::

    {
      "format": "steadydancer.pose_sequence",   # required
      "version": 1,                              # required
      "width": 640, "height": 360,               # frame size in pixels (required, > 0)
      "fps": 30.0,                               # frame rate, or null: one pose per output frame
      "frames": [                                # one object per frame
        {
          "body":  [[x, y], ...],       # 18 pairs, OpenPose order (see BODY_NAMES); required
          "subset": [0, 1, -1, ...],    # optional, 18 numbers: index if present, -1 if missing;
                                        #   derived from "body" ([-1, -1] = missing) if absent
          "hands": [[[x, y] x 21], [[x, y] x 21]],   # optional, [left, right]
          "face":  [[x, y] x 68],                    # optional
          "body_scores": [...18], "hand_scores": [[...21], [...21]], "face_scores": [...68]
                                        # optional detector confidences
        }
      ]
    }

A reference's pose (:func:`load_reference_pose`) uses this same schema with exactly one frame, normalised to the
reference image; a file of several frames is refused (it is most likely a driving clip's keypoints).

Coordinates are fractions of the frame: a point beyond ``MAX_COORDINATE`` (100) in any direction is refused, as is
NaN or infinity.

A single pose (``Pose.save`` / ``Pose.load``) is one frame object with ``"format":
"steadydancer.pose"``, ``"version"``, ``"width"`` and ``"height"`` added. For
convenience a frame may also use the released code's key names (``candidate``, nested
``subset`` ``[[...]]``, ``faces`` ``[[...68]]``). Missing hands or face are stored as -1.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from ..defaults import OUTPUT_FPS
from .errors import NoPersonInReferenceError, PoseFormatError

NUM_BODY = 18
NUM_HAND = 21
NUM_FACE = 68

# OpenPose-18 body order used everywhere in this package.
BODY_NAMES = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)
NECK = 1

# COCO-WholeBody (133 points, DWPose output) -> OpenPose layout.
# Body: COCO index of each OpenPose point; None marks the neck (mid-shoulders).
COCO_TO_OPENPOSE_BODY = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
COCO_LEFT_SHOULDER, COCO_RIGHT_SHOULDER = 5, 6
COCO_FACE = slice(23, 91)         # 68 points
COCO_LEFT_HAND = slice(91, 112)   # 21 points; hands[0], hangs from OpenPose 7 (left wrist)
COCO_RIGHT_HAND = slice(112, 133) # 21 points; hands[1], hangs from OpenPose 4 (right wrist)
NUM_WHOLEBODY = 133

# The released wholebody code marks the neck visible when both shoulders score > 0.3,
# independently of the 0.35 threshold applied afterwards.
NECK_SHOULDER_THRESHOLD = 0.3
# Keypoints at or below this confidence are missing (released SteadyDancer preprocessing).
KEYPOINT_THRESHOLD = 0.35

# Keypoints are fractions of their frame (-1: missing); far beyond it they are no pose (pixels given by mistake).
MAX_COORDINATE = 100.0
# A skeleton whose present body points all lie within this share of the frame height of each other is drawn as a
# dot: the model would be conditioned on no pose at all.
MIN_SKELETON_EXTENT = 0.01

SEQUENCE_FORMAT = "steadydancer.pose_sequence"
POSE_FORMAT = "steadydancer.pose"
SCHEMA_VERSION = 1


def _missing(shape: tuple[int, ...]) -> np.ndarray:
    return np.full(shape, -1.0, dtype=np.float64)


@dataclass
class Pose:
    """One person in one image, OpenPose layout, coordinates normalised to the image.

    Attributes:
        body: (18, 2) float64, x/W and y/H; [-1, -1] where missing.
        subset: (18,) float64, the released "subset": the point's index if present, -1 if not.
        hands: (2, 21, 2) float64, [left hand, right hand]; -1 where missing.
        face: (68, 2) float64; -1 where missing.
        width, height: size in pixels of the image the coordinates are normalised to.
        body_scores, hand_scores, face_scores: optional detector confidences,
            (18,), (2, 21), (68,).
    """

    body: np.ndarray
    subset: np.ndarray
    hands: np.ndarray
    face: np.ndarray
    width: int
    height: int
    body_scores: np.ndarray | None = None
    hand_scores: np.ndarray | None = None
    face_scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        shapes = {"body": (NUM_BODY, 2), "subset": (NUM_BODY,), "hands": (2, NUM_HAND, 2),
                  "face": (NUM_FACE, 2), "body_scores": (NUM_BODY,), "hand_scores": (2, NUM_HAND),
                  "face_scores": (NUM_FACE,)}
        for name, shape in shapes.items():
            value = getattr(self, name)
            if value is None and name.endswith("_scores"):
                continue
            arr = np.asarray(value, dtype=np.float64)
            if arr.size != int(np.prod(shape)):
                raise PoseFormatError(f"Pose.{name}: expected shape {list(shape)}, got {list(arr.shape)}")
            setattr(self, name, arr.reshape(shape))
        self.width, self.height = int(self.width), int(self.height)
        if self.width <= 0 or self.height <= 0:
            raise PoseFormatError(f"pose image size must be positive, got {self.width}x{self.height}")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def empty(cls, width: int, height: int) -> "Pose":
        """A pose with every point missing (what a frame without a person yields)."""
        return cls(_missing((NUM_BODY, 2)), _missing((NUM_BODY,)), _missing((2, NUM_HAND, 2)),
                   _missing((NUM_FACE, 2)), width, height)

    @classmethod
    def from_wholebody(cls, keypoints: np.ndarray, scores: np.ndarray, width: int, height: int,
                       threshold: float = KEYPOINT_THRESHOLD) -> "Pose":
        """Converts one COCO-WholeBody detection to the OpenPose layout.

        Args:
            keypoints: (133, 2) pixel coordinates in an image of ``width`` x ``height``.
            scores: (133,) confidences.
            threshold: points scoring at or below it are missing (released: 0.35).
        """
        keypoints = np.asarray(keypoints, dtype=np.float64).reshape(NUM_WHOLEBODY, 2)
        scores = np.asarray(scores, dtype=np.float64).reshape(NUM_WHOLEBODY)
        norm = keypoints / np.array([width, height], dtype=np.float64)

        body = np.empty((NUM_BODY, 2))
        body_scores = np.empty(NUM_BODY)
        for j, coco in enumerate(COCO_TO_OPENPOSE_BODY):
            if coco is None:  # neck = mid-shoulders, "visible" (1.0) only if both shoulders are
                body[j] = norm[[COCO_LEFT_SHOULDER, COCO_RIGHT_SHOULDER]].mean(axis=0)
                shoulders = scores[[COCO_LEFT_SHOULDER, COCO_RIGHT_SHOULDER]]
                body_scores[j] = float(np.all(shoulders > NECK_SHOULDER_THRESHOLD))
            else:
                body[j], body_scores[j] = norm[coco], scores[coco]
        hands = np.stack([norm[COCO_LEFT_HAND], norm[COCO_RIGHT_HAND]])
        hand_scores = np.stack([scores[COCO_LEFT_HAND], scores[COCO_RIGHT_HAND]])
        face, face_scores = norm[COCO_FACE].copy(), scores[COCO_FACE].copy()

        body_ok = body_scores > threshold
        body[~body_ok] = -1.0
        hands[~(hand_scores > threshold)] = -1.0
        face[~(face_scores > threshold)] = -1.0
        subset = np.where(body_ok, np.arange(NUM_BODY, dtype=np.float64), -1.0)
        return cls(body, subset, hands, face, width, height, body_scores, hand_scores, face_scores)

    # ------------------------------------------------------------------ queries
    @property
    def body_present(self) -> np.ndarray:
        """(18,) bool: which body points are present (the released renderer's rule)."""
        return self.subset >= 0

    @property
    def hands_present(self) -> np.ndarray:
        """(2, 21) bool."""
        return ~np.all(self.hands == -1.0, axis=-1)

    @property
    def face_present(self) -> np.ndarray:
        """(68,) bool."""
        return ~np.all(self.face == -1.0, axis=-1)

    @property
    def is_empty(self) -> bool:
        """True when no body point is present (no person)."""
        return not bool(self.body_present.any())

    @property
    def is_collapsed(self) -> bool:
        """True when every present body point lies within `MIN_SKELETON_EXTENT` (of the frame height, x scaled by
        the aspect) of the others: drawn, the skeleton is a dot."""
        points = self.body[self.body_present]
        if len(points) == 0:
            return False
        extent = (points.max(axis=0) - points.min(axis=0)) * np.array([self.aspect, 1.0])
        return bool(extent.max() < MIN_SKELETON_EXTENT)

    @property
    def aspect(self) -> float:
        """width / height of the image the pose is normalised to."""
        return self.width / self.height

    def copy(self) -> "Pose":
        return Pose(self.body.copy(), self.subset.copy(), self.hands.copy(), self.face.copy(),
                    self.width, self.height,
                    None if self.body_scores is None else self.body_scores.copy(),
                    None if self.hand_scores is None else self.hand_scores.copy(),
                    None if self.face_scores is None else self.face_scores.copy())

    def with_size(self, width: int, height: int) -> "Pose":
        """Same normalised coordinates, declared against another image size."""
        pose = self.copy()
        pose.width, pose.height = int(width), int(height)
        return pose

    # ------------------------------------------------------------------ serialisation
    def to_dict(self, *, with_size: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if with_size:
            out.update(format=POSE_FORMAT, version=SCHEMA_VERSION, width=self.width, height=self.height)
        out.update(body=self.body.tolist(), subset=self.subset.tolist(), hands=self.hands.tolist(),
                   face=self.face.tolist())
        for name in ("body_scores", "hand_scores", "face_scores"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, width: int | None = None, height: int | None = None,
                  where: str = "pose") -> "Pose":
        """Builds a pose from a frame object of the JSON schema (see the module docstring).

        ``width``/``height`` are used when the object itself carries no size.
        """
        if not isinstance(data, dict):
            raise PoseFormatError(f"{where}: expected a JSON object, got {type(data).__name__}")
        w = data.get("width", width)
        h = data.get("height", height)
        if w is None or h is None:
            raise PoseFormatError(f"{where}: missing 'width'/'height' (the image size in pixels)")
        w, h = _positive_int(w, f"{where}.width"), _positive_int(h, f"{where}.height")

        if "body" in data:
            body = _array(data["body"], (NUM_BODY, 2), f"{where}.body")
        elif "candidate" in data:  # released key name
            body = _array(data["candidate"], None, f"{where}.candidate")
            if body.ndim != 2 or body.shape[1] != 2 or body.shape[0] < NUM_BODY:
                raise PoseFormatError(f"{where}.candidate: expected at least 18 [x, y] pairs, "
                                      f"got shape {list(body.shape)}")
            body = body[:NUM_BODY]
        else:
            raise PoseFormatError(f"{where}: missing 'body' (18 [x, y] pairs in OpenPose order)")

        if data.get("subset") is not None:
            subset = _array(data["subset"], None, f"{where}.subset")
            subset = subset.reshape(-1, subset.shape[-1])[0] if subset.ndim == 2 else subset
            if subset.shape != (NUM_BODY,):
                raise PoseFormatError(f"{where}.subset: expected 18 numbers, got shape {list(subset.shape)}")
        else:
            present = ~np.all(body == -1.0, axis=-1)
            subset = np.where(present, np.arange(NUM_BODY, dtype=np.float64), -1.0)

        hands = (_array(data["hands"], None, f"{where}.hands") if data.get("hands") is not None
                 else _missing((2, NUM_HAND, 2)))
        if hands.ndim != 3 or hands.shape[1:] != (NUM_HAND, 2) or hands.shape[0] < 2:
            raise PoseFormatError(f"{where}.hands: expected [[21 x [x, y]], [21 x [x, y]]], "
                                  f"got shape {list(hands.shape)}")
        hands = hands[:2]

        face_raw = data.get("face", data.get("faces"))
        face = _array(face_raw, None, f"{where}.face") if face_raw is not None else _missing((NUM_FACE, 2))
        if face.ndim == 3:  # released "faces": [[68 x [x, y]]]
            face = face[0] if face.shape[0] >= 1 else face
        if face.shape != (NUM_FACE, 2):
            raise PoseFormatError(f"{where}.face: expected 68 [x, y] pairs, got shape {list(face.shape)}")

        for part, values in (("body", body), ("hands", hands), ("face", face)):
            worst = float(np.abs(values).max())
            if worst > MAX_COORDINATE:
                raise PoseFormatError(f"{where}.{part}: coordinates are fractions of the frame (about 0 to 1, -1 for a "
                                      f"missing point); got {worst:g}")
        scores = {}
        for name, shape in (("body_scores", (NUM_BODY,)), ("hand_scores", (2, NUM_HAND)),
                            ("face_scores", (NUM_FACE,))):
            if data.get(name) is not None:
                scores[name] = _array(data[name], shape, f"{where}.{name}")
        return cls(body, subset, hands, face, w, h, **scores)

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Pose":
        data = _read_json(path)
        if isinstance(data, dict) and data.get("format") == SEQUENCE_FORMAT:
            raise PoseFormatError(f"{path}: this is a pose sequence; use PoseSequence.load")
        _check_header(data, POSE_FORMAT, str(path))
        return cls.from_dict(data, where=str(path))


# Frame rates a pose sequence may declare. The rate sizes the resampling to the output rate, so a rate from a file
# is bounded before use: a tiny one would stretch a few poses over years of output frames.
MIN_FPS = 1.0
MAX_FPS = 1000.0


@dataclass
class PoseSequence:
    """Per-frame poses of one video plus its frame size and rate.

    Attributes:
        poses: one :class:`Pose` per frame (each normalised to ``width`` x ``height``).
        width, height: frame size in pixels.
        fps: frame rate of ``poses`` (None when unknown: every pose is used as one frame).
    """

    poses: list[Pose]
    width: int
    height: int
    fps: float | None = None
    times: np.ndarray | None = field(default=None, repr=False)  # (N,) seconds, optional

    def __post_init__(self) -> None:
        self.poses = list(self.poses)
        self.width, self.height = int(self.width), int(self.height)
        if self.fps is not None:
            self.fps = float(self.fps)
            if not (math.isfinite(self.fps) and MIN_FPS <= self.fps <= MAX_FPS):
                raise PoseFormatError(f"fps must be between {MIN_FPS:g} and {MAX_FPS:g} or None, got {self.fps}")
        if self.times is not None:
            self.times = np.asarray(self.times, dtype=np.float64).reshape(-1)
            if len(self.times) != len(self.poses):
                raise PoseFormatError(f"times has {len(self.times)} entries for {len(self.poses)} poses")

    def __len__(self) -> int:
        return len(self.poses)

    def __iter__(self) -> Iterator[Pose]:
        return iter(self.poses)

    def __getitem__(self, index: int) -> Pose:
        return self.poses[index]

    def frame_times(self) -> np.ndarray:
        """(N,) seconds: stored times, else index / fps (NaN when fps is unknown)."""
        if self.times is not None:
            return self.times.copy()
        if not self.fps:
            return np.full(len(self.poses), np.nan)
        return np.arange(len(self.poses), dtype=np.float64) / self.fps

    def to_dict(self) -> dict[str, Any]:
        return {"format": SEQUENCE_FORMAT, "version": SCHEMA_VERSION, "width": self.width,
                "height": self.height, "fps": self.fps,
                "frames": [p.to_dict(with_size=False) for p in self.poses]}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "pose sequence") -> "PoseSequence":
        _check_header(data, SEQUENCE_FORMAT, where)
        w = _positive_int(data.get("width"), f"{where}.width")
        h = _positive_int(data.get("height"), f"{where}.height")
        fps = data.get("fps")
        if fps is not None and (not isinstance(fps, (int, float)) or isinstance(fps, bool)
                                or not math.isfinite(fps) or not MIN_FPS <= fps <= MAX_FPS):
            raise PoseFormatError(f"{where}.fps: expected a frame rate between {MIN_FPS:g} and {MAX_FPS:g} "
                                  f"(or null), got {fps!r}")
        if fps is None:  # unknown: every pose is one frame of the output, so its times are known too
            fps = OUTPUT_FPS
        frames = data.get("frames")
        if not isinstance(frames, list):
            raise PoseFormatError(f"{where}.frames: expected a list of frame objects")
        poses = [Pose.from_dict(fr, width=w, height=h, where=f"{where}.frames[{i}]")
                 for i, fr in enumerate(frames)]
        return cls(poses, w, h, fps)

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PoseSequence":
        return cls.from_dict(_read_json(path), where=str(path))


def check_reference_pose(pose: Pose, where: str | None = None) -> None:
    """Raises :class:`NoPersonInReferenceError` unless ``pose`` can be aligned to: a person with a neck.

    ``where`` names a pose that was given (a file, an argument); None: it was detected in the reference image.
    """
    if pose.is_empty:
        raise NoPersonInReferenceError(
            f"{where}: no body point is present (every one is [-1, -1])" if where else
            "no person was found in the reference image; use a photo where one person is clearly visible")
    if not pose.body_present[NECK]:
        raise NoPersonInReferenceError(
            f"{where}: the neck (body[1], between the shoulders) is missing; the alignment measures from it"
            if where else "the person in the reference image has no visible shoulders; use a photo showing at "
            "least the upper body")
    if pose.is_collapsed:
        raise NoPersonInReferenceError(
            f"{where}: every body point is at one place (within {MIN_SKELETON_EXTENT:.0%} of the frame); the pose "
            "video would be a dot" if where else "the person found in the reference image is a single point; use a "
            "photo where one person is clearly visible")


def reference_pose_from(sequence: PoseSequence, where: str = "reference pose") -> Pose:
    """The reference's pose from a sequence of exactly one frame (the driving keypoints' schema), checked by
    :func:`check_reference_pose`. Several frames are refused rather than guessed from: such a file is most likely a
    driving clip's keypoints. Raises :class:`PoseFormatError` or :class:`NoPersonInReferenceError` naming ``where``.
    """
    if len(sequence) != 1:
        raise PoseFormatError(f"{where}: expected one frame (the reference image's pose), got {len(sequence)}; "
                              "a driving clip's keypoints cannot be a reference's")
    pose = sequence[0]
    check_reference_pose(pose, where)
    return pose


def load_reference_pose(path: str | os.PathLike, where: str | None = None) -> Pose:
    """A reference's keypoint JSON (one frame of the ``PoseSequence`` schema) for ``prepare_poses(reference_pose=...)``;
    errors name ``where`` (default: the path)."""
    where = where or str(path)
    return reference_pose_from(PoseSequence.from_dict(_read_json(path), where=where), where)


# ---------------------------------------------------------------------- helpers
def _read_json(path: str | os.PathLike) -> Any:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise PoseFormatError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PoseFormatError(f"{path}: not valid JSON ({e})") from None


def _check_header(data: Any, expected: str, where: str) -> None:
    if not isinstance(data, dict):
        raise PoseFormatError(f"{where}: expected a JSON object at the top level")
    fmt = data.get("format")
    if fmt != expected:
        raise PoseFormatError(f"{where}: 'format' must be {expected!r}, got {fmt!r}")
    version = data.get("version")
    if version != SCHEMA_VERSION:
        raise PoseFormatError(f"{where}: unsupported 'version' {version!r} (this code reads {SCHEMA_VERSION})")


MAX_ARRAY_DEPTH = 3  # the deepest array of the schema: hands, (2, 21, 2)


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value <= 0:
        raise PoseFormatError(f"{where}: expected a positive integer, got {value!r}")
    return int(value)


def _numbers_only(value: Any, where: str, depth: int = 0) -> None:
    """Nested lists of JSON numbers only: a string or a boolean is not a coordinate (NumPy would convert both)."""
    if isinstance(value, (list, tuple)) and depth < MAX_ARRAY_DEPTH:
        for item in value:
            _numbers_only(item, where, depth + 1)
    elif isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise PoseFormatError(f"{where}: expected nested lists of numbers, found {type(value).__name__} {value!r:.40}")


def _array(value: Any, shape: tuple[int, ...] | None, where: str) -> np.ndarray:
    _numbers_only(value, where)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PoseFormatError(f"{where}: expected nested lists of numbers") from None
    if shape is not None and arr.shape != shape:
        raise PoseFormatError(f"{where}: expected shape {list(shape)}, got {list(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise PoseFormatError(f"{where}: contains NaN or infinity (use -1 for missing points)")
    return arr
