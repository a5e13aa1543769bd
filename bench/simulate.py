"""The whole 14B job at its real size, simulated on the CPU: device memory per phase and the roofline time per GPU.

    python -m bench.simulate --height 576 --width 1024 --frames 81 --preset quality --memory-gb 80 --json
    python -m bench.simulate --table          # rewrites bench/results/simulated_memory.json (what plan_memory reads)
    python -m bench.simulate --hardware       # the "will it run on my GPU?" table of docs/hardware.md

Every model is built from its real configuration (`steadydancer.model_configs`) under
`torch._subclasses.fake_tensor.FakeTensorMode`: parameters and activations have real shapes and dtypes but no
storage, so a 16.4 B-parameter forward over 53k tokens runs in about two seconds. Each phase runs the code the app
runs (the pipeline's own `_predict` for a denoising step, diffusers' `AutoencoderKLWan` with and without tiling) and:

- `LiveStorageTracker` records the peak of the bytes held by live tensors that are not weights (activations,
  inputs, outputs): exactly what a caching-free allocator would hold. Weights on the device are added per plan
  (`steadydancer.memory.device_weights_gb`): a module streamed from CPU memory counts its streamed part only.
- `torch.utils.flop_counter.FlopCounterMode` counts matmul and convolution FLOP; the attention FLOP it misses on the
  fake CPU device come from `steadydancer.flops`.

SDPA on the fake CPU device dispatches to the fused flash kernel, like CUDA's flash / cuDNN kernels: no L x L score
matrix is ever held, so the attention's memory is the memory the GPU kernels use.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

if __package__ in (None, ""):  # `python bench/simulate.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from steadydancer import memory, roofline
from steadydancer.defaults import PRESETS
from steadydancer.flops import CONFIG_14B, transformer_pass_flops
from steadydancer.model_configs import (
    IMAGE_ENCODER_CONFIG,
    IMAGE_SIZE,
    RELEASED_TRANSFORMER_CONFIG,
    TEXT_ENCODER_CONFIG,
    TEXT_TOKENS,
    VAE_CONFIG,
)
from steadydancer.scheduling import pose_guidance_steps
from steadydancer.sizing import RESOLUTIONS, generation_size_for_aspect, latent_frame_count

GB = 1e9
PHASES = ("text_encode", "image_encode", "vae_encode", "denoise_step", "vae_decode")
TABLE_PATH = memory.SIMULATED_MEMORY_PATH
DEFAULT_FRAMES = 81
# The long-video mode's window (`steadydancer.long_video.DEFAULT_SEGMENT_FRAME_LENGTH`).
LONG_VIDEO_WINDOW_FRAMES = 81


# --------------------------------------------------------------------------------------------- measuring
class LiveStorageTracker(TorchDispatchMode):
    """Peak bytes of live tensor storages created by the ops run under it, weights excluded.

    torch.distributed._tools.mem_tracker.MemTracker gives the same peaks under FakeTensorMode (the test compares
    them) but its per-module hooks make one 14B forward ten times slower (about 20 s instead of 2 s), which puts the
    whole job past a minute; this mode follows each storage's lifetime with a weakref finalizer instead.
    """

    def __init__(self, held: list[torch.Tensor] = ()):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()
        for tensor in held:
            self.add(tensor)

    def add(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._seen:
            return
        self._seen.add(key)
        size = storage.nbytes()
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, size)

    def _free(self, key: int, size: int) -> None:
        if key in self._seen:
            self._seen.discard(key)
            self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.add(leaf)
        return out


@dataclass
class PhaseResult:
    """One phase's simulated activation peak (bytes, weights excluded) and FLOP by kernel class."""

    activation_bytes: int
    flop: dict[str, float] = field(default_factory=dict)

    @property
    def activation_gb(self) -> float:
        return self.activation_bytes / GB

    @property
    def tflop(self) -> float:
        return sum(self.flop.values()) / 1e12


