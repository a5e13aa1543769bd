"""Checks the pose alignment and rendering against the released code's outputs.

A fixture directory holds ``alignment.json`` (a reference pose, driving poses and the
released alignment of each driving frame; see shared/fixtures/README.md) and optionally
``render_NN.png``: the released drawing of aligned frame NN as RGB. Nothing here depends on
the fixture's sizes or frame count: they are read from the files.

Expected: alignment within 1e-6 (our float64 result differs from the released one by ~4e-8
because the released code scales about centres that OpenCV's getRotationMatrix2D takes as
float32; ``align_poses(..., float32_centre=True)`` reproduces it to 0) and renders identical
pixel for pixel.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .align import align_poses
from .image import load_image
from .keypoints import Pose
from .render import draw_pose

ALIGN_TOLERANCE = 1e-6
RENDER_TOLERANCE = 0  # mismatched pixels allowed per image
_RENDER_NAME = re.compile(r"^render_(\d+)\.png$")


class CheckLine(NamedTuple):
    """One check, a (name, value, threshold, ok) tuple; ok means value <= threshold."""

    name: str
    value: float
    threshold: float
    ok: bool

    def __str__(self) -> str:
        value = f"{self.value:.3g}" if isinstance(self.value, float) else str(self.value)
        return f"{self.name}={value} (threshold {self.threshold:g}) {'ok' if self.ok else 'FAILED'}"


def _line(name: str, value: float, threshold: float) -> CheckLine:
    return CheckLine(name, value, threshold, bool(value <= threshold))


def load_alignment_fixture(
    directory: str | os.PathLike,
) -> tuple[Pose, list[Pose], list[Pose], int, tuple[int, int] | None]:
    """Reads alignment.json: reference pose, driving poses, expected aligned poses, the align
    frame, and the render size (h, w) when given."""
    path = Path(directory) / "alignment.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    data = json.loads(path.read_text(encoding="utf-8"))
    ref_w, ref_h = data.get("reference_resized_wh_used_by_alignment", data["reference_image_size_wh"])
    drv_w, drv_h = data["driving_video_size_wh"]
    reference = Pose.from_dict(data["reference_pose"], width=ref_w, height=ref_h, where="reference_pose")
    driving = [Pose.from_dict(p, width=drv_w, height=drv_h, where=f"driving_poses[{i}]")
               for i, p in enumerate(data["driving_poses"])]
    expected = [Pose.from_dict(p, width=ref_w, height=ref_h, where=f"aligned_poses[{i}]")
                for i, p in enumerate(data["aligned_poses"])]
    render_hw = tuple(data["render_size_hw"]) if "render_size_hw" in data else None
    return reference, driving, expected, int(data.get("align_frame", 0)), render_hw


def verify_pose_fixture(directory: str | os.PathLike) -> list[CheckLine]:
    """Aligns the fixture's driving poses, compares present points, renders the frames that
    have a ``render_NN.png`` and counts mismatched pixels.

    Returns:
        ``align max_abs_err``, one ``render_NN mismatched_pixels`` per image and the total
        ``render mismatched_pixels`` (when there are images).
    """
    reference, driving, expected, align_frame, render_hw = load_alignment_fixture(directory)
    # The alignment the pipeline uses (skip_missing=True); it equals the released arithmetic
    # on every present point whenever no point is hung from a missing one.
    aligned = align_poses(reference, driving, align_frame)

    err = 0.0
    for src, ours, ref in zip(driving, aligned, expected):
        body_ok = src.body_present & ref.body_present  # the released code leaves -1 placeholders shifted
        hands_ok, face_ok = src.hands_present, src.face_present
        for a, b, ok in ((ours.body, ref.body, body_ok), (ours.hands, ref.hands, hands_ok),
                         (ours.face, ref.face, face_ok)):
            if ok.any():
                err = max(err, float(np.abs(a[ok] - b[ok]).max()))
    if len(aligned) != len(expected):
        err = float("inf")
    lines = [_line("align max_abs_err", err, ALIGN_TOLERANCE)]

    total = 0
    renders = sorted((int(m.group(1)), p) for p in Path(directory).iterdir()
                     if (m := _RENDER_NAME.match(p.name)))
    for index, png in renders:
        target = load_image(png)
        h, w = render_hw if render_hw is not None else target.shape[:2]
        if index >= len(aligned):
            mismatched = int(target.shape[0] * target.shape[1])
        else:
            ours = draw_pose(aligned[index], h, w)
            mismatched = (int(np.any(ours != target, axis=-1).sum()) if ours.shape == target.shape
                          else int(max(ours.shape[0] * ours.shape[1], target.shape[0] * target.shape[1])))
        total += mismatched
        lines.append(_line(f"{png.stem} mismatched_pixels", mismatched, RENDER_TOLERANCE))
    if renders:
        lines.append(_line("render mismatched_pixels", total, RENDER_TOLERANCE * len(renders)))
    return lines
