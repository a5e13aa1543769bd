"""Alignment of driving poses to the reference pose (spatial misalignment, as released).

The released preprocessing makes the driving skeleton take the reference person's limb
lengths and position: per-part length ratios reference / driving are measured once, on the
reference pose and one chosen driving frame, then every driving frame is rebuilt outward
from its neck with those ratios and shifted so that the chosen frame's neck lands on the
reference's neck.

All arithmetic happens in "square" coordinates, where y stays normalised and x is
multiplied by that image's width / height, so lengths are comparable across images of
different aspect ratios.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import PoseError
from .keypoints import MIN_SKELETON_EXTENT, NECK, Pose

PART_NAMES = ("neck", "face_left", "face_right", "shoulder", "arm_upper", "arm_lower", "hand",
              "body", "leg_upper", "leg_lower")


def _square(points: np.ndarray, aspect: float) -> np.ndarray:
    out = np.array(points, dtype=np.float64, copy=True)
    out[..., 0] *= aspect
    return out


def alignment_ratios(reference: Pose, driving: Pose, *, skip_missing: bool = True) -> dict[str, float]:
    """Per-part length ratios reference / driving, keyed by :data:`PART_NAMES`.

    Released rules: a ratio 0/0 (NaN) becomes 1; a ratio x/0 (inf) becomes the mean of the
    finite ones; paired limbs (arms, legs) average the two sides' ratios; the hand ratio is
    the mean of the upper- and lower-arm ratios.

    Args:
        skip_missing: the released code measures lengths on whatever coordinates missing
            points hold (the -1 placeholders), which yields meaningless ratios when the
            reference or the chosen frame lacks a point. When True (default) a length that
            involves a missing point is ignored instead: a paired limb uses its other side,
            and a part with no usable length is treated like an infinite ratio (mean of the
            others). When every point is present both settings give identical results.
    """
    ref = _square(reference.body, reference.aspect)
    drv = _square(driving.body, driving.aspect)
    ok = reference.body_present & driving.body_present

    def length(p: np.ndarray, a: int, b: int) -> float:
        return float(np.linalg.norm(p[a] - p[b]))

    def ratio(*pairs: tuple[int, int]) -> float | None:
        # Sum of segment lengths on the reference over the same sum on the driving pose.
        if skip_missing and not all(ok[a] and ok[b] for a, b in pairs):
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.float64(sum(length(ref, a, b) for a, b in pairs))
                         / np.float64(sum(length(drv, a, b) for a, b in pairs)))

    def mean(*values: float | None) -> float | None:
        # Released: (a + b) / 2; an unusable side (only when skip_missing) is left out.
        usable = [v for v in values if v is not None]
        if not usable:
            return None
        return float(np.float64(sum(usable)) / len(usable))

    raw: dict[str, float | None] = {"neck": ratio((0, 1)),
                                    "face_left": ratio((16, 14), (14, 0)),
                                    "face_right": ratio((17, 15), (15, 0)),
                                    "shoulder": ratio((2, 5))}
    raw["arm_upper"] = mean(ratio((2, 3)), ratio((5, 6)))
    raw["arm_lower"] = mean(ratio((3, 4)), ratio((6, 7)))
    raw["hand"] = mean(raw["arm_upper"], raw["arm_lower"])
    # body: neck to the mid-hip point
    if skip_missing and not (ok[1] and ok[8] and ok[11]):
        raw["body"] = None
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            raw["body"] = float(np.float64(np.linalg.norm(ref[1] - (ref[8] + ref[11]) / 2))
                                / np.float64(np.linalg.norm(drv[1] - (drv[8] + drv[11]) / 2)))
    raw["leg_upper"] = mean(ratio((8, 9)), ratio((11, 12)))
    raw["leg_lower"] = mean(ratio((9, 10)), ratio((12, 13)))

    # NaN -> 1 first, then inf (and unusable) -> mean of the finite ones, as released.
    values = {k: (1.0 if v is not None and np.isnan(v) else v) for k, v in raw.items()}
    finite = [v for v in values.values() if v is not None and np.isfinite(v)]
    fallback = float(np.float64(sum(finite)) / len(finite)) if finite else 1.0
    return {k: (v if v is not None and np.isfinite(v) else fallback) for k, v in values.items()}


def _rebuild(body: np.ndarray, hands: np.ndarray, r: dict[str, float], *,
             float32_centre: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Rebuilds one frame outward from the neck (square coords). body (18,2), hands (2,21,2).

    ``float32_centre`` reproduces a rounding of the released code, which scales each point
    about its parent with cv2.getRotationMatrix2D, whose centre argument is float32: the
    results move by ~1e-8 (normalised), nothing visible; only the fixture test uses it.
    """
    src, out, hands_out = body, body.copy(), hands.copy()

    def about(points: np.ndarray, centre: np.ndarray, scale: float) -> np.ndarray:
        # Scale ``points`` about ``centre``: the child keeps its direction from the parent.
        c = centre.astype(np.float32).astype(np.float64) if float32_centre else centre
        return scale * points + (1.0 - scale) * c

    def hang(child: int, parent: int, scale: float) -> None:
        # The child's original offset from its parent, hung from the parent's new position.
        out[child] = about(src[child] - src[parent] + out[parent], out[parent], scale)

    out[0] = about(src[0], src[NECK], r["neck"])  # the neck itself never moves
    for c in (14, 16):  # right eye, right ear hang from the nose
        hang(c, 0, r["face_left"])
    for c in (15, 17):
        hang(c, 0, r["face_right"])
    for c in (2, 5):
        out[c] = about(src[c], src[NECK], r["shoulder"])
    hang(3, 2, r["arm_upper"]); hang(4, 3, r["arm_lower"])
    hands_out[1] = about(hands[1] - src[4] + out[4], out[4], r["hand"])  # right hand, right wrist
    hang(6, 5, r["arm_upper"]); hang(7, 6, r["arm_lower"])
    hands_out[0] = about(hands[0] - src[7] + out[7], out[7], r["hand"])  # left hand, left wrist
    for c in (8, 11):
        out[c] = about(src[c], src[NECK], r["body"])
    hang(9, 8, r["leg_upper"]); hang(10, 9, r["leg_lower"])
    hang(12, 11, r["leg_upper"]); hang(13, 12, r["leg_lower"])
    return out, hands_out


