"""How long a job takes on a GPU, from its FLOP, the GPU's datasheet peaks and one efficiency factor per kernel class.

    seconds of a phase = sum over kernel classes of FLOP / (peak FLOP/s x efficiency)

The transformer's FLOP are `steadydancer.flops` (matmuls, and the attention that `FlopCounterMode` misses); the
VAE's and the encoders' are the simulation's (`bench/results/simulated_memory.json`, counted by `FlopCounterMode` at
each resolution bucket and scaled linearly in pixels x frames). Where the device check (`bench/device_check.sh`) has
measured a transformer pass on the GPU, the measured TFLOP/s replaces the matmul and attention factors. A plan that
streams the transformer from CPU memory is bounded below by copying its weights over the host link once per pass.

No torch import: the Space's main process reads it to size the ZeroGPU duration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .defaults import PRESETS
from .flops import CONFIG_14B, transformer_pass_flops
from .scheduling import transformer_passes

RESULTS_DIR = Path(__file__).resolve().parents[1] / "bench" / "results"
DEVICE_CHECK_FORMAT = "steadydancer-device-check/1"


@dataclass(frozen=True)
class Gpu:
    """Datasheet figures: dense (no sparsity) tensor-core TFLOP/s with FP32 accumulation, memory GB and TB/s."""

    name: str
    memory_gb: float
    compute_capability: tuple[int, int]
    bf16_tflops: float
    fp8_tflops: float | None  # None: no float8 tensor cores
    memory_tbps: float
    host_link_gbps: float  # PCIe, GB/s per direction


GPUS = {
    # NVIDIA H200 datasheet (SXM): BF16 1,979 TFLOPS and FP8 3,958 with sparsity; 141 GB HBM3e, 4.8 TB/s; PCIe Gen5.
    "h200": Gpu("H200 SXM", 141, (9, 0), 989.5, 1979.0, 4.8, 64),
    # NVIDIA H100 Tensor Core GPU datasheet (SXM): BF16 1,979 / FP8 3,958 TFLOPS with sparsity; 80 GB, 3.35 TB/s.
    "h100": Gpu("H100 SXM", 80, (9, 0), 989.5, 1979.0, 3.35, 64),
    # NVIDIA A100 datasheet: BF16 312 TFLOPS dense; 80 GB HBM2e at 2,039 GB/s (SXM); 40 GB at 1,555 GB/s; PCIe Gen4.
    "a100": Gpu("A100 80 GB SXM", 80, (8, 0), 312.0, None, 2.039, 32),
    "a100-40gb": Gpu("A100 40 GB", 40, (8, 0), 312.0, None, 1.555, 32),
    # NVIDIA L40S datasheet: BF16 362.05 / FP8 733 TFLOPS dense (733 / 1,466 with sparsity); 48 GB GDDR6, 864 GB/s.
    "l40s": Gpu("L40S", 48, (8, 9), 362.05, 733.0, 0.864, 32),
    # NVIDIA RTX PRO 6000 Blackwell Server Edition datasheet: 96 GB GDDR7 at 1,597 GB/s; RTX Blackwell architecture
    # whitepaper: BF16 with FP32 accumulate about 504 TFLOPS dense, FP8 about 1,008. ZeroGPU's `xlarge` is the whole
    # card; `large` is half of it (a MIG half: half the SMs, memory and bandwidth).
    "rtx-pro-6000": Gpu("RTX Pro 6000 Blackwell", 96, (12, 0), 503.8, 1007.6, 1.597, 64),
    "zerogpu-xlarge": Gpu("ZeroGPU xlarge (RTX Pro 6000 Blackwell)", 96, (12, 0), 503.8, 1007.6, 1.597, 64),
    "zerogpu-large": Gpu("ZeroGPU large (half an RTX Pro 6000 Blackwell)", 48, (12, 0), 251.9, 503.8, 0.7985, 32),
    # NVIDIA Ada Lovelace architecture whitepaper, RTX 4090: BF16 with FP32 accumulate 165.2 TFLOPS dense, FP8 with
    # FP32 accumulate 330.3; 24 GB GDDR6X at 1,008 GB/s; PCIe Gen4.
    "rtx-4090": Gpu("RTX 4090", 24, (8, 9), 165.2, 330.3, 1.008, 32),
    # A CPU: no tensor cores; a nominal 1 TFLOP/s so that estimates stay finite.
    "cpu": Gpu("CPU", 0, (0, 0), 1.0, None, 0.1, 10),
}

# Fraction of the peak each kernel class reaches: planning figures, replaced by the device check's measurement.
EFFICIENCY = {
    "matmul": 0.65,  # large bf16 GEMMs (projections, FFN) in cuBLAS
    "attention": 0.45,  # fused SDPA (flash / cuDNN) over ~50k tokens, head dim 128
    "float8_matmul": 0.5,  # torchao float8 GEMMs, dynamic row-wise activation scales included
    "convolution": 0.15,  # the VAE's fp32 causal 3-D convolutions (TF32 at half the bf16 peak, cache copies)
    "host_link": 0.8,  # pinned-memory copies of streamed weights
}
# Per job: moving inputs, the scheduler, Python.
FIXED_SECONDS = 10.0
_SIMULATED_TABLE = RESULTS_DIR / "simulated_memory.json"


def measured_pass_tflops(gpu: str, results_dir: Path | None = None) -> float | None:
    """The best transformer-pass TFLOP/s the device check measured on `gpu` (None when not measured)."""
    name = GPUS[gpu].name.split(" (")[0].lower()
    best = None
    for path in sorted(Path(results_dir or RESULTS_DIR).glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or doc.get("format") != DEVICE_CHECK_FORMAT or doc.get("tiny"):
            continue
        hardware = str((doc.get("hardware") or {}).get("name", "")).lower()
        if not hardware or name.split()[0] not in hardware:
            continue
        for row in doc.get("rows") or []:
            if str(row.get("name", "")).startswith("pass_best") and isinstance(row.get("tflops"), (int, float)):
                best = max(best or 0.0, float(row["tflops"]))
    return best


def _table() -> dict:
    try:
        return json.loads(_SIMULATED_TABLE.read_text())
    except (OSError, ValueError):
        return {}


def _table_tflop(table: dict, height: int, width: int, frames: int) -> dict[str, float]:
    """TFLOP of the phases outside the transformer, from the simulated table's nearest bucket, scaled in pixels."""
    buckets = sorted(table.get("buckets", {}).values(), key=lambda e: e["height"] * e["width"])
    if not buckets:
        return {}
    entry = next((e for e in buckets if height * width <= e["height"] * e["width"]), buckets[-1])
    scale = height * width * frames / (entry["height"] * entry["width"] * table["frames"])
    tflop = entry.get("tflop", {})
    return {phase: value * (scale if phase.startswith("vae") else 1.0) for phase, value in tflop.items()}


