"""Runtime settings of the app: environment variables first, command-line flags on top. This module is the only
place the Space reads its environment variables.

Every setting is a field of `AppConfig` (or of `Limits`, the upload and request limits) declared with `setting(...)`:
the declaration is its one home, holding its environment variable, its flag (if it has one), how the variable's text
is read, its default, the values it accepts and a line of help. Reading the environment (`AppConfig.from_env`), the
flags (`build_parser`, `parse_config`), the checks and the README's settings table (`python -m
steadydancer_space.config --markdown`) all derive from it.

It imports neither torch, diffusers nor huggingface_hub, so `app.py` can read the settings and set `HF_HUB_OFFLINE`
before those are imported. Host and port are Gradio's own: `GRADIO_SERVER_NAME`, `GRADIO_SERVER_PORT`.
A value that cannot be used stops the app with a `ConfigError` naming the variable or the flag it came from.
"""

import argparse
import atexit
import os
import shutil
import sys
import tempfile
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any, Callable, Iterator, Mapping, Sequence

from steadydancer.defaults import BASE, DWPOSE, FAST_LORA, TRANSFORMER
from steadydancer.roofline import GPUS
from steadydancer.sizing import is_valid_frame_count, nearest_valid_frame_count, next_valid_frame_count

FAULT_ENV = "STEADYDANCER_FAULT"  # tiny mode's fault injection (`faults.py`)


class ConfigError(ValueError):
    """A setting (flag or environment variable) that cannot be used; the message names it."""


DTYPES = ("bfloat16", "float16", "float32")
GPU_CHOICES = ("auto", *GPUS)
MEMORY_PLANS = ("auto", "resident", "sharded", "fp8", "offload")
# GPU memory (GB) of each ZeroGPU size: `large` is half an RTX Pro 6000 Blackwell (compute capability 12.0).
ZEROGPU_MEMORY_GB = {"large": 48, "xlarge": 96}
ZEROGPU_COMPUTE_CAPABILITY = (12, 0)
# ZeroGPU refuses a task that asks for more than a few minutes (about 5 for logged-in visitors; not documented).
# Without `max_gpu_seconds`, requests estimated above this are refused there before any work.
ZEROGPU_MAX_SECONDS = 300
TRUE = ("1", "true", "yes", "on")  # a switch's variable texts that mean on; any other means off
MEGABYTE = 2**20
MIN_FRAMES = 5  # the shortest 4n+1 count above a single frame (two latent frames)

_SETTING = "setting"  # key of a field's metadata that holds its `Setting`


@dataclass(frozen=True)
class Setting:
    """How one configuration field is set and described (its default is the field's own)."""

    variable: str  # environment variable
    flag: str | None  # command-line flag; None: environment only
    kind: type  # bool, int, float or str: how the variable's (and the flag's) text reads
    help: str  # one line, for `--help` and the README
    choices: tuple[str, ...] | None = None
    require: Callable[[Any], str | None] | None = None  # what a value misses ("must be ..."), or None if usable
    unit: int = 1  # the variable counts in units of this many of the field's (megabytes of a byte count)
    none_means: str | None = None  # the default in words, where it is None

    def read(self, text: str) -> Any:
        """The value of the environment variable's `text`; `ConfigError` names the variable."""
        text = text.strip()
        if self.kind is bool:
            return text.lower() in TRUE
        if self.kind is str:
            return text
        try:
            number = self.kind(text)
        except ValueError:
            what = "a whole number" if self.kind is int else "a number"
            raise ConfigError(f"{self.variable}={text!r} is not {what}.") from None
        return int(number * self.unit) if self.unit != 1 else number

    def problem(self, value: Any) -> str | None:
        """What `value` misses ("must be ..."), or None if it can be used. None (an unset default) always can."""
        if value is None:
            return None
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}"
        return self.require(value) if self.require else None


def setting(default: Any, variable: str, help: str, *, flag: str | None = None, kind: type | None = None,
            choices: Sequence[str] | None = None, require: Callable[[Any], str | None] | None = None, unit: int = 1,
            none_means: str | None = None) -> Field:
    """A dataclass field that is a setting: `default` and everything `Setting` holds."""
    if default is None and (kind is None or none_means is None):
        raise TypeError(f"{variable}: a None default needs a kind and words for what None means.")
    spec = Setting(variable, flag, kind or type(default), help, tuple(choices) if choices is not None else None,
                   require, unit, none_means)
    return field(default=default, metadata={_SETTING: spec})


def _frame_count(value: int) -> str | None:
    if value >= MIN_FRAMES and is_valid_frame_count(value):
        return None
    options = sorted({n for n in (nearest_valid_frame_count(value), next_valid_frame_count(value)) if n >= MIN_FRAMES})
    return f"must be 4n+1 and at least {MIN_FRAMES} ({' or '.join(map(str, options or [MIN_FRAMES]))} would do)"


