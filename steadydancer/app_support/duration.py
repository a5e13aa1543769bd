"""How long a generation holds the GPU: the duration ZeroGPU is asked for, and the estimate the UI shows.

ZeroGPU stops a task that runs past the duration it asked for, and schedules short requests before long ones, so
the request is sized from what the sampler will do: transformer passes x cost of one pass, plus the VAE and encoders.

One pass over a sequence of T tokens (latent frames + 2 reference frames, times the h/16 x w/16 patch grid) costs
    2 * P_tok * T       (every linear layer a video token goes through; P_tok = L * (6 d^2 + 2 d f))
  + 4 * L * T^2 * d     (self-attention scores and values)
  + 4 * L * T * C * d   (cross-attention over C = 512 text + 257 image tokens)
FLOPs. Passes per step: 1, +1 for text guidance (scale != 1), +1 inside the pose-guidance window (strictly
start < i/N < end, as released). The effective throughputs below are planning numbers for bf16 with SDPA attention
(about a third of the dense peak), not measurements of this code: calibrate them with one timed run.
`--gpu` / STEADYDANCER_GPU selects one; the margin covers the rest.
"""

import math
import os
from dataclasses import dataclass

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
CONTEXT_TOKENS = 512 + 257


@dataclass(frozen=True)
class TransformerSize:
    num_layers: int = 40
    dim: int = 5120
    ffn_dim: int = 13824

    @classmethod
    def from_config(cls, config) -> "TransformerSize":
        return cls(config.num_layers, config.num_attention_heads * config.attention_head_dim, config.ffn_dim)


def pose_guidance_steps(num_steps: int, window: tuple[float, float]) -> int:
    start, end = window
    return sum(start < i / num_steps < end for i in range(num_steps))


def transformer_passes(num_steps: int, guidance_scale: float, pose_guidance_scale: float,
                       window: tuple[float, float]) -> int:
    passes = num_steps * (2 if guidance_scale != 1.0 else 1)
    if pose_guidance_scale > 0:
        passes += pose_guidance_steps(num_steps, window)
    return passes


def sequence_length(num_frames: int, height: int, width: int) -> int:
    latent_frames = (num_frames - 1) // 4 + 1
    return (latent_frames + 2) * (height // 16) * (width // 16)


def pass_flops(num_frames: int, height: int, width: int, size: TransformerSize = TransformerSize()) -> float:
    tokens = sequence_length(num_frames, height, width)
    d, L = size.dim, size.num_layers
    per_token = L * (6 * d * d + 2 * d * size.ffn_dim)
    return 2.0 * per_token * tokens + 4.0 * L * tokens * tokens * d + 4.0 * L * tokens * CONTEXT_TOKENS * d


def detect_gpu(zerogpu_size: str | None = None) -> str:
    """The `GPU_THROUGHPUT` key for this machine: ZeroGPU, the CUDA device's name, or cpu."""
    if os.environ.get("SPACES_ZERO_GPU", "").lower() in {"1", "true"}:
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
    num_inference_steps: int = 40,
    guidance_scale: float = 5.0,
    pose_guidance_scale: float = 1.0,
    pose_guidance_window: tuple[float, float] = (0.1, 0.4),
    gpu: str = "h100",
    size: TransformerSize = TransformerSize(),
) -> GpuEstimate:
    if gpu not in GPU_THROUGHPUT:
        raise ValueError(f"Unknown GPU {gpu!r}; one of {', '.join(GPU_THROUGHPUT)}.")
    throughput = GPU_THROUGHPUT[gpu] * 1e12
    passes = transformer_passes(num_inference_steps, guidance_scale, pose_guidance_scale, pose_guidance_window)
    transformer = passes * pass_flops(num_frames, height, width, size) / throughput
    slowdown = GPU_THROUGHPUT["h100"] * 1e12 / throughput
    other = (VAE_SECONDS_AT_PAPER_SIZE * num_frames * height * width / PAPER_PIXELS + ENCODER_SECONDS) * slowdown
    seconds = (transformer + other + FIXED_SECONDS) * MARGIN
    return GpuEstimate(
        seconds=int(math.ceil(seconds / 10.0) * 10),
        transformer_seconds=transformer,
        other_seconds=other,
        passes=passes,
        tokens=sequence_length(num_frames, height, width),
        gpu=gpu,
    )


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest:02d} s"
