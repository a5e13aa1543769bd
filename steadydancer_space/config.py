"""Runtime settings of the app: environment variables first, command-line flags on top. This module is the only
place the Space reads its environment variables.

It imports neither torch, diffusers nor huggingface_hub, so `app.py` can read the settings and set `HF_HUB_OFFLINE`
before those are imported. Host and port are Gradio's own: `GRADIO_SERVER_NAME`, `GRADIO_SERVER_PORT`.

| variable | flag | meaning |
| --- | --- | --- |
| STEADYDANCER_TINY=1 | --tiny | tiny random weights + stand-in pose detector: runs on a CPU, output is noise |
| STEADYDANCER_TRANSFORMER | --transformer | Hub repo id or local directory of the SteadyDancer DiT |
| STEADYDANCER_TRANSFORMER_REVISION | --transformer-revision | branch, tag or commit to pin |
| STEADYDANCER_BASE | --base | Hub repo id or local directory of the diffusers Wan2.1 I2V repo (VAE, encoders) |
| STEADYDANCER_BASE_REVISION | --base-revision | branch, tag or commit to pin |
| STEADYDANCER_POSE_MODELS | --pose-models | Hub repo id or local directory holding the two DWPose ONNX files |
| STEADYDANCER_POSE_REVISION | --pose-revision | revision of the DWPose repo (default: the pinned commit of yzd-v/DWPose) |
| STEADYDANCER_CACHE_DIR | --cache-dir | Hugging Face cache directory |
| HF_HUB_OFFLINE=1 | --offline | use only local directories and the cache |
| STEADYDANCER_DTYPE | --dtype | bfloat16 (default), float16 or float32 for the DiT and encoders |
| STEADYDANCER_VAE_DTYPE | --vae-dtype | float32 (default) or bfloat16 |
| STEADYDANCER_DEVICE | --device | cuda, cpu, ... (default: cuda when available) |
| STEADYDANCER_MEMORY_PLAN | --memory-plan | auto (from the GPU's memory), resident, fp8 or offload (`steadydancer.memory`) |
| STEADYDANCER_FAST_LORA | --fast-lora | Hub repo id, local file or directory of the 4-step distillation LoRA (fast preset) |
| STEADYDANCER_FAST_LORA_REVISION | --fast-lora-revision | revision of its repo |
| STEADYDANCER_FAST_ONLY=1 | --fast-only | serve only the fast preset, with the LoRA fused into the weights (faster) |
| STEADYDANCER_CPU_NOISE=1 | --cpu-noise | starting noise drawn on the CPU (same video on any hardware); default: on the GPU, as released |
| STEADYDANCER_MAX_FRAMES | --max-frames | longest video offered (4n+1, default 481: 30 s at 16 fps) |
| STEADYDANCER_WINDOW_FRAMES | --window-frames | frames per window of a longer video (4n+1, default 81; each window is its own GPU call) |
| STEADYDANCER_QUEUE_SIZE | --queue-size | requests waiting at most (default 20); more are refused ("Queue is full") |
| STEADYDANCER_CONCURRENCY | --concurrency | generations running at once (default 1) |
| STEADYDANCER_MAX_GPU_SECONDS | --max-gpu-seconds | refuse requests estimated above this (default: 300 on ZeroGPU, else none) |
| STEADYDANCER_FILE_TTL | --file-ttl | seconds uploads and outputs are kept on the server (default 3600) |
| STEADYDANCER_GPU | --gpu | hardware the time estimate assumes (see `estimate.GPU_THROUGHPUT`; default auto) |
| STEADYDANCER_ZEROGPU_SIZE | --zerogpu-size | ZeroGPU slice to request: large (half an RTX Pro 6000 Blackwell, 48 GB) or xlarge (a whole one, 96 GB) |
| STEADYDANCER_TINY_MAX_AREA | --tiny-max-area | pixel budget every preset is capped to in tiny mode (default 128*96) |

Upload limits (file size, pixels, video length, aspect ratio, prompt length, steps, keypoint file size and frames)
are `steadydancer_space.uploads.Limits`, read from the STEADYDANCER_MAX_* variables of `LIMIT_VARIABLES`;
STEADYDANCER_FAULT injects faults in tiny mode (`faults.py`); SPACES_ZERO_GPU (set by the platform) says the app runs
on ZeroGPU. A value that cannot be used stops the app with a `ConfigError` naming the variable.
"""

