"""Following one person through a video so that the person detector runs only every few frames.

DWPose's person detector (YOLOX-L, 640x640) costs five to seven times its pose model (RTMPose-L
on a 288x384 crop) on a CPU, and in a video the person barely moves between two frames. So
:class:`PoseTracker` runs the released steps (detector, then pose model on the most prominent
person's box) on one frame in ``redetect_every``, and on the frames between poses the person
in a box taken from the previous frame's keypoints: the bounding box of its confident
keypoints, enlarged by ``margin`` (the pose model's crop then adds the released 1.25 padding,
as for a detector box). The detector runs again at once, on the same frame, when the tracked
crop loses the person (fewer than ``min_keypoints`` confident body keypoints) or the box
degenerates; a frame where it finds nobody starts no track (the next frame is detected again,
as released).

``num_people`` of a tracked frame is the count of the last detection (``tracked=True`` in its
:class:`~steadydancer.pose.PoseDetection`). Between detections the tracker keeps the person it
has, even if another one becomes more prominent; each detection picks the most prominent
person again, as the released per-frame code does.
"""

from __future__ import annotations

import numpy as np

from .detection import REDETECT_EVERY, PoseDetection
from .image import ImageLike, load_image
from .keypoints import Pose

NUM_COCO_BODY = 17     # COCO-WholeBody's first 17 points: the body (feet, face and hands follow)
TRACK_MARGIN = 1.2     # keypoints stop at the brows and the wrists' fingertips; a person box (and the
                       # motion to the next frame) reaches past them
MIN_KEYPOINTS = 6      # confident body keypoints (of 17) below which the track is lost
MIN_BOX_SIZE = 0.05    # a box whose longer side is below this fraction of the image's short side is degenerate


class PoseTracker:
    """Poses one person through consecutive video frames, with the person detector every few frames.

    Args:
        detector: a :class:`~steadydancer.pose.DWPoseDetector` (anything with its
            ``detect_wholebody(image_rgb, box=None) -> WholeBody`` and ``keypoint_threshold``).
        redetect_every: run the detector on one frame in this many (1: every frame, which
            gives exactly the detector's own per-image results).
        margin: the tracked box is the confident keypoints' bounding box enlarged by this factor.
        min_keypoints: fewer confident COCO body keypoints (of 17) in a tracked frame means the
            track is lost: the frame is detected again.
        min_box_size: a tracked box whose longer side is below this fraction of the image's
            short side is degenerate: the frame is detected again.

    Use one tracker per video, frames in order (``reset`` starts over). ``frames``,
    ``detector_runs`` and ``lost`` count the frames seen, the detector's runs and the tracked
    crops that lost the person; ``box`` is the box (xyxy pixels) the last frame was posed in.
    """

    def __init__(self, detector, redetect_every: int = REDETECT_EVERY, *, margin: float = TRACK_MARGIN,
                 min_keypoints: int = MIN_KEYPOINTS, min_box_size: float = MIN_BOX_SIZE) -> None:
        if int(redetect_every) < 1:
            raise ValueError(f"redetect_every must be >= 1, got {redetect_every}")
        if not margin > 0:
            raise ValueError(f"margin must be positive, got {margin}")
        self.detector = detector
        self.redetect_every = int(redetect_every)
        self.margin = float(margin)
        self.min_keypoints = int(min_keypoints)
        self.min_box_size = float(min_box_size)
        self.reset()

    def reset(self) -> None:
        """Forgets the track and the counters (a new video)."""
        self.frames = 0
        self.detector_runs = 0
        self.lost = 0
        self.box: np.ndarray | None = None
        self._next_box: np.ndarray | None = None
        self._since_detection = 0
        self._people = 0
        self._size: tuple[int, int] | None = None

    def __call__(self, image: ImageLike) -> Pose:
        return self.detect(image).pose

    def detect(self, image: ImageLike) -> PoseDetection:
        """The pose of the tracked person in the next frame (see the class docstring)."""
        rgb = load_image(image)
        height, width = rgb.shape[:2]
        self.frames += 1
        threshold = self.detector.keypoint_threshold
        if (self._next_box is not None and self._since_detection < self.redetect_every
                and self._size == (height, width)):
            found = self.detector.detect_wholebody(rgb, self._next_box)
            next_box = self.box_from_keypoints(found.keypoints, found.scores, width, height)
            if next_box is not None:
                self.box, self._next_box = found.box, next_box
                self._since_detection += 1
                pose = Pose.from_wholebody(found.keypoints, found.scores, width, height, threshold)
                return PoseDetection(pose, self._people, tracked=True)
            self.lost += 1  # the tracked crop lost the person: this frame gets the released steps

        found = self.detector.detect_wholebody(rgb)
        self.detector_runs += 1
        self.box, self._people = found.box, int(found.num_people)
        self._since_detection, self._size = 1, (height, width)
        # With nobody detected the pose comes from the whole image (released): no person to follow.
        self._next_box = (self.box_from_keypoints(found.keypoints, found.scores, width, height)
                          if found.num_people else None)
        return PoseDetection(Pose.from_wholebody(found.keypoints, found.scores, width, height, threshold),
                             self._people)

    def box_from_keypoints(self, keypoints: np.ndarray, scores: np.ndarray, width: int,
                           height: int) -> np.ndarray | None:
        """The box (xyxy pixels) to pose the next frame in, or None when the track is lost.

        The confident keypoints' bounding box, enlarged by ``margin`` about its centre and
        clipped to the image.
        """
        confident = np.asarray(scores) > self.detector.keypoint_threshold
        if int(confident[:NUM_COCO_BODY].sum()) < self.min_keypoints:
            return None
        points = np.asarray(keypoints, dtype=np.float64)[confident]
        low, high = points.min(axis=0), points.max(axis=0)
        centre, half = (low + high) / 2, (high - low) / 2 * self.margin
        box = np.concatenate([np.maximum(centre - half, 0.0), np.minimum(centre + half, [width, height])])
        if max(box[2] - box[0], box[3] - box[1]) < self.min_box_size * min(width, height):
            return None
        return box
