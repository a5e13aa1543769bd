"""`pose_edits` in the Space: parsed once with the request (errors name the field), part of the recipe (which replays
it exactly), the pose step's cache key, and applied to the pose frames; the editor's JSON from its controls."""

import json

import numpy as np
import pytest

from steadydancer.pose import PoseEdits, SyntheticPoseDetector
from steadydancer_space.pose_editor import compose_edits, editor_state
from steadydancer_space.poses import PoseStepCache, run_pose_step
from steadydancer_space.request import AnimationRequest, PoseOptions, number_fields
from steadydancer_space.uploads import InputError, Limits

from helpers.paths import EXAMPLES

FIELDS = number_fields(121, Limits())
EDITS = {"reference": {"right_wrist": [0.3, 0.55]}, "frames": [{"frame": 4, "joints": {"nose": [0.5, 0.2]}}],
         "retarget": {"fit": "auto", "scale": 0.9}, "smoothing": {"strength": 0.3}}


def job(pose_edits="", num_frames=9) -> AnimationRequest:
    options = PoseOptions.parse(FIELDS, num_frames=num_frames, smooth_start=True, smooth_start_frames=2,
                                pose_edits=pose_edits)
    return AnimationRequest(str(EXAMPLES / "ref_red_dress.png"), keypoints=str(EXAMPLES / "dance_wave.json"),
                            pose=options, reference_keypoints=str(EXAMPLES / "ref_red_dress.json"))


def test_pose_edits_parse_once_and_replay_exactly_through_the_recipe():
    request = job(json.dumps(EDITS))
    assert request.pose.edits == PoseEdits.from_dict(EDITS)
    recipe = request.recipe()
    replayed = PoseOptions.parse(FIELDS, **{k: recipe[k] for k in ("resolution", "num_frames", "motion",
                                                                   "align_to_reference", "smooth_start",
                                                                   "smooth_start_frames", "auto_start", "fidelity",
                                                                   "pose_edits")})
    assert replayed == request.pose
    assert job().recipe()["pose_edits"] == "" and job().pose.edits.is_empty


@pytest.mark.parametrize("value, field", [
    ('{"reference": {"wrist": [0.1, 0.1]}}', "pose_edits.reference.wrist: unknown joint"),
    ('{"frames": [{"frame": 9, "joints": {}}]}', r"pose_edits.frames\[0\].frame: frame 9 is beyond the video's 9"),
    ('{"reference": {"nose": [250, 100]}}', "pose_edits.reference.nose: .* outside the photo"),
    ("{not json", "pose_edits: not valid JSON"),
    ("x" * 600_000, "pose_edits has 600000 characters"),
])
def test_bad_pose_edits_are_refused_naming_the_field(value, field):
    with pytest.raises(InputError, match=field):
        job(value)


def test_pose_step_applies_the_edits_and_keys_its_cache_on_them():
    detector, cache = SyntheticPoseDetector(animate=True), PoseStepCache(size=4)
    plain = run_pose_step(detector, job(), 128 * 96, cache=cache)
    edits = json.dumps({"reference": {"right_wrist": [0.3, 0.55]}})
    edited = run_pose_step(detector, job(edits), 128 * 96, cache=cache)
    assert edited is not plain and run_pose_step(detector, job(edits), 128 * 96, cache=cache) is edited
    np.testing.assert_allclose(edited.prepared.reference_pose.body[4], [0.3, 0.55])
    np.testing.assert_allclose(edited.prepared.poses[0].body[4], [0.3, 0.55])  # the smooth start's first frame
    assert not np.array_equal(edited.prepared.positive[0], plain.prepared.positive[0])
    state = json.loads(editor_state(edited))
    assert state["image"].startswith("data:image/jpeg;base64,") and len(state["frames"]) == 9
    assert state["reference"]["body"][4] == [0.3, 0.55] and state["edits"]["reference"] == {"right_wrist": [0.3, 0.55]}


def test_editor_controls_fold_into_one_pose_edits_object():
    joints = json.dumps({"reference": {"right_wrist": [0.3, 0.55]}})
    text = compose_edits(joints, "waist_up", True, False, 1.2, 0.1, 0.0, 0.4, 3)
    edits = PoseEdits.from_json(text)
    assert edits.reference[0].point == (0.3, 0.55) and edits.retarget.fit == "waist_up"
    assert edits.retarget.limb_lengths == "photo" and edits.retarget.scale == 1.2 and edits.smoothing == 0.4
    assert compose_edits("", "none", False, False, 1.0, 0.0, 0.0, 0.0, 4) == ""  # nothing changed: no edit
    assert not isinstance(compose_edits('{"reference": {"tail": [0, 0]}}', "none", False, False, 1, 0, 0, 0, 4), str)
