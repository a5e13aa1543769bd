"""A memory plan for the GPU a deployment really gets: which weights stay on it, in which precision, whether the
guidance passes of a step run as one batch, and whether the VAE works in tiles.

Every number comes from the simulation of the whole job at its real size (`python -m bench.simulate`, under
FakeTensorMode): `bench/results/simulated_memory.json` holds the weights of each model part and the activation peak
of every phase per resolution bucket, preset, transformer precision, batching and tiling. A plan's peak in a phase is
the weights it keeps on the GPU during that phase plus that phase's activations; `plan_memory` picks the fastest
plan whose largest phase peak fits in `USABLE_FRACTION` of the card, and refuses, naming the card and the need, a job
none fits. `tests/test_simulate.py` re-runs the simulation and fails when the committed table disagrees.

    plan       transformer                         text encoder                 typical card
    resident   bf16 (or float8 compute, opt-in)    on the GPU                   A100 / H100 80, RTX Pro 6000 96, H200
    fp8        float8: torchao dynamic-activation  streamed block by block      RTX Pro 6000 half (48, ZeroGPU large),
               + weight compute on sm_89+, else    from CPU memory while it     L40S 48, A100 40
               fp8 storage (layerwise casting)     encodes
    offload    bf16, streamed block by block       streamed                     24 GB cards
    sharded    bf16, blocks sharded across the     on the GPU                   several GPUs of 40-48 GB (torchrun)
               ranks of a job (FSDP2)

Float8 compute (`torch._scaled_mm` through torchao) needs compute capability 8.9 or newer: Ada (sm_89), Hopper
(sm_90), Blackwell (sm_100, sm_120). On Ampere (A100, A6000) fp8 is only a storage format: weights are upcast to bf16
per layer, which saves memory and costs time, so a resident plan never uses it.

The text encoder runs once per new prompt (and not at all on a `steadydancer.prompt_cache.PromptCache` hit), so in
the smaller plans it lives in CPU memory and diffusers' group offloading streams it to the GPU block by block only
while it encodes. A streamed module counts its streamed part only: the modules outside its blocks plus two blocks
(the one running and the one prefetched on a side stream).

`apply_memory_plan` realises a plan with diffusers' and torchao's own features. Apply it after loading LoRAs
(`steadydancer.presets.PresetSwitch`) and before ahead-of-time compilation.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SIMULATED_MEMORY_PATH = Path(__file__).resolve().parents[1] / "bench" / "results" / "simulated_memory.json"
SIMULATED_MEMORY_FORMAT = "steadydancer-simulated-memory/1"
# Share of the card's memory usable for tensors (CUDA context, allocator fragmentation).
USABLE_FRACTION = 0.92
FLOAT8_COMPUTE_CAPABILITY = (8, 9)
PLAN_NAMES = ("resident", "sharded", "fp8", "offload")
TRANSFORMER_PRECISIONS = ("bf16", "float8_compute", "float8_storage")
PHASES = ("text_encode", "image_encode", "vae_encode", "denoise_step", "vae_decode")
# A plan's variants, fastest first: (batch the guidance passes, tile the VAE).
VARIANTS = ((True, False), (True, True), (False, False), (False, True))
# The job the Space serves at most when none is named: 81 frames at 576p in the quality preset.
DEFAULT_JOB = dict(height=576, width=1024, num_frames=81, preset="quality")
GB = 1e9
STREAMED_BLOCKS = 2


class MemoryPlanError(ValueError):
    """No plan fits the job on this GPU; the message names the card and what the job needs."""


@dataclass(frozen=True)
class MemoryPlan:
    """Where each model lives and in which precision.

    name: ``"resident"``, ``"sharded"``, ``"fp8"`` or ``"offload"``.
    transformer: ``"bf16"``, ``"float8_compute"`` (torchao float8 dynamic activation + weight) or
        ``"float8_storage"`` (fp8 weights upcast per layer: diffusers' layerwise casting).
    text_encoder_on_gpu: False: kept in CPU memory and streamed to the GPU only while it encodes.
    transformer_offload: the transformer's blocks streamed from CPU memory (diffusers group offloading).
    vae_tiling: tiled VAE encode/decode (lower peak).
    estimated_peak_gb: the simulated device peak of the job (its largest phase), GB.
    batch_guidance: run the guidance passes of a step as one batched transformer call.
    phase_peaks_gb: the simulated device peak of each phase.
    transformer_shards: the transformer's blocks sharded across this many ranks (`steadydancer.parallel`, FSDP2):
        each keeps its share plus the blocks gathered while they run.
    """

    name: str
    transformer: str
    text_encoder_on_gpu: bool
    transformer_offload: bool
    vae_tiling: bool
    estimated_peak_gb: float
    reason: str
    batch_guidance: bool = True
    phase_peaks_gb: dict = field(default_factory=dict, compare=False)
    transformer_shards: int = 1


def supports_float8_compute(compute_capability: tuple[int, int] | None) -> bool:
    """Float8 matmuls: Ada, Hopper and Blackwell (compute capability 8.9 and up); not Ampere, not a CPU."""
    return compute_capability is not None and tuple(compute_capability) >= FLOAT8_COMPUTE_CAPABILITY


def is_float8_linear(module: torch.nn.Module, fqn: str) -> bool:
    """The linears a float8 transformer keeps in one byte: the blocks' (~99 % of the weights and FLOPs). LoRA
    matrices (rank 64) stay in bf16: switching presets keeps working and the adapter keeps its precision."""
    return isinstance(module, torch.nn.Linear) and fqn.startswith("blocks.") and "lora_" not in fqn


# --------------------------------------------------------------------------------------------- weights
def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _streamed_bytes(module: torch.nn.Module, blocks: torch.nn.ModuleList) -> int:
    """Bytes on the GPU while a block-offloaded module runs: what is outside its blocks plus `STREAMED_BLOCKS`."""
    block_ids = {id(p) for p in blocks.parameters()}
    outside = _bytes(p for p in module.parameters() if id(p) not in block_ids)
    largest = max(_bytes(block.parameters()) for block in blocks)
    return outside + STREAMED_BLOCKS * largest


def weight_parts_gb(transformer, text_encoder, image_encoder, vae) -> dict[str, float]:
    """GB of each model part a plan can place, from the models themselves (real or fake tensors)."""
    float8 = sum(p.numel() for name, m in transformer.named_modules() if is_float8_linear(m, name)
                 for p in m.parameters(recurse=False) if p.ndim == 2)
    bf16 = _bytes(transformer.parameters())
    return dict(
        transformer_bf16=bf16 / GB,
        transformer_float8=(bf16 - float8 * (2 - 1)) / GB,  # those linears' weights at 1 byte instead of 2
        transformer_streamed=_streamed_bytes(transformer, transformer.blocks) / GB,
        text_encoder=_bytes(text_encoder.parameters()) / GB,
        text_encoder_streamed=_streamed_bytes(text_encoder, text_encoder.encoder.block) / GB,
        image_encoder=_bytes(image_encoder.parameters()) / GB,
        vae=_bytes(vae.parameters()) / GB,
    )


def device_weights_gb(weights: dict[str, float], plan: MemoryPlan, phase: str) -> float:
    """GB of weights `plan` keeps on the GPU during `phase` (streamed modules: the streamed part, while they run)."""
    if plan.transformer_offload:
        transformer = weights["transformer_streamed"] if phase == "denoise_step" else 0.0
    elif plan.transformer_shards > 1:  # the shards, and while a step runs, the blocks gathered in full
        transformer = weights["transformer_bf16"] / plan.transformer_shards
        transformer += weights["transformer_streamed"] if phase == "denoise_step" else 0.0
    else:
        transformer = weights["transformer_bf16" if plan.transformer == "bf16" else "transformer_float8"]
    if plan.text_encoder_on_gpu:
        text = weights["text_encoder"]
    else:
        text = weights["text_encoder_streamed"] if phase == "text_encode" else 0.0
    return transformer + text + weights["image_encoder"] + weights["vae"]


def phase_peaks_gb(weights: dict[str, float], activations: dict, plan: MemoryPlan) -> dict[str, float]:
    """The device peak of each phase: the plan's weights on the GPU plus the phase's simulated activations."""
    tiling = "tiled" if plan.vae_tiling else "untiled"
    batching = "batched" if plan.batch_guidance else "unbatched"
    act = dict(
        text_encode=activations["text_encode"],
        image_encode=activations["image_encode"],
        vae_encode=activations["vae_encode"][tiling],
        denoise_step=activations["denoise_step"][batching][plan.transformer],
        vae_decode=activations["vae_decode"][tiling],
    )
    return {phase: device_weights_gb(weights, plan, phase) + act[phase] for phase in PHASES}


# --------------------------------------------------------------------------------------------- the table
@functools.lru_cache(maxsize=4)
def _load_table(path: str) -> dict:
    return json.loads(Path(path).read_text())


def load_simulated_memory(path: str | Path | None = None) -> dict:
    """The committed table of simulated weights and activations (`python -m bench.simulate --table` writes it)."""
    table = _load_table(str(path or SIMULATED_MEMORY_PATH))
    if table.get("format") != SIMULATED_MEMORY_FORMAT:
        raise ValueError(f"{path or SIMULATED_MEMORY_PATH} is not a {SIMULATED_MEMORY_FORMAT} table")
    return table


def table_activations(table: dict, height: int, width: int, num_frames: int, preset: str) -> tuple[str, dict]:
    """(bucket, activations) of the smallest simulated resolution bucket holding `height` x `width` pixels.

    Jobs up to the table's frame count use its entry (activations grow with frames); longer ones run as windows of
    that many frames (the long-video mode)."""
    if preset not in next(iter(table["buckets"].values()))["presets"]:
        raise ValueError(f"preset must be one of {', '.join(next(iter(table['buckets'].values()))['presets'])}, "
                         f"got {preset!r}")
    pixels = height * width
    for bucket, entry in sorted(table["buckets"].items(), key=lambda item: item[1]["height"] * item[1]["width"]):
        if pixels <= entry["height"] * entry["width"]:
            return bucket, entry["presets"][preset]
    largest = max(table["buckets"].items(), key=lambda item: item[1]["height"] * item[1]["width"])
    raise MemoryPlanError(f"{height}x{width} is larger than the largest simulated size ({largest[0]}, "
                          f"{largest[1]['height']}x{largest[1]['width']}); no memory plan is known for it")


# --------------------------------------------------------------------------------------------- choosing
def _candidates(memory_gb: float, float8: bool, float8_for_speed: bool, force: str | None, shards: int):
    resident = "float8_compute" if float8_for_speed and float8 else "bf16"
    low = "float8_compute" if float8 else "float8_storage"
    plans = [("resident", resident, True, False, 1), ("sharded", "bf16", True, False, shards),
             ("fp8", low, False, False, 1), ("offload", "bf16", False, True, 1)]
    for name, transformer, text_on_gpu, offload, plan_shards in plans:
        if (force is None or name == force) and (name != "sharded" or shards > 1):
            for batched, tiled in VARIANTS:
                yield MemoryPlan(name, transformer, text_on_gpu, offload, tiled, 0.0, "", batched,
                                 transformer_shards=plan_shards)


def _describe(plan: MemoryPlan) -> str:
    parts = [f"{plan.name} plan ({plan.transformer.replace('_', ' ')} transformer"
             + (", text encoder streamed" if not plan.text_encoder_on_gpu else "")
             + (", transformer streamed" if plan.transformer_offload else "")
             + (f", blocks sharded across {plan.transformer_shards} GPUs" if plan.transformer_shards > 1 else "") + ")",
             "guidance passes batched" if plan.batch_guidance else "guidance passes one by one",
             "tiled VAE" if plan.vae_tiling else "untiled VAE"]
    return ", ".join(parts)


def plan_memory(
    memory_gb: float,
    compute_capability: tuple[int, int] | None = None,
    *,
    float8_for_speed: bool = False,
    height: int = DEFAULT_JOB["height"],
    width: int = DEFAULT_JOB["width"],
    num_frames: int = DEFAULT_JOB["num_frames"],
    preset: str = DEFAULT_JOB["preset"],
    force: str | None = None,
    table: dict | None = None,
    simulated: tuple[dict, dict] | None = None,
    shards: int = 1,
) -> MemoryPlan:
    """The fastest plan whose simulated peak fits in `memory_gb` of GPU memory for the job described.

    Args:
        memory_gb: the GPU's total memory in GB (1e9 bytes), e.g. 48 for ZeroGPU ``large``, 96 for ``xlarge``.
        compute_capability: (major, minor), e.g. (12, 0) for the RTX Pro 6000 Blackwell, (8, 0) for the A100.
        float8_for_speed: also use float8 compute when everything fits in bf16, where the GPU has it (faster
            matmuls, a small numeric change; ZeroGPU reports 1.3-1.8x with ahead-of-time compilation).
        height, width, num_frames, preset: the largest job the plan must hold (default: 81 frames at 576p,
            quality: the largest the Space serves).
        force: one of `PLAN_NAMES`: its fastest variant that fits (or its smallest, with the excess in the reason).
        table: the simulated table (default: the committed `SIMULATED_MEMORY_PATH`).
        simulated: (weights, activations) of this very job from `bench.simulate`, instead of the table's bucket.
        shards: GPUs of one job (torchrun) the transformer can be sharded across when it does not fit one (the
            ``"sharded"`` plan, after ``"resident"``); 1: a single GPU.

    Raises:
        MemoryPlanError: no plan fits; the message names the card and the smallest plan's need.
    """
    if not memory_gb > 0:
        raise ValueError(f"memory_gb must be positive, got {memory_gb}")
    if force is not None and force not in PLAN_NAMES:
        raise ValueError(f"force must be one of {', '.join(PLAN_NAMES)}, got {force!r}")
    if simulated is not None:
        weights, activations = simulated
        where = f"{num_frames} frames at {height}x{width}"
    else:
        table = table if table is not None else load_simulated_memory()
        weights = table["weights_gb"]
        bucket, activations = table_activations(table, height, width, num_frames, preset)
        where = f"{min(num_frames, table['frames'])}-frame {bucket} job"
    usable = memory_gb * USABLE_FRACTION
    float8 = supports_float8_compute(compute_capability)
    card = f"{memory_gb:g} GB GPU" + (f" (compute capability {compute_capability[0]}.{compute_capability[1]})"
                                     if compute_capability else "")
    fitted = []
    if force == "sharded" and shards < 2:
        raise ValueError("the sharded plan needs several GPUs (shards >= 2: torchrun --nproc-per-node N app.py)")
    for candidate in _candidates(memory_gb, float8, float8_for_speed, force, shards):
        peaks = phase_peaks_gb(weights, activations, candidate)
        peak = max(peaks.values())
        fitted.append((candidate, peaks, peak))
        if peak <= usable:
            reason = (f"{_describe(candidate)}: simulated peak {peak:.1f} GB ({max(peaks, key=peaks.get)}) of the "
                      f"{usable:.1f} GB usable on a {card}, {preset} preset, {where}")
            if float8_for_speed and not float8 and candidate.name == "resident":
                reason += "; no float8 compute on this GPU (fp8 storage would only add upcasts)"
            return _with(candidate, peak, peaks, reason)
    smallest, peaks, peak = min(fitted, key=lambda item: item[2])
    need = (f"the smallest, {_describe(smallest)}, needs {peak:.1f} GB at its peak ({max(peaks, key=peaks.get)}), "
            f"{peak / USABLE_FRACTION:.0f} GB of card")
    if force is not None:
        return _with(smallest, peak, peaks, f"forced {force}: exceeds the {usable:.1f} GB usable on a {card}: {need}")
    raise MemoryPlanError(f"No memory plan fits the {preset} preset's {where} on a {card}: {need} "
                          f"({USABLE_FRACTION:.0%} of the card is usable). Use a smaller size, the fast preset or a "
                          "larger GPU.")


def _with(plan: MemoryPlan, peak: float, peaks: dict, reason: str) -> MemoryPlan:
    from dataclasses import replace

    return replace(plan, estimated_peak_gb=peak, reason=reason, phase_peaks_gb=dict(peaks))


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
    text_encoder: str = "as loaded"  # or "int8" (torchao weight-only)
    notes: list[str] = field(default_factory=list)


def quantize_float8(transformer: torch.nn.Module) -> None:
    """torchao float8 dynamic activation + weight quantisation (row-wise scales) of the transformer blocks' linears,
    in place. Needs torchao and a CUDA GPU with compute capability 8.9+; raises otherwise."""
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_
    except ImportError as error:
        raise RuntimeError("float8 compute needs torchao (pip install torchao)") from error
    quantize_(transformer, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), filter_fn=is_float8_linear)


def quantize_int8_weights(module: torch.nn.Module) -> None:
    """torchao int8 weight-only quantisation of every linear of `module`, in place (the text encoder kept on the
    GPU: half its memory, bf16 compute)."""
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError as error:
        raise RuntimeError("int8 weights need torchao (pip install torchao)") from error
    quantize_(module, Int8WeightOnlyConfig())


def float8_compute_problem(device: str | torch.device, compute_capability: tuple[int, int] | None = None) -> str | None:
    """Why torchao float8 compute cannot run on `device` (None: it can).

    compute_capability: the GPU's, when known without asking CUDA (ZeroGPU's main process sees no GPU, but its size
    names the card); None: read from the device.
    """
    import importlib.util

    device = torch.device(device)
    if importlib.util.find_spec("torchao") is None:
        return "torchao is not installed"
    if device.type != "cuda":
        return f"needs a CUDA device, got {device.type}"
    if compute_capability is None and not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    capability = compute_capability or torch.cuda.get_device_capability(device)
    if not supports_float8_compute(capability):
        return f"compute capability {capability[0]}.{capability[1]} < 8.9"
    return None


def apply_memory_plan(
    pipe, plan: MemoryPlan, device: str | torch.device | None = None, *, use_stream: bool | None = None,
    compute_capability: tuple[int, int] | None = None, int8_text_encoder: bool = False,
) -> AppliedMemoryPlan:
    """Places and converts the models of `pipe` as `plan` says; returns what was done.

    Float8 compute falls back to fp8 storage (with a note) where torchao or a float8-capable GPU is missing.
    use_stream: stream offloaded weights on a side CUDA stream (default: on a CUDA device). Streams are created
    here, so pass False where no real GPU exists yet (ZeroGPU's main process).
    compute_capability: the GPU's, where CUDA cannot be asked yet (ZeroGPU's main process).
    int8_text_encoder: int8 weight-only text encoder where the plan keeps it on the GPU (falls back to its own
        precision, with a note, without torchao).
    """
    from .acceleration import _default_device, apply_fast_paths

    device = torch.device(device) if device is not None else _default_device()
    applied = AppliedMemoryPlan(plan=plan, transformer=plan.transformer)
    transformer = pipe.transformer
    on_gpu = device.type == "cuda" if use_stream is None else use_stream

    if plan.transformer_offload:
        apply_fast_paths(pipe, group_offload=True, vae_tiling=plan.vae_tiling, device=device)
        return applied
    if plan.transformer_shards > 1:  # stays in CPU memory: `steadydancer.parallel.shard_transformer` places its shards
        applied.notes.append(f"transformer left on the CPU until it is sharded across {plan.transformer_shards} GPUs")

    # 1. Precision. fp8 storage is set before moving, so the bf16 weights never occupy the GPU.
    if plan.transformer == "float8_compute" and (problem := float8_compute_problem(device, compute_capability)):
        applied.transformer = "float8_storage"
        applied.notes.append(f"float8 compute unavailable ({problem}); using fp8 storage")
        logger.warning(applied.notes[-1])
    if applied.transformer == "float8_storage":
        transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=transformer.dtype)
    if plan.transformer_shards == 1:
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
            if int8_text_encoder:
                _quantize_text_encoder(text_encoder, applied)
        else:
            from diffusers.hooks import apply_group_offloading

            apply_group_offloading(
                text_encoder, onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level",
                num_blocks_per_group=1, use_stream=on_gpu, record_stream=on_gpu,
            )
    if plan.vae_tiling and getattr(pipe, "vae", None) is not None:
        pipe.vae.enable_tiling()
    return applied


def _quantize_text_encoder(text_encoder: torch.nn.Module, applied: AppliedMemoryPlan) -> None:
    try:
        quantize_int8_weights(text_encoder)
        applied.text_encoder = "int8"
    except Exception as error:  # an optimisation: the encoder keeps its precision
        applied.notes.append(f"int8 text encoder unavailable ({type(error).__name__}: {error}); kept as loaded")
        logger.warning(applied.notes[-1])