@contextmanager
def measured(weights: set[int], held: list[torch.Tensor] = (), count_flops: bool = True):
    """Runs a block under the tracker (and the FLOP counter); yields the `PhaseResult` filled in at exit."""
    result = PhaseResult(0)
    tracker = LiveStorageTracker()
    tracker._seen |= weights  # weights are added per plan, not counted as activations
    for tensor in held:
        tracker.add(tensor)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), (counter if count_flops else _nothing()), tracker:
        yield result
    result.activation_bytes = tracker.peak
    if count_flops:
        flops = counter.get_flop_counts().get("Global", {})
        convolution = sum(v for k, v in flops.items() if "convolution" in str(k))
        result.flop = {"matmul": float(counter.get_total_flops() - convolution), "convolution": float(convolution)}


@contextmanager
def _nothing():
    yield


def storage_keys(module: torch.nn.Module) -> set[int]:
    return {t.untyped_storage()._cdata for t in [*module.parameters(), *module.buffers()]}


# --------------------------------------------------------------------------------------------- the models
@dataclass
class Models:
    transformer: torch.nn.Module
    text_encoder: torch.nn.Module
    image_encoder: torch.nn.Module
    vae: torch.nn.Module
    fake_mode: FakeTensorMode
    weights: set[int] = field(default_factory=set)


def build_models() -> Models:
    """Every model of the job at its real size, without weights (fake tensors)."""
    from diffusers import AutoencoderKLWan
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, UMT5Config, UMT5EncoderModel

    from steadydancer.loading import config_from_released
    from steadydancer.models.transformer_steadydancer import SteadyDancerTransformer3DModel

    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    with fake_mode:
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)  # the app's dtype for the transformer and the encoders
        try:
            transformer = SteadyDancerTransformer3DModel(**config_from_released(RELEASED_TRANSFORMER_CONFIG)).eval()
            text_encoder = UMT5EncoderModel(UMT5Config(**TEXT_ENCODER_CONFIG)).eval()
            image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**IMAGE_ENCODER_CONFIG)).eval()
        finally:
            torch.set_default_dtype(default)
        vae = AutoencoderKLWan(**VAE_CONFIG).eval()  # float32, as the app runs it
    models = Models(transformer, text_encoder, image_encoder, vae, fake_mode)
    for module in (transformer, text_encoder, image_encoder, vae):
        models.weights |= storage_keys(module)
    return models


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------- the phases
def simulate_text_encode(models: Models) -> PhaseResult:
    with models.fake_mode:
        ids = torch.zeros(1, TEXT_TOKENS, dtype=torch.long)
        mask = torch.ones(1, TEXT_TOKENS, dtype=torch.long)
        with measured(models.weights, [ids, mask]) as result:
            models.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    return result