import argparse
import os
import sys
from dataclasses import dataclass, field, fields, replace
from typing import Mapping, Sequence

from steadydancer.defaults import BASE, DWPOSE, FAST_LORA, TRANSFORMER
from steadydancer.sizing import check_frame_count

from .estimate import GPU_THROUGHPUT
from .uploads import Limits

# Upload limits: Limits field -> (variable without the STEADYDANCER_ prefix, type, unit in the variable).
LIMIT_VARIABLES = {
    "max_file_bytes": ("MAX_FILE_MB", float, 2**20),
    "max_image_pixels": ("MAX_IMAGE_PIXELS", int, 1),
    "max_video_pixels": ("MAX_VIDEO_PIXELS", int, 1),
    "max_video_seconds": ("MAX_VIDEO_SECONDS", float, 1),
    "max_aspect_ratio": ("MAX_ASPECT", float, 1),
    "max_prompt_chars": ("MAX_PROMPT_CHARS", int, 1),
    "max_steps": ("MAX_STEPS", int, 1),
    "max_keypoint_bytes": ("MAX_KEYPOINT_MB", float, 2**20),
    "max_keypoint_frames": ("MAX_KEYPOINT_FRAMES", int, 1),
}

# Other settings: AppConfig field -> (variable without the STEADYDANCER_ prefix, type).
SETTING_VARIABLES = {
    "tiny": ("TINY", bool), "transformer": ("TRANSFORMER", str), "transformer_revision": ("TRANSFORMER_REVISION", str),
    "base": ("BASE", str), "base_revision": ("BASE_REVISION", str), "pose_models": ("POSE_MODELS", str),
    "pose_revision": ("POSE_REVISION", str), "cache_dir": ("CACHE_DIR", str), "dtype": ("DTYPE", str),
    "vae_dtype": ("VAE_DTYPE", str), "device": ("DEVICE", str), "memory_plan": ("MEMORY_PLAN", str),
    "fast_lora": ("FAST_LORA", str), "fast_lora_revision": ("FAST_LORA_REVISION", str),
    "fast_only": ("FAST_ONLY", bool), "cpu_noise": ("CPU_NOISE", bool), "max_frames": ("MAX_FRAMES", int),
    "window_frames": ("WINDOW_FRAMES", int), "queue_size": ("QUEUE_SIZE", int), "concurrency": ("CONCURRENCY", int),
    "max_gpu_seconds": ("MAX_GPU_SECONDS", float), "gpu": ("GPU", str), "zerogpu_size": ("ZEROGPU_SIZE", str),
    "tiny_max_area": ("TINY_MAX_AREA", int), "file_ttl": ("FILE_TTL", int), "faults": ("FAULT", str),
}


class ConfigError(ValueError):
    """A setting (flag or environment variable) that cannot be used; the message names it."""

