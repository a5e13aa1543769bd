"""The real app, launched as `python app.py --tiny` on a free localhost port and driven with gradio_client: the
named endpoints, the mp4 a visitor receives (checked with PyAV), progress, cancellation, errors, and the message
printed when the real model cannot be loaded. Tiny mode runs on a CPU; its output is noise."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

from gradio_client import handle_file  # noqa: E402

from steadydancer.video_io import probe_mp4  # noqa: E402
from helpers.app_launcher import launch_tiny_app  # noqa: E402
from steadydancer_space.request import DEFAULT_SEED  # noqa: E402
from helpers.paths import REPO, TEST_OUTPUT  # noqa: E402

EXAMPLES = REPO / "examples"
OUTPUT = TEST_OUTPUT
PAPER = "576p (1024x576, paper)"
REAL_TIME = "Real time (16 fps)"


def animate_args(reference, video=None, keypoints=None, *, frames=17, steps=4, seed=7, randomize=False,
                 smooth_start=False, smooth_frames=4, prompt="a person dancing"):
    """Positional inputs of /animate in order (see the API section of the README)."""
    return [handle_file(str(reference)), handle_file(str(video)) if video else None,
            handle_file(str(keypoints)) if keypoints else None, prompt, "", PAPER, frames, REAL_TIME, True,
            smooth_start, smooth_frames, False, 5.0, 1.0, 0.1, 0.4, steps, 5.0, seed, randomize, "default", "custom"]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    yield from launch_tiny_app(tmp_path_factory, "app_server")


def test_startup_time_and_memory(app):
    metrics = {"startup_seconds": round(app.startup_seconds, 2), "rss_mb_after_start": round(app.rss() / 2**20, 1)}
    (OUTPUT / "app_metrics.json").write_text(json.dumps(metrics, indent=1))
    assert app.startup_seconds < 120
    assert 0 < app.rss() < 3 * 2**30


def test_api_names(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/extract_poses", "/animate", "/estimate"} <= names


def test_extract_poses_shows_the_aligned_poses(client):
    pose_video, alignment, report, negative_video, keypoints = client.predict(
        handle_file(str(EXAMPLES / "ref_red_dress.png")), None, handle_file(str(EXAMPLES / "dance_wave.json")),
        PAPER, 17, REAL_TIME, True, False, 8, False, api_name="/extract_poses")
    for path in (pose_video, negative_video):
        probe = probe_mp4(path)
        assert (probe.num_frames, probe.width, probe.height, probe.fps, probe.codec) == (17, 80, 128, 16.0, "h264")
    from PIL import Image

    assert max(Image.open(alignment).size) >= 640  # the 80x128 pose frame, enlarged to be seen
    assert json.loads(Path(keypoints).read_text())["format"] == "steadydancer.pose_sequence"
    assert "TINY MODE" in report and "17 pose frames" in report and "FAKE" in report


def test_animate_video_with_audio(client):
    job = client.submit(*animate_args(EXAMPLES / "ref_blue_hoodie.png", EXAMPLES / "drive_groove_beat.mp4",
                                      smooth_start=True, seed=1234), api_name="/animate")
    seen_steps = set()
    while not job.done():
        status = job.status()
        for unit in status.progress_data or []:
            if unit.desc and unit.desc.startswith("Denoising"):
                seen_steps.add(unit.index)
        time.sleep(0.05)
    video, pose_video, seed, report, side_by_side, recipe, preview = job.result()
    probe = probe_mp4(video)
    assert (probe.num_frames, probe.width, probe.height, probe.fps) == (17, 80, 128, 16.0)
    assert (probe.codec, probe.pix_fmt) == ("h264", "yuv420p")
    assert probe.audio_codec == "aac" and abs(probe.audio_duration - 17 / 16) < 0.06
    assert probe_mp4(pose_video).num_frames == 17
    assert seed == 1234 and "TINY MODE" in report and "audio" in report
    for stage in ("poses", "encoding", "denoising", "decoding", "writing"):
        assert stage in report
    assert seen_steps, "no denoising progress was reported"
    # The side-by-side video: photo | poses | result at the result's height, as long as it, with the audio.
    sbs = probe_mp4(side_by_side)
    assert (sbs.num_frames, sbs.height, sbs.fps, sbs.audio_codec) == (17, 128, 16.0, "aac") and sbs.width > 3 * 80
    assert recipe["seed"] == 1234 and recipe["randomize_seed"] is False and recipe["smooth_start"] is True


def test_a_recipe_replayed_through_the_api_gives_the_same_video(client):
    files = dict(reference=handle_file(str(EXAMPLES / "ref_red_dress.png")), driving_video=None,
                 keypoints=handle_file(str(EXAMPLES / "dance_wave.json")))
    # A random seed (randomize_seed with the page's seed left as it is): the recipe names the one drawn.
    first = client.predict(*animate_args(EXAMPLES / "ref_red_dress.png", keypoints=EXAMPLES / "dance_wave.json",
                                         frames=9, seed=DEFAULT_SEED, randomize=True), api_name="/animate")
    again = client.predict(**files, **first[5], api_name="/animate")
    assert again[2] == first[2] and again[5] == first[5]
    import av

    def pixels(path):
        with av.open(path) as container:
            return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]

    # Same frames, encoded twice: x264 with threads rounds noise-like frames a little differently each time (about
    # 1 level in 255 here); another seed changes them entirely.
    import numpy as np

    differences = [np.abs(a.astype(int) - b).mean() for a, b in zip(pixels(first[0]), pixels(again[0]), strict=True)]
    assert max(differences) < 2.0, differences
    other = client.predict(**files, **{**first[5], "seed": first[5]["seed"] + 1}, api_name="/animate")
    assert np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(pixels(first[0]), pixels(other[0]))]) > 5


def test_previews_arrive_while_the_job_runs(client):
    """Each denoising step's predicted video shows as a preview (a 4-frame strip) before the result: intermediate
    outputs of /animate, the result last."""
    from PIL import Image

    job = client.submit(*animate_args(EXAMPLES / "ref_red_dress.png", keypoints=EXAMPLES / "dance_wave.json",
                                      frames=17, steps=40), api_name="/animate")  # seconds: several polls
    previews_before_result = set()
    while not job.done():
        for outputs in job.outputs():
            if not isinstance(outputs[0], str) and outputs[-1]:  # the result not there yet (a skip), a preview
                previews_before_result.add(outputs[-1])
        time.sleep(0.1)
    final = job.result()
    assert final[0] and final[-1]
    assert len(previews_before_result) >= 2, "no previews came before the result"
    strip = Image.open(sorted(previews_before_result)[0])
    assert strip.width == 4 * strip.height * 80 // 128  # 4 frames of the 80x128 video, side by side


def test_animate_keypoints_random_seed(client):
    video, _, seed, report, *_ = client.predict(
        *animate_args(EXAMPLES / "ref_green_suit.png", keypoints=EXAMPLES / "dance_sway.json", frames=9,
                      seed=DEFAULT_SEED, randomize=True), api_name="/animate")
    probe = probe_mp4(video)
    assert (probe.num_frames, probe.audio_codec) == (9, None)
    assert isinstance(seed, int) and 0 <= seed < 2**31 and f"seed {seed}" in report


def stats(client):
    return client.predict(api_name="/tiny_stats")


def test_a_cancel_right_after_submit_stops_the_job(app, client):
    """A cancel 0.1 s after the submit (while the job is queued or starting) ends it: the GPU part never runs to
    the end, and the client is told it was cancelled."""
    from gradio_client.utils import Status

    before = stats(client)
    job = client.submit(*animate_args(EXAMPLES / "ref_red_dress.png", keypoints=EXAMPLES / "dance_wave.json",
                                      frames=81, steps=80), api_name="/animate")
    time.sleep(0.1)
    job.cancel()
    deadline = time.time() + 60
    while time.time() < deadline and stats(client)["running"]:
        time.sleep(0.2)
    time.sleep(1.0)  # a job the cancel missed would be running (or have run) by now
    after = stats(client)
    assert after["running"] == 0 and after["succeeded"] == before["succeeded"]
    assert job.status().code == Status.CANCELLED
    # The cancel has found its job: the same visitor's next job, sent at once, runs to the end.
    video, *_ = client.predict(*animate_args(EXAMPLES / "ref_red_dress.png", keypoints=EXAMPLES / "dance_wave.json",
                                             frames=5, steps=2), api_name="/animate")
    assert probe_mp4(video).num_frames == 5


def test_cancel_stops_the_generation(app, client):
    job = client.submit(*animate_args(EXAMPLES / "ref_red_dress.png", keypoints=EXAMPLES / "dance_wave.json",
                                      frames=81, steps=80), api_name="/animate")
    deadline = time.time() + 120
    while time.time() < deadline and not job.done():
        progress = job.status().progress_data or []
        if any(u.desc and u.desc.startswith("Denoising") for u in progress):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the long job never started denoising")
    assert job.cancel()
    deadline = time.time() + 60
    while "cancelled after step" not in app.log() and time.time() < deadline:
        time.sleep(0.2)
    assert "cancelled after step" in app.log()
    # The GPU slot is free again: a short job runs to the end.
    video, *_ = client.predict(*animate_args(EXAMPLES / "ref_red_dress.png", keypoints=EXAMPLES / "dance_wave.json",
                                             frames=5, steps=2), api_name="/animate")
    assert probe_mp4(video).num_frames == 5


def test_a_16_bit_grey_photo_gives_the_poses_of_its_8_bit_twin(client, tmp_path):
    """A 16-bit greyscale PNG (mode I;16) once loaded as all white: "no person found" while the preview showed one."""
    import numpy as np
    from PIL import Image

    grey = np.full((160, 96), 220, np.uint8)
    grey[30:140, 33:63] = 40  # a dark figure on a light background
    Image.fromarray(grey).save(tmp_path / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I;16")
    poses = []
    for name in ("grey8.png", "grey16.png"):
        *_, report, _, keypoints = client.predict(
            handle_file(str(tmp_path / name)), None, handle_file(str(EXAMPLES / "dance_wave.json")),
            PAPER, 17, REAL_TIME, True, False, 8, False, api_name="/extract_poses")
        poses.append(json.loads(Path(keypoints).read_text()))
        assert "17 pose frames" in report
    assert poses[0] == poses[1]


def test_errors_reach_the_visitor(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="reference image"):
        client.predict(None, None, handle_file(str(EXAMPLES / "dance_wave.json")), PAPER, 17, REAL_TIME, True,
                       False, 8, False, api_name="/extract_poses")
    bad_window = animate_args(EXAMPLES / "ref_red_dress.png", keypoints=EXAMPLES / "dance_wave.json")
    bad_window[14], bad_window[15] = 0.6, 0.2  # window start after its end
    with pytest.raises(AppError, match="pose_guidance_window"):
        client.predict(*bad_window, api_name="/animate")


def shifted_keypoints(path, dx):
    """A copy of a reference keypoint file with every present point moved right by `dx` (fractions of the photo)."""
    data = json.loads((EXAMPLES / "ref_red_dress.json").read_text())
    data["frames"][0]["body"] = [[x + dx, y] if x >= 0 else [x, y] for x, y in data["frames"][0]["body"]]
    data["frames"][0].pop("hands")
    path.write_text(json.dumps(data))
    return path


def test_reference_keypoints_replace_a_detection_that_finds_nobody(client, tmp_path):
    """A photo the detector cannot read (tiny mode's stand-in finds no figure on a plain image, as DWPose finds no
    person there): without its keypoints both endpoints refuse it; with them (`reference_keypoints`, the last
    parameter) both succeed, the reports say the detector did not run on the photo, and the poses follow the given
    keypoints: moved right by a tenth of the photo, the aligned pose drawn over it moves right by as much (its left
    edge, kept inside the frame by a first shift: the dance's hands reach beyond the photo's left side)."""
    from gradio_client.exceptions import AppError
    from PIL import Image

    import numpy as np

    photo = tmp_path / "unreadable.png"
    grey = (200, 200, 200)
    Image.new("RGB", (384, 576), grey).save(photo)
    extract_args = [handle_file(str(photo)), None, handle_file(str(EXAMPLES / "dance_wave.json")), PAPER, 5,
                    REAL_TIME, True, False, 8, False, "default"]
    animate_photo = animate_args(photo, keypoints=EXAMPLES / "dance_wave.json", frames=5, steps=1)
    for args, api_name in ((extract_args, "/extract_poses"), (animate_photo, "/animate")):
        with pytest.raises(AppError, match="No person was found in the reference image"):
            client.predict(*args, api_name=api_name)

    def pose_left_x(alignment):  # first column the pose is drawn on (the photo is plain grey)
        pixels = np.asarray(Image.open(alignment).convert("RGB")).astype(int)
        drawn = np.abs(pixels - grey).max(axis=-1) > 30
        return np.nonzero(drawn)[1].min(), pixels.shape[1]

    lefts = []
    for dx in (0.1, 0.2):
        given = handle_file(str(shifted_keypoints(tmp_path / f"ref_{dx}.json", dx)))
        _, alignment, report, *_ = client.predict(*extract_args, given, api_name="/extract_poses")
        assert "the detector did not run on the photo" in report and "outside the photo" not in report
        lefts.append(pose_left_x(alignment))
    (x0, width), (x1, _) = lefts
    assert abs((x1 - x0) - 0.1 * width) <= 1, (x0, x1, width)
    video, _, _, report, *_ = client.predict(*animate_photo, given, api_name="/animate")
    assert probe_mp4(video).num_frames == 5 and "the detector did not run on the photo" in report

    # Keypoints far outside the photo (pixels given by mistake would be refused; these are fractions, but off it).
    outside = handle_file(str(shifted_keypoints(tmp_path / "ref_outside.json", 3.0)))
    *_, report, _, _ = client.predict(*extract_args, outside, api_name="/extract_poses")
    assert "pose lies mostly outside the photo" in report
    assert "another shape" not in report  # made for a 384x576 picture, like the photo

    # Keypoints made for a picture of another shape: their fractions would put the joints beside the person.
    other_shape = shifted_keypoints(tmp_path / "ref_landscape.json", 0.0)
    data = json.loads(other_shape.read_text())
    other_shape.write_text(json.dumps({**data, "width": 576, "height": 384}))
    *_, report, _, _ = client.predict(*extract_args, handle_file(str(other_shape)), api_name="/extract_poses")
    assert "made for a 576x384 picture, but the photo is 384x576 (another shape)" in report


def test_estimate_endpoint(client):
    reference = handle_file(str(EXAMPLES / "ref_red_dress.png"))
    quality = client.predict(reference, PAPER, 81, 40, 5.0, 1.0, 0.1, 0.4, "quality", api_name="/estimate")
    assert "GPU time" in quality and "91 transformer passes" in quality
    fast = client.predict(reference, PAPER, 81, 4, 1.0, 1.0, 0.1, 0.4, "fast", api_name="/estimate")
    assert "5 transformer passes" in fast  # the fast preset's 4 steps + 1 pose-guidance pass
    # Sliders that contradict a named preset are refused naming it, not dropped.
    contradicting = client.predict(reference, PAPER, 81, 40, 5.0, 1.0, 0.1, 0.4, "fast", api_name="/estimate")
    assert "Estimate unavailable" in contradicting and "preset" in contradicting
    custom = client.predict(reference, PAPER, 81, 10, 1.0, 0.0, 0.1, 0.4, "custom", api_name="/estimate")
    assert "10 transformer passes" in custom


def test_missing_model_prints_how_to_run_tiny(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "STEADYDANCER_TRANSFORMER": "nobody/no-such-steadydancer", "STEADYDANCER_TINY": "0"}
    done = subprocess.run([sys.executable, str(REPO / "app.py")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0
    assert "--tiny" in done.stderr and "Could not load the SteadyDancer model" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_released_behaviour_switch(client):
    """fidelity="released" runs the released CLI's choices: its guidance (pose 1.5, 40 steps) whatever the sliders
    say, every driving frame (a keypoint file at 16 fps gives the same frames), black frames where the person is
    lost."""
    args = animate_args(EXAMPLES / "ref_red_dress.png", keypoints=EXAMPLES / "dance_wave.json", frames=5, steps=2)
    video, _, _, report, _, recipe, _ = client.predict(*args[:-2], "released", "custom", api_name="/animate")
    assert probe_mp4(video).num_frames == 5
    assert "40 steps" in report and "pose guidance 1.5" in report and recipe["fidelity"] == "released"
    message = None
    try:
        client.predict(*args[:-2], "paper", "custom", api_name="/animate")
    except Exception as error:  # gradio_client's AppError
        message = str(error)
    assert message and "fidelity must be one of 'default', 'released'" in message


def long_driving_clip(path, seconds=20):
    """The example dance looped to `seconds`, with a tone of the same length: a long driving video with audio."""
    import av
    import numpy as np

    from steadydancer.video_io import AudioClip, write_mp4

    with av.open(str(EXAMPLES / "drive_groove_beat.mp4")) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    frames = np.resize(frames, (seconds * 16, *frames.shape[1:]))
    t = np.arange(seconds * 44100) / 44100
    write_mp4(path, frames, 16, audio=AudioClip((0.2 * np.sin(2 * np.pi * 220 * t))[None].astype(np.float32)),
              crf=35, preset="ultrafast")
    return path


def test_a_20_second_video_in_windows(client, tmp_path):
    """321 frames (20 s at 16 fps) run as windows of 81 (81 + 80 + 80 + 80), each continuing from the last; one mp4
    of the full length with the audio across it, and progress that names the windows."""
    clip = long_driving_clip(tmp_path / "long_dance.mp4")
    args = animate_args(EXAMPLES / "ref_blue_hoodie.png", clip, frames=321, steps=1)
    before = stats(client)
    job = client.submit(*args, api_name="/animate")
    windows_seen = set()
    while not job.done():
        for unit in job.status().progress_data or []:
            if unit.desc and unit.desc.startswith("Window"):
                windows_seen.add(unit.desc.split(",")[0])
        time.sleep(0.1)
    video, _, _, report, side_by_side, *_ = job.result()
    probe = probe_mp4(video)
    assert (probe.num_frames, probe.fps, probe.audio_codec) == (321, 16.0, "aac")
    assert abs(probe.audio_duration - 321 / 16) < 0.1
    assert probe_mp4(side_by_side).num_frames == 321
    assert windows_seen >= {"Window 1 of 4", "Window 4 of 4"}, windows_seen
    assert stats(client)["started"] - before["started"] == 4  # one GPU call a window
