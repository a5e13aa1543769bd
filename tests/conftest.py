"""Fixtures every folder may use, the markers each folder gives its tests, and the fast lane (`--fast`).

The folders mirror the code: library/ (steadydancer/, pose/ for steadydancer.pose), space/ (steadydancer_space/
without a server), app/ (a launched `app.py --tiny`), browser/ (Playwright), fuzz/ (hypothesis against a launched
app), bench/ (the measurement scripts). Shared helpers live in the `helpers` package; test modules never import each
other."""

from pathlib import Path

import pytest

from helpers.paths import TEST_OUTPUT

TESTS = Path(__file__).resolve().parent
# Every test is marked with its folder's name (registered in pyproject.toml).
FOLDER_MARKERS = ("library", "space", "app", "browser", "fuzz", "bench")
# What the fast lane leaves out: tests that launch the app (app/, browser/, fuzz/), run the bench scripts in a
# subprocess (bench/) or are marked slow (whole tiny generations, subprocesses, installs).
NOT_FAST = ("app", "browser", "fuzz", "bench", "slow")
fast_lane_left_out = pytest.StashKey[int]()


def pytest_addoption(parser):
    parser.addoption("--fast", action="store_true",
                     help=f"the fast lane: leave out the tests marked {', '.join(NOT_FAST)}")


def pytest_collection_modifyitems(config, items):
    for item in items:
        folder = Path(item.path).resolve().relative_to(TESTS).parts[0]
        if folder in FOLDER_MARKERS:
            item.add_marker(folder)
    if config.getoption("--fast"):
        left_out = [item for item in items if any(item.get_closest_marker(name) for name in NOT_FAST)]
        if left_out:
            config.hook.pytest_deselected(items=left_out)
            items[:] = [item for item in items if item not in left_out]
            config.stash[fast_lane_left_out] = len(left_out)


def pytest_sessionfinish(session, exitstatus):
    # Paths that hold only app tests leave the fast lane nothing to run: that is a pass, not "no tests collected".
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and session.config.stash.get(fast_lane_left_out, 0):
        session.exitstatus = pytest.ExitCode.OK


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Tiny random components written in the Hub layouts: (transformer_dir, base_dir)."""
    from steadydancer.tiny import build_tiny_checkpoints

    return build_tiny_checkpoints(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def make_tiny_pipe(tiny_checkpoints):
    """A factory of fresh tiny pipelines (fp32, progress bar off), loaded through the Hub assembly code."""
    import torch

    from steadydancer.assembly import load_pipeline

    transformer_dir, base_dir = tiny_checkpoints

    def make():
        pipe = load_pipeline(transformer_dir, base_dir, torch_dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return make


@pytest.fixture(scope="module")
def client(app):
    """gradio_client on the module's launched `app` fixture; what it downloads goes to test-output/<app>-downloads."""
    from gradio_client import Client

    return Client(app.url, verbose=False, download_files=str(TEST_OUTPUT / f"{app.name}-downloads"))