def simulate_image_encode(models: Models) -> PhaseResult:
    with models.fake_mode:
        pixels = torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bfloat16)  # reference and first pose frame
        with measured(models.weights, [pixels]) as result:
            models.image_encoder(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    return result


def _tiles(vae, height: int, width: int) -> tuple[int, int, int]:
    """(tiles, tile height, tile width) of diffusers' tiled VAE at this size (its default 256 px tiles, stride 192)."""
    tile_h, tile_w = min(height, vae.tile_sample_min_height), min(width, vae.tile_sample_min_width)
    rows = len(range(0, height, vae.tile_sample_stride_height))
    cols = len(range(0, width, vae.tile_sample_stride_width))
    return rows * cols, tile_h, tile_w


def simulate_vae_encode(models: Models, frames: int, height: int, width: int, tiled: bool) -> PhaseResult:
    """One 81-frame encode (the reference followed by zeros, the pose video and the negative pose video are encoded
    one after another; the latents already made stay on the device).

    Tiled: diffusers encodes one tile at a time and keeps every tile's latents until it blends them, so the peak is
    the whole video, one tile's encode (simulated at the tile's size), and the latents of all tiles."""
    vae = models.vae
    vae.disable_tiling()
    lat_f = latent_frame_count(frames)
    tiles, tile_h, tile_w = _tiles(vae, height, width) if tiled else (1, height, width)
    with models.fake_mode:
        video = torch.zeros(1, 3, frames, height, width)
        done = [torch.zeros(1, 16, lat_f, height // 8, width // 8) for _ in range(2)]
        tile = video[..., :tile_h, :tile_w].clone() if tiled else video
        with measured(models.weights, [video, *done, tile]) as result:
            vae.encode(tile).latent_dist.mode()
    if tiled:  # the other tiles' latents (mean and log-variance, 32 channels, float32)
        result.activation_bytes += (tiles - 1) * 32 * lat_f * (tile_h // 8) * (tile_w // 8) * 4
        result.flop = {k: v * tiles for k, v in result.flop.items()}
    return result


def simulate_vae_decode(models: Models, frames: int, height: int, width: int, tiled: bool) -> PhaseResult:
    """The decode of the whole video. Tiled: one tile's decode (simulated at the tile's latent size) plus the
    decoded tiles diffusers keeps until it blends them (float32)."""
    vae = models.vae
    vae.disable_tiling()
    lat_f = latent_frame_count(frames)
    tiles, tile_h, tile_w = _tiles(vae, height, width) if tiled else (1, height, width)
    with models.fake_mode:
        latents = torch.zeros(1, 16, lat_f, height // 8, width // 8)
        tile = latents[..., : tile_h // 8, : tile_w // 8].clone() if tiled else latents
        with measured(models.weights, [latents, tile]) as result:
            models.vae.decode(tile, return_dict=False)[0].float()
    if tiled:
        result.activation_bytes += (tiles - 1) * 3 * frames * tile_h * tile_w * 4
        result.flop = {k: v * tiles for k, v in result.flop.items()}
    return result


def step_passes(preset: str) -> int:
    """Transformer passes in the preset's largest step (a step inside the pose-guidance window)."""
    settings = PRESETS[preset].settings
    passes = 2 if settings.guidance_scale != 1.0 else 1
    if settings.pose_guidance_scale > 0 and any(pose_guidance_steps(settings.num_inference_steps,
                                                                    settings.pose_guidance_window)):
        passes += 1
    return passes


@contextmanager
def float8_linears(transformer: torch.nn.Module, kind: str):
    """What a float8 transformer holds beyond the bf16 one while a block linear runs.

    float8_compute (torchao dynamic activation + weight): the input's float8 copy (1 byte per element) feeding
    `torch._scaled_mm`. float8_storage (layerwise casting): the weight upcast to bf16 for the duration of the layer.
    """
    handles = []
    if kind in ("float8_compute", "float8_storage"):
        held: dict[int, torch.Tensor] = {}

        def before(module, args):
            if kind == "float8_compute":
                held[id(module)] = args[0].to(torch.float8_e4m3fn)
            else:
                held[id(module)] = torch.empty_like(module.weight, dtype=torch.bfloat16)

        def after(module, args, output):
            held.pop(id(module), None)

        for name, module in transformer.named_modules():
            if memory.is_float8_linear(module, name):
                handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def simulate_denoise_step(models: Models, frames: int, height: int, width: int, preset: str, batched: bool,
                          transformer_precision: str = "bf16") -> PhaseResult:
    """One denoising step inside the pose-guidance window, as `SteadyDancerPipeline.denoise` runs it: the pose branch
    for the pose and the negative pose, then the guidance passes through the pipeline's `_predict` (one batched
    call or one call per pass)."""
    from steadydancer.pipeline_steadydancer import SteadyDancerPipeline

    passes = step_passes(preset)
    lat_f, lat_h, lat_w = latent_frame_count(frames), height // 8, width // 8
    transformer = models.transformer
    bf16 = torch.bfloat16
    with models.fake_mode:
        grid = (lat_f, lat_h, lat_w)
        latents = torch.zeros(1, 16, *grid)
        conditions = SimpleNamespace(
            image_condition=torch.zeros(1, 20, *grid, dtype=bf16),
            reference_latents=torch.zeros(1, 36, 1, lat_h, lat_w, dtype=bf16),
            pose_reference_latents=torch.zeros(1, 16, 1, lat_h, lat_w, dtype=bf16),
            pose_latents=torch.zeros(1, 16, *grid, dtype=bf16),
            negative_pose_latents=torch.zeros(1, 16, *grid, dtype=bf16),
        )
        prompt = torch.zeros(1, TEXT_TOKENS, 4096, dtype=bf16)
        negative = torch.zeros(1, TEXT_TOKENS, 4096, dtype=bf16)
        image_embeds = torch.zeros(1, 257, 1280, dtype=bf16)
        pose_image_embeds = torch.zeros(1, 257, 1280, dtype=bf16)
        held = [latents, prompt, negative, image_embeds, pose_image_embeds, *vars(conditions).values()]
        with float8_linears(transformer, transformer_precision), measured(models.weights, held) as result:
            model_latents = latents.to(bf16)
            # As the pipeline's step: each pass's pose features computed when the first pass needing them runs.
            pose = functools.cache(functools.partial(transformer.encode_pose, model_latents, conditions.pose_latents))
            text, poses = [prompt], [pose]
            if passes >= 2 and PRESETS[preset].settings.guidance_scale != 1.0:
                text.append(negative)
                poses.append(pose)
            if len(text) < passes:
                text.append(prompt)
                poses.append(functools.cache(functools.partial(
                    transformer.encode_pose, model_latents, conditions.negative_pose_latents)))
            timestep = torch.ones(1)
            preds = SteadyDancerPipeline._predict(
                SimpleNamespace(transformer=transformer, parallel=None), model_latents, timestep, text, poses,
                image_embeds,
                pose_image_embeds, conditions, batched, None,
            )
            velocity = preds[0] + sum(p - preds[0] for p in preds[1:])
            (latents - velocity)
    config = dict(transformer.config)
    sdpa = transformer_pass_flops(config, frames, height, width, batch=passes)
    result.flop["attention"] = sdpa["self_attn_sdpa"] + sdpa["cross_attn_sdpa"]
    return result


# --------------------------------------------------------------------------------------------- a whole job
@dataclass
class JobSimulation:
    """The simulated phases of one job: activations by variant, FLOP per phase, parameters by model."""

    frames: int
    height: int
    width: int
    preset: str
    parameters: dict[str, int]
    weights: dict[str, float]  # GB by model part: `memory.WEIGHT_PARTS`
    text_encode: PhaseResult
    image_encode: PhaseResult
    vae_encode: dict[bool, PhaseResult]  # by tiling
    vae_decode: dict[bool, PhaseResult]
    denoise_step: dict[tuple[bool, str], PhaseResult]  # by (batched, transformer precision)

    def activations(self) -> dict:
        """The JSON form `steadydancer.memory` reads: activation GB per phase and variant."""
        r = lambda x: round(x.activation_gb, 3)  # noqa: E731
        return dict(
            text_encode=r(self.text_encode),
            image_encode=r(self.image_encode),
            vae_encode={"tiled": r(self.vae_encode[True]), "untiled": r(self.vae_encode[False])},
            vae_decode={"tiled": r(self.vae_decode[True]), "untiled": r(self.vae_decode[False])},
            denoise_step={("batched" if b else "unbatched"): {p: r(v) for (bb, p), v in self.denoise_step.items()
                                                              if bb == b}
                          for b in (True, False)},
        )


def simulate_job(models: Models, frames: int, height: int, width: int, preset: str,
                 precisions: tuple[str, ...] = memory.TRANSFORMER_PRECISIONS, shared: JobSimulation | None = None
                 ) -> JobSimulation:
    """Every phase of a job; `shared`: a simulation of the same size whose preset-independent phases are reused."""
    steps = {(batched, precision): simulate_denoise_step(models, frames, height, width, preset, batched, precision)
             for batched in (True, False) for precision in precisions}
    if shared is not None:
        return JobSimulation(frames, height, width, preset, shared.parameters, shared.weights, shared.text_encode,
                             shared.image_encode, shared.vae_encode, shared.vae_decode, steps)
    return JobSimulation(
        frames, height, width, preset,
        parameters={name: parameter_count(getattr(models, name))
                    for name in ("transformer", "text_encoder", "image_encoder", "vae")},
        weights=memory.weight_parts_gb(models.transformer, models.text_encoder, models.image_encoder, models.vae),
        text_encode=simulate_text_encode(models),
        image_encode=simulate_image_encode(models),
        vae_encode={tiled: simulate_vae_encode(models, frames, height, width, tiled) for tiled in (True, False)},
        vae_decode={tiled: simulate_vae_decode(models, frames, height, width, tiled) for tiled in (True, False)},
        denoise_step=steps,
    )


def job_report(sim: JobSimulation, plan: memory.MemoryPlan) -> dict:
    """The JSON the CLI prints: the plan, each phase's device peak, activation and TFLOP, and the roofline time."""
    acts = sim.activations()
    peaks = memory.phase_peaks_gb(sim.weights, acts, plan)
    step = sim.denoise_step[(plan.batch_guidance, plan.transformer)]
    phase_results = dict(text_encode=sim.text_encode, image_encode=sim.image_encode,
                         vae_encode=sim.vae_encode[plan.vae_tiling], denoise_step=step,
                         vae_decode=sim.vae_decode[plan.vae_tiling])
    phases = {name: dict(peak_gb=round(peaks[name], 3), activation_gb=round(result.activation_gb, 3),
                         tflop=round(result.tflop, 3))
              for name, result in phase_results.items()}
    settings = PRESETS[sim.preset].settings
    seconds = {
        gpu: round(roofline.job_seconds(gpu, sim.frames, sim.height, sim.width, sim.preset,
                                        plan=plan.name, transformer=plan.transformer), 1)
        for gpu in roofline.GPUS
    }
    return dict(
        height=sim.height, width=sim.width, frames=sim.frames, preset=sim.preset,
        steps=settings.num_inference_steps,
        transformer_parameters=sim.parameters["transformer"],
        parameters=sim.parameters,
        weights_gb={k: round(v, 3) for k, v in sim.weights.items()},
        plan=plan.name, transformer=plan.transformer, batch_guidance=plan.batch_guidance,
        vae_tiling=plan.vae_tiling, reason=plan.reason,
        phases=phases,
        peak_gb=round(max(p["peak_gb"] for p in phases.values()), 3),
        variants=acts,
        seconds=seconds,
    )


# --------------------------------------------------------------------------------------------- the committed table
def bucket_size(bucket: str) -> tuple[int, int]:
    """(height, width) of a landscape 16:9-budget frame of the bucket (`steadydancer.sizing.RESOLUTIONS`)."""
    return generation_size_for_aspect(9 / 16, RESOLUTIONS[bucket])


def build_table(models: Models, frames: int = DEFAULT_FRAMES) -> dict:
    """Simulated activations for every resolution bucket and preset, and the weights: what `plan_memory` reads."""
    buckets = {}
    for bucket in RESOLUTIONS:
        height, width = bucket_size(bucket)
        entry = dict(height=height, width=width, presets={})
        sim = None
        for preset in PRESETS:
            sim = simulate_job(models, frames, height, width, preset, shared=sim)
            entry["presets"][preset] = sim.activations()
        # FLOP outside the transformer (the roofline's source for the encoders and the VAE), untiled.
        entry["tflop"] = dict(text_encode=round(sim.text_encode.tflop, 4), image_encode=round(sim.image_encode.tflop, 4),
                              vae_encode=round(sim.vae_encode[False].tflop, 3),
                              vae_decode=round(sim.vae_decode[False].tflop, 3))
        buckets[bucket] = entry
    return dict(
        format=memory.SIMULATED_MEMORY_FORMAT,
        command="python -m bench.simulate --table",
        torch=torch.__version__.split("+")[0],
        frames=frames,
        usable_fraction=memory.USABLE_FRACTION,
        parameters=sim.parameters,
        weights_gb={k: round(v, 3) for k, v in sim.weights.items()},
        buckets=buckets,
    )


# --------------------------------------------------------------------------------------------- the hardware table
HARDWARE_CARDS = [  # memory GB, compute capability, the roofline GPU key
    (24, (8, 9), "rtx-4090"), (40, (8, 0), "a100-40gb"), (48, (12, 0), "zerogpu-large"),
    (80, (9, 0), "h100"), (96, (12, 0), "zerogpu-xlarge"), (141, (9, 0), "h200"),
]


def hardware_rows(table: dict | None = None) -> list[dict]:
    rows = []
    for memory_gb, capability, gpu in HARDWARE_CARDS:
        for bucket in RESOLUTIONS:
            height, width = bucket_size(bucket)
            for preset in PRESETS:
                row = dict(memory_gb=memory_gb, gpu=gpu, resolution=bucket, preset=preset)
                try:
                    plan = memory.plan_memory(memory_gb, capability, height=height, width=width,
                                              num_frames=DEFAULT_FRAMES, preset=preset, table=table)
                except memory.MemoryPlanError as error:
                    row.update(plan=None, reason=str(error))
                else:
                    row.update(plan=plan.name, transformer=plan.transformer, batch_guidance=plan.batch_guidance,
                               vae_tiling=plan.vae_tiling, peak_gb=round(plan.estimated_peak_gb, 1),
                               seconds=round(roofline.job_seconds(gpu, DEFAULT_FRAMES, height, width, preset,
                                                                  plan=plan.name, transformer=plan.transformer)))
                rows.append(row)
    return rows


def hardware_markdown(rows: list[dict]) -> str:
    from steadydancer_space.estimate import format_seconds

    lines = ["| GPU memory | example GPU | resolution | preset | plan | peak GB | time |",
             "| ---: | --- | --- | --- | --- | ---: | ---: |"]
    for r in rows:
        if r["plan"] is None:
            lines.append(f"| {r['memory_gb']} GB | {r['gpu']} | {r['resolution']} | {r['preset']} | does not fit | - | - |")
            continue
        plan = r["plan"] + ("" if r["transformer"] == "bf16" else f" ({r['transformer'].replace('_', ' ')})")
        plan += "" if r["batch_guidance"] else ", passes one by one"
        plan += ", tiled VAE" if r["vae_tiling"] else ""
        lines.append(f"| {r['memory_gb']} GB | {r['gpu']} | {r['resolution']} | {r['preset']} | {plan} | "
                     f"{r['peak_gb']:.1f} | {format_seconds(r['seconds'])} |")
    return "\n".join(lines)


def hardware_summary_markdown(rows: list[dict]) -> str:
    """The README's table: one row per card, each job's roofline time and simulated peak."""
    from steadydancer_space.estimate import format_seconds

    jobs = list(dict.fromkeys((r["resolution"], r["preset"]) for r in rows))
    lines = ["| GPU memory (example) | " + " | ".join(f"{res} {preset}" for res, preset in jobs) + " |",
             "| --- |" + " ---: |" * len(jobs)]
    for memory_gb, _, gpu in HARDWARE_CARDS:
        cells = []
        for job in jobs:
            r = next(r for r in rows if r["memory_gb"] == memory_gb and (r["resolution"], r["preset"]) == job)
            cells.append("does not fit" if r["plan"] is None
                         else f"{format_seconds(r['seconds'])}, {r['peak_gb']:.0f} GB")
        lines.append(f"| {memory_gb} GB ({gpu}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def multi_gpu_markdown(gpu: str = "h100", preset: str = "quality", counts=(1, 2, 4, 8), small: str = "l40s") -> str:
    """The README's several-GPU table: the layout of each GPU count and the default job's roofline time (the
    denoising divided by the layout's best-case speed-up for the preset's passes; communication not counted), and
    what the memory plan does with that many `small` cards, where one cannot hold the bf16 transformer."""
    from steadydancer.memory import plan_memory
    from steadydancer.parallel import parallel_layout
    from steadydancer.scheduling import passes_per_step
    from steadydancer_space.estimate import format_seconds

    height, width = bucket_size("576p")
    heads = CONFIG_14B["num_attention_heads"]
    phases = roofline.phase_seconds(gpu, DEFAULT_FRAMES, height, width, preset)
    card = roofline.GPUS[small]
    settings = PRESETS[preset].settings
    steps = passes_per_step(settings.num_inference_steps, settings.guidance_scale, settings.pose_guidance_scale,
                            settings.pose_guidance_window)
    lines = [f"| GPUs | layout on {gpu.upper()}s | {preset} preset, 81 frames at 576p | on {card.name} "
             f"({card.memory_gb} GB) |", "| ---: | --- | ---: | --- |"]
    for count in counts:
        layout = parallel_layout(count, heads)
        seconds = roofline.FIXED_SECONDS + sum(v for k, v in phases.items() if k != "denoise") + (
            phases["denoise"] / layout.speedup_for(steps))
        plan = plan_memory(card.memory_gb, card.compute_capability, shards=count)
        on_small = (f"bf16, {parallel_layout(count, heads, sharded=True).describe()}" if plan.transformer_shards > 1
                    else f"{plan.name} plan, {plan.transformer.replace('_', ' ')} transformer")
        lines.append(f"| {count} | {layout.describe()} | {format_seconds(seconds)} | {on_small} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- CLI
def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0 or value > 100_000:
        raise argparse.ArgumentTypeError(f"expected a positive integer up to 100000, got {text}")
    return value


def capability(text: str) -> tuple[int, int]:
    try:
        major, minor = (int(part) for part in text.split("."))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MAJOR.MINOR, e.g. 12.0, got {text!r}") from None
    return major, minor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.simulate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=positive_int, default=576)
    parser.add_argument("--width", type=positive_int, default=1024)
    parser.add_argument("--frames", type=positive_int, default=DEFAULT_FRAMES,
                        help=f"video frames (4n+1); longer videos are simulated as one {LONG_VIDEO_WINDOW_FRAMES}-frame "
                             "window of the long-video mode")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quality")
    parser.add_argument("--memory-gb", type=float, default=80.0, help="the GPU's memory (GB = 1e9 bytes)")
    parser.add_argument("--compute-capability", type=capability, default=(9, 0), help="e.g. 12.0, 9.0, 8.0")
    parser.add_argument("--plan", choices=memory.PLAN_NAMES, help="force this plan instead of the fastest that fits")
    parser.add_argument("--gpus", type=positive_int, default=1, help="GPUs of one job (the sharded plan needs 2+)")
    parser.add_argument("--float8-for-speed", action="store_true", help="float8 compute even where bf16 fits")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--table", action="store_true", help=f"rewrite {TABLE_PATH.relative_to(Path.cwd()) if TABLE_PATH.is_relative_to(Path.cwd()) else TABLE_PATH}")
    parser.add_argument("--hardware", action="store_true", help="print the hardware table (Markdown)")
    parser.add_argument("--hardware-summary", action="store_true", help="print the README's hardware table")
    parser.add_argument("--multi-gpu", action="store_true", help="print the README's several-GPU table")
    args = parser.parse_args(argv)

    if args.multi_gpu:
        print(multi_gpu_markdown())
        return 0
    if args.hardware or args.hardware_summary:
        rows = hardware_rows()
        print(hardware_summary_markdown(rows) if args.hardware_summary else hardware_markdown(rows))
        return 0
    start = time.perf_counter()
    models = build_models()
    if args.table:
        table = build_table(models)
        TABLE_PATH.write_text(json.dumps(table, indent=1) + "\n")
        print(f"wrote {TABLE_PATH} in {time.perf_counter() - start:.0f} s")
        return 0

    from steadydancer.sizing import SIZE_MULTIPLE, is_valid_frame_count

    for name, value in (("--height", args.height), ("--width", args.width)):
        if value % SIZE_MULTIPLE:
            parser.error(f"{name} must be a multiple of {SIZE_MULTIPLE}, got {value}")
    if not is_valid_frame_count(args.frames):
        parser.error(f"--frames must be 4n+1 (81, 121, ...), got {args.frames}")
    if args.plan == "sharded" and args.gpus < 2:
        parser.error("--plan sharded needs --gpus 2 or more")
    window = min(args.frames, LONG_VIDEO_WINDOW_FRAMES)
    # The plan comes from the committed table (what the app reads); this job is then simulated under it.
    try:
        plan = memory.plan_memory(args.memory_gb, args.compute_capability, height=args.height, width=args.width,
                                  num_frames=window, preset=args.preset, float8_for_speed=args.float8_for_speed,
                                  force=args.plan, shards=args.gpus)
    except memory.MemoryPlanError as error:
        if args.json:
            print(json.dumps(dict(plan=None, reason=str(error))))
        else:
            print(f"refused: {error}")
        return 2
    sim = simulate_job(models, window, args.height, args.width, args.preset, precisions=(plan.transformer,))
    report = job_report(sim, plan)
    if args.frames > window:
        windows = math.ceil((args.frames - 1) / (window - 1))
        report.update(long_video_windows=windows, frames=args.frames,
                      seconds={gpu: round(s * windows, 1) for gpu, s in report["seconds"].items()})
    report["simulated_in_s"] = round(time.perf_counter() - start, 1)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.frames} frames at {args.height}x{args.width}, {args.preset}: {report['transformer_parameters']:,} "
          f"transformer parameters; plan {plan.name} ({plan.reason})")
    for name, phase in report["phases"].items():
        print(f"  {name:13s} peak {phase['peak_gb']:7.2f} GB  activations {phase['activation_gb']:7.2f} GB  "
              f"{phase['tflop']:10.1f} TFLOP")
    print("roofline time of the job: " + ", ".join(f"{gpu} {s:.0f} s" for gpu, s in report["seconds"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