DTYPES = ("bfloat16", "float16", "float32")
GPU_CHOICES = ("auto", *GPU_THROUGHPUT)
MEMORY_PLANS = ("auto", "resident", "fp8", "offload")
# GPU memory (GB) of each ZeroGPU size: `large` is half an RTX Pro 6000 Blackwell (compute capability 12.0).
ZEROGPU_MEMORY_GB = {"large": 48, "xlarge": 96}
ZEROGPU_COMPUTE_CAPABILITY = (12, 0)
TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class AppConfig:
    tiny: bool = False
    transformer: str = TRANSFORMER.repo_id
    transformer_revision: str | None = TRANSFORMER.revision
    base: str = BASE.repo_id
    base_revision: str | None = BASE.revision
    pose_models: str = DWPOSE.repo_id
    pose_revision: str | None = None  # None: the library's pinned commit for its own repo (`DWPOSE`)
    cache_dir: str | None = None
    offline: bool = False
    dtype: str = "bfloat16"
    vae_dtype: str = "float32"
    device: str | None = None
    memory_plan: str = "auto"
    fast_lora: str = FAST_LORA.repo_id
    fast_lora_revision: str | None = FAST_LORA.revision
    fast_only: bool = False
    max_frames: int = 481
    window_frames: int = 81
    queue_size: int = 20
    concurrency: int = 1
    max_gpu_seconds: float | None = None
    gpu: str = "auto"
    zerogpu_size: str | None = None  # None: what `spaces` chooses (xlarge for models above its size threshold)
    tiny_max_area: int = 128 * 96
    file_ttl: int = 3600
    cpu_noise: bool = False  # draw the starting noise on the CPU (same video on any hardware) instead of the GPU
    zerogpu: bool = False  # running on ZeroGPU (SPACES_ZERO_GPU, set by the platform)
    faults: str = ""  # STEADYDANCER_FAULT, tiny mode only (`faults.py`)
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self):
        for name in ("dtype", "vae_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"{name} must be one of {', '.join(DTYPES)}, got {getattr(self, name)!r}.")
        for name in ("max_frames", "window_frames"):
            check_frame_count(getattr(self, name), name, minimum=5)
        if self.memory_plan not in MEMORY_PLANS:
            raise ValueError(f"memory_plan must be one of {', '.join(MEMORY_PLANS)}, got {self.memory_plan!r}.")
        if self.gpu not in GPU_CHOICES:
            raise ValueError(f"gpu must be one of {', '.join(GPU_CHOICES)}, got {self.gpu!r}.")
        if self.zerogpu_size not in (None, "large", "xlarge"):
            raise ValueError(f"zerogpu_size must be large or xlarge, got {self.zerogpu_size!r}.")
        if self.queue_size < 1 or self.concurrency < 1 or self.tiny_max_area < 16 * 16:
            raise ValueError("queue_size and concurrency must be >= 1, tiny_max_area >= 256.")
        if self.file_ttl < 60:
            raise ValueError(f"file_ttl must be at least 60 seconds, got {self.file_ttl}.")
        if self.max_gpu_seconds is not None and not self.max_gpu_seconds > 0:
            raise ValueError(f"max_gpu_seconds must be positive, got {self.max_gpu_seconds}.")

    @property
    def delete_cache(self) -> tuple[int, int]:
        """Gradio's `delete_cache` (frequency, age): files older than `file_ttl` go within a quarter of it."""
        return max(60, self.file_ttl // 4), self.file_ttl

    @property
    def mode_key(self) -> str:
        """Names what produced a result, so cached examples of one model are never served for another."""
        if self.tiny:
            return f"tiny-{self.tiny_max_area}"
        return "-".join(
            str(v).replace("/", "--") for v in (self.transformer, self.transformer_revision or "main",
                                               self.base, self.base_revision or "main")
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "AppConfig":
        """The settings from environment variables (the only place the Space reads them); `ConfigError` names a
        variable whose value cannot be used."""
        env = os.environ if environ is None else environ

        def get(name, cast=str, scale=1):
            variable = f"STEADYDANCER_{name}"
            value = env.get(variable)
            if value is None or value.strip() == "":
                return None
            if cast is bool:
                return value.strip().lower() in TRUE
            try:
                number = cast(value.strip())
            except ValueError:
                raise ConfigError(f"{variable}={value!r} is not {'a whole number' if cast is int else 'a number'}.") from None
            return int(number * scale) if scale != 1 else number

        limits = {name: get(variable, cast, scale) for name, (variable, cast, scale) in LIMIT_VARIABLES.items()}
        values = {field: get(variable, cast) for field, (variable, cast) in SETTING_VARIABLES.items()}
        values["limits"] = Limits(**{k: v for k, v in limits.items() if v is not None})
        values["offline"] = env.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE
        values["zerogpu"] = env.get("SPACES_ZERO_GPU", "").strip().lower() in TRUE
        try:
            return cls(**{k: v for k, v in values.items() if v is not None})
        except ValueError as error:
            raise ConfigError(str(error)) from None


def build_parser(defaults: AppConfig | None = None) -> argparse.ArgumentParser:
    d = defaults or AppConfig()
    p = argparse.ArgumentParser(
        prog="app.py",
        description="SteadyDancer Gradio app. Host and port: GRADIO_SERVER_NAME, GRADIO_SERVER_PORT. "
        "Every flag has a STEADYDANCER_* environment variable (see steadydancer_space/config.py).",
    )
    p.add_argument("--tiny", action=argparse.BooleanOptionalAction, default=d.tiny,
                   help="tiny random weights and a stand-in pose detector: runs on a CPU, the output is noise")
    p.add_argument("--transformer", default=d.transformer, help="Hub repo id or local directory of the DiT")
    p.add_argument("--transformer-revision", default=d.transformer_revision)
    p.add_argument("--base", default=d.base, help="Hub repo id or local directory of the diffusers Wan2.1 I2V repo")
    p.add_argument("--base-revision", default=d.base_revision)
    p.add_argument("--pose-models", default=d.pose_models, help="Hub repo id or directory with the DWPose ONNX files")
    p.add_argument("--pose-revision", default=d.pose_revision)
    p.add_argument("--cache-dir", default=d.cache_dir)
    p.add_argument("--offline", action=argparse.BooleanOptionalAction, default=d.offline,
                   help="no network: local directories and the Hugging Face cache only (sets HF_HUB_OFFLINE=1)")
    p.add_argument("--dtype", choices=DTYPES, default=d.dtype)
    p.add_argument("--vae-dtype", choices=DTYPES, default=d.vae_dtype)
    p.add_argument("--device", default=d.device)
    p.add_argument("--memory-plan", choices=MEMORY_PLANS, default=d.memory_plan,
                   help="where the models live: auto (from the GPU's memory), resident, fp8 or offload")
    p.add_argument("--fast-lora", default=d.fast_lora, help="the 4-step distillation LoRA: repo id, file or directory")
    p.add_argument("--fast-lora-revision", default=d.fast_lora_revision)
    p.add_argument("--fast-only", action=argparse.BooleanOptionalAction, default=d.fast_only,
                   help="serve only the fast preset, with the LoRA fused into the weights")
    p.add_argument("--cpu-noise", action=argparse.BooleanOptionalAction, default=d.cpu_noise,
                   help="draw the starting noise on the CPU: a seed gives the same video on any hardware (released: "
                   "on the GPU, so a seed reproduces the released code's result)")
    p.add_argument("--max-frames", type=int, default=d.max_frames, help="longest video offered (4n+1)")
    p.add_argument("--window-frames", type=int, default=d.window_frames,
                   help="frames per window of a longer video (4n+1); each window is its own GPU call")
    p.add_argument("--queue-size", type=int, default=d.queue_size)
    p.add_argument("--concurrency", type=int, default=d.concurrency)
    p.add_argument("--max-gpu-seconds", type=float, default=d.max_gpu_seconds)
    p.add_argument("--gpu", choices=GPU_CHOICES, default=d.gpu, help="hardware the GPU-time estimate assumes")
    p.add_argument("--zerogpu-size", choices=("large", "xlarge"), default=d.zerogpu_size,
                   help="ZeroGPU slice: large (48 GB, half a Blackwell card) or xlarge (96 GB, twice the quota)")
    p.add_argument("--tiny-max-area", type=int, default=d.tiny_max_area)
    p.add_argument("--file-ttl", type=int, default=d.file_ttl,
                   help="seconds uploads and outputs are kept on the server before they are deleted")
    return p


def parse_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> AppConfig:
    """Environment variables, overridden by flags in `argv`."""
    base = AppConfig.from_env(environ)
    args = vars(build_parser(base).parse_args(argv))
    try:
        return replace(base, **{f.name: args[f.name] for f in fields(AppConfig) if f.name in args})
    except ValueError as error:
        raise ConfigError(str(error)) from None


def apply_environment(config: AppConfig) -> None:
    """Process-wide settings that must be in place before the Hub client is used."""
    if config.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        # huggingface_hub reads the variable at import; keep an already imported copy in step.
        constants = sys.modules.get("huggingface_hub.constants")
        if constants is not None:
            constants.HF_HUB_OFFLINE = True
    # Cached example outputs are per model, so tiny-mode noise is never served by the real app (and vice versa).
    os.environ.setdefault("GRADIO_EXAMPLES_CACHE", os.path.join(".gradio", "cached_examples", config.mode_key))
