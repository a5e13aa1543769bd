"""Benchmark harness: speed and peak memory of SteadyDancer's transformer, guidance step, VAE and whole jobs.

    python -m bench.run                                   # CPU: small config, fast paths only
    python -m bench.run --reference --json cpu.json       # ... and the plain path, for speed-ups in the same run
    python -m bench.run --device cuda --config 14b --frames 81 --height 576 --width 1024 --reference \\
        --attention-backend auto --compile --json h200.json

Rows (``--benchmarks``, comma-separated; default all):

- ``pass``: one transformer forward (batch 1, pose branch included) at (frames, height, width).
- ``step2`` / ``step3``: one decoupled-CFG step: the pose branch for the positive (and negative) pose, then the
  cond + negative-text passes (+ the negative-pose pass inside the pose window), batched into one call on the fast
  path, one call each on the reference path.
- ``vae_encode`` / ``vae_decode``: the VAE on a (frames, height, width) video. ``--vae tiny`` (CPU default) is the
  tiny test VAE; ``--vae wan21`` (GPU default) the real Wan2.1 VAE config with random weights.
- ``job``: a whole job through `SteadyDancerPipeline.__call__` at the released settings (``--job-steps``, 40 by
  default: 91 transformer passes). With ``--config 14b`` (or ``--job-components config``) the ``--config``
  transformer and the ``--vae`` VAE with random weights and precomputed text/CLIP embeddings (the encoders cost
  < 1 s a job; their weights are listed in the summary); otherwise the tiny components written by
  `steadydancer.tiny`, encoders included.
- ``job_fast``: the same with `steadydancer.defaults.FAST` (4 steps, 5 passes). With ``--lora-rank R``
  the fast variant's transformer carries a random rank-R LoRA in the Wan/ComfyUI layout on every block linear and
  the head (what lightx2v's LoRA covers), loaded with `steadydancer.lora.load_wan_lora` (``--fuse-lora`` fuses
  it), so its cost is in the fast rows.

Variants: ``fast`` always (batched guidance + the fast paths chosen by the flags: ``--attention-backend``,
``--compile``, ``--vae-tiling``, ``--group-offload``, ``--fp8``); ``reference`` with ``--reference``: sequential
guidance passes, the default attention backend, no compile, no tiling/offload/fp8, on the same weights. By default
on a CPU (``--interleave``) the fast variant runs on copies and the timed calls alternate between the variants,
because other work on a shared machine slows individual calls by 2-5x; on CUDA the reference rows run first and the
fast paths are then applied in place (one copy of 14B weights). Timings: ``--warmup`` untimed calls (the first one's
time is reported as ``first_s``: compilation lands there), then ``--repeats`` timed calls, CUDA-synchronised;
speed-ups compare minimum times. Peak memory: CUDA ``max_memory_allocated`` on a GPU; on a CPU the resident set's
high-water mark (process-wide: weights, Python and all). TFLOP/s uses the FLOP model in `steadydancer.flops`.
"""

from __future__ import annotations

import argparse
import functools
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from steadydancer.flops import CONFIG_14B, transformer_pass_flops
from steadydancer.sizing import SIZE_MULTIPLE, VAE_SPATIAL_STRIDE, is_valid_frame_count, latent_frame_count

CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": dict(num_attention_heads=2, attention_head_dim=12, ffn_dim=48, num_layers=2, text_dim=32),
    "small": dict(num_attention_heads=8, attention_head_dim=64, ffn_dim=1536, num_layers=4, text_dim=4096),
    "14b": dict(CONFIG_14B),
}
KEEP_FP32 = ("rope", "time_embedder", "scale_shift_table", "norm1", "norm2", "norm3")  # as from_pretrained
# Weights a real job also holds if the encoders stay resident (UMT5-XXL encoder, open-CLIP ViT-H/14), in params.
ENCODER_PARAMS = {"text_encoder (UMT5-XXL)": 5.681e9, "image_encoder (ViT-H/14)": 0.631e9}
BENCHMARKS = ("pass", "step2", "step3", "vae_encode", "vae_decode", "job", "job_fast")


