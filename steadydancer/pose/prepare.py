"""From a reference image and a driving video to the pose frames the model is conditioned on.

:func:`prepare_poses` chains the released preprocessing steps (../shared/SPEC.md): detect the reference pose on
the reference resized to the generation size; read the driving video (resampled to 16 fps
by default) and detect one pose per frame; optionally pick the start frame closest to the
reference pose; align the driving poses to the reference; optionally prepend a transition
from the reference pose; trim or pad to 4n+1 frames; draw the positive frames and the
perturbed negative frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from .align import align_poses
from .detection import CountingPoseDetector, PoseDetector, VideoPoseDetector
from .edits import PoseEdits, Retarget, apply_frame_edits, apply_joint_edits
from .errors import NoPersonInDrivingError, PoseError
from .image import ImageLike, load_image
from .keypoints import NECK, Pose, PoseSequence, check_reference_pose
from .negative import negative_poses
from .render import PoseModelInputs, pose_model_inputs, render_poses
from .retarget import fit_framing, move_motion, photo_limb_lengths, stable_ground
from .smoothing import smooth_poses
from ..sizing import DEFAULT_MAX_AREA, generation_size
from .start_gap import choose_start_frame, transition_poses
from ..defaults import OUTPUT_FPS
from ..sizing import is_valid_frame_count
from .video import VideoInfo, fit_length, iter_video_frames, probe_video, resample_indices

DEFAULT_SEARCH_RANGE = 32  # frames (2 s at 16 fps) examined by the automatic start
MAX_LOST_FRACTION = 0.5


@dataclass
class PreparedPoses:
    """Everything the pipeline and the app need from the pose stage.

    The model's pose inputs come from :meth:`model_inputs` (computed on demand, frame by
    frame, as the released ``generate`` computes them); ``positive`` and ``negative`` are
    8-bit frames to show or save.

    Attributes:
        positive: (N, H, W, 3) uint8 RGB, the aligned poses drawn in the released style
            (at the canvas size, 2H x 2W, with ``resize_frames=False``).
        negative: same for the perturbed poses of the pose guidance.
        poses: the N aligned poses (normalised to the generation frame W x H).
        negative_poses: the N perturbed poses.
        reference_pose: the reference's pose (normalised to the generation frame).
        driving_poses: raw detections of every driving frame read (after resampling,
            before start selection, alignment and lost-frame filling); save it as JSON to
            rerun without a detector.
        lost: (N,) bool, the person was not found in that frame (its pose is held from the
            nearest frame where it was, or left empty with ``hold_lost_frames=False``).
        padded: (N,) bool, frames repeating the last one to reach ``num_frames``.
        transition: (N,) bool, smooth-start frames interpolated from the reference pose.
        start_index: index in ``driving_poses`` of the first driving frame used.
        start_time: its time in seconds from the start of the driving video; the audio
            matching the output starts there (after ``transition.sum() / fps`` s of lead-in).
        frame_times: (N,) source time in seconds of each frame (NaN for transition frames).
        align_index: index in ``driving_poses`` of the frame the alignment was measured on.
        fps: rate the frames play at (the resampling rate; 16 when every frame is used).
        source_fps: the driving video's (or sequence's) own frame rate, when known.
        width, height: the generation size.
        video_info: metadata of the driving video (None for keypoint input).
        reference_people: people the detector found in the reference image (None when
            ``reference_pose`` was given or the detector has no ``detect``).
        driving_people: (len(driving_poses),) int, people found in each driving frame read
            (None for keypoint input or a detector without ``detect``). Only the most
            prominent person of an image is posed; more than one means the motion may jump.
            A tracked frame (the person detector did not run on it, see ``DWPoseDetector.tracker``)
            repeats the count of the last detected frame.
        reference_size: (height, width) of the reference image; the released chain resizes
            every pose frame to it before the generation size (None: the generation size).
        canvas_scale: drawing canvas size relative to the generation size.
        jpeg_quality: the canvases pass through JPEG files of this quality before
            :meth:`model_inputs` resizes them (the released storage: 95); None: lossless.
    """

    positive: np.ndarray
    negative: np.ndarray
    poses: PoseSequence
    negative_poses: PoseSequence
    reference_pose: Pose
    driving_poses: PoseSequence
    lost: np.ndarray
    padded: np.ndarray
    transition: np.ndarray
    start_index: int
    start_time: float
    frame_times: np.ndarray
    align_index: int
    fps: float
    source_fps: float | None
    width: int
    height: int
    video_info: VideoInfo | None = None
    reference_people: int | None = None
    driving_people: np.ndarray | None = None
    reference_size: tuple[int, int] | None = None
    canvas_scale: int = 2
    jpeg_quality: int | None = None

    def model_inputs(self) -> PoseModelInputs:
        """The pipeline's pose inputs (``pose_video``, ``negative_pose_video``, ``pose_image``)
        as the released ``generate`` computes them: each canvas resized with PIL bicubic to the
        reference's size, then with torch bicubic to the generation size, unclamped. Frame by
        frame: it holds the (N, 3, H, W) float32 results and one frame at the reference's size.

        ``pipe(image=reference, **prepared.model_inputs().pipeline_kwargs(), ...)``.
        """
        reference_size = self.reference_size or (self.height, self.width)
        return pose_model_inputs(self.poses.poses, self.negative_poses.poses, self.height, self.width,
                                 reference_size, canvas_scale=self.canvas_scale, jpeg_quality=self.jpeg_quality)

    def window(self, start: int, stop: int) -> PoseModelInputs:
        """:meth:`model_inputs` of frames ``start:stop`` only, so a long video's windows can be prepared one at a
        time (memory flat in the length). Its ``pose_image`` is frame ``start`` at the reference's size: what the
        image encoder sees for a window starting there."""
        if not 0 <= start < stop <= self.num_frames:
            raise PoseError(f"window [{start}, {stop}) is outside the {self.num_frames} prepared frames")
        reference_size = self.reference_size or (self.height, self.width)
        return pose_model_inputs(self.poses.poses[start:stop], self.negative_poses.poses[start:stop], self.height,
                                 self.width, reference_size, canvas_scale=self.canvas_scale,
                                 jpeg_quality=self.jpeg_quality)

    @property
    def num_frames(self) -> int:
        return int(self.positive.shape[0])

    @property
    def duration(self) -> float:
        """Seconds the frames last at ``fps``."""
        return self.num_frames / self.fps


def _detect(detector: PoseDetector | CountingPoseDetector, image: np.ndarray) -> tuple[Pose, int | None]:
    """The pose and, when the detector can tell (``detect``), how many people it saw."""
    if not isinstance(detector, CountingPoseDetector):
        return detector(image), None
    found = detector.detect(image)
    return found.pose, int(found.num_people)


def _hold_lost(poses: list[Pose], lost: np.ndarray) -> list[Pose]:
    """Fills each lost frame with the nearest earlier found pose (later one at the start)."""
    found = np.flatnonzero(~lost)
    out = []
    for i, pose in enumerate(poses):
        if not lost[i]:
            out.append(pose)
            continue
        before = found[found < i]
        src = before[-1] if len(before) else found[found > i][0]
        out.append(poses[src])
    return out


def _read_driving(driving, detector: PoseDetector | None, fps: float | None, needed: int | None,
                  progress: Callable[[int, int | None], None] | None
                  ) -> tuple[PoseSequence, np.ndarray, np.ndarray, VideoInfo | None, float | None, np.ndarray | None]:
    """Driving poses, their source times and source indices (resampled), video info, source fps and the
    people seen in each frame (None for keypoints or a detector that cannot count)."""
    if isinstance(driving, PoseSequence):
        times = driving.frame_times()
        if fps is not None and driving.fps is not None:
            idx = resample_indices(times, fps, max_count=needed)
        else:
            idx = np.arange(len(driving) if needed is None else min(needed, len(driving)))
        poses = [driving[i] for i in idx]
        return (PoseSequence(poses, driving.width, driving.height, fps or driving.fps, times[idx]),
                times[idx], idx, None, driving.fps, None)

    if not isinstance(driving, (str, os.PathLike)):
        raise PoseError(f"driving must be a video path or a PoseSequence, got {type(driving).__name__}")
    if detector is None:
        raise PoseError("a pose detector is needed to read poses from a driving video")
    info = probe_video(driving)
    total = needed
    if total is None and info.duration > 0:
        total = int(np.ceil(info.duration * fps)) if fps else (info.num_frames or None)
    # A detector that can follow a person through a video (DWPoseDetector) gets a fresh track per video.
    frame_detector = detector.tracker() if isinstance(detector, VideoPoseDetector) else detector
    poses, people, times, idx = [], [], [], []
    for frame in iter_video_frames(driving, fps, max_frames=needed):
        pose, count = _detect(frame_detector, frame.image)
        poses.append(pose)
        people.append(count)
        times.append(frame.time)
        idx.append(frame.index)
        if progress is not None:
            progress(len(poses), total)
    seq = PoseSequence(poses, info.width, info.height, fps or info.fps, np.asarray(times))
    counts = np.asarray(people, dtype=np.int64) if people and None not in people else None
    return seq, np.asarray(times), np.asarray(idx), info, info.fps, counts


def _check_options(num_frames, smooth_start_frames, align_frame, fps, jpeg_quality, auto_start,
                   start_at_align_frame) -> None:
    """`prepare_poses`'s option checks, before any image is read; `PoseError` names the option."""
    if num_frames is not None and not is_valid_frame_count(int(num_frames)):
        raise PoseError(f"num_frames must be of the form 4n+1 (e.g. 49, 81), got {num_frames}")
    if smooth_start_frames < 0 or align_frame < 0:
        raise PoseError("smooth_start_frames and align_frame must be >= 0")
    if num_frames is not None and smooth_start_frames >= num_frames:
        raise PoseError(f"smooth_start_frames ({smooth_start_frames}) must be below num_frames ({num_frames})")
    if fps is not None and not fps > 0:
        raise PoseError(f"fps must be positive or None, got {fps}")
    if jpeg_quality is not None and not (isinstance(jpeg_quality, int) and 1 <= jpeg_quality <= 100):
        raise PoseError(f"jpeg_quality must be an integer from 1 to 100 or None, got {jpeg_quality!r}")
    if start_at_align_frame and auto_start:
        raise PoseError("auto_start and start_at_align_frame both choose the start frame; use one")


