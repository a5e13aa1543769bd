"""Pose edits: corrections and retargeting of the poses, given as one JSON object.

A :class:`PoseEdits` holds what a person changed before generating: keypoints of the reference's skeleton moved,
placed or removed; keypoints of single output frames moved (easing into the neighbouring frames, so no joint jumps);
the retarget settings (:mod:`~steadydancer.pose.retarget`) and the smoothing strength
(:mod:`~steadydancer.pose.smoothing`). ``prepare_poses(edits=...)`` applies them, so every product of the pose step
(drawn frames, negative poses, long-video windows) uses the edited keypoints.

JSON schema (every key optional; coordinates are fractions of the photo, x by its width, y by its height)::

    {
      "reference": {"right_wrist": [0.61, 0.42], "left_ear": null, "right_hand": [0.6, 0.45]},
      "frames": [{"frame": 12, "joints": {"nose": [0.5, 0.2]}, "ease": 4}],
      "ease_frames": 4,           # default "ease" of a frame edit: frames over which it fades out on each side
      "retarget": {"scale": 1.0, "offset": [0.0, 0.0], "fit": "none", "limb_lengths": "dancer",
                   "stable_ground": false},
      "smoothing": {"strength": 0.0}
    }

Joints are the OpenPose body names (:data:`~steadydancer.pose.keypoints.BODY_NAMES`) and three groups that move as
one: ``left_hand``, ``right_hand`` and ``face`` (their value is where the group's centre goes). A wrist carries its
hand along and the nose carries the face. ``null`` removes a joint (or a whole group) from that pose; a body joint
the detector missed is placed by giving its position. Frame numbers count the output frames from 0 (the smooth-start
frames included).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import PoseFormatError
from .keypoints import BODY_NAMES, Pose

GROUP_NAMES = ("left_hand", "right_hand", "face")
JOINT_NAMES = BODY_NAMES + GROUP_NAMES
# A body joint that carries a group along when it moves: wrists their hands, the nose the face.
CARRIED_GROUP = {BODY_NAMES.index("right_wrist"): "right_hand", BODY_NAMES.index("left_wrist"): "left_hand",
                 BODY_NAMES.index("nose"): "face"}

# The alignment may put joints beyond the photo (a close-up's hips below it); an edit may reach this far past
# each side, farther is a mistake (pixels given instead of fractions).
EDIT_MARGIN = 0.5
DEFAULT_EASE_FRAMES = 4
MAX_EASE_FRAMES = 32
MAX_FRAME_EDITS = 2000  # frame edits in one object (bounds the parsing before any loop)
MAX_FRAME_INDEX = 100_000
SCALE_RANGE = (0.25, 4.0)
MAX_OFFSET = 1.0  # fractions of the photo
FITS = ("none", "auto", "full_body", "knees_up", "waist_up", "head_and_shoulders")
LIMB_LENGTHS = ("dancer", "photo")


class PoseEditError(PoseFormatError):
    """A pose-edit object that does not follow the schema; the message names the field."""


@dataclass(frozen=True)
class JointEdit:
    """One joint (or group) moved to ``point`` (fractions of the photo), or removed (``point`` None)."""

    joint: str
    point: tuple[float, float] | None


@dataclass(frozen=True)
class FrameEdit:
    """Joint edits of one output frame, fading out over ``ease`` frames on each side."""

    frame: int
    joints: tuple[JointEdit, ...]
    ease: int = DEFAULT_EASE_FRAMES


@dataclass(frozen=True)
class Retarget:
    """How the driving motion is fitted to the photo (see :mod:`~steadydancer.pose.retarget`)."""

    scale: float = 1.0
    offset: tuple[float, float] = (0.0, 0.0)
    fit: str = "none"
    limb_lengths: str = "dancer"
    stable_ground: bool = False

    @property
    def is_identity(self) -> bool:
        return self == Retarget()


@dataclass(frozen=True)
class PoseEdits:
    """Everything a person changed about the poses (see the module docstring for the JSON form)."""

    reference: tuple[JointEdit, ...] = ()
    frames: tuple[FrameEdit, ...] = ()
    retarget: Retarget = field(default_factory=Retarget)
    smoothing: float = 0.0

    @property
    def is_empty(self) -> bool:
        return self == PoseEdits()

    # ------------------------------------------------------------------ JSON
    @classmethod
    def from_dict(cls, data: Any, where: str = "pose_edits") -> "PoseEdits":
        """Parses and checks the JSON object; :class:`PoseEditError` names the field."""
        if not isinstance(data, dict):
            raise PoseEditError(f"{where}: expected a JSON object, got {type(data).__name__}")
        _known(data, ("reference", "frames", "ease_frames", "retarget", "smoothing"), where)
        ease = _integer(data.get("ease_frames", DEFAULT_EASE_FRAMES), 0, MAX_EASE_FRAMES, f"{where}.ease_frames")
        reference = _joints(data.get("reference") or {}, f"{where}.reference")
        frames_raw = data.get("frames") or []
        if not isinstance(frames_raw, list):
            raise PoseEditError(f"{where}.frames: expected a list of frame edits")
        if len(frames_raw) > MAX_FRAME_EDITS:
            raise PoseEditError(f"{where}.frames: at most {MAX_FRAME_EDITS} frame edits, got {len(frames_raw)}")
        frames = tuple(_frame(item, ease, f"{where}.frames[{i}]") for i, item in enumerate(frames_raw))
        seen: set[int] = set()
        for i, edit in enumerate(frames):
            if edit.frame in seen:
                raise PoseEditError(f"{where}.frames[{i}].frame: frame {edit.frame} is edited twice; merge them")
            seen.add(edit.frame)
        return cls(reference, frames, _retarget(data.get("retarget") or {}, f"{where}.retarget"),
                   _smoothing(data.get("smoothing"), f"{where}.smoothing"))

    @classmethod
    def from_json(cls, text: str, where: str = "pose_edits") -> "PoseEdits":
        """From JSON text; empty text is no edit."""
        if not text or not text.strip():
            return cls()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise PoseEditError(f"{where}: not valid JSON ({error})") from None
        return cls.from_dict(data, where)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PoseEdits":
        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_json(f.read(), str(path))
        except (OSError, UnicodeDecodeError) as error:
            raise PoseEditError(f"{path}: cannot be read ({error})") from None

    def to_dict(self) -> dict:
        """The JSON object :meth:`from_dict` reads back to an equal :class:`PoseEdits` (defaults left out)."""
        out: dict[str, Any] = {}
        if self.reference:
            out["reference"] = _joints_dict(self.reference)
        if self.frames:
            out["frames"] = [{"frame": f.frame, "joints": _joints_dict(f.joints), "ease": f.ease} for f in self.frames]
        if not self.retarget.is_identity:
            r = self.retarget
            out["retarget"] = {"scale": r.scale, "offset": list(r.offset), "fit": r.fit,
                               "limb_lengths": r.limb_lengths, "stable_ground": r.stable_ground}
        if self.smoothing:
            out["smoothing"] = {"strength": self.smoothing}
        return out

    def to_json(self) -> str:
        """Canonical text (empty for no edit): the same edits always give the same text."""
        return "" if self.is_empty else json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def check_frames(self, num_frames: int, where: str = "pose_edits") -> None:
        """Every edited frame exists among ``num_frames`` output frames."""
        for i, edit in enumerate(self.frames):
            if edit.frame >= num_frames:
                raise PoseEditError(f"{where}.frames[{i}].frame: frame {edit.frame} is beyond the video's "
                                    f"{num_frames} frames (numbered from 0)")


# ---------------------------------------------------------------------- applying
def _points(pose: Pose, joint: str) -> tuple[np.ndarray, np.ndarray]:
    """(the array holding ``joint``'s points, their index or mask): a view to edit in place."""
    if joint == "face":
        return pose.face, pose.face_present
    if joint in ("left_hand", "right_hand"):
        side = 0 if joint == "left_hand" else 1
        return pose.hands[side], pose.hands_present[side]
    return pose.body, np.array([BODY_NAMES.index(joint)])


def _shift_group(pose: Pose, group: str, delta: np.ndarray) -> None:
    points, present = _points(pose, group)
    points[present] += delta


def _remove(pose: Pose, joint: str) -> None:
    points, which = _points(pose, joint)
    points[which] = -1.0
    if joint in BODY_NAMES:
        pose.subset[which] = -1.0


def _move(pose: Pose, joint: str, delta: np.ndarray) -> None:
    """Moves a present joint (and what it carries) or a group by ``delta``."""
    if joint in GROUP_NAMES:
        _shift_group(pose, joint, delta)
        return
    j = BODY_NAMES.index(joint)
    pose.body[j] += delta
    if j in CARRIED_GROUP:
        _shift_group(pose, CARRIED_GROUP[j], delta)


def _delta(pose: Pose, edit: JointEdit) -> np.ndarray | None:
    """How far ``edit`` moves its joint in ``pose`` (None: the joint is missing there)."""
    points, which = _points(pose, edit.joint)
    if edit.joint in GROUP_NAMES:
        if not which.any():
            return None
        return np.asarray(edit.point) - points[which].mean(axis=0)
    j = int(which[0])
    return np.asarray(edit.point) - points[j] if pose.body_present[j] else None


def apply_joint_edits(pose: Pose, joints: tuple[JointEdit, ...], where: str = "pose_edits") -> Pose:
    """A copy of ``pose`` with ``joints`` moved, placed or removed (see the module docstring)."""
    out = pose.copy()
    for edit in joints:
        if edit.point is None:
            _remove(out, edit.joint)
            continue
        delta = _delta(out, edit)
        if delta is not None:
            _move(out, edit.joint, delta)
        elif edit.joint in GROUP_NAMES:
            raise PoseEditError(f"{where}.{edit.joint}: the {edit.joint.replace('_', ' ')} was not detected, so "
                                "there is nothing to move; edit its wrist (or the nose) instead")
        else:  # placing a joint the detector missed
            j = BODY_NAMES.index(edit.joint)
            out.body[j] = edit.point
            out.subset[j] = float(j)
    return out


def ease_weight(distance: int, ease: int) -> float:
    """Share of a frame edit's movement given to a frame ``distance`` frames away: 1 on the frame, falling along a
    half cosine to 0 at ``ease + 1`` frames (no step in position or in speed)."""
    if distance == 0:
        return 1.0
    if distance > ease:
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * distance / (ease + 1)))


