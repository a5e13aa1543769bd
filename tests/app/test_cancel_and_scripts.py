"""What a script author meets on a launched `python app.py --tiny`: README's gradio_client snippet run as written,
a cancel that stops the one job it names (on one Client and across sessions) with "Cancelled." for its caller, and
values given through the API that a preset never silently overrides."""

import concurrent.futures
import re
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from helpers.app_launcher import launch_tiny_app  # noqa: E402
from helpers.paths import EXAMPLES, REPO  # noqa: E402
from steadydancer.video_io import probe_mp4  # noqa: E402

PAPER = "576p (1024x576, paper)"
REAL_TIME = "Real time (16 fps)"
SNIPPET = re.compile(r"<!-- client-snippet:start -->\s*```python\n(?P<code>.*?)```\s*<!-- client-snippet:end -->",
                     re.S)
SNIPPET_URL = "http://127.0.0.1:7860/"
DANCE = EXAMPLES / "dance_wave.json"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    yield from launch_tiny_app(tmp_path_factory, "cancel_and_scripts")


def job_args(*, frames=17, steps=4, seed=7):
    return [handle_file(str(EXAMPLES / "ref_red_dress.png")), None, handle_file(str(EXAMPLES / "dance_wave.json")),
            "a person dancing", "", PAPER, frames, REAL_TIME, True, False, 4, False, 5.0, 1.0, 0.1, 0.4, steps, 5.0,
            seed, False, "default", "custom"]


def wait_until_denoising(job, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and not job.done():
        if any(u.desc and u.desc.startswith("Denoising") for u in job.status().progress_data or []):
            return
        time.sleep(0.05)
    pytest.fail("the long job never started denoising")


def assert_cancelled(job):
    """The job ended cancelled: the server's "Cancelled." or, once gradio_client has given up on it itself, its
    CancelledError; never a result, and never another error (an empty reply made it a KeyError)."""
    from gradio_client.utils import Status

    try:
        job.result(timeout=120)
    except AppError as error:
        assert str(error) == "Cancelled.", error
    except concurrent.futures.CancelledError:
        pass
    else:
        pytest.fail("the cancelled job ran to the end")
    assert job.status().code == Status.CANCELLED


def assert_quiet_log(app):
    log = app.log()
    assert "Task exception was never retrieved" not in log and "Traceback" not in log, log[-3000:]


def test_the_readme_snippet_runs_as_written(app):
    """The snippet is read from README.md (its one home) and run unchanged except for the server URL, which is
    replaced by the launched app's."""
    code = SNIPPET.search((REPO / "README.md").read_text())["code"]
    assert SNIPPET_URL in code
    result = subprocess.run([sys.executable, "-c", code.replace(SNIPPET_URL, app.url)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) < 1000  # the status loop waits between polls
    assert probe_mp4(lines[-1]).num_frames == 17


def test_cancelling_a_queued_job_leaves_the_running_one_alone(app, client):
    a = client.submit(*job_args(frames=33, steps=40), api_name="/animate")
    wait_until_denoising(a)
    b = client.submit(*job_args(frames=5, steps=2), api_name="/animate")  # waits behind A (one GPU job at a time)
    time.sleep(1.0)
    assert not b.done()
    b.cancel()
    video, *_ = a.result(timeout=300)
    assert probe_mp4(video).num_frames == 33
    assert_cancelled(b)
    assert_quiet_log(app)


def test_cancelling_a_finished_job_leaves_the_running_one_alone(app, client):
    b = client.submit(*job_args(frames=5, steps=2), api_name="/animate")
    b.result(timeout=120)
    a = client.submit(*job_args(frames=33, steps=40), api_name="/animate")
    wait_until_denoising(a)
    b.cancel()
    video, *_ = a.result(timeout=300)
    assert probe_mp4(video).num_frames == 33


def test_a_cancel_from_another_session_naming_a_job_does_nothing(app, client):
    a = client.submit(*job_args(frames=33, steps=40), api_name="/animate")
    wait_until_denoising(a)
    b = client.submit(*job_args(frames=5, steps=2), api_name="/animate")
    deadline = time.time() + 30
    while b.communicator.event_id is None and time.time() < deadline:
        time.sleep(0.05)
    fn_index = next(d["id"] for d in client.config["dependencies"] if d.get("api_name") == "animate")
    stranger = Client(app.url, verbose=False)
    for event_id in (a.communicator.event_id, b.communicator.event_id):
        response = httpx.post(app.url + "gradio_api/cancel", json={
            "session_hash": stranger.session_hash, "fn_index": fn_index, "event_id": event_id})
        assert response.status_code == 200
    assert probe_mp4(a.result(timeout=300)[0]).num_frames == 33
    assert probe_mp4(b.result(timeout=300)[0]).num_frames == 5


def test_a_running_job_cancelled_ends_cancelled_and_the_log_stays_quiet(app, client):
    a = client.submit(*job_args(frames=33, steps=40), api_name="/animate")
    wait_until_denoising(a)
    a.cancel()
    assert_cancelled(a)
    assert_quiet_log(app)


@pytest.mark.parametrize("delay", [0.2, 0.35, 0.5])
def test_a_cancel_soon_after_submit_ends_cancelled(app, client, delay):
    before = client.predict(api_name="/tiny_stats")["succeeded"]
    job = client.submit(*job_args(frames=33, steps=40), api_name="/animate")
    time.sleep(delay)
    job.cancel()
    assert_cancelled(job)
    # The counters through another client: a message of the cancelled job that arrives late can end the next call
    # of the client that cancelled it with gradio_client's own CancelledError.
    stats = Client(app.url, verbose=False)
    deadline = time.time() + 60
    while time.time() < deadline and stats.predict(api_name="/tiny_stats")["running"]:
        time.sleep(0.2)
    assert stats.predict(api_name="/tiny_stats")["succeeded"] == before
    assert_quiet_log(app)


def test_given_steps_and_guidance_run_as_given_without_a_preset(client):
    """gradio_client fills the parameters not given with the page's defaults (the fast preset among them)."""
    reference, keypoints = handle_file(str(EXAMPLES / "ref_red_dress.png")), handle_file(str(DANCE))
    try:
        *_, recipe, _ = client.predict(reference=reference, driving_video=None, keypoints=keypoints, num_frames=5,
                                       steps=40, guidance_scale=5, api_name="/animate")
    except AppError as error:
        assert "preset" in str(error)
    else:
        assert recipe["steps"] == 40 and recipe["guidance_scale"] == 5


def test_a_given_seed_is_not_replaced_by_a_random_one(client):
    reference, keypoints = handle_file(str(EXAMPLES / "ref_red_dress.png")), handle_file(str(DANCE))
    try:
        _, _, seed, *_ = client.predict(reference=reference, driving_video=None, keypoints=keypoints, num_frames=5,
                                        seed=7, api_name="/animate")
    except AppError as error:
        assert "randomize_seed" in str(error)
    else:
        assert seed == 7
