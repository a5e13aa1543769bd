"""What a pose detector is, apart from any model: the protocols `prepare_poses` relies on and the result type.

Its own module so that the DWPose detector (`steadydancer.pose.detector`) and the tracker that follows a person
through a video (`steadydancer.pose.tracking`) both build on it without importing each other's types back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from .keypoints import Pose

# In a video the person detector runs on one frame in this many; the box is tracked in between.
REDETECT_EVERY = 8


@dataclass(frozen=True)
class PoseDetection:
    """One image's detection: the pose of the most prominent person and how many people were found.

    ``tracked`` is True when the person detector did not run on this image (a video frame
    posed in the box tracked from the previous frame); ``num_people`` is then the count of
    the last frame where it ran.
    """

    pose: Pose
    num_people: int
    tracked: bool = False


@runtime_checkable
class PoseDetector(Protocol):
    """Anything that maps an RGB image to the pose of its most prominent person.

    A `CountingPoseDetector` also says how many people it saw, and a `VideoPoseDetector` gives a fresh per-video
    detector for the frames of a video; :func:`~steadydancer.pose.prepare_poses` uses both when it can.
    """

    def __call__(self, image: np.ndarray) -> Pose:  # (H, W, 3) uint8 RGB -> Pose (empty if none)
        ...


@runtime_checkable
class CountingPoseDetector(Protocol):
    """A detector that also counts the people it found (``prepare_poses`` records the counts and calls only
    ``detect`` on one)."""

    def detect(self, image: np.ndarray) -> PoseDetection:
        ...


@runtime_checkable
class VideoPoseDetector(Protocol):
    """A detector that poses a video's frames through a per-video detector keeping state between frames
    (``DWPoseDetector.tracker``: the person detector runs only every few frames)."""

    def tracker(self) -> PoseDetector | CountingPoseDetector:
        ...
