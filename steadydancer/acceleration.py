"""Speed and memory switches for `SteadyDancerPipeline`, each built on a diffusers feature and each optional.

`apply_fast_paths` turns them on:

- ``attention_backend``: diffusers' attention dispatcher (`ModelMixin.set_attention_backend`) for the 40 x 2 Wan
  attentions (self-attention over ~53k tokens dominates a pass). ``"auto"`` picks `best_attention_backend()`, which
  only returns a backend that is installed *and* ran a probe on the device.
- ``compile_blocks``: regional compilation (`ModelMixin.compile_repeated_blocks`, `_repeated_blocks` =
  ``WanTransformerBlock``): one compiled graph reused by all 40 blocks, so compiling costs seconds, not minutes.
- ``vae_tiling``: `AutoencoderKLWan.enable_tiling` (spatial tiles with blended seams; lowers the VAE's peak memory,
  an approximation of the untiled decode).
- ``group_offload``: diffusers group offloading (block level, CUDA streams when on a GPU) of the transformer and the
  text encoder; weights live on the CPU and each block is uploaded just before it runs.
- ``fp8_weights``: layerwise casting (`ModelMixin.enable_layerwise_casting`): transformer weights stored in
  float8_e4m3fn and upcast per layer to the compute dtype (halves weight memory; small numeric change). The model's
  `_skip_layerwise_casting_patterns` keep the patch embeddings, norms, condition embedder and pose modules exact.

What is *not* here, on purpose: the released pose alignment unit (FAAU) attends across the latent *frames* of each
pixel (sequence-first `nn.MultiheadAttention`), so its attention is tiny (21 x 21 per pixel at 81 frames) and
`FrameAlignmentUnit` already runs it through fused SDPA; there is no large unfused attention to replace.

Order: load LoRAs (`steadydancer.lora`) before calling `apply_fast_paths`; compilation, fp8 casting and offloading
wrap the modules that exist when they are applied.

Multi-GPU: the transformer carries diffusers' context-parallel plan (`SteadyDancerTransformer3DModel._cp_plan`), so
``pipe.transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world_size))`` shards its sequence
across the ranks of an initialised `torch.distributed` group. Every rank runs the whole pipeline on the same inputs
and seed. The sequence, (F' + 2) h' w' tokens (52,992 at 81 x 576 x 1024), must divide by the degree, and Ulysses
needs the 40 heads to divide by it too; ring attention needs a backend that returns the log-sum-exp (flash, cuDNN).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from typing import Any

import torch

logger = logging.getLogger(__name__)

# Lossless backends, fastest first. Hub backends download a prebuilt kernel (`pip install kernels`) on first use.
ATTENTION_BACKEND_PREFERENCE: tuple[str, ...] = (
    "_flash_3",  # FlashAttention 3 built from source (Hopper)
    "_flash_3_hub",  # FlashAttention 3 from the Hub `kernels` package (Hopper)
    "flash",  # flash-attn 2 package
    "flash_hub",  # FlashAttention 2 from the Hub `kernels` package
    "_native_cudnn",  # PyTorch SDPA restricted to cuDNN attention
    "_native_flash",  # PyTorch SDPA restricted to its flash kernel
    "native",  # PyTorch SDPA, whatever kernel it picks
)
# Quantised attention (INT8 Q/K): faster on Hopper but not bit-faithful; only chosen with allow_lossy=True.
LOSSY_ATTENTION_BACKENDS: tuple[str, ...] = ("sage", "sage_hub")
_HUB_BACKENDS = {"_flash_3_hub", "flash_hub", "sage_hub", "flash_4_hub", "sage_blackwell_hub", "aiter_fa2_hub"}
_HOPPER_ONLY = {"_flash_3", "_flash_3_hub"}


# --------------------------------------------------------------------------------------------- attention backend
def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _offline() -> bool:
    from huggingface_hub import constants  # huggingface_hub's own reading of HF_HUB_OFFLINE

    return bool(constants.HF_HUB_OFFLINE)


def _backend_installed(name: str, device: torch.device) -> bool:
    """Cheap checks (packages, GPU generation) before a backend is probed."""
    if name in _HOPPER_ONLY and (device.type != "cuda" or torch.cuda.get_device_capability(device)[0] != 9):
        return False
    if name in _HUB_BACKENDS:
        return device.type == "cuda" and _module_available("kernels") and not _offline()
    if name in {"flash"}:
        return device.type == "cuda" and _module_available("flash_attn")
    if name == "_flash_3":
        return _module_available("flash_attn_interface")
    if name in {"sage"}:
        return device.type == "cuda" and _module_available("sageattention")
    if name == "_native_cudnn":
        return device.type == "cuda" and torch.backends.cudnn.is_available()
    if name == "_native_flash":
        return device.type in {"cuda", "cpu"}
    return name == "native"


def attention_backend_works(name: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> bool:
    """Runs diffusers' dispatcher once with `name` on small tensors of the given device and dtype.

    Catches what a name check cannot: missing kernels for this GPU or dtype, a failed Hub download, a PyTorch build
    without the requested SDPA kernel (e.g. ``_native_cudnn`` on a CPU).
    """
    from diffusers.models.attention_dispatch import attention_backend, dispatch_attention_fn

    device = torch.device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    try:
        q, k, v = (torch.randn(1, 64, 2, 128, device=device, dtype=dtype) for _ in range(3))  # (B, S, heads, dim)
        with attention_backend(name):
            out = dispatch_attention_fn(q, k, v)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        expected = torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2).float() for t in (q, k, v)))
        return bool(torch.allclose(out.float(), expected.transpose(1, 2), atol=5e-2, rtol=5e-2))
    except Exception as error:  # any failure means "not usable here"
        logger.info("Attention backend %r is not usable on %s/%s: %s", name, device, dtype, error)
        return False


def attention_backend_candidates(device: str | torch.device | None = None, *, allow_lossy: bool = False) -> list[str]:
    """Backends worth probing on `device`, best first (installed packages and GPU generation only; no probing)."""
    device = torch.device(device) if device is not None else _default_device()
    order = (LOSSY_ATTENTION_BACKENDS if allow_lossy else ()) + ATTENTION_BACKEND_PREFERENCE
    return [name for name in order if _backend_installed(name, device)]


def best_attention_backend(
    device: str | torch.device | None = None, dtype: torch.dtype | None = None, *, allow_lossy: bool = False
) -> str:
    """The fastest attention backend that is installed and passes a probe on `device`; ``"native"`` at worst.

    On ZeroGPU call it inside the `@spaces.GPU` function: the GPU does not exist in the main process.
    """
    device = torch.device(device) if device is not None else _default_device()
    for name in attention_backend_candidates(device, allow_lossy=allow_lossy):
        if name == "native" or attention_backend_works(name, device, dtype):
            return name
    return "native"


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


# --------------------------------------------------------------------------------------------- fast paths
@dataclass
class FastPathReport:
    """What `apply_fast_paths` turned on (and what it could not)."""

    attention_backend: str | None = None
    compiled_blocks: bool = False
    vae_tiling: bool = False
    group_offload: bool = False
    fp8_weights: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def apply_fast_paths(
    pipe,
    *,
    attention_backend: str | None = None,
    compile_blocks: bool = False,
    vae_tiling: bool = False,
    group_offload: bool = False,
    fp8_weights: bool = False,
    device: str | torch.device | None = None,
    compile_kwargs: dict[str, Any] | None = None,
    vae_tile_size: int | None = None,
    vae_tile_stride: int | None = None,
    num_blocks_per_group: int = 1,
    compute_dtype: torch.dtype | None = None,
    allow_lossy_attention: bool = False,
) -> FastPathReport:
    """Turns on the chosen speed/memory features of `pipe` (a `SteadyDancerPipeline`) in place.

    Args:
        attention_backend: a diffusers backend name (``"_flash_3_hub"``, ``"flash_hub"``, ``"flash"``, ``"_flash_3"``,
            ``"sage"``, ``"_native_cudnn"``, ``"native"``, ``"_native_math"``, ...), ``"auto"`` for
            `best_attention_backend`, or None to leave it. A named backend that fails its probe falls back to the
            best working one, with a note in the report.
        compile_blocks: regional ``torch.compile`` of the transformer blocks (``fullgraph=True`` unless
            `compile_kwargs` says otherwise). The first call of each input shape compiles.
        vae_tiling: tiled VAE encode/decode; `vae_tile_size` / `vae_tile_stride` in pixels (diffusers' defaults
            256 / 192 when None).
        group_offload: block-level group offloading of the transformer and text encoder between the CPU and
            `device` (CUDA streams on a GPU); the image encoder and VAE are moved to `device`.
        fp8_weights: float8_e4m3fn weight storage for the transformer, computing in `compute_dtype` (default: the
            transformer's dtype).
        device: where computation runs (default: CUDA if available, else the CPU).
    """
    report = FastPathReport()
    device = torch.device(device) if device is not None else _default_device()
    transformer = getattr(pipe, "transformer", None)
    if transformer is None and (attention_backend or compile_blocks or fp8_weights):
        raise ValueError("attention_backend, compile_blocks and fp8_weights need a pipeline with a transformer")

    # 1. fp8 storage first: offloading then moves the fp8 weights, and compile traces the casting hooks.
    if fp8_weights:
        dtype = compute_dtype or transformer.dtype
        transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
        report.fp8_weights = True

    # 2. Group offloading (or nothing: the caller places the pipeline).
    if group_offload:
        use_stream = device.type == "cuda"
        pipe.enable_group_offload(
            onload_device=device,
            offload_device=torch.device("cpu"),
            offload_type="block_level",
            num_blocks_per_group=num_blocks_per_group,
            use_stream=use_stream,
            record_stream=use_stream,
            exclude_modules=[name for name in ("vae", "image_encoder") if getattr(pipe, name, None) is not None],
        )
        report.group_offload = True

    # 3. Attention backend.
    if attention_backend is not None:
        report.attention_backend = _set_attention_backend(
            transformer, attention_backend, device, compute_dtype or transformer.dtype, allow_lossy_attention, report
        )

    # 4. VAE tiling.
    if vae_tiling and getattr(pipe, "vae", None) is not None:
        stride = vae_tile_stride or (vae_tile_size * 3 // 4 if vae_tile_size else None)
        pipe.vae.enable_tiling(
            tile_sample_min_height=vae_tile_size,
            tile_sample_min_width=vae_tile_size,
            tile_sample_stride_height=stride,
            tile_sample_stride_width=stride,
        )
        report.vae_tiling = True

    # 5. Regional compilation last, so it sees the final modules and hooks.
    if compile_blocks:
        kwargs = {"fullgraph": True, **(compile_kwargs or {})}
        hooked = [name for name, on in (("group_offload", group_offload), ("fp8_weights", fp8_weights)) if on]
        if hooked and kwargs.get("fullgraph"):
            # Offloading and layerwise casting run forward hooks inside each block that move or re-cast weights
            # (`module.to(...)` builds new Parameters), which Dynamo cannot put in one graph.
            kwargs["fullgraph"] = False
            report.notes.append(f"compile_blocks with {' + '.join(hooked)}: fullgraph=False (their hooks break the graph)")
        if len(hooked) == 2:
            # Seen on CPU: with both, the broken graphs re-specialise on strides until Dynamo's recompile limit, after
            # which those frames run eagerly. Correct, but little is gained.
            report.notes.append("compile_blocks + group_offload + fp8_weights: expect recompile-limit fallbacks to eager")
        transformer.compile_repeated_blocks(**kwargs)
        report.compiled_blocks = True
    return report


def _set_attention_backend(transformer, name, device, dtype, allow_lossy, report) -> str:
    if name == "auto":
        chosen = best_attention_backend(device, dtype, allow_lossy=allow_lossy)
    elif attention_backend_works(name, device, dtype):
        chosen = name
    else:
        chosen = best_attention_backend(device, dtype, allow_lossy=allow_lossy)
        report.notes.append(f"attention backend {name!r} is not usable on {device}; using {chosen!r}")
        logger.warning(report.notes[-1])
    transformer.set_attention_backend(chosen)
    return chosen


def reset_attention_backend(transformer) -> None:
    """Back to the default (native SDPA) for `transformer` and for diffusers' process-wide active backend."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    transformer.reset_attention_backend()
    from diffusers.utils.constants import DIFFUSERS_ATTN_BACKEND  # diffusers' own reading of its variable

    _AttentionBackendRegistry.set_active_backend(AttentionBackendName(DIFFUSERS_ATTN_BACKEND))