# --------------------------------------------------------------------------------------------- measurement
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to /proc/self/clear_refs resets the process's peak RSS (VmHWM) to its current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


class PeakMemory:
    """Peak memory over a block: CUDA allocated bytes on a GPU; on a CPU the resident set's high-water mark
    (VmHWM, reset at entry through /proc/self/clear_refs), or, where that is unavailable, the RSS sampled every
    5 ms by a thread."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif not _reset_peak_rss():
            self.peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.005)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is None:
            self.peak = _peak_rss_bytes()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes())


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, int]:
    """Seconds and peak memory of one call."""
    with PeakMemory(device) as memory:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return seconds, memory.peak


def measure(cases: dict[str, "Case"], device: torch.device, warmup: int, repeats: int, interleave: bool):
    """Times each variant's case: `warmup` untimed calls (the first one's time is ``first_s``), then `repeats` timed
    calls. With `interleave`, the timed calls alternate between the variants (the order flipping every round), so
    that a machine shared with other work disturbs both alike. Peak memory: the maximum over all of a variant's
    calls."""
    state = {v: dict(times=[], first=None, peak=0) for v in cases}

    def call(variant: str, fn: Callable[[], Any], keep: bool):
        seconds, peak = _timed(fn, device)
        entry = state[variant]
        entry["peak"] = max(entry["peak"], peak)
        if keep:
            entry["times"].append(seconds)
        elif entry["first"] is None:
            entry["first"] = seconds

    with torch.no_grad():
        for variant, case in cases.items():
            for _ in range(warmup):
                call(variant, case.warm or case.call, keep=False)
        if interleave:
            order = list(cases)
            for round_ in range(repeats):
                for variant in order if round_ % 2 == 0 else order[::-1]:
                    call(variant, cases[variant].call, keep=True)
        else:
            for variant, case in cases.items():
                for _ in range(repeats):
                    call(variant, case.call, keep=True)
    results = {}
    for variant, entry in state.items():
        times = entry["times"]
        results[variant] = dict(
            median_s=statistics.median(times), min_s=min(times), mean_s=statistics.fmean(times),
            std_s=statistics.stdev(times) if len(times) > 1 else 0.0, first_s=entry["first"], times_s=times,
            peak_bytes=entry["peak"],
        )
    return results


# --------------------------------------------------------------------------------------------- components
def build_transformer(config_name: str, device: torch.device, dtype: torch.dtype, seed: int = 0, meta_init: bool | None = None):
    """The transformer with random weights. GPU (or `meta_init`): built on the meta device and materialised with
    torch.empty + a cheap in-place fill on the device (no CPU init of 16 B parameters)."""
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    from steadydancer.models import SteadyDancerTransformer3DModel

    config = CONFIGS[config_name]

    def cast(model):  # as the checkpoint loader: `dtype` except diffusers' fp32-kept modules (RoPE tables included)
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            tensor.data = tensor.data.to(torch.float32 if any(p in name.split(".") for p in KEEP_FP32) else dtype)

    if meta_init if meta_init is not None else device.type == "cuda":
        with torch.device("meta"):
            model = SteadyDancerTransformer3DModel(**config)
        cast(model)  # on meta: to_empty then allocates every tensor once, in its final dtype
        model.to_empty(device=device)
        g = torch.Generator(device=device.type).manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("bias"):
                    param.zero_()
                elif param.ndim == 1:  # norm weights
                    param.fill_(1.0)
                else:
                    param.normal_(0.0, 0.02, generator=g)
        # The RoPE tables are buffers computed at construction: rebuild them on the device.
        model.rope = WanRotaryPosEmbed(config["attention_head_dim"], (1, 2, 2), model.config.rope_max_seq_len).to(device)
    else:
        torch.manual_seed(seed)
        model = SteadyDancerTransformer3DModel(**config).to(device)
    cast(model)
    return model.eval()


def build_vae(kind: str, device: torch.device, seed: int = 1):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    if kind == "tiny":
        vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                               temperal_downsample=[False, True, True])
    else:  # the Wan2.1 VAE's configuration (diffusers' defaults), random weights, fp32 as the pipeline runs it
        with torch.device(device):
            vae = AutoencoderKLWan()
    return vae.to(device=device, dtype=torch.float32).eval()


def core_pipeline(transformer, vae):
    """A pipeline without encoders (everything precomputed), as the GPU job and the step benchmarks use."""
    from steadydancer.pipeline_steadydancer import SteadyDancerPipeline
    from steadydancer.scheduling import make_scheduler

    pipe = SteadyDancerPipeline(None, None, None, None, transformer, vae, make_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def random_pass_inputs(model, frames: int, height: int, width: int, device, dtype, batch: int = 1, seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    cfg = model.config
    lat_f, lat_h, lat_w = latent_frame_count(frames), height // VAE_SPATIAL_STRIDE, width // VAE_SPATIAL_STRIDE

    def r(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    return dict(
        hidden_states=r(batch, 16, lat_f, lat_h, lat_w), timestep=torch.full((batch,), 500.0, device=device),
        encoder_hidden_states=r(batch, 512, cfg.text_dim), encoder_hidden_states_image=r(batch, 257, 1280),
        encoder_hidden_states_pose_image=r(batch, 257, 1280), image_condition=r(batch, 20, lat_f, lat_h, lat_w),
        reference_latents=r(batch, 36, 1, lat_h, lat_w), pose_reference_latents=r(batch, 16, 1, lat_h, lat_w),
        pose_latents=r(batch, 16, lat_f, lat_h, lat_w), return_dict=False,
    )


# --------------------------------------------------------------------------------------------- benchmarks
@dataclass
class Case:
    """One benchmark of one variant: `call` is timed; `warm` (default `call`) runs in the warm-up."""

    name: str
    call: Callable[[], Any]
    warm: Callable[[], Any] | None = None
    flops: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Components:
    transformer: Any = None
    vae: Any = None


class Context:
    def __init__(self, args):
        self.args = args
        self.device = torch.device(args.device)
        self.dtype = getattr(torch, args.dtype)
        self.rows: list[dict[str, Any]] = []
        self.components: dict[str, Components] = {}
        self.tiny_dirs = None
        self.fast_report: dict[str, Any] | None = None
        self.lora: dict[str, Any] | None = None

    def record(self, case: Case, variant: str, result: dict[str, Any]):
        row = dict(benchmark=case.name, variant=variant, **result, **case.extra)
        if variant == "fast" and self.lora:
            row["lora"] = self.lora
        if case.flops:
            row["flop"] = case.flops
            row["tflops"] = case.flops / result["median_s"] / 1e12
        self.rows.append(row)
        print(f"  {case.name:11s} {variant:9s} median {result['median_s']:9.4f} s   min {result['min_s']:9.4f} s   "
              f"peak {fmt_bytes(result['peak_bytes'])}", flush=True)


def pass_flops(ctx: Context, batch: int = 1) -> float:
    a = ctx.args
    return transformer_pass_flops(CONFIGS[a.config], a.frames, a.height, a.width, batch)["total"]


def weights_on_device(module, device: torch.device) -> int:
    """Bytes of `module`'s parameters and buffers resident on `device` (fp8 storage and offloading show here)."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors if t.device.type == device.type)


