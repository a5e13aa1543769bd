"""How long one GPU call holds the GPU: the duration ZeroGPU is asked for and the estimate a visitor sees.

Both are the roofline of `steadydancer.roofline` for the GPU in use, under the memory plan that runs (the measured
pass speed replaces its planning factors where the device check has measured that GPU), plus a margin: ZeroGPU
stops a call that outlives the duration it asked for, and schedules short calls before long ones.
"""

import math
from dataclasses import dataclass

from steadydancer.defaults import RELEASED
from steadydancer.flops import CONFIG_14B, transformer_pass_flops
from steadydancer.roofline import FIXED_SECONDS, GPUS, measured_pass_tflops, phase_seconds
from steadydancer.scheduling import transformer_passes

# ZeroGPU's daily GPU quota by account (seconds), and how much quota a second of each size costs.
ZEROGPU_DAILY_QUOTA = {"without login": 120, "free accounts": 300, "PRO accounts": 2400}
ZEROGPU_QUOTA_RATE = {"zerogpu-large": 1, "zerogpu-xlarge": 2}
MARGIN = 1.25
# CUDA device names -> `steadydancer.roofline.GPUS` keys (first match wins; an A100 is told apart by its memory).
DEVICE_NAMES = (("h200", "h200"), ("h100", "h100"), ("a100", "a100"), ("l40s", "l40s"),
                ("rtx pro 6000", "rtx-pro-6000"), ("4090", "rtx-4090"))


def detect_gpu(zerogpu: bool, zerogpu_size: str | None = None) -> str:
    """The `GPUS` key for this machine: ZeroGPU's size, the CUDA device's name, or cpu."""
    if zerogpu:
        return f"zerogpu-{zerogpu_size or 'large'}"
    try:
        import torch

        if torch.cuda.is_available():
            name = torch.cuda.get_device_name().lower()
            key = next((key for part, key in DEVICE_NAMES if part in name), "a100")
            if key == "a100" and torch.cuda.get_device_properties(0).total_memory < 60e9:
                key = "a100-40gb"
            return key
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
    measured: bool = False  # the pass speed is the device check's measurement, not the planning factors
    pose_seconds: int = 0  # the pose step's own GPU call before the generation (ZeroGPU), asked for once a job

    @property
    def quota_seconds(self) -> int | None:
        """ZeroGPU quota this call costs (the requested duration times the size's rate); None off ZeroGPU."""
        rate = ZEROGPU_QUOTA_RATE.get(self.gpu)
        return None if rate is None else self.seconds * rate

    def describe(self) -> str:
        basis = "measured" if self.measured else "roofline estimate"
        text = (f"about {format_seconds(self.transformer_seconds + self.other_seconds)} on {self.gpu} ({basis}) "
                f"({self.passes} transformer passes over {self.tokens:,} tokens); "
                f"{format_seconds(self.seconds)} requested")
        if self.quota_seconds is not None:
            text += (f"; it costs {format_seconds(self.quota_seconds)} of ZeroGPU quota (free accounts have "
                     f"{format_seconds(ZEROGPU_DAILY_QUOTA['free accounts'])} a day)")
        if self.pose_seconds:
            rate = ZEROGPU_QUOTA_RATE.get(self.gpu, 1)
            text += (f"; first the poses, on the GPU: {format_seconds(self.pose_seconds)} requested "
                     f"({format_seconds(self.pose_seconds * rate)} of quota)")
        return text


def estimate_gpu_seconds(num_frames: int, height: int, width: int,
                         num_inference_steps: int = RELEASED.num_inference_steps,
                         guidance_scale: float = RELEASED.guidance_scale,
                         pose_guidance_scale: float = RELEASED.pose_guidance_scale,
                         pose_guidance_window: tuple[float, float] = RELEASED.pose_guidance_window,
                         gpu: str = "h100", *, memory_plan=None, transformer_config: dict = CONFIG_14B,
                         speedup: float = 1.0) -> GpuEstimate:
    """One call of `num_frames` frames on `gpu` (a `steadydancer.roofline.GPUS` key) under `memory_plan` (a
    `steadydancer.memory.MemoryPlan`; None: everything resident in bf16); `speedup`: the denoising's over one GPU
    when several run it together (`steadydancer.parallel.ParallelLayout.speedup`)."""
    if gpu not in GPUS:
        raise ValueError(f"Unknown GPU {gpu!r}; one of {', '.join(GPUS)}.")
    passes = transformer_passes(num_inference_steps, guidance_scale, pose_guidance_scale, pose_guidance_window)
    layout = {} if memory_plan is None else dict(plan=memory_plan.name, transformer=memory_plan.transformer,
                                                 batch_guidance=memory_plan.batch_guidance)
    phases = phase_seconds(gpu, num_frames, height, width, passes=passes, transformer_config=transformer_config,
                           **layout)
    transformer = phases.pop("denoise") / speedup
    other = sum(phases.values())
    seconds = (transformer + other + FIXED_SECONDS) * MARGIN
    return GpuEstimate(
        seconds=int(math.ceil(seconds / 10.0) * 10),
        transformer_seconds=transformer,
        other_seconds=other,
        passes=passes,
        tokens=int(transformer_pass_flops(transformer_config, num_frames, height, width)["tokens"]),
        gpu=gpu,
        measured=measured_pass_tflops(gpu) is not None,
    )


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest:02d} s"