def _at_least(low: float) -> Callable[[float], str | None]:
    return lambda value: None if value >= low else f"must be at least {low:g}"  # NaN fails too


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be above 0"  # NaN fails too


def _check(instance) -> None:
    """Raises ValueError naming the first field of `instance` whose value cannot be used."""
    for f, spec in settings_of(type(instance)):
        value = getattr(instance, f.name)
        if problem := spec.problem(value):
            raise ValueError(f"{f.name} {problem}, got {value!r}.")


@dataclass(frozen=True)
class Limits:
    """What one request may upload, decode and ask for (checked in `uploads` and `request`); environment only."""

    max_file_bytes: int = setting(100 * MEGABYTE, "STEADYDANCER_MAX_FILE_MB", "largest upload, in MB", kind=float,
                                  unit=MEGABYTE, require=_positive)
    max_image_pixels: int = setting(4096 * 4096, "STEADYDANCER_MAX_IMAGE_PIXELS", "largest reference image, in pixels",
                                    require=_positive)
    max_video_pixels: int = setting(3840 * 2160, "STEADYDANCER_MAX_VIDEO_PIXELS",
                                    "largest driving-video frame, in pixels", require=_positive)
    max_video_seconds: float = setting(60.0, "STEADYDANCER_MAX_VIDEO_SECONDS", "longest driving video, in seconds",
                                       require=_positive)
    max_aspect_ratio: float = setting(4.0, "STEADYDANCER_MAX_ASPECT", "most elongated upload (long side / short side)",
                                      require=_at_least(1))
    max_prompt_chars: int = setting(2000, "STEADYDANCER_MAX_PROMPT_CHARS", "longest prompt, in characters",
                                    require=_positive)
    max_steps: int = setting(80, "STEADYDANCER_MAX_STEPS", "most sampling steps a request may ask for",
                             require=_positive)
    max_keypoint_bytes: int = setting(20 * MEGABYTE, "STEADYDANCER_MAX_KEYPOINT_MB", "largest keypoint JSON, in MB",
                                      kind=float, unit=MEGABYTE, require=_positive)
    max_keypoint_frames: int = setting(10_000, "STEADYDANCER_MAX_KEYPOINT_FRAMES", "most frames in a keypoint JSON",
                                       require=_positive)

    def __post_init__(self):
        _check(self)


