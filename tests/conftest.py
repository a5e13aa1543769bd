import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = Path(os.environ.get("STEADYDANCER_FIXTURES", REPO.parent / "shared" / "fixtures"))


def shared_fixture(name: str) -> Path:
    """Path of a fixture of the released code, or skip when ../shared/fixtures is absent."""
    path = SHARED_FIXTURES / name
    if not path.exists():
        pytest.skip(f"released-code fixture {path} not present (it lives in ../shared/fixtures beside the repo)")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Tiny random components written in the Hub layouts: (transformer_dir, base_dir)."""
    from steadydancer.tiny import build_tiny_checkpoints

    return build_tiny_checkpoints(tmp_path_factory.mktemp("tiny"))


TEST_OUTPUT = Path(os.environ.get("STEADYDANCER_TEST_OUTPUT", REPO / "test-output"))


def launch_tiny_app(tmp_path_factory, name: str, env: dict | None = None):
    """Starts `python app.py --tiny` on a free port with its own caches and temp dir (`process.tmp / "tmp"`);
    yields the process and stops it after. `env` adds environment variables."""
    from app_launcher import start_app

    tmp = tmp_path_factory.mktemp(name)
    (tmp / "tmp").mkdir()
    TEST_OUTPUT.mkdir(parents=True, exist_ok=True)
    # Gradio serves only files under the working directory or the temp dir, so its caches live in the temp dir.
    env = {**(env or {}), "GRADIO_EXAMPLES_CACHE": str(tmp / "tmp" / "examples-cache"),
           "GRADIO_TEMP_DIR": str(tmp / "tmp" / "gradio"), "TMPDIR": str(tmp / "tmp")}
    process = start_app(["--tiny"], env=env, log_path=TEST_OUTPUT / f"{name}.log")
    process.tmp, process.env = tmp, env
    try:
        yield process
    finally:
        process.stop()


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


def random_video_inputs(height: int, width: int, frames: int) -> dict:
    """A random reference, pose and negative-pose video (uint8) and a prompt, seeded."""
    import numpy as np

    rng = np.random.default_rng(0)
    return dict(
        image=rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        pose_video=rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8),
        negative_pose_video=rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8),
        prompt="a person dancing in the studio",
        max_area=height * width,
    )
