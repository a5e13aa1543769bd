"""ZeroGPU start-up, as the fastest Wan Spaces run: float8 compute, an int8 text encoder, ahead-of-time compiled
transformer blocks.

What start-up does (`steadydancer.memory.plan_memory` decides the placement from the simulated peaks; the card is an
RTX Pro 6000 Blackwell, compute capability 12.0, so float8 matmuls run and FlashAttention 3 does not):

- ``large`` (48 GB) and ``xlarge`` (96 GB) both get the resident plan with float8 compute: the blocks' linears in
  float8 (torchao dynamic activation + weight), the text encoder on the GPU in int8 (torchao weight-only). Where a
  plan streams the text encoder instead (a forced plan, a smaller card), it keeps its precision.
- The distillation LoRA fused into the weights where the deployment serves the fast preset alone (``--fast-only``);
  attention through PyTorch SDPA (diffusers' default backend; nothing is probed in the main process, which has no
  GPU); then one long start-up GPU call that compiles the repeated transformer block ahead of time
  (`steadydancer.aot`) for each `AOT_BUCKETS` size at the default job's and the window's frame count. Every block
  call of another shape or LoRA state runs eagerly, and when compiling fails the whole model stays eager; a log line
  says which path serves.

Why the guidance passes run one by one here: a static graph fits one batch size, and unbatched passes make every
call of a job the same shape (at 30k+ tokens a pass is compute-bound, so batching gains little).
"""

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .estimate import MARGIN
from .poses import detector_on_gpu
from .request import AnimationRequest, PoseOptions

AOT_BUCKETS = ("480p", "576p")
# Upper bound of one block graph's export and AOTInductor build on the start-up GPU call, and the longest start-up
# call asked for (ZeroGPU's own ahead-of-time examples ask for 1500 s).
COMPILE_SECONDS = 240
MAX_STARTUP_SECONDS = 1500
# The pose step's GPU call: ONNX Runtime starting its CUDA sessions, then DWPose (YOLOX-L on one frame in a few,
# RTMPose-L on each) a frame. Planning figures until a GPU measures them.
POSE_CALL_SECONDS = 15.0
POSE_SECONDS_PER_FRAME = 0.02


def serves_ahead_of_time(config) -> bool:
    """Whether this deployment runs the ZeroGPU recipe: float8 compute for speed, compiled blocks, one graph shape
    per job. Everything that plans or loads for it asks here."""
    return bool(config.zerogpu)


def gpu_size(config) -> str:
    """The ZeroGPU size the GPU calls ask for: the configured one, else ZeroGPU's default."""
    return config.zerogpu_size or "large"


def pose_gpu_seconds(num_frames: int) -> int:
    """What the pose step's GPU call asks for: `num_frames` driving frames and the reference, with the margin of
    every ZeroGPU duration, rounded up to 5 s."""
    seconds = (POSE_CALL_SECONDS + (num_frames + 1) * POSE_SECONDS_PER_FRAME) * MARGIN
    return int(math.ceil(seconds / 5.0) * 5)


def pose_step_on_gpu(service, spaces) -> None:
    """Makes the pose step of `service` (an `AnimationService`) a short GPU call of its own, sized by the frame
    count: DWPose on ONNX Runtime's CUDA provider instead of the CPU's (seconds instead of minutes for 30 s)."""

    @spaces.GPU(duration=lambda plan: pose_gpu_seconds(plan.num_frames), size=gpu_size(service.runtime.config))
    def poses_on_gpu(plan):
        with detector_on_gpu(service.runtime.detector):
            return service.detect_poses(plan)

    service.poses_on_gpu = poses_on_gpu


