"""Several GPUs behind one app, on the CPU: `torchrun --nproc-per-node N app.py --tiny` (gloo) serves the same API,
and its videos are the single-process app's.

The single-process app runs with `OMP_NUM_THREADS=1`, as torchrun runs each rank. Where a rank runs two of a step's
passes in one batch and the single process three, the convolutions round differently (oneDNN picks its kernel by batch
size), and a few float pixel values land on the other side of a rounding step. Tiny mode encodes its results
losslessly, so the decoded frames show just that: they are compared with the tolerance a thread-count change alone
gives, at most 7/255 anywhere and a mean of 0.001 (two ranks: 2/255, mean 0.00007; three ranks: identical). Another
seed gives a mean difference of about 20. The request runs three passes a step (text guidance and pose guidance in
every step), so every rank has a share.
"""

import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from helpers.app_launcher import launch_tiny_app  # noqa: E402
from helpers.paths import EXAMPLES, TEST_OUTPUT  # noqa: E402

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(TORCHRUN is None, reason="needs torchrun (torch's launcher)")
MAX_PIXEL_DIFFERENCE, MAX_MEAN_DIFFERENCE = 7, 0.001


# Videos longer than 9 frames are made in windows of 9, each its own GPU call.
WINDOWS = {"STEADYDANCER_WINDOW_FRAMES": "9"}


def torchrun_app(tmp_path_factory, ranks: int):
    yield from launch_tiny_app(tmp_path_factory, f"torchrun{ranks}", env=WINDOWS,
                               launcher=[TORCHRUN, "--standalone", f"--nproc-per-node={ranks}"])


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    yield from launch_tiny_app(tmp_path_factory, "torchrun-single", env={"OMP_NUM_THREADS": "1", **WINDOWS})


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    yield from launch_tiny_app(tmp_path_factory, "torchrun2", env={**WINDOWS, "STEADYDANCER_CONCURRENCY": "2"},
                               launcher=[TORCHRUN, "--standalone", "--nproc-per-node=2"])


def connect(app) -> Client:
    return Client(app.url, verbose=False, download_files=str(TEST_OUTPUT / f"{app.name}-downloads"))


def request(**values) -> dict:
    return dict(reference=handle_file(str(EXAMPLES / "ref_red_dress.png")), driving_video=None,
                keypoints=handle_file(str(EXAMPLES / "dance_wave.json")),
                reference_keypoints=handle_file(str(EXAMPLES / "ref_red_dress.json")),
                randomize_seed=False, **{"preset": "custom", "seed": 7, "steps": 2, "num_frames": 9,
                                         "guidance_scale": 3.0, "window_start": 0.0, "window_end": 1.0, **values})


def frames(path) -> np.ndarray:
    from steadydancer.pose import iter_video_frames

    return np.stack([f.image for f in iter_video_frames(path, None)]).astype(int)


def assert_same_video(a, b):
    difference = np.abs(frames(a) - frames(b))
    assert difference.max() <= MAX_PIXEL_DIFFERENCE and difference.mean() <= MAX_MEAN_DIFFERENCE, (
        difference.max(), difference.mean())


def test_two_ranks_make_the_single_process_video_and_say_so(two, single):
    video, _, _, report, *_ = connect(two).predict(**request(), api_name="/animate")
    alone, _, _, alone_report, *_ = connect(single).predict(**request(), api_name="/animate")
    assert "Ran on 2 ranks (2 guidance groups)." in report and "ranks" not in alone_report
    assert_same_video(video, alone)
    assert "rank 1 of 2" in two.log()
    estimate = connect(two).predict(handle_file(str(EXAMPLES / "ref_red_dress.png")), "480p", 81, 40, 5.0, 1.0, 0.1,
                                    0.4, "quality", api_name="/estimate")
    assert "Runs on 2 ranks (2 guidance groups)" in estimate


def test_three_ranks_make_the_same_video(tmp_path_factory, single):
    for app in torchrun_app(tmp_path_factory, 3):
        video, _, _, report, *_ = connect(app).predict(**request(), api_name="/animate")
        assert "Ran on 3 ranks (3 guidance groups)." in report
    alone = connect(single).predict(**request(), api_name="/animate")[0]
    assert_same_video(video, alone)


def test_sharded_weights_make_the_same_video(tmp_path_factory, single):
    """`--memory-plan sharded`: the transformer's blocks sharded across both ranks (FSDP2), one guidance group."""
    sharded = {**WINDOWS, "STEADYDANCER_MEMORY_PLAN": "sharded"}
    for app in launch_tiny_app(tmp_path_factory, "torchrun2-sharded", env=sharded,
                               launcher=[TORCHRUN, "--standalone", "--nproc-per-node=2"]):
        video, _, _, report, *_ = connect(app).predict(**request(), api_name="/animate")
        assert "Ran on 2 ranks (Ulysses 2 x weights sharded 2 ways)." in report
    assert_same_video(video, connect(single).predict(**request(), api_name="/animate")[0])


