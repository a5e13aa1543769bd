"""The pose step as the app runs it: inputs from uploaded files (validated by `steadydancer_space.uploads` from their
content), a small cache so that "Extract poses" and "Animate" share the work, and warnings written for people (frames
where the person was lost, several people in a frame, padded endings, fake poses)."""

import contextlib
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from steadydancer.defaults import OUTPUT_FPS
from steadydancer.fidelity import get_fidelity_mode
from steadydancer.pose import Pose, PoseDetection, PreparedPoses, load_image, prepare_poses
from steadydancer.sizing import generation_size

from .request import AnimationRequest, PoseOptions
from .uploads import REFERENCE_KEYPOINTS, Limits, check_driving_video, check_keypoint_file, check_reference_image
from .uploads import load_keypoints
from .uploads import load_reference_image, load_reference_keypoints

# A reference enlarged this much (or more) to the generation size gets a warning: the result will be blurry.
SMALL_REFERENCE_SCALE = 4
FAKE_POSES_NOTE = "The poses are FAKE: tiny mode uses a stand-in detector that ignores what the images show."
REFERENCE_KEYPOINTS_NOTE = "The reference's pose comes from the reference keypoint file; the detector did not run on the photo."


@dataclass
class PoseStep:
    reference: np.ndarray  # (H, W, 3) uint8, the reference as uploaded (upright, alpha on white)
    prepared: PreparedPoses
    driving_video: str | None  # the video the audio comes from (None for keypoint input)
    options: PoseOptions
    warnings: list[str]
    reference_from_keypoints: bool = False  # the reference's pose was given (the detector did not run on the photo)

    @property
    def lead_in_seconds(self) -> float:
        return float(self.prepared.transition.sum()) / OUTPUT_FPS


def count_figures(rgb: np.ndarray, threshold: int = 48) -> int:
    """Distinct figures on a plain background (tiny mode's stand-in for a person detector): pixels far from their
    row's background (taken from the left and right edges), closed into blobs; blobs of at least 1% of the image."""
    import cv2

    image = np.asarray(rgb).astype(np.int16)
    h, w = image.shape[:2]
    background = (image[:, :1] + image[:, -1:]) // 2
    mask = (np.abs(image - background).max(axis=-1) > threshold).astype(np.uint8)
    k = max(3, int(round(min(h, w) * 0.03)) | 1)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((k, k), np.uint8))
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return int((stats[1:, cv2.CC_STAT_AREA] >= 0.01 * h * w).sum())


class StandInPeopleDetector:
    """Tiny mode's detector: the FAKE skeleton of `SyntheticPoseDetector`, but only where the image shows a figure.

    It counts distinct figures on a plain background (`count_figures`): none gives an empty pose (so a blank photo or
    video is refused as in real mode), several are reported like DWPose's several people. Never for real poses.
    """

    is_synthetic = True

    def __init__(self, base):
        self.base = base

    def detect(self, image) -> PoseDetection:
        rgb = load_image(image)
        count = count_figures(rgb)
        pose = self.base(rgb) if count else Pose.empty(rgb.shape[1], rgb.shape[0])
        return PoseDetection(pose, count)

    def __call__(self, image) -> Pose:
        return self.detect(image).pose


def frame_ranges(indices) -> str:
    """'3-5, 9' for [3, 4, 5, 9] (1-based frame numbers are shown to people)."""
    indices = [int(i) + 1 for i in indices]
    parts, start = [], None
    for k, i in enumerate(indices):
        if start is None:
            start = i
        if k + 1 == len(indices) or indices[k + 1] != i + 1:
            parts.append(str(start) if start == i else f"{start}-{i}")
            start = None
    return ", ".join(parts)


# A given reference pose made for a picture whose aspect differs by more than this (2 %) warns: its fractions of
# another picture's width and height put the joints beside the person.
MAX_REFERENCE_ASPECT_MISMATCH = 0.02