def _reference_pose(ref_rgb: np.ndarray, width: int, height: int, detector, given: Pose | None,
                    ) -> tuple[Pose, int | None]:
    """The reference's pose at the generation size (detected on the resized reference unless `given`), and how
    many people the detector saw (None when it cannot tell, or did not run)."""
    people = None
    pose = given
    if given is None:
        if detector is None:
            raise PoseError("a pose detector (or reference_pose) is needed for the reference image")
        ref_resized = cv2.resize(ref_rgb, (width, height), interpolation=cv2.INTER_CUBIC)
        pose, people = _detect(detector, ref_resized)
    pose = pose.with_size(width, height)
    check_reference_pose(pose, "reference_pose" if given is not None else None)
    return pose, people


def _retarget(reference: Pose, poses: list[Pose], retarget: Retarget) -> list[Pose]:
    """The retarget settings after the alignment (or the fit): limb lengths, then scale and offset, then ground."""
    if retarget.limb_lengths == "photo":
        poses = photo_limb_lengths(reference, poses)
    if retarget.scale != 1.0 or retarget.offset != (0.0, 0.0):
        poses = move_motion(reference, poses, retarget.scale, retarget.offset)
    if retarget.stable_ground:
        poses = stable_ground(reference, poses)
    return poses


def prepare_poses(
    reference_image: ImageLike,
    driving: str | os.PathLike | PoseSequence,
    *,
    detector: PoseDetector | None = None,
    width: int | None = None,
    height: int | None = None,
    max_area: int = DEFAULT_MAX_AREA,
    num_frames: int | None = 81,
    fps: float | None = OUTPUT_FPS,
    align: bool = True,
    align_frame: int = 0,
    smooth_start_frames: int = 0,
    smooth_start_easing: str = "linear",
    auto_start: bool = False,
    search_range: int = DEFAULT_SEARCH_RANGE,
    negative_seed: int | np.random.Generator | None = 0,
    reference_pose: Pose | None = None,
    hold_lost_frames: bool = True,
    max_lost_fraction: float = MAX_LOST_FRACTION,
    canvas_scale: int = 2,
    resize_frames: bool = True,
    skip_missing: bool = True,
    start_at_align_frame: bool = False,
    jpeg_quality: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    edits: PoseEdits | None = None,
) -> PreparedPoses:
    """Turns a reference image and a driving video (or keypoints) into pose frames.

    Args:
        reference_image: path, PIL image or (H, W, 3) uint8 RGB array.
        driving: a video path, or a :class:`PoseSequence` (then no detector is needed for
            it; its poses are resampled by time when both it and ``fps`` have a rate).
        detector: a :class:`PoseDetector` (``DWPoseDetector`` or ``SyntheticPoseDetector``);
            needed unless ``driving`` is a PoseSequence and ``reference_pose`` is given. One
            with a ``tracker()`` method poses the video through it: ``DWPoseDetector`` then runs
            its person detector every ``redetect_every`` frames (1: every frame, as released).
        width, height: generation size; default from ``max_area`` and the reference's
            aspect ratio (:func:`generation_size`).
        num_frames: output length, 4n+1 (default 81); the clip is trimmed, or padded by
            repeating its last frame. None: all available frames, padded to the next 4n+1.
        fps: resample the driving motion to this rate (default 16, the output rate), or
            None to use every frame as the released code does.
        align: align the driving poses to the reference pose (as released).
        align_frame: driving frame (counted from the start frame) to measure the alignment on.
        smooth_start_frames: N frames interpolated from the reference's own pose to the
            first driving pose, prepended to the clip (they count in ``num_frames``).
        smooth_start_easing: "linear" or "cosine".
        auto_start: start the clip at the frame within the first ``search_range`` (resampled)
            frames whose aligned pose is closest to the reference pose.
        negative_seed: seed (or numpy Generator) of the negative-pose perturbation.
        reference_pose: the reference's pose, normalised to the reference image (e.g. from
            :func:`~steadydancer.pose.keypoints.load_reference_pose`): the detector is not run on
            the reference (for a drawn character or a pose the detector cannot read).
        hold_lost_frames: a frame where the person was lost repeats the nearest found pose
            (True) or stays empty, i.e. black (False, the released behaviour).
        max_lost_fraction: more lost frames than this fraction raises NoPersonInDrivingError.
        canvas_scale: drawing canvas size relative to the output (released: 2).
        resize_frames: False returns ``positive``/``negative`` at the canvas size
            (canvas_scale x height, width): the frames the released code stores, which the
            pipeline also accepts (8-bit frames get the released resize chain). The model's
            input is :meth:`PreparedPoses.model_inputs` either way.
        skip_missing: see :func:`steadydancer.pose.align.align_poses` (False: released arithmetic).
        start_at_align_frame: the clip starts at ``align_frame`` (the released behaviour)
            instead of at the first (or automatically chosen) frame.
        jpeg_quality: for :meth:`PreparedPoses.model_inputs`, store each canvas as a JPEG of
            this quality (4:2:0) and read it back before resizing, as the released code's
            frame files are (95). None (default): lossless canvases.
        progress: called as progress(frames_done, frames_total_or_None) during detection.
        edits: corrections and retargeting (:class:`~steadydancer.pose.edits.PoseEdits`): the reference's joints
            edited before the alignment, the driving keypoints smoothed before it, the fit to the photo's framing
            instead of it (``retarget.fit``), the rest of the retarget after it, frame edits on the output frames.
            Every product (drawn frames, negatives, :meth:`PreparedPoses.window`) uses the edited keypoints.

    Raises:
        NoPersonInReferenceError, NoPersonInDrivingError, VideoReadError, EmptyVideoError,
        PoseError (bad arguments).
    """
    _check_options(num_frames, smooth_start_frames, align_frame, fps, jpeg_quality, auto_start, start_at_align_frame)

    # Reference: resized to the generation size, as the released preprocessing detects it.
    ref_rgb = load_image(reference_image)
    if width is None or height is None:
        height, width = generation_size(ref_rgb.shape[0], ref_rgb.shape[1], max_area)
    width, height = int(width), int(height)
    reference_pose, reference_people = _reference_pose(ref_rgb, width, height, detector, reference_pose)
    edits = edits or PoseEdits()
    if edits.reference:
        reference_pose = apply_joint_edits(reference_pose, edits.reference, "pose_edits.reference")
        check_reference_pose(reference_pose, "pose_edits.reference")

    # Driving poses: read only as many frames as can be used.
    needed = None
    if num_frames is not None:
        needed = (search_range - 1 if auto_start else 0) + max(num_frames - smooth_start_frames, align_frame + 1)
        if start_at_align_frame:
            needed = align_frame + num_frames - smooth_start_frames
    raw, times, _, info, source_fps, driving_people = _read_driving(driving, detector, fps, needed, progress)
    if len(raw) == 0:
        raise PoseError("the driving clip has no frames")
    lost_all = np.array([p.is_empty for p in raw.poses])
    if lost_all.mean() > max_lost_fraction:
        raise NoPersonInDrivingError(
            f"no person was found in {int(lost_all.sum())} of {len(raw)} driving frames; use a video "
            "where one person stays visible")

    # Start frame.
    start = 0
    if auto_start:
        candidates = [Pose.empty(p.width, p.height) if lost else p for p, lost in zip(raw.poses, lost_all)]
        start, _ = choose_start_frame(reference_pose, candidates, search_range, skip_missing=skip_missing)
    elif start_at_align_frame:
        start = min(align_frame, len(raw) - 1)
    used = list(raw.poses[start:])
    lost = lost_all[start:]
    if lost.all():
        raise NoPersonInDrivingError("the person is not visible in the driving frames used")
    filled = _hold_lost(used, lost) if hold_lost_frames else used
    filled = smooth_poses(filled, edits.smoothing, raw.fps or OUTPUT_FPS) if edits.smoothing else filled

    # Alignment, measured on the requested frame or the nearest one with a visible neck.
    align_rel = 0 if start_at_align_frame else min(align_frame, len(used) - 1)
    if align or edits.retarget.fit != "none":
        has_neck = np.array([p.body_present[NECK] for p in filled])
        if not has_neck.any():
            raise NoPersonInDrivingError("no driving frame shows the person's shoulders; cannot align")
        if not has_neck[align_rel]:
            candidates = np.flatnonzero(has_neck)
            align_rel = int(candidates[np.argmin(np.abs(candidates - align_rel))])
        if edits.retarget.fit != "none":
            aligned = fit_framing(reference_pose, filled, align_rel, edits.retarget.fit)
        else:
            aligned = align_poses(reference_pose, filled, align_rel, skip_missing=skip_missing)
    else:
        aligned = [p.with_size(width, height) for p in filled]
    aligned = _retarget(reference_pose, aligned, edits.retarget)

    # Smooth start, then the 4n+1 length.
    lead_in = transition_poses(reference_pose, aligned[0], smooth_start_frames, easing=smooth_start_easing)
    frames = lead_in + aligned
    flags = [(False, True, np.nan)] * len(lead_in) + [(bool(l), False, float(t)) for l, t in zip(lost, times[start:])]
    frames, padded = fit_length(frames, num_frames)
    flags, _ = fit_length(flags, num_frames)
    if edits.frames:
        frames = apply_frame_edits(frames, edits.frames)
    lost_out = np.array([f[0] for f in flags])
    transition_out = np.array([f[1] for f in flags])
    frame_times = np.array([f[2] for f in flags], dtype=np.float64)

    negatives = negative_poses(frames, negative_seed)
    out_fps = float(fps) if fps is not None else OUTPUT_FPS
    return PreparedPoses(
        positive=render_poses(frames, height, width, canvas_scale=canvas_scale, resize=resize_frames),
        negative=render_poses(negatives, height, width, canvas_scale=canvas_scale, resize=resize_frames),
        poses=PoseSequence(frames, width, height, out_fps),
        negative_poses=PoseSequence(negatives, width, height, out_fps),
        reference_pose=reference_pose,
        driving_poses=raw,
        lost=lost_out,
        padded=padded,
        transition=transition_out,
        start_index=int(start),
        start_time=float(times[start]),
        frame_times=frame_times,
        align_index=int(start + align_rel),
        fps=out_fps,
        source_fps=source_fps,
        width=width,
        height=height,
        video_info=info,
        reference_people=reference_people,
        driving_people=driving_people,
        reference_size=(int(ref_rgb.shape[0]), int(ref_rgb.shape[1])),
        canvas_scale=canvas_scale,
        jpeg_quality=jpeg_quality,
    )