@dataclass(frozen=True)
class AppConfig:
    tiny: bool = setting(False, "STEADYDANCER_TINY", flag="--tiny",
                         help="tiny random weights, a stand-in pose detector: runs on a CPU; makes lossless noise")
    transformer: str = setting(TRANSFORMER.repo_id, "STEADYDANCER_TRANSFORMER", flag="--transformer",
                               help="Hub repo id or local directory of the SteadyDancer DiT")
    transformer_revision: str | None = setting(TRANSFORMER.revision, "STEADYDANCER_TRANSFORMER_REVISION",
                                               flag="--transformer-revision", kind=str, none_means="default branch",
                                               help="branch, tag or commit of the DiT's repo")
    base: str = setting(BASE.repo_id, "STEADYDANCER_BASE", flag="--base",
                        help="Hub repo id or local directory of the diffusers Wan2.1 I2V repo (VAE, encoders)")
    base_revision: str | None = setting(BASE.revision, "STEADYDANCER_BASE_REVISION", flag="--base-revision", kind=str,
                                        none_means="default branch", help="branch, tag or commit of the base repo")
    pose_models: str = setting(DWPOSE.repo_id, "STEADYDANCER_POSE_MODELS", flag="--pose-models",
                               help="Hub repo id or local directory holding the two DWPose ONNX files")
    # None: the library's pinned commit when the repo is its own (`DWPOSE.revision_for`).
    pose_revision: str | None = setting(None, "STEADYDANCER_POSE_REVISION", flag="--pose-revision", kind=str,
                                        none_means=f"`{DWPOSE.revision}` for {DWPOSE.repo_id}, else default branch",
                                        help="branch, tag or commit of the DWPose repo")
    cache_dir: str | None = setting(None, "STEADYDANCER_CACHE_DIR", flag="--cache-dir", kind=str,
                                    none_means="Hugging Face's", help="Hugging Face cache directory")
    offline: bool = setting(False, "HF_HUB_OFFLINE", flag="--offline",
                            help="no network: local directories and the Hugging Face cache only")
    dtype: str = setting("bfloat16", "STEADYDANCER_DTYPE", flag="--dtype", choices=DTYPES,
                         help="dtype of the DiT and the encoders")
    vae_dtype: str = setting("float32", "STEADYDANCER_VAE_DTYPE", flag="--vae-dtype", choices=DTYPES,
                             help="dtype of the VAE")
    device: str | None = setting(None, "STEADYDANCER_DEVICE", flag="--device", kind=str,
                                 none_means="cuda when available", help="torch device: cuda, cpu, ...")
    memory_plan: str = setting("auto", "STEADYDANCER_MEMORY_PLAN", flag="--memory-plan", choices=MEMORY_PLANS,
                               help="where the models live (`steadydancer.memory`); auto: from the GPU's memory")
    fast_lora: str = setting(FAST_LORA.repo_id, "STEADYDANCER_FAST_LORA", flag="--fast-lora",
                             help="Hub repo id, local file or directory of the 4-step distillation LoRA (fast preset)")
    fast_lora_revision: str | None = setting(FAST_LORA.revision, "STEADYDANCER_FAST_LORA_REVISION",
                                             flag="--fast-lora-revision", kind=str, none_means="default branch",
                                             help="branch, tag or commit of the LoRA's repo")
    fast_only: bool = setting(False, "STEADYDANCER_FAST_ONLY", flag="--fast-only",
                              help="serve only the fast preset, with the LoRA fused into the weights (faster)")
    max_frames: int = setting(481, "STEADYDANCER_MAX_FRAMES", flag="--max-frames", require=_frame_count,
                              help="longest video offered, in frames (4n+1; 481 is 30 s at 16 fps)")
    window_frames: int = setting(81, "STEADYDANCER_WINDOW_FRAMES", flag="--window-frames", require=_frame_count,
                                 help="frames per window of a longer video (4n+1); each window is its own GPU call")
    queue_size: int = setting(20, "STEADYDANCER_QUEUE_SIZE", flag="--queue-size", require=_at_least(1),
                              help='requests waiting at most; more are refused ("Queue is full")')
    concurrency: int = setting(1, "STEADYDANCER_CONCURRENCY", flag="--concurrency", require=_at_least(1),
                               help="generations running at once")
    max_gpu_seconds: float | None = setting(None, "STEADYDANCER_MAX_GPU_SECONDS", flag="--max-gpu-seconds", kind=float,
                                            require=_positive, none_means=f"none; {ZEROGPU_MAX_SECONDS} on ZeroGPU",
                                            help="refuse requests whose GPU time is estimated above this many seconds")
    gpu: str = setting("auto", "STEADYDANCER_GPU", flag="--gpu", choices=GPU_CHOICES,
                       help="hardware the GPU-time estimate assumes (`steadydancer.roofline.GPUS`); auto: this machine's")
    zerogpu_size: str | None = setting(None, "STEADYDANCER_ZEROGPU_SIZE", flag="--zerogpu-size", kind=str,
                                       choices=tuple(ZEROGPU_MEMORY_GB), none_means="what `spaces` chooses",
                                       help="ZeroGPU slice to request, with "
                                       + " or ".join(f"{gb} GB" for gb in ZEROGPU_MEMORY_GB.values())
                                       + " of GPU memory")
    tiny_max_area: int = setting(128 * 96, "STEADYDANCER_TINY_MAX_AREA", flag="--tiny-max-area",
                                 require=_at_least(16 * 16), help="pixel budget every preset is capped to in tiny mode")
    file_ttl: int = setting(3600, "STEADYDANCER_FILE_TTL", flag="--file-ttl", require=_at_least(60),
                            help="seconds uploads and outputs are kept on the server before they are deleted")
    cpu_noise: bool = setting(False, "STEADYDANCER_CPU_NOISE", flag="--cpu-noise",
                              help="draw the starting noise on the CPU: a seed gives the same video on any hardware "
                              "(off: on the GPU, as the released code)")
    zerogpu: bool = setting(False, "SPACES_ZERO_GPU", help="set by the platform: the app runs on ZeroGPU")
    ranks: int = setting(1, "WORLD_SIZE", require=_at_least(1), help="set by torchrun: processes (GPUs) of one job")
    local_rank: int = setting(0, "LOCAL_RANK", require=_at_least(0), help="set by torchrun: this process's GPU")
    faults: str = setting("", FAULT_ENV, none_means="none",
                          help="tiny mode's injected faults (tests): oom_once, oom_seed=N, oom_rank=R (`faults.py`)")
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self):
        _check(self)
        if self.memory_plan == "sharded" and self.ranks < 2:
            raise ConfigError("--memory-plan (STEADYDANCER_MEMORY_PLAN) sharded needs several GPUs: torchrun "
                              "--nproc-per-node N app.py")

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
        """The settings from environment variables (the only place the Space reads them); unset or empty variables
        keep their defaults. `ConfigError` names a variable whose value cannot be used."""
        env = os.environ if environ is None else environ
        limits = Limits(**_read_environment(Limits, env))
        return cls(**_read_environment(cls, env), limits=limits)