def pass_case(ctx: Context, variant: str) -> Case:
    a, transformer = ctx.args, ctx.components[variant].transformer
    inputs = random_pass_inputs(transformer, a.frames, a.height, a.width, ctx.device, ctx.dtype)
    extra = dict(weight_bytes=weights_on_device(transformer, ctx.device))
    return Case("pass", lambda: transformer(**inputs), flops=pass_flops(ctx), extra=extra)


def guidance_step(pipe, transformer, x: dict, conditions, passes: int, batched: bool):
    """One sampling step's transformer work on random pass inputs `x`: the conditional and negative-text passes, plus
    the negative-pose pass when `passes` is 3, batched into one call or not."""
    latents, timestep = x["hidden_states"], x["timestep"]
    text, negative = x["encoder_hidden_states"], x["encoder_hidden_states"].flip(1)
    pose = functools.cache(functools.partial(transformer.encode_pose, latents, conditions.pose_latents))
    texts, poses = [text, negative], [pose, pose]
    if passes == 3:
        texts.append(text)
        poses.append(functools.cache(functools.partial(
            transformer.encode_pose, latents, conditions.negative_pose_latents)))
    return pipe._predict(latents, timestep, texts, poses, x["encoder_hidden_states_image"],
                         x["encoder_hidden_states_pose_image"], conditions, batched, None)


