"""Pose pipeline: DWPose detection, video reading, alignment, rendering (the released pose
preprocessing, ../shared/SPEC.md).

Heavy dependencies load lazily: onnxruntime when a DWPoseDetector is built, PyAV when a
video is read, huggingface_hub when a model file is fetched.
"""

from .align import PART_NAMES, align_poses, alignment_ratios
from .edits import FrameEdit, JointEdit, PoseEditError, PoseEdits, Retarget
from .detection import CountingPoseDetector, PoseDetection, PoseDetector, VideoPoseDetector
from .detector import (
    DETECTOR_FILE,
    DWPOSE_REPO,
    POSE_FILE,
    DWPoseDetector,
    WholeBody,
    default_providers,
    resolve_model_file,
)
from .errors import (
    DetectorModelError,
    EmptyVideoError,
    NoPersonInDrivingError,
    NoPersonInReferenceError,
    PoseError,
    PoseFormatError,
    VideoReadError,
)
from .fixture_check import CheckLine, verify_pose_fixture
from .image import load_image
from .keypoints import (
    BODY_NAMES,
    KEYPOINT_THRESHOLD,
    Pose,
    PoseSequence,
    check_reference_pose,
    load_reference_pose,
    reference_pose_from,
)
from .negative import Perturbation, negative_poses, perturb_pose, sample_perturbations
from .prepare import PreparedPoses, prepare_poses
from .retarget import fit_framing, move_motion, photo_framing, photo_limb_lengths, stable_ground
from .smoothing import smooth_poses
from .render import PoseModelInputs, draw_pose, pose_model_inputs, render_pose_pixels, render_poses
from ..sizing import DEFAULT_MAX_AREA, generation_size, generation_size_for_aspect
from .start_gap import choose_start_frame, interpolate_pose, pose_distance, transition_poses
from .synthetic import SyntheticPoseDetector
from .tracking import PoseTracker
from .video import (
    VideoClip,
    VideoFrame,
    VideoInfo,
    fit_length,
    iter_video_frames,
    probe_video,
    read_video,
    resample_indices,
)

__all__ = [
    # keypoints and JSON
    "BODY_NAMES", "KEYPOINT_THRESHOLD", "Pose", "PoseSequence", "check_reference_pose", "load_reference_pose",
    "reference_pose_from",
    # detection
    "CountingPoseDetector", "DETECTOR_FILE", "DWPOSE_REPO", "POSE_FILE", "DWPoseDetector", "PoseDetection",
    "PoseDetector", "VideoPoseDetector",
    "PoseTracker", "SyntheticPoseDetector", "WholeBody",
    "default_providers", "resolve_model_file", "load_image",
    # video
    "VideoClip", "VideoFrame", "VideoInfo", "fit_length", "iter_video_frames",
    "probe_video", "read_video", "resample_indices",
    # alignment, start gap, negatives, rendering
    "PART_NAMES", "align_poses", "alignment_ratios", "choose_start_frame", "interpolate_pose", "pose_distance",
    "transition_poses", "Perturbation", "negative_poses", "perturb_pose", "sample_perturbations",
    "draw_pose", "render_poses", "render_pose_pixels", "pose_model_inputs", "PoseModelInputs",
    # edits, retargeting, smoothing
    "FrameEdit", "JointEdit", "PoseEditError", "PoseEdits", "Retarget", "fit_framing", "move_motion", "photo_framing",
    "photo_limb_lengths", "stable_ground", "smooth_poses",
    # sizing, high level, checks
    "DEFAULT_MAX_AREA", "generation_size", "generation_size_for_aspect", "PreparedPoses", "prepare_poses",
    "CheckLine", "verify_pose_fixture",
    # errors
    "PoseError", "PoseFormatError", "NoPersonInReferenceError", "NoPersonInDrivingError", "VideoReadError",
    "EmptyVideoError", "DetectorModelError",
]
