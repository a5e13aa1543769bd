"""The models of one app process, loaded once at import time (as ZeroGPU expects) and shared by every request.

Real mode: the SteadyDancer pipeline from the Hub (or local directories) and the DWPose ONNX detector.
Tiny mode: tiny random components of the same classes, built into a temporary directory and loaded through the same
code path, and `SyntheticPoseDetector`; it runs on any CPU and its videos are noise.
"""

import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from steadydancer.defaults import FAST_LORA_WEIGHT

from .config import ZEROGPU_COMPUTE_CAPABILITY, ZEROGPU_MEMORY_GB, AppConfig
from .zerogpu import gpu_size, serves_ahead_of_time

TINY_NOTICE = "TINY MODE: random weights and fake poses. The video is noise, not an animation."

RUN_TINY_HINT = (
    "To try the app without the weights, on any machine (CPU is fine), run it in tiny mode:\n"
    "    python app.py --tiny          (or STEADYDANCER_TINY=1 python app.py)\n"
    "Tiny mode loads small random components of the same classes and a stand-in pose detector; every video it makes "
    "is noise."
)


class ModelLoadError(RuntimeError):
    """The real model or the pose detector could not be loaded; the message says what to do."""


@dataclass
class Runtime:
    config: AppConfig
    pipe: object
    detector: object  # None on torchrun's other ranks: rank 0 detects the poses
    device: str
    load_seconds: float
    presets: object  # `steadydancer.presets.PresetSwitch`: fast (LoRA on) or quality, per request
    prompts: object  # `steadydancer.prompt_cache.PromptCache`
    memory_plan: object  # `steadydancer.memory.MemoryPlan` (None in tiny mode: nothing is on a GPU)
    applied_plan: object = None  # `steadydancer.memory.AppliedMemoryPlan`: the precisions really used
    tiny_dir: tempfile.TemporaryDirectory | None = None
    # One generation at a time per process: the scheduler, the LoRA state and the interrupt flag are the pipeline's.
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def tiny(self) -> bool:
        return self.config.tiny

    @property
    def shards_transformer(self) -> bool:
        """Whether the ranks of a torchrun job shard the transformer: its memory plan says so (tiny mode: asked for
        with `--memory-plan sharded`)."""
        if self.memory_plan is None:
            return self.config.memory_plan == "sharded" and self.config.ranks > 1
        return self.memory_plan.transformer_shards > 1


def _torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def _device(config: AppConfig) -> str:
    if config.device:
        return config.device
    if config.zerogpu:
        return "cuda"  # `spaces` makes CUDA available at import and moves the weights when a task starts
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{config.local_rank}" if config.ranks > 1 else "cuda"  # torchrun: one GPU per process


def _pose_detector(config: AppConfig, device: str):
    from steadydancer.pose import DETECTOR_FILE, POSE_FILE, DWPoseDetector

    local = os.path.isdir(config.pose_models)
    det = os.path.join(config.pose_models, DETECTOR_FILE) if local else None
    pose = os.path.join(config.pose_models, POSE_FILE) if local else None
    kwargs = {} if local else dict(repo_id=config.pose_models, revision=config.pose_revision)
    # ONNX Runtime on the CPU unless its GPU build is installed; on ZeroGPU CUDA only exists inside GPU tasks.
    return DWPoseDetector(det, pose, cache_dir=config.cache_dir, local_files_only=config.offline,
                          device="cpu" if config.zerogpu else None, **kwargs)


def _preset_switch(config: AppConfig, pipe, lora: str):
    """Loads the distillation LoRA once; requests then switch between the presets without reloading weights."""
    from steadydancer.presets import PresetSwitch

    local = os.path.exists(lora)
    hub = {} if local else dict(revision=config.fast_lora_revision, cache_dir=config.cache_dir,
                                local_files_only=config.offline)
    return PresetSwitch(pipe, lora=lora, weight_name=None if local else FAST_LORA_WEIGHT, fuse=config.fast_only,
                        **hub)


def _memory_plan(config: AppConfig, device: str):
    """The plan for this GPU (or the one asked for): ZeroGPU's size, else the CUDA device's memory."""
    from steadydancer.memory import gpu_memory_and_capability, plan_memory

    if config.zerogpu:
        memory, capability = ZEROGPU_MEMORY_GB[gpu_size(config)], ZEROGPU_COMPUTE_CAPABILITY
    elif device.startswith("cuda"):
        memory, capability = gpu_memory_and_capability(device)
    else:
        memory, capability = 1e6, None  # a CPU: everything "fits"
    plan = plan_memory(memory, capability, float8_for_speed=serves_ahead_of_time(config), shards=config.ranks,
                       force=None if config.memory_plan == "auto" else config.memory_plan)
    print(f"SteadyDancer app: memory plan {plan.name}: {plan.reason}.", flush=True)
    return plan