def apply_frame_edits(poses: list[Pose], edits: tuple[FrameEdit, ...], where: str = "pose_edits") -> list[Pose]:
    """``poses`` with each frame edit applied on its frame and eased into its neighbours. A joint's movement is
    measured on the edited frame and added, scaled by :func:`ease_weight`, to the neighbours' own positions, so
    they keep their motion. Removals and placements act on the edited frame only."""
    out = [p.copy() for p in poses]  # padded endings repeat one Pose object; every frame gets its own
    for i, edit in enumerate(edits):
        if edit.frame >= len(out):
            raise PoseEditError(f"{where}.frames[{i}].frame: frame {edit.frame} is beyond the video's "
                                f"{len(out)} frames (numbered from 0)")
        key = out[edit.frame]
        for joint in edit.joints:
            delta = None if joint.point is None else _delta(key, joint)
            if delta is None:
                out[edit.frame] = key = apply_joint_edits(key, (joint,), f"{where}.frames[{i}].joints")
                continue
            lo, hi = max(0, edit.frame - edit.ease), min(len(out), edit.frame + edit.ease + 1)
            for k in range(lo, hi):
                weight = ease_weight(abs(k - edit.frame), edit.ease)
                if k == edit.frame or _delta(out[k], joint) is not None:
                    _move(out[k], joint.joint, weight * delta)
    return out