def test_the_fast_preset_makes_the_same_video(two, single):
    """The distillation LoRA switched on every rank; one pass a step outside the pose-guidance window (every rank
    runs it), two inside."""
    fast = request(preset="fast", steps=4, guidance_scale=1.0, window_start=0.1, window_end=0.4)
    video, _, _, report, *_ = connect(two).predict(**fast, api_name="/animate")
    assert "Ran on 2 ranks" in report
    assert_same_video(video, connect(single).predict(**fast, api_name="/animate")[0])


def test_jobs_at_once_run_one_after_the_other_on_every_rank(two, single):
    """Two jobs allowed at once (--concurrency 2), a long one in windows and a short one: each is sent to the other
    rank whole, so their steps never interleave there."""
    long_job = connect(two).submit(**request(num_frames=17), api_name="/animate")
    time.sleep(1.0)
    short_job = connect(two).submit(**request(seed=8), api_name="/animate")
    long_video, short_video = long_job.result(timeout=300)[0], short_job.result(timeout=300)[0]
    assert_same_video(long_video, connect(single).predict(**request(num_frames=17), api_name="/animate")[0])
    assert_same_video(short_video, connect(single).predict(**request(seed=8), api_name="/animate")[0])


def test_a_long_video_in_windows_is_the_single_process_one(two, single):
    video, _, _, report, *_ = connect(two).predict(**request(num_frames=17), api_name="/animate")
    alone = connect(single).predict(**request(num_frames=17), api_name="/animate")[0]
    assert "Ran on 2 ranks" in report and len(frames(video)) == 17
    assert_same_video(video, alone)


def test_four_ranks_split_the_passes_and_the_sequence(tmp_path_factory, single):
    """2 guidance groups x Ulysses 2: each pass's tokens split across the two ranks of its group (gloo all-to-all)."""
    for app in torchrun_app(tmp_path_factory, 4):
        video, _, _, report, *_ = connect(app).predict(**request(), api_name="/animate")
        assert "Ran on 4 ranks (2 guidance groups x Ulysses 2)." in report
    assert_same_video(video, connect(single).predict(**request(), api_name="/animate")[0])


def test_a_cancel_stops_every_rank_and_the_next_job_runs(two):
    client = connect(two)
    job = client.submit(**request(steps=80), api_name="/animate")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any("Denoising" in (unit.desc or "")
                                                   for unit in job.status().progress_data or []):
        time.sleep(0.2)
    job.cancel()
    finished = time.monotonic() + 60
    while not job.done() and time.monotonic() < finished:
        time.sleep(0.2)
    assert job.done()
    assert re.search(r"job \S+ cancelled after step \d+ of 80", two.log())
    video, *_ = client.predict(**request(), api_name="/animate")  # every rank is back in step
    assert Path(video).is_file()


def test_a_killed_rank_ends_the_job_and_never_hangs(tmp_path_factory):
    for app in torchrun_app(tmp_path_factory, 2):
        worker = int(re.search(r"rank 1 of 2 \(pid (\d+)\)", app.log()).group(1))
        job = connect(app).submit(**request(steps=80, num_frames=33), api_name="/animate")
        time.sleep(3)
        os.kill(worker, signal.SIGKILL)
        outcome = {}

        def wait():
            try:
                outcome["result"] = job.result(timeout=120)
            except Exception as error:  # the job fails: a message, or the server going away with torchrun
                outcome["error"] = error

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        waiter.join(150)
        assert not waiter.is_alive(), "the client still waits for a job whose rank died"
        assert "error" in outcome
        if isinstance(outcome["error"], AppError):
            assert "GPU worker" in str(outcome["error"])
        app.process.wait(timeout=120)  # torchrun stops the app when a rank dies, with its own message
        assert "rank" in app.log().lower()


@pytest.mark.parametrize("fault, rank_1_raised", [("oom_once", "OutOfMemoryError"), ("oom_rank=0", "RankFailed"),
                                                  ("oom_rank=1", "OutOfMemoryError")])
def test_a_rank_out_of_memory_fails_the_job_on_every_rank_and_the_next_runs(tmp_path_factory, fault, rank_1_raised):
    """A job runs out of memory on every rank after its first step (`oom_once`), or on one rank in the middle of its
    share of a step (`oom_rank`): the visitor reads the out-of-memory message at once (not after the ranks' 600 s
    wait), every rank ends that job, and the next runs on both ranks."""
    name = f"torchrun2-{fault.replace('=', '')}"
    for app in launch_tiny_app(tmp_path_factory, name, env={**WINDOWS, "STEADYDANCER_FAULT": fault},
                               launcher=[TORCHRUN, "--standalone", "--nproc-per-node=2"]):
        client = connect(app)
        start = time.monotonic()
        with pytest.raises(AppError, match="Out of memory"):
            client.predict(**request(), api_name="/animate")
        assert time.monotonic() - start < 120
        assert f"rank 1: the job failed ({rank_1_raised}" in app.log()
        video, _, _, report, *_ = client.predict(**request(), api_name="/animate")
        assert "Ran on 2 ranks (2 guidance groups)." in report and Path(video).is_file()