def step_case(ctx: Context, variant: str, passes: int) -> Case:
    """One decoupled-CFG step through the pipeline's own `_predict` (batched on the fast path, sequential passes
    on the reference path)."""
    from steadydancer.pipeline_steadydancer import SteadyDancerConditions

    a, transformer = ctx.args, ctx.components[variant].transformer
    pipe = core_pipeline(transformer, None)
    x = random_pass_inputs(transformer, a.frames, a.height, a.width, ctx.device, ctx.dtype)
    conditions = SteadyDancerConditions(
        image_condition=x["image_condition"], reference_latents=x["reference_latents"],
        pose_reference_latents=x["pose_reference_latents"], pose_latents=x["pose_latents"],
        negative_pose_latents=x["pose_latents"].flip(-1),
    )
    def step():
        return guidance_step(pipe, transformer, x, conditions, passes, batched=variant != "reference")

    extra = dict(passes=passes, weight_bytes=weights_on_device(transformer, ctx.device))
    return Case(f"step{passes}", step, flops=passes * pass_flops(ctx), extra=extra)


def vae_cases(ctx: Context, variant: str) -> list[Case]:
    a, vae = ctx.args, ctx.components[variant].vae
    g = torch.Generator().manual_seed(0)
    video = (torch.rand(1, 3, a.frames, a.height, a.width, generator=g) * 2 - 1).to(ctx.device)
    with torch.no_grad():
        latents = vae.encode(video).latent_dist.mode()
    extra = dict(vae=a.vae, tiled=bool(getattr(vae, "use_tiling", False)))
    return [
        Case("vae_encode", lambda: vae.encode(video).latent_dist.mode(), extra=extra),
        Case("vae_decode", lambda: vae.decode(latents), extra=extra),
    ]


def job_case(ctx: Context, variant: str, preset: str) -> Case:
    """A whole job through `SteadyDancerPipeline.__call__` (VAE encodes, sampling, decode to frames)."""
    from steadydancer.defaults import FAST
    from steadydancer.scheduling import pose_guidance_steps

    a = ctx.args
    if a.job_components == "tiny":
        from steadydancer.assembly import load_pipeline
        from steadydancer.tiny import build_tiny_checkpoints

        if ctx.tiny_dirs is None:
            ctx.tiny_dirs = build_tiny_checkpoints(tempfile.mkdtemp(prefix="steadydancer-bench-"))
        pipe = load_pipeline(*ctx.tiny_dirs, torch_dtype=torch.float32, device=ctx.device)
        pipe.set_progress_bar_config(disable=True)
        if variant == "fast":
            setup_fast(ctx, pipe, record=False)
        embeds = {}
    else:
        parts = ctx.components[variant]
        pipe = core_pipeline(parts.transformer, parts.vae)
        g = torch.Generator().manual_seed(0)
        text_dim = parts.transformer.config.text_dim

        def r(*shape):
            return torch.randn(*shape, generator=g).to(ctx.device, ctx.dtype)

        embeds = dict(prompt_embeds=r(1, 512, text_dim), negative_prompt_embeds=r(1, 512, text_dim),
                      image_embeds=r(1, 257, 1280), pose_image_embeds=r(1, 257, 1280))
    rng = np.random.default_rng(0)
    video = dict(
        image=rng.integers(0, 256, (a.height, a.width, 3), dtype=np.uint8),
        pose_video=rng.integers(0, 256, (a.frames, a.height, a.width, 3), dtype=np.uint8),
        negative_pose_video=rng.integers(0, 256, (a.frames, a.height, a.width, 3), dtype=np.uint8),
    )
    settings = asdict(FAST) if preset == "fast" else dict(num_inference_steps=a.job_steps)
    common = dict(**video, **embeds, prompt="a person dancing", height=a.height, width=a.width, num_frames=a.frames,
                  batch_guidance=variant != "reference", output_type="np")

    def job():
        return pipe(**common, **settings, generator=torch.Generator().manual_seed(0))

    def warm():  # 2 steps, pose guidance at step 1: every batch shape a job uses is seen (and compiled)
        pipe(**common, num_inference_steps=2, pose_guidance_window=(0.0, 1.0),
             guidance_scale=settings.get("guidance_scale", 5.0), generator=torch.Generator().manual_seed(0))

    steps = settings["num_inference_steps"]
    window = settings.get("pose_guidance_window", (0.1, 0.4))
    text_passes = 1 if settings.get("guidance_scale", 5.0) == 1.0 else 2
    passes = steps * text_passes + sum(pose_guidance_steps(steps, window))
    config = CONFIGS["tiny" if a.job_components == "tiny" else a.config]
    flops = passes * transformer_pass_flops(config, a.frames, a.height, a.width)["total"]
    return Case("job_fast" if preset == "fast" else "job", job, warm, flops, dict(steps=steps, passes=passes))