def load_runtime(config: AppConfig) -> Runtime:
    """Loads everything the app needs; raises `ModelLoadError` with instructions instead of a traceback."""
    start = time.perf_counter()
    if config.tiny:
        return _load_tiny(config, start)

    from steadydancer.assembly import load_pipeline
    from steadydancer.prompt_cache import PromptCache

    device = _device(config)
    if device == "cpu":
        print("warning: no GPU found; the 14B model on a CPU takes hours per video.", file=sys.stderr)
    try:
        # On the CPU first: the memory plan decides what goes to the GPU, in which precision.
        pipe = load_pipeline(
            config.transformer,
            config.base,
            transformer_revision=config.transformer_revision,
            base_revision=config.base_revision,
            torch_dtype=_torch_dtype(config.dtype),
            vae_dtype=_torch_dtype(config.vae_dtype),
            cache_dir=config.cache_dir,
        )
        presets = _preset_switch(config, pipe, config.fast_lora)
        plan, applied = _memory_plan(config, device), None
        if device != "cpu":
            from steadydancer.memory import apply_memory_plan

            # On ZeroGPU the main process has no real GPU yet: no CUDA streams for offloading, and the card's
            # compute capability comes from its size.
            applied = apply_memory_plan(pipe, plan, device, use_stream=False if config.zerogpu else None,
                                        compute_capability=ZEROGPU_COMPUTE_CAPABILITY if config.zerogpu else None,
                                        int8_text_encoder=serves_ahead_of_time(config))
            print(f"SteadyDancer app: transformer {applied.transformer}, text encoder {applied.text_encoder}"
                  + "".join(f"; {note}" for note in applied.notes) + ".", flush=True)
        else:
            pipe.to(device)
    except Exception as error:  # OSError (Hub, files), ValueError (layouts), OOM, ...: one actionable message
        raise ModelLoadError(
            f"Could not load the SteadyDancer model (transformer {config.transformer!r}, base {config.base!r}):\n"
            f"    {type(error).__name__}: {error}\n\n"
            "The full model needs tens of GB of weights (downloaded from the Hugging Face Hub on first start, or "
            "given as local directories with --transformer/--base) and a GPU with about 48 GB of memory or more "
            "(or --memory-plan offload).\n\n" + RUN_TINY_HINT
        ) from error

    try:  # under torchrun only rank 0 detects poses: the others keep no ONNX sessions
        detector = _pose_detector(config, device) if config.local_rank == 0 else None
    except Exception as error:  # PoseError (download, model files), OSError, ImportError (onnxruntime)
        raise ModelLoadError(
            f"Could not load the DWPose detector from {config.pose_models!r}:\n    {type(error).__name__}: {error}\n\n"
            "Pass --pose-models with a directory holding yolox_l.onnx and dw-ll_ucoco_384.onnx, or allow the "
            "download from the Hub.\n\n" + RUN_TINY_HINT
        ) from error
    return Runtime(config, pipe, detector, device, time.perf_counter() - start, presets, PromptCache(pipe), plan,
                   applied)


def _load_tiny(config: AppConfig, start: float) -> Runtime:
    import torch

    from steadydancer.assembly import load_pipeline
    from steadydancer.pose import SyntheticPoseDetector
    from steadydancer.prompt_cache import PromptCache
    from steadydancer.tiny import build_tiny_checkpoints, build_tiny_lora

    from .poses import StandInPeopleDetector

    tiny_dir = tempfile.TemporaryDirectory(prefix="steadydancer-tiny-")
    transformer_dir, base_dir = build_tiny_checkpoints(tiny_dir.name)
    # Same loader as the real model, from the Hub layouts the tiny builder wrote: tiny mode tests the loading path.
    pipe = load_pipeline(transformer_dir, base_dir, torch_dtype=torch.float32, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    # A random LoRA of the distillation LoRA's layout stands in for it, so the presets switch as in real mode.
    lora = build_tiny_lora(os.path.join(tiny_dir.name, "lora", "tiny_distill_lora.safetensors"), pipe.transformer)
    presets = _preset_switch(config, pipe, str(lora))
    # Fake skeletons, but only where the image shows a figure: the no-person and several-people paths work in tiny mode.
    detector = StandInPeopleDetector(SyntheticPoseDetector(animate=True))
    return Runtime(config, pipe, detector, "cpu", time.perf_counter() - start, presets, PromptCache(pipe), None,
                   tiny_dir=tiny_dir)