@dataclass
class StartupReport:
    """Which path serves the transformer blocks, and why."""

    path: str  # "ahead-of-time" or "eager"
    graphs: list[str] = field(default_factory=list)  # "576p 81 frames: (1, 32760, 5120)", ...
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def log_line(self) -> str:
        if self.path == "eager":
            why = "; ".join(self.failures) or "nothing to compile"
            return f"SteadyDancer app: transformer blocks run EAGERLY (ahead-of-time compilation unavailable: {why})."
        text = (f"SteadyDancer app: transformer blocks run AHEAD-OF-TIME compiled ({len(self.graphs)} graphs in "
                f"{self.seconds:.0f} s: {', '.join(self.graphs)}); other shapes run eagerly.")
        return text + (f" Not compiled: {'; '.join(self.failures)}." if self.failures else "")


def startup_jobs(planner, default_frames: int) -> list[tuple[str, int, dict]]:
    """(bucket, frames, pipeline kwargs) of the short jobs whose first block call each graph is compiled for: each
    bucket at the default job's and the window's frame count, a landscape reference (a portrait one has the same
    tokens)."""
    frame_counts = sorted({min(default_frames, planner.config.window_frames), planner.config.window_frames})
    jobs, shapes = [], set()
    for bucket in AOT_BUCKETS:
        for frames in frame_counts:
            plan = planner.resolve(AnimationRequest(None, pose=PoseOptions(resolution=bucket, num_frames=frames)))
            call = example_call(plan.height, plan.width, plan.run_area, frames)
            if call["pose_video"].shape not in shapes:  # tiny mode caps every bucket to one size
                shapes.add(call["pose_video"].shape)
                jobs.append((bucket, frames, call))
    return jobs


def example_call(height: int, width: int, run_area: int, frames: int) -> dict:
    """Pipeline kwargs of a one-step job at this size: black reference and poses (the values do not matter, the
    shapes do), the guidance passes one by one, stopped at the latents."""
    from steadydancer.sizing import generation_size

    height, width = generation_size(height, width, run_area)
    poses = np.zeros((frames, height, width, 3), np.uint8)  # (F, H, W, 3)
    return dict(image=np.zeros((height, width, 3), np.uint8), pose_video=poses, negative_pose_video=poses,
                prompt="a person dancing", max_area=run_area, num_frames=frames, num_inference_steps=1,
                batch_guidance=False, output_type="latent")


def compile_block_graphs(pipe, jobs: list[tuple[str, int, dict]]) -> tuple[list, list[str], list[str]]:
    """On the GPU: one block graph per job. Returns (packages, their descriptions, failures); a failed graph is
    left out (its shape runs eagerly)."""
    from steadydancer.aot import build_block_package

    packages, described, failures = [], [], []
    for bucket, frames, kwargs in jobs:
        try:
            package = build_block_package(pipe, **kwargs)
        except Exception as error:  # an optimisation: this shape stays eager
            failures.append(f"{bucket} {frames} frames: {type(error).__name__}: {error}")
            continue
        packages.append(package)
        hidden_shape = package.signature[1][0][0]  # the first leaf: hidden_states (B, S, D)
        described.append(f"{bucket} {frames} frames: {tuple(hidden_shape)}")
    return packages, described, failures


def prepare(runtime, planner, default_frames: int, spaces) -> StartupReport:
    """Compiles the transformer blocks in one start-up GPU call (`spaces.GPU`) and installs the graphs; the eager
    forward serves whatever was not compiled. `spaces` is ZeroGPU's package."""
    from steadydancer.aot import install_block_aot

    start = time.perf_counter()
    jobs = startup_jobs(planner, default_frames)
    duration = min(MAX_STARTUP_SECONDS, COMPILE_SECONDS * len(jobs))

    @spaces.GPU(duration=duration, size=gpu_size(runtime.config))
    def compile_on_gpu():
        return compile_block_graphs(runtime.pipe, jobs)

    try:
        packages, described, failures = compile_on_gpu()
    except Exception as error:  # the GPU call itself failed (quota, worker): serve eagerly
        packages, described, failures = [], [], [f"start-up GPU call failed: {type(error).__name__}: {error}"]
    for package in packages:
        install_block_aot(runtime.pipe.transformer, package)
    report = StartupReport("ahead-of-time" if packages else "eager", described, failures,
                           time.perf_counter() - start)
    print(report.log_line(), flush=True)
    return report