# Skeleton tree for rebuilding with missing points: parent and part of each body point.
_PARENT = {0: 1, 2: 1, 5: 1, 8: 1, 11: 1, 3: 2, 4: 3, 6: 5, 7: 6, 9: 8, 10: 9, 12: 11, 13: 12,
           14: 0, 16: 0, 15: 0, 17: 0}
_PART = {0: "neck", 14: "face_left", 16: "face_left", 15: "face_right", 17: "face_right",
         2: "shoulder", 5: "shoulder", 3: "arm_upper", 6: "arm_upper", 4: "arm_lower", 7: "arm_lower",
         8: "body", 11: "body", 9: "leg_upper", 12: "leg_upper", 10: "leg_lower", 13: "leg_lower"}
_ORDER = (0, 14, 16, 15, 17, 2, 5, 3, 4, 6, 7, 8, 11, 9, 10, 12, 13)  # parents before children
_HAND_WRIST = ((0, 7), (1, 4))  # hands[0] (left) hangs from the left wrist, hands[1] from the right
_NECK_PROXIES = (2, 5, 0, 8, 11, 14, 15, 16, 17, 3, 6, 9, 12, 4, 7, 10, 13)


def _rebuild_present(body: np.ndarray, hands: np.ndarray, present: np.ndarray, r: dict[str, float],
                     anchor: np.ndarray, anchor_present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`_rebuild`, but a point hangs from its nearest *present* ancestor.

    The released rebuild hangs every point from its parent's new position even when the
    parent is missing, i.e. from a -1 placeholder, which throws the rest of the limb (or,
    without a neck, the whole frame) off. Here a missing parent is skipped over (the merged
    segment takes the child's ratio), and a frame without a neck (one shoulder hidden, e.g.
    a side view) is rebuilt about a neck estimated from a present point and its offset to
    the neck in the align frame.
    body (18, 2), hands (2, 21, 2), anchor (18, 2): square coordinates.
    """
    if present[NECK]:
        neck = body[NECK]
    elif present[2] and present[5]:
        neck = (body[2] + body[5]) / 2
    else:
        proxy = next((j for j in _NECK_PROXIES if present[j] and anchor_present[j]), None)
        if proxy is None:  # nothing to hang the skeleton from: leave the frame as it is
            return body.copy(), hands.copy()
        neck = body[proxy] + anchor[NECK] - anchor[proxy]

    def ancestor(j: int) -> int:
        while j != NECK and not present[j]:
            j = _PARENT[j]
        return j

    src = body.copy()
    src[NECK] = neck
    out = body.copy()
    out[NECK] = neck  # the neck never moves
    for c in _ORDER:
        if present[c]:
            a = ancestor(_PARENT[c])
            out[c] = out[a] + r[_PART[c]] * (src[c] - src[a])
    hands_out = hands.copy()
    for h, wrist in _HAND_WRIST:
        a = ancestor(wrist)
        hands_out[h] = out[a] + r["hand"] * (hands[h] - src[a])
    return out, hands_out


def align_poses(reference: Pose, driving: Sequence[Pose], align_index: int = 0, *,
                skip_missing: bool = True, float32_centre: bool = False) -> list[Pose]:
    """Aligns every driving pose to the reference pose.

    Args:
        reference: the reference image's pose; its width/height must be the size the
            reference is generated at (the released code detects it on the reference
            resized to the generation size and uses that aspect ratio here).
        driving: the driving poses, each normalised to its own frame size.
        align_index: which driving frame the ratios and the neck offset come from.
        skip_missing: True (default): missing points are left out of the ratios (see
            :func:`alignment_ratios`) and of the rebuild (see :func:`_rebuild_present`).
            False: the released arithmetic, placeholders included. Identical results when
            no point is missing.
        float32_centre: with ``skip_missing=False``, reproduce the released float32 rounding
            of scaling centres (~1e-8).

    Returns:
        One pose per driving frame, normalised to the reference image. Missing points stay
        missing ([-1, -1], subset -1); the face is only shifted, never rescaled (as released;
        it is not drawn).
    """
    if not driving:
        return []
    if not 0 <= align_index < len(driving):
        raise PoseError(f"align frame {align_index} is outside the driving clip (0..{len(driving) - 1})")
    anchor = driving[align_index]
    if not reference.body_present[NECK]:
        raise PoseError("the reference pose has no neck (both shoulders must be visible) to align on")
    if not anchor.body_present[NECK]:
        raise PoseError(f"driving frame {align_index} has no neck (both shoulders must be visible) "
                        "to align on; choose another align frame")
    if reference.is_collapsed or anchor.is_collapsed:
        which = "the reference pose" if reference.is_collapsed else f"driving frame {align_index}"
        raise PoseError(f"{which} has every body point at one place (within {MIN_SKELETON_EXTENT:.0%} of the frame); "
                        "the aligned poses would be dots" + ("" if reference.is_collapsed else
                                                             "; choose another align frame"))

    ratios = alignment_ratios(reference, anchor, skip_missing=skip_missing)
    offset = _square(reference.body, reference.aspect)[NECK] - _square(anchor.body, anchor.aspect)[NECK]

    anchor_sq = _square(anchor.body, anchor.aspect)
    aligned = []
    for pose in driving:
        body_sq, hands_sq = _square(pose.body, pose.aspect), _square(pose.hands, pose.aspect)
        if skip_missing:
            body, hands = _rebuild_present(body_sq, hands_sq, pose.body_present, ratios,
                                           anchor_sq, anchor.body_present)
        else:
            body, hands = _rebuild(body_sq, hands_sq, ratios, float32_centre=float32_centre)
        face = _square(pose.face, pose.aspect)
        body, hands, face = ((a + offset) for a in (body, hands, face))
        for a in (body, hands, face):
            a[..., 0] /= reference.aspect

        body_missing = ~pose.body_present | np.any(pose.body == -1.0, axis=-1) | ~np.all(np.isfinite(body), -1)
        hands_missing = np.any(pose.hands == -1.0, axis=-1) | ~np.all(np.isfinite(hands), -1)
        face_missing = np.any(pose.face == -1.0, axis=-1) | ~np.all(np.isfinite(face), -1)
        body[body_missing], hands[hands_missing], face[face_missing] = -1.0, -1.0, -1.0
        subset = np.where(body_missing, -1.0, pose.subset)
        aligned.append(Pose(body, subset, hands, face, reference.width, reference.height,
                            pose.body_scores, pose.hand_scores, pose.face_scores))
    return aligned
