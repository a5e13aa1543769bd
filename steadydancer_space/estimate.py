"""How long a generation holds the GPU: the duration ZeroGPU is asked for, and the estimate the UI shows.

ZeroGPU stops a task that runs past the duration it asked for, and schedules short requests before long ones, so
the request is sized from what the sampler will do: transformer passes x cost of one pass, plus the VAE and encoders.

The cost of one pass is `steadydancer.flops` (the project's one FLOP model, also used by `bench/`); the passes per
job are `steadydancer.scheduling.transformer_passes`. Where the device check (`bench/device_check.sh`) has measured the GPU at hand, its figures
in `bench/results/` replace the FLOP model (`steadydancer_space.calibration`): seconds per transformer pass by token
count and VAE decode seconds per frame. Otherwise the effective throughputs below are planning numbers for bf16 with
SDPA attention, not measurements of this code. `--gpu` / STEADYDANCER_GPU selects one; the margin covers the rest.
"""

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from steadydancer.defaults import RELEASED
from steadydancer.flops import CONFIG_14B, transformer_pass_flops
from steadydancer.scheduling import transformer_passes

if TYPE_CHECKING:
    from .calibration import Calibration

# Effective bf16 TFLOP/s for this workload (planning estimates: about 35 % of each GPU's dense bf16 peak). ZeroGPU runs
# on NVIDIA RTX Pro 6000 Blackwell (about 500 dense bf16 TFLOP/s): `large` is half a card (48 GB), `xlarge` a whole
# one (96 GB, twice the quota).
GPU_THROUGHPUT = {
    "h200": 400.0,
    "h100": 350.0,
    "a100": 110.0,
    "l40s": 125.0,
    "rtx-pro-6000": 175.0,
    "zerogpu-large": 175.0 / 2,
    "zerogpu-xlarge": 175.0,
    "cpu": 1.0,
}
# ZeroGPU's daily GPU quota by account (seconds), and how much quota a second of each size costs.
ZEROGPU_DAILY_QUOTA = {"without login": 120, "free accounts": 300, "PRO accounts": 2400}
ZEROGPU_QUOTA_RATE = {"zerogpu-large": 1, "zerogpu-xlarge": 2}

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
            for key in ("h200", "h100", "a100", "l40s", "rtx pro 6000"):
                if key in name:
                    return key.replace(" ", "-")
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
    measured: bool = False  # from the device check's figures rather than the FLOP model

    @property
    def quota_seconds(self) -> int | None:
        """ZeroGPU quota this request costs (the requested duration times the size's rate); None off ZeroGPU."""
        rate = ZEROGPU_QUOTA_RATE.get(self.gpu)
        return None if rate is None else self.seconds * rate

    def describe(self) -> str:
        basis = "measured" if self.measured else "FLOP-model estimate"
        text = (f"about {format_seconds(self.transformer_seconds + self.other_seconds)} on {self.gpu} ({basis}) "
                f"({self.passes} transformer passes over {self.tokens:,} tokens); "
                f"{format_seconds(self.seconds)} requested")
        if self.quota_seconds is not None:
            text += (f"; it costs {format_seconds(self.quota_seconds)} of ZeroGPU quota (free accounts have "
                     f"{format_seconds(ZEROGPU_DAILY_QUOTA['free accounts'])} a day)")
        return text


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
    calibration: "Calibration | None" = None,
) -> GpuEstimate:
    """`calibration`: figures measured on `gpu` by the device check (`steadydancer_space.calibration`); the
    transformer passes and the VAE decode then come from them instead of the FLOP model."""
    if gpu not in GPU_THROUGHPUT:
        raise ValueError(f"Unknown GPU {gpu!r}; one of {', '.join(GPU_THROUGHPUT)}.")
    throughput = GPU_THROUGHPUT[gpu] * 1e12
    passes = transformer_passes(num_inference_steps, guidance_scale, pose_guidance_scale, pose_guidance_window)
    flops = transformer_pass_flops(transformer_config, num_frames, height, width)
    slowdown = GPU_THROUGHPUT["h100"] * 1e12 / throughput
    vae = VAE_SECONDS_AT_PAPER_SIZE * num_frames * height * width / PAPER_PIXELS * slowdown
    if calibration is not None:
        transformer = passes * calibration.pass_seconds(int(flops["tokens"]))
        vae = calibration.vae_decode_seconds(num_frames, height, width) or vae
    else:
        transformer = passes * flops["total"] / throughput
    other = vae + ENCODER_SECONDS * slowdown
    seconds = (transformer + other + FIXED_SECONDS) * MARGIN
    return GpuEstimate(
        seconds=int(math.ceil(seconds / 10.0) * 10),
        transformer_seconds=transformer,
        other_seconds=other,
        passes=passes,
        tokens=int(flops["tokens"]),
        gpu=gpu,
        measured=calibration is not None,
    )


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest:02d} s"
