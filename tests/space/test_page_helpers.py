"""The page's helpers without a server: the estimate in a visitor's words, the time left, the length boxes, the
history's "Use these settings" and its zip, and the previews of a long video's windows."""

import json
import zipfile

import numpy as np
import pytest

from steadydancer.defaults import OUTPUT_FPS
from steadydancer_space.config import AppConfig
from steadydancer_space.estimate import ZEROGPU_DAILY_QUOTA
from steadydancer_space.history import FILE_FIELDS, FORM_FIELDS, RECIPE_FIELDS, form_values
from steadydancer_space.outputs import latest_preview, write_bundle, write_frames_preview
from steadydancer_space.page import frames_changed, reporter, seconds_to_frames, valid_frames
from steadydancer_space.plan import Planner
from steadydancer_space.reports import about, job_gpu_seconds, plain_estimate
from steadydancer_space.request import AnimationRequest, PoseOptions, SamplerOptions, number_fields

CONFIG = AppConfig(tiny=True)
FIELDS = number_fields(CONFIG.max_frames, CONFIG.limits)
MIN_FRAMES, MAX_FRAMES = int(FIELDS["num_frames"].minimum), CONFIG.max_frames


def plan_of(gpu: str, num_frames: int, preset: str = "fast", **sampler):
    request = AnimationRequest(None, None, None, PoseOptions.parse(FIELDS, num_frames=num_frames, resolution="576p"),
                               SamplerOptions.parse(FIELDS, CONFIG.limits, preset=preset, seed=1, **sampler))
    return Planner(CONFIG, gpu).resolve(request)


@pytest.mark.parametrize("seconds, words", [(4, "10 s"), (41, "40 s"), (94, "2 min"), (3 * 60 + 17, "3 min")])
def test_about_rounds_as_a_visitor_reads(seconds, words):
    assert about(seconds) == words


def test_plain_estimate_says_the_job_in_words_and_folds_the_technical_line():
    plan = plan_of("zerogpu-large", 81)
    text = plain_estimate(plan)
    first, _, folded = text.partition("<details>")
    assert first.startswith(f"**About {about(job_gpu_seconds(plan))} of GPU time** (fast, 81 frames at 576p).")
    assert f"Free accounts have {about(ZEROGPU_DAILY_QUOTA['free accounts'])} a day." in first
    assert "transformer passes" not in first and "transformer passes" in folded
    assert "Free accounts" not in plain_estimate(plan_of("h100", 81))  # no quota off ZeroGPU


def test_plain_estimate_counts_every_window_and_follows_custom_steps():
    one, long = plan_of("h100", 81), plan_of("h100", 401)
    assert long.num_windows > 1 and f"made in {long.num_windows} parts" in plain_estimate(long)
    assert job_gpu_seconds(long) == pytest.approx(long.num_windows * job_gpu_seconds(one))
    custom = plan_of("h100", 81, preset="custom", steps=12, guidance_scale=1.0)
    assert "(custom settings, 81 frames" in plain_estimate(custom)
    assert job_gpu_seconds(custom) > job_gpu_seconds(one)


def test_time_left_counts_from_the_report_before_a_stage():
    shown, now = [], [100.0]
    report = reporter(lambda value, desc, unit: shown.append(desc), clock=lambda: now[0])
    now[0] = 110.0
    report(3, 10, "Detecting poses: frame 3 of 10")  # 3 frames in 10 s since the reporter began
    assert shown[-1].endswith(f"(about {7 * 10 / 3:.0f} s left)")
    now[0] = 120.0
    report(10, 10, "Detecting poses: frame 10 of 10")
    now[0] = 140.0
    report(2, 20, "Window 1 of 5, step 2 of 4")  # the new stage began at the last report (t = 120)
    assert shown[-1].endswith(f"(about {18 * 20 / 2 / 60:.0f} min 00 s left)")


@pytest.mark.parametrize("typed", [-5, 0, 500, 3, 83.4, float("nan"), "x", None])
def test_typed_frames_become_a_length_the_model_makes(typed):
    frames = valid_frames(typed, MIN_FRAMES, MAX_FRAMES)
    assert MIN_FRAMES <= frames <= MAX_FRAMES and (frames - 1) % 4 == 0
    corrected, seconds = frames_changed(typed, MIN_FRAMES, MAX_FRAMES)
    assert corrected == frames and seconds == round(frames / OUTPUT_FPS, 2)


def test_typed_seconds_and_frames_stay_in_sync():
    assert seconds_to_frames(25, MIN_FRAMES, MAX_FRAMES) == (401, round(401 / OUTPUT_FPS, 2))
    assert seconds_to_frames(0.1, MIN_FRAMES, MAX_FRAMES) == (MIN_FRAMES, round(MIN_FRAMES / OUTPUT_FPS, 2))
    assert seconds_to_frames(-5, MIN_FRAMES, MAX_FRAMES)[0] == MIN_FRAMES
    assert seconds_to_frames(1000, MIN_FRAMES, MAX_FRAMES)[0] == MAX_FRAMES
    assert frames_changed(81, MIN_FRAMES, MAX_FRAMES)[1] == round(81 / OUTPUT_FPS, 2)


def test_a_recipe_fills_every_form_field(tmp_path):
    request = AnimationRequest("photo.png", None, "dance.json", PoseOptions.parse(FIELDS, num_frames=49),
                               SamplerOptions.parse(FIELDS, CONFIG.limits, seed=7))
    recipe = request.recipe()
    assert set(recipe) == set(RECIPE_FIELDS)  # a recipe key the form cannot take back would be lost
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"png")
    values = form_values({"reference": str(photo), "keypoints": str(tmp_path / "gone.json")}, recipe)
    assert len(values) == len(FORM_FIELDS)
    by_name = dict(zip(FORM_FIELDS, values))
    assert by_name["reference"] == str(photo) and by_name["keypoints"] is None  # swept files are left empty
    assert {name: by_name[name] for name in RECIPE_FIELDS} == recipe
    assert set(FILE_FIELDS) & set(RECIPE_FIELDS) == set()


def test_the_bundle_holds_every_output_and_the_recipe(tmp_path):
    for name in ("video.mp4", "sbs.mp4"):
        (tmp_path / name).write_bytes(name.encode())
    path = write_bundle(str(tmp_path / "all.zip"), {"result": str(tmp_path / "video.mp4"),
                                                    "side_by_side": str(tmp_path / "sbs.mp4"), "poses": None},
                        {"seed": 3})
    with zipfile.ZipFile(path) as bundle:
        assert sorted(bundle.namelist()) == ["recipe.json", "result.mp4", "side_by_side.mp4"]
        assert bundle.read("result.mp4") == b"video.mp4" and json.loads(bundle.read("recipe.json")) == {"seed": 3}


def test_a_window_preview_is_a_strip_of_its_frames(tmp_path):
    import PIL.Image

    frames = np.zeros((21, 32, 16, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(21, dtype=np.uint8)[:, None, None] * 10
    write_frames_preview(frames, 0, str(tmp_path), height=32)
    path = write_frames_preview(frames, 1, str(tmp_path), height=32)
    assert latest_preview(str(tmp_path)) == path
    strip = np.asarray(PIL.Image.open(path))
    assert strip.shape == (32, 64, 3)
    assert [strip[0, 16 * k, 0] for k in range(4)] == [0, 70, 130, 200]  # frames 0, 7, 13, 20