def phase_seconds(
    gpu: str,
    num_frames: int,
    height: int,
    width: int,
    preset: str = "quality",
    *,
    plan: str = "resident",
    transformer: str = "bf16",
    batch_guidance: bool = True,
    num_inference_steps: int | None = None,
    passes: int | None = None,
    transformer_config: dict = CONFIG_14B,
    results_dir: Path | None = None,
) -> dict[str, float]:
    """Roofline seconds of each phase of a job on `gpu` (a `GPUS` key): text_encode, image_encode, vae_encode,
    denoise (all steps), vae_decode. `passes`: the job's transformer passes, when its sampler is not the preset's
    (`steadydancer.scheduling.transformer_passes`)."""
    if gpu not in GPUS:
        raise ValueError(f"Unknown GPU {gpu!r}; one of {', '.join(GPUS)}.")
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    card = GPUS[gpu]
    settings = PRESETS[preset].settings
    steps = num_inference_steps or settings.num_inference_steps
    if passes is None:
        passes = transformer_passes(steps, settings.guidance_scale, settings.pose_guidance_scale,
                                    settings.pose_guidance_window)
    flops = transformer_pass_flops(transformer_config, num_frames, height, width)
    attention = flops["self_attn_sdpa"] + flops["cross_attn_sdpa"]
    matmul = flops["total"] - attention
    bf16 = card.bf16_tflops * 1e12
    measured = measured_pass_tflops(gpu, results_dir)
    if measured:
        pass_seconds = flops["total"] / (measured * 1e12)
    else:
        float8 = transformer == "float8_compute" and card.fp8_tflops
        matmul_rate = card.fp8_tflops * 1e12 * EFFICIENCY["float8_matmul"] if float8 else bf16 * EFFICIENCY["matmul"]
        pass_seconds = matmul / matmul_rate + attention / (bf16 * EFFICIENCY["attention"])
    table = _table()
    weights = table.get("weights_gb", {})
    weights_gb = weights.get("transformer_bf16", 32.8)
    if plan == "offload":
        pass_seconds = max(pass_seconds, weights_gb / (card.host_link_gbps * EFFICIENCY["host_link"]))
    elif transformer == "float8_storage":
        # Layerwise casting reads each fp8 weight and writes its bf16 copy every pass.
        pass_seconds += 1.5 * weights_gb / 2 / (card.memory_tbps * 1e3)
    other = _table_tflop(table, height, width, num_frames)
    conv_rate = bf16 / 2 * EFFICIENCY["convolution"]  # the VAE runs in fp32: TF32 tensor cores, half the bf16 rate
    seconds = {
        "text_encode": other.get("text_encode", 0.0) * 1e12 / (bf16 * EFFICIENCY["matmul"]),
        "image_encode": other.get("image_encode", 0.0) * 1e12 / (bf16 * EFFICIENCY["matmul"]),
        "vae_encode": 3 * other.get("vae_encode", 0.0) * 1e12 / conv_rate,  # reference, pose, negative pose
        "denoise": passes * pass_seconds,
        "vae_decode": other.get("vae_decode", 0.0) * 1e12 / conv_rate,
    }
    if plan != "resident":  # the text encoder streamed from CPU memory while it encodes
        seconds["text_encode"] = max(seconds["text_encode"], weights.get("text_encoder", 11.4) / (card.host_link_gbps * EFFICIENCY["host_link"]))
    return seconds


def job_seconds(gpu: str, num_frames: int, height: int, width: int, preset: str = "quality", **kwargs) -> float:
    """Roofline seconds of a whole job on `gpu`, fixed overhead included (see `phase_seconds` for the options)."""
    return sum(phase_seconds(gpu, num_frames, height, width, preset, **kwargs).values()) + FIXED_SECONDS