# ---------------------------------------------------------------------- parsing helpers
def _known(data: dict, keys: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise PoseEditError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(keys)})")


def _number(value: Any, low: float, high: float, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PoseEditError(f"{where}: expected a number, got {value!r}")
    if not low <= value <= high:
        raise PoseEditError(f"{where}: must be between {low:g} and {high:g}, got {value!r}")
    return float(value)


def _integer(value: Any, low: int, high: int, where: str) -> int:
    number = _number(value, low, high, where)
    if number != int(number):
        raise PoseEditError(f"{where}: expected a whole number, got {value!r}")
    return int(number)


def _point(value: Any, where: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise PoseEditError(f"{where}: expected [x, y] (fractions of the photo) or null, got {value!r}")
    low, high = -EDIT_MARGIN, 1.0 + EDIT_MARGIN
    x = _number(value[0], -math.inf, math.inf, f"{where}[0]")
    y = _number(value[1], -math.inf, math.inf, f"{where}[1]")
    if not (low <= x <= high and low <= y <= high):
        raise PoseEditError(f"{where}: [{x:g}, {y:g}] lies outside the photo by more than {EDIT_MARGIN:g} of its "
                            f"size; coordinates are fractions of the photo (0 to 1)")
    return (x, y)


def _joints(data: Any, where: str) -> tuple[JointEdit, ...]:
    if not isinstance(data, dict):
        raise PoseEditError(f"{where}: expected an object of joint name -> [x, y] or null")
    edits = []
    for name, value in data.items():
        if name not in JOINT_NAMES:
            raise PoseEditError(f"{where}.{name}: unknown joint (known: {', '.join(JOINT_NAMES)})")
        edits.append(JointEdit(name, _point(value, f"{where}.{name}")))
    # One order whatever the object's: body joints first, so a group given with its wrist (or nose) ends where given.
    return tuple(sorted(edits, key=lambda e: JOINT_NAMES.index(e.joint)))


def _joints_dict(joints: tuple[JointEdit, ...]) -> dict:
    return {j.joint: None if j.point is None else list(j.point) for j in joints}


def _frame(data: Any, ease: int, where: str) -> FrameEdit:
    if not isinstance(data, dict):
        raise PoseEditError(f"{where}: expected an object with 'frame' and 'joints'")
    _known(data, ("frame", "joints", "ease"), where)
    if "frame" not in data:
        raise PoseEditError(f"{where}.frame: missing (the output frame's number, from 0)")
    frame = _integer(data["frame"], 0, MAX_FRAME_INDEX, f"{where}.frame")
    return FrameEdit(frame, _joints(data.get("joints") or {}, f"{where}.joints"),
                     _integer(data.get("ease", ease), 0, MAX_EASE_FRAMES, f"{where}.ease"))


def _retarget(data: Any, where: str) -> Retarget:
    if not isinstance(data, dict):
        raise PoseEditError(f"{where}: expected an object")
    _known(data, ("scale", "offset", "fit", "limb_lengths", "stable_ground"), where)
    default = Retarget()
    offset = data.get("offset", list(default.offset))
    if not isinstance(offset, (list, tuple)) or len(offset) != 2:
        raise PoseEditError(f"{where}.offset: expected [dx, dy] (fractions of the photo), got {offset!r}")
    fit = data.get("fit", default.fit)
    if fit not in FITS:
        raise PoseEditError(f"{where}.fit: must be one of {', '.join(FITS)}, got {fit!r}")
    limbs = data.get("limb_lengths", default.limb_lengths)
    if limbs not in LIMB_LENGTHS:
        raise PoseEditError(f"{where}.limb_lengths: must be one of {', '.join(LIMB_LENGTHS)}, got {limbs!r}")
    ground = data.get("stable_ground", default.stable_ground)
    if not isinstance(ground, bool):
        raise PoseEditError(f"{where}.stable_ground: expected true or false, got {ground!r}")
    return Retarget(
        scale=_number(data.get("scale", default.scale), *SCALE_RANGE, f"{where}.scale"),
        offset=(_number(offset[0], -MAX_OFFSET, MAX_OFFSET, f"{where}.offset[0]"),
                _number(offset[1], -MAX_OFFSET, MAX_OFFSET, f"{where}.offset[1]")),
        fit=fit, limb_lengths=limbs, stable_ground=ground)


def _smoothing(data: Any, where: str) -> float:
    if data is None:
        return 0.0
    if not isinstance(data, dict):
        raise PoseEditError(f"{where}: expected an object like {{\"strength\": 0.5}}")
    _known(data, ("strength",), where)
    return _number(data.get("strength", 0.0), 0.0, 1.0, f"{where}.strength")