def settings_of(cls: type) -> Iterator[tuple[Field, Setting]]:
    """The fields of `cls` that are settings, in declaration order, with their `Setting`."""
    for f in fields(cls):
        if _SETTING in f.metadata:
            yield f, f.metadata[_SETTING]


def _read_environment(cls: type, env: Mapping[str, str]) -> dict[str, Any]:
    values = {}
    for f, spec in settings_of(cls):
        text = env.get(spec.variable)
        if text is None or text.strip() == "":
            continue
        value = spec.read(text)
        if problem := spec.problem(value):
            raise ConfigError(f"{spec.variable}={text.strip()!r} {problem}.")
        values[f.name] = value
    return values


def _shown_default(f: Field, spec: Setting) -> str:
    default = f.default if f.default is not MISSING else None
    if default is None or default == "":
        return spec.none_means
    if spec.kind is bool:
        return "on" if default else "off"
    if isinstance(default, str):
        return f"`{default}`"
    value = default / spec.unit
    return f"{int(value):,}" if value == int(value) else f"{value:g}"


def build_parser() -> argparse.ArgumentParser:
    """The flags of every setting that has one. A flag not given is absent from the parsed namespace, so the
    environment's value stays."""
    p = argparse.ArgumentParser(
        prog="app.py", argument_default=argparse.SUPPRESS,
        description="SteadyDancer Gradio app. Host and port: GRADIO_SERVER_NAME, GRADIO_SERVER_PORT. Every flag has "
        "an environment variable, named in its help; flags win over variables.",
        epilog="Set by environment variable only: " + ", ".join(
            spec.variable for cls in (AppConfig, Limits) for _, spec in settings_of(cls) if spec.flag is None)
        + ". python -m steadydancer_space.config --markdown prints every setting with its default.",
    )
    for f, spec in settings_of(AppConfig):
        if spec.flag is None:
            continue
        text = f"{spec.help} [{spec.variable}; default: {_shown_default(f, spec)}]"
        text = text.replace("`", "").replace("%", "%%")  # plain text; argparse formats help with %
        if spec.kind is bool:
            p.add_argument(spec.flag, dest=f.name, action=argparse.BooleanOptionalAction, help=text)
        else:
            p.add_argument(spec.flag, dest=f.name, type=spec.kind, choices=spec.choices, help=text)
    return p


def parse_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> AppConfig:
    """Environment variables, overridden by flags in `argv`; `ConfigError` names the flag or variable at fault."""
    config = AppConfig.from_env(environ)
    given = vars(build_parser().parse_args(argv))
    specs = {f.name: spec for f, spec in settings_of(AppConfig)}
    for name, value in given.items():
        if problem := specs[name].problem(value):
            raise ConfigError(f"{specs[name].flag} {value} {problem}.")
    return replace(config, **given)


def settings_table() -> str:
    """The README's table of every setting (markdown), derived from the declarations above."""
    rows = ["| Variable | Flag | Default | Meaning |", "| --- | --- | --- | --- |"]
    for cls in (AppConfig, Limits):
        for f, spec in settings_of(cls):
            meaning = spec.help + (f"; one of {', '.join(spec.choices)}" if spec.choices else "")
            flag = f"`{spec.flag}`" if spec.flag else ""
            rows.append(f"| `{spec.variable}` | {flag} | {_shown_default(f, spec)} | {meaning} |")
    switches = ", ".join(TRUE)
    return "\n".join(rows) + (f"\n\nA switch (default off) is on when its variable is {switches}; a flag `--x` has "
                              "its `--no-x`. Flags win over variables. Unset or empty variables keep the default.\n")


def apply_environment(config: AppConfig) -> None:
    """Process-wide settings that must be in place before the Hub client is used."""
    if config.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        if "huggingface_hub.constants" in sys.modules:  # it reads the variable at import: keep it in step
            sys.modules["huggingface_hub.constants"].HF_HUB_OFFLINE = True
    # Cached example outputs are per model, so tiny-mode noise is never served by the real app (and vice versa).
    os.environ.setdefault("GRADIO_EXAMPLES_CACHE", os.path.join(".gradio", "cached_examples", config.mode_key))
    # Gradio deletes its temp folder's files on exit: shared (its default), one instance would delete another's.
    if not os.environ.get("GRADIO_TEMP_DIR"):
        os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="steadydancer-gradio-")
        atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m steadydancer_space.config", description="Describe the settings.")
    parser.add_argument("--markdown", action="store_true", required=True, help="print the README's settings table")
    parser.parse_args(argv)
    sys.stdout.write(settings_table())


if __name__ == "__main__":
    main()