def pose_warnings(prepared: PreparedPoses, synthetic: bool, reference_people: int | None = None,
                  driving_people: np.ndarray | None = None, reference_size: tuple[int, int] | None = None,
                  given_reference: Pose | None = None) -> list[str]:
    """Warnings for people; `reference_size`: the uploaded reference's (height, width); `given_reference`: the pose
    from the reference keypoint file, as given."""
    notes = []
    if given_reference is not None and reference_size is not None:
        made_for = given_reference.width / given_reference.height
        photo = reference_size[1] / reference_size[0]
        if abs(made_for / photo - 1) > MAX_REFERENCE_ASPECT_MISMATCH:
            notes.append(f"The {REFERENCE_KEYPOINTS} was made for a {given_reference.width}x{given_reference.height} "
                         f"picture, but the photo is {reference_size[1]}x{reference_size[0]} (another shape): its "
                         "joints may not sit on the person. Use keypoints made for this photo.")
    if _outside_frame(prepared.reference_pose):  # only a given pose can be: the detector's lie in the photo
        notes.append(f"The {REFERENCE_KEYPOINTS}'s pose lies mostly outside the photo; check that its keypoints are "
                     "fractions of the photo (0 to 1) and made for this photo.")
    if synthetic:
        notes.append(FAKE_POSES_NOTE)
    if reference_people is not None and reference_people > 1:
        notes.append(
            f"The reference image shows {reference_people} people; only the most prominent one is animated. Crop the "
            "photo to one person for a reliable result."
        )
    crowded = np.flatnonzero(np.asarray([] if driving_people is None else driving_people, dtype=int) > 1)
    if len(crowded):
        notes.append(
            f"{len(crowded)} of {len(driving_people)} driving frames show several people ({frame_ranges(crowded)}); "
            "the most prominent person of each frame drives the motion, which may jump between people. Use a video "
            "of one person."
        )
    lost = np.flatnonzero(prepared.lost)
    if len(lost):
        notes.append(
            f"The person was lost in {len(lost)} of {prepared.num_frames} frames ({frame_ranges(lost)}); "
            "each of them repeats the nearest pose that was found. Check the pose video before animating."
        )
    padded = np.flatnonzero(prepared.padded)
    if len(padded):
        notes.append(
            f"The driving clip is shorter than {prepared.num_frames} frames: frames {frame_ranges(padded)} repeat its "
            "last pose. Choose a shorter length to avoid a frozen ending."
        )
    outside = [i for i, pose in enumerate(prepared.driving_poses.poses) if _outside_frame(pose)]
    if outside:
        notes.append(
            f"{len(outside)} of {len(prepared.driving_poses)} driving poses lie mostly outside their frame "
            f"({frame_ranges(outside)}); check that the keypoints are fractions of the frame (0 to 1)."
        )
    if reference_size is not None:
        height, width = reference_size
        scale = max(prepared.height / height, prepared.width / width)
        if scale >= SMALL_REFERENCE_SCALE:
            notes.append(
                f"The reference image is only {width}x{height}: it is enlarged {scale:.0f}x to {prepared.width}x"
                f"{prepared.height}, so the video will look blurry. Use a larger photo for a sharp result."
            )
    return notes


def _outside_frame(pose: Pose, margin: float = 0.25) -> bool:
    """Most of the pose's visible body points lie beyond `margin` of a frame side."""
    points = pose.body[pose.body_present]
    if not len(points):
        return False
    beyond = ((points < -margin) | (points > 1 + margin)).any(axis=1)
    return beyond.mean() > 0.5


def _digest(path: str | None) -> str | None:
    if not path:
        return None
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class PoseStepCache:
    """The last few pose steps by content, so "Animate" after "Extract poses" reuses the detections."""

    def __init__(self, size: int = 2):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


@contextlib.contextmanager
def detector_on_gpu(detector):
    """DWPose on ONNX Runtime's CUDA provider inside the block (a ZeroGPU call: CUDA exists only there), where it
    starts; the CPU after. Tiny mode's stand-in has no device and runs as it is."""
    if not hasattr(detector, "to"):
        yield detector
        return
    detector.to(None)  # CUDA when its provider starts, else the CPU (logged)
    try:
        yield detector
    finally:
        detector.to("cpu")