def cases_for(ctx: Context, variant: str, name: str) -> list[Case]:
    if name == "pass":
        return [pass_case(ctx, variant)]
    if name in ("step2", "step3"):
        return [step_case(ctx, variant, int(name[-1]))]
    if name == "vae":
        return vae_cases(ctx, variant)
    return [job_case(ctx, variant, "fast" if name == "job_fast" else "released")]


# --------------------------------------------------------------------------------------------- driver
def setup_fast(ctx: Context, pipe, record: bool = True):
    """The fast variant's setup: the optional LoRA first (fast paths wrap the modules that exist), then the paths."""
    from steadydancer.acceleration import apply_fast_paths
    from steadydancer.lora import load_wan_lora
    from steadydancer.tiny import synthetic_wan_lora

    a = ctx.args
    has_transformer = getattr(pipe, "transformer", None) is not None
    if a.lora_rank and has_transformer:
        report = load_wan_lora(pipe, synthetic_wan_lora(pipe.transformer, a.lora_rank), adapter_name="bench")
        if a.fuse_lora:
            pipe.transformer.fuse_lora(adapter_names=["bench"])
        ctx.lora = dict(rank=a.lora_rank, modules=len(report.lora_modules), fused=a.fuse_lora)
    report = apply_fast_paths(
        pipe,
        attention_backend=None if a.attention_backend == "default" or not has_transformer else a.attention_backend,
        compile_blocks=a.compile and has_transformer, vae_tiling=a.vae_tiling, group_offload=a.group_offload,
        fp8_weights=a.fp8 and has_transformer, device=ctx.device, compute_dtype=ctx.dtype,
        vae_tile_size=a.vae_tile_size,
    )
    if record:
        ctx.fast_report = report.as_dict()
    return report


