"""Exceptions raised by the pose pipeline.

Every error derives from :class:`PoseError` (itself a ``ValueError``) so the app can catch
one type and show the message to the user as is; the messages are written for people.
"""

from __future__ import annotations


class PoseError(ValueError):
    """Base class of every error the pose pipeline raises on bad input."""


class PoseFormatError(PoseError):
    """A keypoint JSON file (or dict) does not follow the documented schema."""


class NoPersonInReferenceError(PoseError):
    """The detector found no usable person in the reference image."""


class NoPersonInDrivingError(PoseError):
    """The detector lost the person in most frames of the driving video."""


class VideoReadError(PoseError):
    """The driving video cannot be opened or decoded."""


class EmptyVideoError(VideoReadError):
    """The driving video opened but holds no decodable frame."""


class DetectorModelError(PoseError):
    """A DWPose ONNX model file is missing, cannot be downloaded, or has the wrong signature."""
