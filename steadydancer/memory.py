"""A memory plan for the GPU a deployment really gets: which weights stay on it, in which precision.

The released model's weights (GB = 1e9 bytes): transformer 32.8 (bf16), UMT5-XXL text encoder ~11.4, CLIP vision
1.3, VAE 0.5 (fp32; 0.25 in bf16): about 46 GB before any activation, so a 48 GB card (ZeroGPU's default ``large``
size: half an RTX Pro 6000 Blackwell) cannot hold it in bf16. `plan_memory` picks the fastest plan whose estimated
peak fits, from the GPU's memory and compute capability:

    plan       transformer                         text encoder         fits from    e.g.
    resident   bf16 (or float8 compute, opt-in)    on the GPU           ~65 GB       A100 / H100 80, H200 141,
                                                                                     RTX Pro 6000 96 (ZeroGPU xlarge)
    fp8        float8: torchao dynamic-activation  streamed per block   ~36 GB       RTX Pro 6000 half (48, ZeroGPU
               + weight compute on sm_89+, else    from CPU memory                   large), L40S 48, A100 40
               fp8 storage (layerwise casting)     while encoding
    offload    bf16, streamed block by block       streamed             below        24 GB cards

Float8 compute (`torch._scaled_mm` through torchao) needs compute capability 8.9 or newer: Ada (sm_89), Hopper
(sm_90), Blackwell (sm_100, sm_120). On Ampere (A100, A6000) fp8 is only a storage format: weights are upcast to bf16
per layer, which saves memory and costs time, so a resident plan never uses it.

The text encoder runs once per new prompt (and not at all on a `steadydancer.prompt_cache.PromptCache` hit), so in
the smaller plans it lives in CPU memory and diffusers' group offloading streams it to the GPU block by block only
while it encodes; its 11 GB are free for the denoising loop.

`apply_memory_plan` realises a plan with diffusers' and torchao's own features. Apply it after loading LoRAs
(`steadydancer.presets.PresetSwitch`) and before ahead-of-time compilation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

logger = logging.getLogger(__name__)

# Weight sizes, GB (1e9 bytes).
TRANSFORMER_GB = 32.8
FLOAT8_TRANSFORMER_GB = 17.0  # block linears in one byte; embeddings, norms, modulation, pose branch stay bf16
TEXT_ENCODER_GB = 11.4
IMAGE_ENCODER_GB = 1.3
VAE_GB = 0.5
# Working memory of the largest job (81 frames at 1024 x 576: 53k tokens; a batched 3-pass step holds three FFN
# intermediates of 53k x 13824; the VAE decode of 81 frames): an estimate to be checked on the GPU.
WORKING_GB = 14.0
# Share of the card's memory usable for tensors (CUDA context, allocator fragmentation).
USABLE_FRACTION = 0.92
FLOAT8_COMPUTE_CAPABILITY = (8, 9)


@dataclass(frozen=True)
class MemoryPlan:
    """Where each model lives and in which precision.

    name: ``"resident"``, ``"fp8"`` or ``"offload"``.
    transformer: ``"bf16"``, ``"float8_compute"`` (torchao float8 dynamic activation + weight) or
        ``"float8_storage"`` (fp8 weights upcast per layer: diffusers' layerwise casting).
    text_encoder_on_gpu: False: kept in CPU memory and streamed to the GPU only while it encodes.
    transformer_offload: the transformer's blocks streamed from CPU memory (diffusers group offloading).
    vae_tiling: tiled VAE encode/decode (lower peak).
    estimated_peak_gb: weights on the GPU plus `WORKING_GB`.
    """

    name: str
    transformer: str
    text_encoder_on_gpu: bool
    transformer_offload: bool
    vae_tiling: bool
    estimated_peak_gb: float
    reason: str


def supports_float8_compute(compute_capability: tuple[int, int] | None) -> bool:
    """Float8 matmuls: Ada, Hopper and Blackwell (compute capability 8.9 and up); not Ampere, not a CPU."""
    return compute_capability is not None and tuple(compute_capability) >= FLOAT8_COMPUTE_CAPABILITY


def plan_memory(
    memory_gb: float, compute_capability: tuple[int, int] | None = None, *, float8_for_speed: bool = False
) -> MemoryPlan:
    """The fastest plan whose estimated peak fits in `memory_gb` of GPU memory.

    Args:
        memory_gb: the GPU's total memory in GB (1e9 bytes), e.g. 48 for ZeroGPU ``large``, 96 for ``xlarge``.
        compute_capability: (major, minor), e.g. (12, 0) for the RTX Pro 6000 Blackwell, (8, 0) for the A100.
        float8_for_speed: also use float8 compute when everything fits in bf16, where the GPU has it (faster
            matmuls, a small numeric change; ZeroGPU reports 1.3-1.8x with ahead-of-time compilation).
    """
    usable = memory_gb * USABLE_FRACTION
    float8 = supports_float8_compute(compute_capability)
    others = IMAGE_ENCODER_GB + VAE_GB

    resident_bf16 = TRANSFORMER_GB + TEXT_ENCODER_GB + others + WORKING_GB
    if resident_bf16 <= usable:
        if float8_for_speed and float8:
            peak = FLOAT8_TRANSFORMER_GB + TEXT_ENCODER_GB + others + WORKING_GB
            return MemoryPlan("resident", "float8_compute", True, False, False, peak,
                              f"{memory_gb:g} GB holds every model; float8 compute asked for and supported")
        reason = f"{memory_gb:g} GB holds every model in bf16"
        if float8_for_speed:
            reason += "; no float8 compute on this GPU (fp8 storage would only add upcasts)"
        return MemoryPlan("resident", "bf16", True, False, False, resident_bf16, reason)

    fp8 = FLOAT8_TRANSFORMER_GB + others + WORKING_GB
    if fp8 <= usable:
        kind = "float8_compute" if float8 else "float8_storage"
        return MemoryPlan("fp8", kind, False, False, True, fp8,
                          f"{memory_gb:g} GB < {resident_bf16 / USABLE_FRACTION:.0f} GB for bf16: fp8 transformer "
                          f"({'float8 compute' if float8 else 'fp8 storage, no float8 compute on this GPU'}), "
                          "text encoder streamed from CPU memory")
    offload = others + WORKING_GB
    return MemoryPlan("offload", "bf16", False, True, True, offload,
                      f"{memory_gb:g} GB < {fp8 / USABLE_FRACTION:.0f} GB for the fp8 plan: transformer and text "
                      "encoder streamed block by block from CPU memory")


def gpu_memory_and_capability(device: str | torch.device | None = None) -> tuple[float, tuple[int, int]]:
    """(total memory in GB, compute capability) of a CUDA device. On ZeroGPU, call it inside a `@spaces.GPU`
    function: the main process sees no GPU."""
    device = torch.device(device if device is not None else "cuda")
    properties = torch.cuda.get_device_properties(device)
    return properties.total_memory / 1e9, (properties.major, properties.minor)


def plan_for_device(device: str | torch.device | None = None, *, float8_for_speed: bool = False) -> MemoryPlan:
    """`plan_memory` for the CUDA device at hand."""
    memory_gb, capability = gpu_memory_and_capability(device)
    return plan_memory(memory_gb, capability, float8_for_speed=float8_for_speed)


# --------------------------------------------------------------------------------------------- applying a plan
@dataclass
class AppliedMemoryPlan:
    """What `apply_memory_plan` did: the plan, the transformer precision really used, and notes."""

    plan: MemoryPlan
    transformer: str
    notes: list[str] = field(default_factory=list)


def _float8_linear_filter(module: torch.nn.Module, fqn: str) -> bool:
    # The blocks hold ~99 % of the weights and FLOPs. LoRA matrices (rank 64) stay in bf16: switching presets keeps
    # working and the adapter keeps its precision.
    return isinstance(module, torch.nn.Linear) and fqn.startswith("blocks.") and "lora_" not in fqn


def quantize_float8(transformer: torch.nn.Module) -> None:
    """torchao float8 dynamic activation + weight quantisation (row-wise scales) of the transformer blocks' linears,
    in place. Needs torchao and a CUDA GPU with compute capability 8.9+; raises otherwise."""
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_
    except ImportError as error:
        raise RuntimeError("float8 compute needs torchao (pip install torchao)") from error
    quantize_(transformer, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), filter_fn=_float8_linear_filter)


def float8_compute_problem(device: str | torch.device) -> str | None:
    """Why torchao float8 compute cannot run on `device` (None: it can)."""
    import importlib.util

    device = torch.device(device)
    if importlib.util.find_spec("torchao") is None:
        return "torchao is not installed"
    if device.type != "cuda":
        return f"needs a CUDA device, got {device.type}"
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    capability = torch.cuda.get_device_capability(device)
    if not supports_float8_compute(capability):
        return f"compute capability {capability[0]}.{capability[1]} < 8.9"
    return None


def apply_memory_plan(
    pipe, plan: MemoryPlan, device: str | torch.device | None = None, *, use_stream: bool | None = None
) -> AppliedMemoryPlan:
    """Places and converts the models of `pipe` as `plan` says; returns what was done.

    Float8 compute falls back to fp8 storage (with a note) where torchao or a float8-capable GPU is missing.
    use_stream: stream offloaded weights on a side CUDA stream (default: on a CUDA device). Streams are created
    here, so pass False where no real GPU exists yet (ZeroGPU's main process).
    """
    from .acceleration import _default_device, apply_fast_paths

    device = torch.device(device) if device is not None else _default_device()
    applied = AppliedMemoryPlan(plan=plan, transformer=plan.transformer)
    transformer = pipe.transformer
    on_gpu = device.type == "cuda" if use_stream is None else use_stream

    if plan.transformer_offload:
        apply_fast_paths(pipe, group_offload=True, vae_tiling=plan.vae_tiling, device=device)
        return applied

    # 1. Precision. fp8 storage is set before moving, so the bf16 weights never occupy the GPU.
    if plan.transformer == "float8_compute" and (problem := float8_compute_problem(device)):
        applied.transformer = "float8_storage"
        applied.notes.append(f"float8 compute unavailable ({problem}); using fp8 storage")
        logger.warning(applied.notes[-1])
    if applied.transformer == "float8_storage":
        transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=transformer.dtype)
    transformer.to(device)
    if applied.transformer == "float8_compute":
        quantize_float8(transformer)  # on the device: torchao checks the GPU it will run on

    # 2. The other models.
    for name in ("image_encoder", "vae"):
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).to(device)
    text_encoder = getattr(pipe, "text_encoder", None)
    if text_encoder is not None:
        if plan.text_encoder_on_gpu:
            text_encoder.to(device)
        else:
            from diffusers.hooks import apply_group_offloading

            apply_group_offloading(
                text_encoder, onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level",
                num_blocks_per_group=1, use_stream=on_gpu, record_stream=on_gpu,
            )
    if plan.vae_tiling and getattr(pipe, "vae", None) is not None:
        pipe.vae.enable_tiling()
    return applied
