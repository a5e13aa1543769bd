"""The close-up example (a big-headed cartoon framed waist up, arms hidden, dancing a full-body dance): run as the
Space runs it, the released alignment swings most of the arm joints out of the photo, while the example's pose edits
(the motion fitted to the photo's waist-up framing) keep them in and put the shoulders and hips on the photo's."""

import json

import numpy as np

from steadydancer.pose import SyntheticPoseDetector
from steadydancer_space.examples import EXAMPLES, example_files
from steadydancer_space.poses import run_pose_step
from steadydancer_space.request import AnimationRequest, PoseOptions, number_fields
from steadydancer_space.uploads import Limits

from helpers.paths import EXAMPLES as EXAMPLES_DIR

FIELDS = number_fields(121, Limits())
CLOSEUP = next(example for example in EXAMPLES if example.pose_edits != "{}")
NECK, R_SHOULDER, R_ELBOW, R_WRIST, L_SHOULDER, L_ELBOW, L_WRIST, R_HIP, L_HIP = 1, 2, 3, 4, 5, 6, 7, 8, 11
TORSO = [R_SHOULDER, L_SHOULDER, R_HIP, L_HIP]
ARMS = [R_ELBOW, R_WRIST, L_ELBOW, L_WRIST]


def prepared(pose_edits: str):
    """The example's pose step as the Space runs it (its own files, frame count and prompt-free pose settings)."""
    reference, video, keypoints, reference_keypoints = example_files(CLOSEUP, str(EXAMPLES_DIR))
    options = PoseOptions.parse(FIELDS, num_frames=CLOSEUP.num_frames, pose_edits=pose_edits)
    job = AnimationRequest(reference, video, keypoints, options, reference_keypoints=reference_keypoints)
    return run_pose_step(SyntheticPoseDetector(), job, 160 * 240).prepared


def body(poses) -> tuple[np.ndarray, np.ndarray]:
    """(N, 18, 2) keypoints in fractions of the photo, (N, 18) present."""
    return np.stack([p.body for p in poses]), np.stack([p.body_present for p in poses])


def outside_share(points: np.ndarray, present: np.ndarray) -> float:
    outside = np.any((points < 0.0) | (points > 1.0), axis=-1) & present
    return float(outside.sum() / present.sum())


def test_the_closeup_example_is_framed_waist_up_with_hidden_arms():
    photo = json.loads((EXAMPLES_DIR / CLOSEUP.reference_keypoints).read_text())["frames"][0]["body"]
    hidden = [j for j, point in enumerate(photo) if point == [-1, -1]]
    assert set(ARMS) <= set(hidden) and {R_HIP, L_HIP} & set(hidden) == set()
    assert all(0.8 < photo[j][1] <= 1.0 for j in (R_HIP, L_HIP))  # the hips at the bottom edge: waist up
    assert json.loads(CLOSEUP.pose_edits)["retarget"]["fit"] == "waist_up"


def test_released_alignment_crops_the_arms_and_the_waist_up_fit_keeps_them_on_the_photos_torso():
    default, fitted = prepared("{}"), prepared(CLOSEUP.pose_edits)
    points, present = body(default.poses)
    assert present[:, ARMS].all()
    assert outside_share(points[:, ARMS], present[:, ARMS]) > 0.5  # the guessed arm lengths leave the photo

    points, present = body(fitted.poses)
    assert outside_share(points[:, ARMS], present[:, ARMS]) < 0.1
    assert outside_share(points, present) < outside_share(*body(default.poses))

    # Shoulders and hips on the photo's: exactly on the frame the fit is measured on, and on the others as far from
    # them as the dancer's own torso moves from that frame (scaled to the photo's torso), no farther.
    photo = fitted.reference_pose
    square = np.array([photo.aspect, 1.0])  # distances in photo heights
    error = np.linalg.norm((points[:, TORSO] - photo.body[TORSO]) * square, axis=-1)  # (N, 4)
    dance = fitted.driving_poses.poses
    anchor = dance[fitted.align_index]
    used = np.stack([dance[fitted.start_index + i].body for i in range(len(fitted.poses))])

    def torso_length(pose) -> float:
        return float(np.linalg.norm((pose.body[NECK] - (pose.body[R_HIP] + pose.body[L_HIP]) / 2)
                                    * [pose.aspect, 1.0]))

    ratio = torso_length(photo) / torso_length(anchor)
    own_motion = ratio * np.linalg.norm((used[:, TORSO] - anchor.body[TORSO]) * [anchor.aspect, 1.0], axis=-1)
    assert error[fitted.align_index - fitted.start_index].max() < 0.01
    assert (error <= own_motion + 0.01).all(), (error - own_motion).max()
