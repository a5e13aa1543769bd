"""The ZeroGPU start-up (`steadydancer_space.zerogpu`) in tiny mode, with a stand-in of `spaces` that records what
is called: one start-up GPU call, then per example job a capture of the repeated block and its compilation; the
eager forward when compiling is not possible, the compiled graphs when it is."""

import shutil
import sys

import numpy as np
import pytest
import torch

from steadydancer import aot
from steadydancer.sizing import generation_size, latent_frame_count
from steadydancer_space import zerogpu
from steadydancer_space.config import AppConfig
from steadydancer_space.plan import Planner
from steadydancer_space.request import SamplerOptions
from steadydancer_space.runtime import load_runtime

from helpers.paths import EXAMPLES
from helpers.zerogpu_spaces import make_spaces

pytestmark = pytest.mark.slow  # a tiny runtime, and exports of its block


@pytest.fixture
def runtime():
    runtime = load_runtime(AppConfig(tiny=True, zerogpu=True, window_frames=17))
    yield runtime
    runtime.tiny_dir.cleanup()


def block_input_shape(runtime, frames: int) -> tuple[int, int, int]:
    """(B, S, D) of a block call at the tiny cap: tokens of the (F' + 2) x h' x w' grid, the model's width."""
    config = runtime.pipe.transformer.config
    height, width = generation_size(576, 1024, runtime.config.tiny_max_area)  # the landscape estimate frame
    p_t, p_h, p_w = config.patch_size
    grid = (latent_frame_count(frames) // p_t + 2, height // 8 // p_h, width // 8 // p_w)
    return 1, grid[0] * grid[1] * grid[2], config.num_attention_heads * config.attention_head_dim


def test_without_a_compiler_the_eager_forward_serves(runtime, monkeypatch, capsys):
    spaces = make_spaces(compiler_available=False)
    monkeypatch.setitem(sys.modules, "spaces", spaces)
    planner = Planner.for_runtime(runtime)
    assert planner.gpu == "zerogpu-large" and planner.ahead_of_time

    report = zerogpu.prepare(runtime, planner, 9, spaces)

    # One start-up GPU call on the size the estimates price, then capture + compile per distinct job shape.
    jobs = [9, 17]
    assert spaces.calls == [("GPU", "compile_on_gpu", zerogpu.COMPILE_SECONDS * len(jobs), "large")] + [
        call for frames in jobs
        for call in (("aoti_capture", "WanTransformerBlock"), ("aoti_compile", block_input_shape(runtime, frames)))
    ]
    assert report.path == "eager" and len(report.failures) == len(jobs)
    assert "EAGERLY" in capsys.readouterr().out
    # Nothing is left patched: the blocks run their own forward.
    assert all("forward" not in block.__dict__ for block in runtime.pipe.transformer.blocks)
    job = zerogpu.example_call(576, 1024, runtime.config.tiny_max_area, 9)
    assert runtime.pipe(**job).frames.shape[2] == latent_frame_count(9)


def test_the_plan_runs_guidance_passes_one_by_one_for_a_single_graph_shape(runtime):
    planner = Planner.for_runtime(runtime)
    plan = planner.memory_plan(81, 576, 1024, SamplerOptions())
    assert plan.batch_guidance is False and plan.transformer == "float8_compute"  # 48 GB on sm_120


def test_compiled_block_graphs_serve_the_job(runtime, monkeypatch, capsys):
    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("AOTInductor builds a C++ library and this machine has no C++ compiler")
    spaces = make_spaces(inductor_configs={"aot_inductor.debug_compile": True})  # -O0: a faster build
    monkeypatch.setitem(sys.modules, "spaces", spaces)
    pipe = runtime.pipe
    job = zerogpu.example_call(576, 1024, runtime.config.tiny_max_area, 17)
    eager = pipe(**job, generator=torch.Generator().manual_seed(0)).frames

    report = zerogpu.prepare(runtime, Planner.for_runtime(runtime), 17, spaces)
    assert report.path == "ahead-of-time", report.failures
    assert "AHEAD-OF-TIME" in capsys.readouterr().out
    compiled = pipe(**job, generator=torch.Generator().manual_seed(0)).frames
    done, fallback = aot.aot_calls(pipe.transformer)
    assert done > 0 and done % len(pipe.transformer.blocks) == 0 and fallback == 0  # every block of every pass
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)

    other = zerogpu.example_call(576, 1024, runtime.config.tiny_max_area, 9)  # a shape without a graph
    pipe(**other)
    assert aot.aot_calls(pipe.transformer) == (done, done)  # as many passes, all eager


class DeviceRecordingDetector:
    """Tiny mode's detector with DWPoseDetector's `to(device)`, recording where it is asked to run."""

    def __init__(self, base):
        self.base, self.moves = base, []

    def to(self, device):
        self.moves.append(device)
        return self

    def detect(self, image):
        return self.base.detect(image)

    def __call__(self, image):
        return self.base(image)


def test_the_pose_step_is_a_gpu_call_of_its_own_sized_by_the_frame_count(runtime):
    from steadydancer_space.poses import PoseStepCache
    from steadydancer_space.service import AnimationService

    runtime.detector = DeviceRecordingDetector(runtime.detector)
    service = AnimationService(runtime)
    plan = service.plan(service.request(str(EXAMPLES / "ref_blue_hoodie.png"), str(EXAMPLES / "drive_groove_beat.mp4"),
                                        num_frames=17))
    on_cpu = service.poses(plan)
    assert runtime.detector.moves == []

    spaces = make_spaces()
    zerogpu.pose_step_on_gpu(service, spaces)
    service.pose_cache = PoseStepCache()  # detect again, on the "GPU"
    on_gpu = service.poses(plan)

    frames = 17 + 1  # the driving frames and the reference
    asked = (zerogpu.POSE_CALL_SECONDS + frames * zerogpu.POSE_SECONDS_PER_FRAME) * zerogpu.MARGIN
    assert spaces.calls == [("GPU", "poses_on_gpu", 5 * -(-asked // 5), "large")]
    assert runtime.detector.moves == [None, "cpu"]  # CUDA when its provider starts, the CPU again after
    assert on_gpu is not on_cpu and np.array_equal(on_gpu.prepared.positive, on_cpu.prepared.positive)
    # The visitor's estimate counts the pose call, and the generation call's duration does not include it.
    assert plan.estimate.pose_seconds == spaces.calls[0][2]
    assert "first the poses, on the GPU" in plan.estimate.describe()