def run(ctx: Context, selected: list[str]):
    """Reference then fast on the same components, or (interleave) both at once on copies."""
    a = ctx.args
    groups = [name for name in ("pass", "step2", "step3") if name in selected]
    groups += ["vae"] if {"vae_encode", "vae_decode"} & set(selected) else []
    groups += [name for name in ("job", "job_fast") if name in selected]
    base = ctx.components["reference"]
    variants = ["reference", "fast"] if a.reference else ["fast"]

    if a.reference and a.interleave:
        ctx.components["fast"] = Components(copy.deepcopy(base.transformer), copy.deepcopy(base.vae))
        if base.transformer is not None or base.vae is not None:
            setup_fast(ctx, core_pipeline(ctx.components["fast"].transformer, ctx.components["fast"].vae))
        print("[reference and fast, interleaved]", flush=True)
        for group in groups:
            built = {v: cases_for(ctx, v, group) for v in variants}
            for i in range(len(built["fast"])):
                cases = {v: built[v][i] for v in variants}
                repeats = a.job_repeats if group.startswith("job") else a.repeats
                for variant, result in measure(cases, ctx.device, a.warmup, repeats, True).items():
                    ctx.record(cases[variant], variant, result)
        return

    for variant in variants:
        print(f"[{variant}]", flush=True)
        if variant == "fast":
            ctx.components["fast"] = base  # the fast paths are applied in place, after the reference rows
            if base.transformer is not None or base.vae is not None:
                setup_fast(ctx, core_pipeline(base.transformer, base.vae))
        for group in groups:
            for case in cases_for(ctx, variant, group):
                repeats = a.job_repeats if group.startswith("job") else a.repeats
                ctx.record(case, variant, measure({variant: case}, ctx.device, a.warmup, repeats, False)[variant])


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def table(rows: list[dict[str, Any]], device: torch.device) -> str:
    # Speed-ups from the minimum times: on a shared machine the minimum is the least disturbed measurement.
    reference = {r["benchmark"]: r["min_s"] for r in rows if r["variant"] == "reference"}
    memory = "peak allocated" if device.type == "cuda" else "peak RSS"
    lines = [
        f"| benchmark | variant | median s | min s | first call s | {memory} | transformer weights on {device.type} "
        "| TFLOP/s | speed-up (min) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        speedup = reference[r["benchmark"]] / r["min_s"] if r["variant"] != "reference" and r["benchmark"] in reference else None
        lines.append(
            f"| {r['benchmark']} | {r['variant']} | {r['median_s']:.4f} | {r['min_s']:.4f} | "
            + (f"{r['first_s']:.3f}" if r.get("first_s") is not None else "-")
            + f" | {fmt_bytes(r['peak_bytes'])} | {fmt_bytes(r.get('weight_bytes'))} | "
            + (f"{r['tflops']:.3f}" if r.get("tflops") is not None else "-")
            + " | " + (f"{speedup:.2f}x" if speedup else "-") + " |"
        )
    return "\n".join(lines)


def projection(ctx: Context) -> dict[str, Any]:
    """Whole-job times assembled from the measured rows (for when a real job is too long to run):
    released 40 steps = 29 two-pass steps + 11 three-pass steps; fast preset = 3 one-pass steps + 1 two-pass step
    (cond + negative pose); both plus 3 VAE encodes (reference, pose, negative pose) and 1 decode."""
    from steadydancer.scheduling import pose_guidance_steps

    out = {}
    pose_steps = sum(pose_guidance_steps(40, (0.1, 0.4)))
    for variant in ("reference", "fast"):
        rows = {r["benchmark"]: r["median_s"] for r in ctx.rows if r["variant"] == variant}
        vae = 3 * rows["vae_encode"] + rows["vae_decode"] if {"vae_encode", "vae_decode"} <= set(rows) else None
        entry = {}
        if {"step2", "step3"} <= set(rows) and vae is not None:
            entry["released_40_steps_s"] = (40 - pose_steps) * rows["step2"] + pose_steps * rows["step3"] + vae
        if {"pass", "step2"} <= set(rows) and vae is not None:
            entry["fast_preset_s"] = 3 * rows["pass"] + rows["step2"] + vae
        if entry:
            out[variant] = entry
    return out


def environment(device: torch.device) -> dict[str, Any]:
    import diffusers

    env = dict(python=platform.python_version(), torch=torch.__version__, diffusers=diffusers.__version__,
               cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
               torch_threads=torch.get_num_threads())
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), capability=".".join(map(str, torch.cuda.get_device_capability(device))),
                   gpu_memory_gib=round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1))
    return env


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--config", choices=sorted(CONFIGS), default=None, help="transformer size (cpu: small, cuda: 14b)")
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    p.add_argument("--benchmarks", default=",".join(BENCHMARKS), help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    p.add_argument("--reference", action="store_true", help="also measure the plain path, first, for speed-ups")
    p.add_argument("--interleave", action=argparse.BooleanOptionalAction, default=None,
                   help="with --reference: run the fast variant on copies and alternate the timed calls "
                        "(default on a CPU, where other work disturbs the timings; off on CUDA: it doubles memory)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--job-steps", type=int, default=40)
    p.add_argument("--job-repeats", type=int, default=1)
    p.add_argument("--job-components", choices=["tiny", "config"], default=None,
                   help="job rows on the tiny components (encoders included; default unless --config 14b) or on "
                        "the --config transformer and --vae VAE with precomputed embeddings")
    p.add_argument("--vae", choices=["tiny", "wan21"], default=None, help="VAE for vae_* rows (cpu: tiny, cuda: wan21)")
    p.add_argument("--attention-backend", default="auto", help="'auto', 'default' (leave it) or a diffusers name")
    p.add_argument("--compile", action="store_true", help="regional torch.compile of the transformer blocks")
    p.add_argument("--vae-tiling", action="store_true")
    p.add_argument("--vae-tile-size", type=int, default=None)
    p.add_argument("--group-offload", action="store_true")
    p.add_argument("--fp8", action="store_true", help="float8_e4m3fn weight storage (layerwise casting)")
    p.add_argument("--lora-rank", type=int, default=0,
                   help="the fast variant carries a random Wan LoRA of this rank, as the fast preset does")
    p.add_argument("--fuse-lora", action="store_true", help="fuse that LoRA into the weights (pipe.fuse_lora)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--meta-init", action=argparse.BooleanOptionalAction, default=None,
                   help="build the transformer on the meta device and fill it in place (default: on CUDA)")
    p.add_argument("--json", type=Path, default=None, help="write the rows and the environment here")
    args = p.parse_args(argv)
    gpu = args.device.startswith("cuda")
    if args.job_components is None:
        args.job_components = "config" if (args.config or ("14b" if gpu else "small")) == "14b" else "tiny"
    defaults = dict(config="14b" if gpu else "small", frames=81 if gpu else 9, height=576 if gpu else 192,
                    width=1024 if gpu else 320, dtype="bfloat16" if gpu else "float32", vae="wan21" if gpu else "tiny")
    defaults["interleave"] = not gpu
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not is_valid_frame_count(args.frames) or args.height % SIZE_MULTIPLE or args.width % SIZE_MULTIPLE:
        p.error(f"frames must be 4n+1 and height/width multiples of {SIZE_MULTIPLE}")
    unknown = set(args.benchmarks.split(",")) - set(BENCHMARKS)
    if unknown:
        p.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    return args


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = Context(args)
    selected = [b for b in BENCHMARKS if b in args.benchmarks.split(",")]
    print(f"SteadyDancer benchmark: {args.config} transformer, {args.frames}x{args.height}x{args.width}, "
          f"{args.dtype}, {ctx.device} ({', '.join(selected)})", flush=True)

    config_job = args.job_components == "config" and {"job", "job_fast"} & set(selected)
    base = ctx.components["reference"] = Components()
    if {"pass", "step2", "step3"} & set(selected) or config_job:
        start = time.perf_counter()
        base.transformer = build_transformer(args.config, ctx.device, ctx.dtype, meta_init=args.meta_init)
        print(f"  built the {args.config} transformer in {time.perf_counter() - start:.1f} s", flush=True)
    if {"vae_encode", "vae_decode"} & set(selected) or config_job:
        base.vae = build_vae(args.vae, ctx.device)

    run(ctx, selected)

    flop_model = transformer_pass_flops(CONFIGS[args.config], args.frames, args.height, args.width)
    summary = dict(environment=environment(ctx.device), args={k: str(v) for k, v in vars(args).items()},
                   fast_paths=ctx.fast_report, flop_model_per_pass=flop_model, rows=ctx.rows)
    if base.transformer is not None:
        summary["transformer_params"] = sum(p.numel() for p in base.transformer.parameters())
    summary["encoder_weight_bytes_bf16"] = {k: int(2 * v) for k, v in ENCODER_PARAMS.items()}
    print()
    print(table(ctx.rows, ctx.device))
    print(f"\nFLOP per transformer pass ({args.config}, {args.frames}x{args.height}x{args.width}): "
          f"{flop_model['total']:.4e} over {int(flop_model['tokens'])} tokens")
    if ctx.fast_report:
        print(f"fast paths: {ctx.fast_report}")
    summary["projected_jobs"] = projection(ctx)
    for variant, entry in summary["projected_jobs"].items():
        print(f"projected from the rows ({variant}): " + ", ".join(f"{k} {v:.1f}" for k, v in entry.items()))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str))
        print(f"wrote {args.json}")
    return summary


if __name__ == "__main__":
    main()
