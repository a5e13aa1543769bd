"""Retargeting: fitting a driving motion to a photo framed or proportioned differently from the dancer.

The released alignment (:mod:`~steadydancer.pose.align`) scales each body part by its own length ratio, measured on
one frame. That fails when the photo shows only part of the body (a close-up measures a few face segments and
guesses the rest) or when the proportions differ (a drawn character's big head inflates every limb). The tools here:

- :func:`fit_framing`: the whole motion scaled and shifted as one (the dancer's proportions kept) so that the joints
  the photo's framing shows (:func:`photo_framing`: full body, knees up, waist up, head and shoulders) sit on the
  photo's, measured on the align frame.
- :func:`photo_limb_lengths`: every bone of every frame takes the photo's length, keeping the dancer's direction.
- :func:`move_motion`: scale about the photo's neck and offset of the whole motion.
- :func:`stable_ground`: each frame shifted up or down so the lower foot stays where the photo's is.

All lengths are measured in "square" coordinates (x times the frame's width / height), as the alignment does.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .align import _ORDER, _PARENT
from .errors import PoseError
from .keypoints import BODY_NAMES, NECK, Pose

_J = {name: i for i, name in enumerate(BODY_NAMES)}
# The joints each framing shows, most to least: a photo's framing is the first whose extremity it shows.
FRAMING_ANCHORS = {
    "full_body": ("neck", "right_shoulder", "left_shoulder", "right_hip", "left_hip", "right_ankle", "left_ankle"),
    "knees_up": ("neck", "right_shoulder", "left_shoulder", "right_hip", "left_hip", "right_knee", "left_knee"),
    "waist_up": ("neck", "right_shoulder", "left_shoulder", "right_hip", "left_hip"),
    "head_and_shoulders": ("nose", "neck", "right_shoulder", "left_shoulder"),
}
FRAMING_EXTREMITY = (("full_body", ("right_ankle", "left_ankle")), ("knees_up", ("right_knee", "left_knee")),
                     ("waist_up", ("right_hip", "left_hip")))
_ANKLES = (_J["right_ankle"], _J["left_ankle"])
_HAND_WRIST = ((0, _J["left_wrist"]), (1, _J["right_wrist"]))


def _map(pose: Pose, fn, aspect: float | None = None) -> Pose:
    """A copy of ``pose`` with ``fn`` applied to every present point in square coordinates (``aspect``: the output's,
    default the pose's own); missing points stay missing."""
    src_aspect, out_aspect = pose.aspect, aspect or pose.aspect
    out = pose.copy()
    for name, present in (("body", pose.body_present), ("hands", pose.hands_present), ("face", pose.face_present)):
        points = getattr(out, name)
        square = points[present] * np.array([src_aspect, 1.0])
        points[present] = fn(square) / np.array([out_aspect, 1.0])
    return out


def _visible(pose: Pose) -> np.ndarray:
    """(18,) bool: present and inside the photo."""
    inside = np.all((pose.body >= 0.0) & (pose.body <= 1.0), axis=-1)
    return pose.body_present & inside


def photo_framing(reference: Pose) -> str:
    """How much of the body the photo shows, decided by the lowest body part visible in it."""
    visible = _visible(reference)
    for framing, extremity in FRAMING_EXTREMITY:
        if any(visible[_J[name]] for name in extremity):
            return framing
    return "head_and_shoulders"


def fit_framing(reference: Pose, driving: Sequence[Pose], align_index: int = 0, framing: str = "auto") -> list[Pose]:
    """The driving poses scaled and shifted as one, normalised to the reference, so that on frame ``align_index``
    the ``framing``'s joints (``"auto"``: the photo's, :func:`photo_framing`) sit on the photo's, in the least-squares
    sense. Replaces the per-part alignment; the dancer's proportions are kept."""
    if framing == "auto":
        framing = photo_framing(reference)
    if framing not in FRAMING_ANCHORS:
        raise PoseError(f"retarget.fit: unknown framing {framing!r} (known: {', '.join(FRAMING_ANCHORS)})")
    if not 0 <= align_index < len(driving):
        raise PoseError(f"align frame {align_index} is outside the driving clip (0..{len(driving) - 1})")
    anchor = driving[align_index]
    joints = [_J[n] for n in FRAMING_ANCHORS[framing] if reference.body_present[_J[n]] and anchor.body_present[_J[n]]]
    if len(joints) < 2:
        raise PoseError(f"retarget.fit: the photo and driving frame {align_index} share fewer than two of the "
                        f"{framing.replace('_', ' ')} joints; choose another framing or align frame")
    ref = reference.body[joints] * np.array([reference.aspect, 1.0])
    drv = anchor.body[joints] * np.array([anchor.aspect, 1.0])
    ref_c, drv_c = ref.mean(axis=0), drv.mean(axis=0)
    spread = float(((drv - drv_c) ** 2).sum())
    if spread <= 1e-12:
        raise PoseError(f"retarget.fit: driving frame {align_index}'s {framing.replace('_', ' ')} joints coincide")
    scale = float(((drv - drv_c) * (ref - ref_c)).sum()) / spread
    if not scale > 0:
        raise PoseError("retarget.fit: the photo's skeleton and the dancer's face opposite ways; cannot fit")
    return [_map(p, lambda q: ref_c + scale * (q - drv_c), reference.aspect).with_size(reference.width,
                                                                                         reference.height)
            for p in driving]


def photo_limb_lengths(reference: Pose, poses: Sequence[Pose]) -> list[Pose]:
    """Each pose rebuilt outward from its neck with every bone the photo shows at the photo's length (direction
    kept); a bone the photo or the frame lacks keeps its length. Hands follow their wrists, the face its nose.
    The poses must be normalised to the reference (aligned or fitted)."""
    aspect = np.array([reference.aspect, 1.0])
    ref = reference.body * aspect
    out = []
    for pose in poses:
        if not pose.body_present[NECK]:
            out.append(pose.copy())
            continue
        src = pose.body * aspect
        new = src.copy()
        for child in _ORDER:
            parent = _PARENT[child]
            if not (pose.body_present[child] and pose.body_present[parent]):
                continue
            bone = src[child] - src[parent]
            length = float(np.linalg.norm(bone))
            if reference.body_present[child] and reference.body_present[parent] and length > 1e-9:
                bone = bone * float(np.linalg.norm(ref[child] - ref[parent])) / length
            new[child] = new[parent] + bone
        edited = pose.copy()
        moved = (new - src) / aspect
        edited.body[pose.body_present] = (new / aspect)[pose.body_present]
        for side, wrist in _HAND_WRIST:
            edited.hands[side][pose.hands_present[side]] += moved[wrist]
        edited.face[pose.face_present] += moved[_J["nose"]]
        out.append(edited)
    return out


def move_motion(reference: Pose, poses: Sequence[Pose], scale: float = 1.0,
                offset: tuple[float, float] = (0.0, 0.0)) -> list[Pose]:
    """The whole motion scaled by ``scale`` about the photo's neck, then moved by ``offset`` (fractions of the
    photo). Poses normalised to the reference."""
    centre = reference.body[NECK] * np.array([reference.aspect, 1.0])
    shift = np.array([offset[0] * reference.aspect, offset[1]])
    return [_map(p, lambda q: centre + scale * (q - centre) + shift) for p in poses]


def stable_ground(reference: Pose, poses: Sequence[Pose]) -> list[Pose]:
    """Each pose moved vertically so that its lower ankle stands where the photo's lower ankle is; frames without
    a visible ankle take the shift interpolated from their neighbours."""
    ground = [reference.body[j, 1] for j in _ANKLES if reference.body_present[j]]
    if not ground:
        raise PoseError("retarget.stable_ground: the photo shows no feet (ankles) to keep the dancer's feet on")
    photo_ground = max(ground)
    frames, shifts = [], []
    for i, pose in enumerate(poses):
        feet = [pose.body[j, 1] for j in _ANKLES if pose.body_present[j]]
        if feet:
            frames.append(i)
            shifts.append(photo_ground - max(feet))
    if not frames:
        raise PoseError("retarget.stable_ground: the driving motion shows no feet (ankles)")
    per_frame = np.interp(np.arange(len(poses)), frames, shifts)
    return [_map(p, lambda q, dy=dy: q + np.array([0.0, dy])) for p, dy in zip(poses, per_frame)]
