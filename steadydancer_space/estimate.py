"""How long a generation holds the GPU: the duration ZeroGPU is asked for, and the estimate the UI shows.

ZeroGPU stops a task that runs past the duration it asked for, and schedules short requests before long ones, so
the request is sized from what the sampler will do: transformer passes x cost of one pass, plus the VAE and encoders.

The cost of one pass is `steadydancer.flops` (the project's one FLOP model, also used by `bench/`); the passes per
job are `steadydancer.scheduling.transformer_passes`. The effective throughputs below are planning numbers for bf16 with SDPA attention
(about a third of the dense peak), not measurements of this code: calibrate them with one timed run.
`--gpu` / STEADYDANCER_GPU selects one; the margin covers the rest.
"""

import math
from dataclasses import dataclass

from steadydancer.defaults import RELEASED
from steadydancer.flops import CONFIG_14B, transformer_pass_flops
from steadydancer.scheduling import transformer_passes

# Effective bf16 TFLOP/s for this workload (estimates). ZeroGPU "large" is an H200 MIG slice with 60 of 132 SMs.
GPU_THROUGHPUT = {
    "h200": 400.0,
    "h100": 350.0,
    "a100": 140.0,
    "l40s": 110.0,
    "a10g": 35.0,
    "zerogpu-large": 400.0 * 60 / 132,
    "zerogpu-xlarge": 400.0,
    "cpu": 1.0,
}
# Seconds the VAE (3 encodes, 1 decode, fp32) and the encoders take for 81 frames at 1024x576 on an H100-class GPU.
VAE_SECONDS_AT_PAPER_SIZE = 40.0
PAPER_PIXELS = 81 * 1024 * 576
ENCODER_SECONDS = 3.0
FIXED_SECONDS = 10.0  # moving inputs, scheduler, Python
MARGIN = 1.25


def detect_gpu(zerogpu: bool, zerogpu_size: str | None = None) -> str:
    """The `GPU_THROUGHPUT` key for this machine: ZeroGPU, the CUDA device's name, or cpu."""
    if zerogpu:
        return f"zerogpu-{zerogpu_size or 'large'}"
    try:
        import torch

        if torch.cuda.is_available():
            name = torch.cuda.get_device_name().lower()
            for key in ("h200", "h100", "a100", "l40s", "a10g"):
                if key in name:
                    return key
            return "a100"
    except Exception:  # no torch/CUDA: plan for the CPU
        pass
    return "cpu"


@dataclass(frozen=True)
class GpuEstimate:
    seconds: int  # what to ask for (margin included, rounded up to 10 s)
    transformer_seconds: float
    other_seconds: float
    passes: int
    tokens: int
    gpu: str

    def describe(self) -> str:
        return (f"about {format_seconds(self.transformer_seconds + self.other_seconds)} on {self.gpu} "
                f"({self.passes} transformer passes over {self.tokens:,} tokens); "
                f"{format_seconds(self.seconds)} requested")


def estimate_gpu_seconds(
    num_frames: int,
    height: int,
    width: int,
    num_inference_steps: int = RELEASED.num_inference_steps,
    guidance_scale: float = RELEASED.guidance_scale,
    pose_guidance_scale: float = RELEASED.pose_guidance_scale,
    pose_guidance_window: tuple[float, float] = RELEASED.pose_guidance_window,
    gpu: str = "h100",
    transformer_config: dict = CONFIG_14B,
) -> GpuEstimate:
    if gpu not in GPU_THROUGHPUT:
        raise ValueError(f"Unknown GPU {gpu!r}; one of {', '.join(GPU_THROUGHPUT)}.")
    throughput = GPU_THROUGHPUT[gpu] * 1e12
    passes = transformer_passes(num_inference_steps, guidance_scale, pose_guidance_scale, pose_guidance_window)
    flops = transformer_pass_flops(transformer_config, num_frames, height, width)
    transformer = passes * flops["total"] / throughput
    slowdown = GPU_THROUGHPUT["h100"] * 1e12 / throughput
    other = (VAE_SECONDS_AT_PAPER_SIZE * num_frames * height * width / PAPER_PIXELS + ENCODER_SECONDS) * slowdown
    seconds = (transformer + other + FIXED_SECONDS) * MARGIN
    return GpuEstimate(
        seconds=int(math.ceil(seconds / 10.0) * 10),
        transformer_seconds=transformer,
        other_seconds=other,
        passes=passes,
        tokens=int(flops["tokens"]),
        gpu=gpu,
    )


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest:02d} s"