def run_pose_step(
    detector,
    job: AnimationRequest,
    max_area: int,
    *,
    cache: PoseStepCache | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    limits: Limits | None = None,
    reference_checked: bool = False,
) -> PoseStep:
    """Reference + driving (keypoint JSON when given, else the video) -> aligned pose frames at the generation size
    for a budget of `max_area` pixels.

    The files are checked from their content (`steadydancer_space.uploads`, with `limits`) before anything is
    decoded (the reference's header not again when `reference_checked`: a `JobPlan` has read it). Raises `InputError` or `PoseError` (both ValueErrors) with a message for people when an input is missing
    or unusable.
    """
    job.require_files()
    limits = limits or Limits()
    # Headers first (kind from the content, file size, pixels, duration, aspect), before hashing or decoding.
    if not reference_checked:
        check_reference_image(job.reference, limits)
    if job.keypoints:
        check_keypoint_file(job.keypoints, limits)
    else:
        check_driving_video(job.driving_video, limits)
    if job.reference_keypoints:
        check_keypoint_file(job.reference_keypoints, limits, REFERENCE_KEYPOINTS)
    motion = job.keypoints or job.driving_video
    key = (_digest(job.reference), _digest(motion), bool(job.keypoints), _digest(job.reference_keypoints), job.pose,
           max_area, id(detector))
    if cache is not None and (hit := cache.get(key)) is not None:
        return hit

    reference = load_reference_image(job.reference, limits, checked=True)  # writable: torch warns on read-only arrays
    height, width = generation_size(reference.shape[0], reference.shape[1], max_area)
    driving = load_keypoints(job.keypoints, limits) if job.keypoints else job.driving_video
    # Given keypoints replace the detection on the photo (a drawn character, a pose the detector cannot read).
    reference_pose = load_reference_keypoints(job.reference_keypoints, limits) if job.reference_keypoints else None
    options = job.pose
    choices = dict(fps=OUTPUT_FPS if options.real_time else None, align=options.align,
                   smooth_start_frames=options.smooth_start_frames, auto_start=options.auto_start)
    if options.fidelity != "default":  # the released CLI's choices replace the visitor's
        choices.update(get_fidelity_mode(options.fidelity).pose_kwargs())
    prepared = prepare_poses(reference, driving, detector=detector, width=width, height=height,
                             num_frames=options.num_frames, reference_pose=reference_pose, progress=progress,
                             edits=options.edits, **choices)
    step = PoseStep(
        reference=reference,
        prepared=prepared,
        driving_video=None if job.keypoints else job.driving_video,
        options=options,
        warnings=pose_warnings(prepared, getattr(detector, "is_synthetic", False), prepared.reference_people,
                               prepared.driving_people, reference.shape[:2], reference_pose),
        reference_from_keypoints=reference_pose is not None,
    )
    if cache is not None:
        cache.put(key, step)
    return step


OVERLAY_MIN_SIDE = 640  # the preview's long side at least: tiny mode's 80x128 pose frames were hard to see


def overlay(reference: np.ndarray, pose_frame: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The reference with the first pose frame drawn over it (both at the pose frame's aspect, enlarged so the long
    side is at least `OVERLAY_MIN_SIDE`): shows how well the alignment fits."""
    import cv2

    h, w = pose_frame.shape[:2]
    scale = max(1.0, OVERLAY_MIN_SIDE / max(h, w))
    size = (int(round(w * scale)), int(round(h * scale)))
    shrink = reference.shape[0] * reference.shape[1] > size[0] * size[1]
    base = cv2.resize(reference, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    pose = cv2.resize(pose_frame, size, interpolation=cv2.INTER_NEAREST)  # crisp strokes; they are what is checked
    mask = (pose.max(axis=-1, keepdims=True) > 0).astype(np.float32) * alpha
    return np.clip(base.astype(np.float32) * (1 - mask) + pose.astype(np.float32) * mask, 0, 255).astype(np.uint8)
