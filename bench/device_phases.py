"""The phases of `bench/device_check.sh`: SteadyDancer measured on one lent GPU, one process per phase.

    python -m bench.device_phases {env,transformer,job,compile} OUT_DIR [--budget S] [--tiny] [--compile-backend B]
    python -m bench.device_phases summary OUT_DIR           # no torch needed: reads the phase files, derives figures
    python -m bench.device_phases wheels WHL_DIR            # no torch needed: which carried wheels to install
    python -m bench.device_phases collect SRC_DIR [--dest bench/results] [--prefix h200]

Phases (each writes OUT_DIR/<phase>.json after every measured call, so a phase killed at its hard cap loses only
the call in flight, which its file names under ``running``):

- ``env``: versions, the device, and an import check of everything the other phases use.
- ``transformer``: the matmul ceiling; the 14B transformer with random weights in the real shapes (built on the meta
  device, filled on the device: `bench.run.build_transformer`); the attention-backend probe and a micro-benchmark of
  the self-attention at the real shape; one pass at 81x576x1024 and at 81x480x832 with the best backend
  (`steadydancer.acceleration.best_attention_backend`) and with the plain path (diffusers' default attention);
  one guidance step at 576p: 2 passes sequential vs batched, and a batched 3-pass step (the pose-guidance window).
- ``job``: the fast preset's whole job (`steadydancer.defaults.FAST`: 4 steps, 5 passes) through
  `SteadyDancerPipeline.__call__` on precomputed conditions (no encoders, no VAE encodes) with the Wan2.1 VAE
  (random fp32 weights) decoding its 21 latent frames; the VAE decode alone at both sizes; one pass with fp8
  weight storage (`apply_fast_paths(fp8_weights=True)`) against one in bf16.
- ``compile``: regional compile (`apply_fast_paths(compile_blocks=True)`): the first call (compile + pass) and a
  compiled pass, against the eager best-backend pass of ``transformer``.

``--tiny`` runs the same code on the CPU with the tiny config at 5x32x64 and 5x32x48 (the two sizes' stand-ins; the
rows keep the names 576p / 480p), the tiny VAE, and by default the ``aot_eager`` compile backend (Dynamo's tracing
without inductor's C++ build, which costs about 35 s cold on a CPU).

Timings: warm-up calls untimed (the first one's time is ``first_s``), then timed calls, CUDA-synchronised; ``min_s``
is the least disturbed one. A row stops early (``truncated``) when its next call would not fit the phase's budget.
Peak memory: CUDA ``max_memory_allocated`` on a GPU, the process's peak RSS on a CPU (`bench.run.PeakMemory`).
TFLOP/s: `steadydancer.flops.transformer_pass_flops` (the project's FLOP model) / ``min_s``.

The phase files are what `steadydancer_space.calibration` reads (after `collect` copies them into bench/results/):
a JSON object with ``format`` = FORMAT, ``phase``, ``tiny``, ``hardware``, ``config`` and ``rows``; each row has
``name``, ``kind`` (pass, step, job, vae_decode, attention, matmul), ``variant``, ``frames``, ``height``, ``width``,
``tokens``, ``batch``, ``passes``, ``times_s``, ``n``, ``min_s``, ``median_s``, ``first_s`` and ``peak_memory_gib``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # `python bench/device_phases.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FORMAT = "steadydancer-device-check/1"
PHASES = ("env", "transformer", "job", "compile")
SUMMARY = "summary"
LOG = "device_check.log"
# (name, frames, height, width): the paper's size and the 480p size; in tiny mode their stand-ins.
GEOMETRIES = (("576p", 81, 576, 1024), ("480p", 81, 480, 832))
TINY_GEOMETRIES = (("576p", 5, 32, 64), ("480p", 5, 32, 48))
GIB = 2**30
T0 = time.monotonic()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# --------------------------------------------------------------------------------------------- one phase
class Phase:
    """The running phase: its device, budget, JSON document and the measuring loop."""

    def __init__(self, name: str, out_dir: Path, budget: float, tiny: bool, compile_backend: str | None = None):
        import torch

        self.torch = torch
        self.name = name
        self.path = Path(out_dir) / f"{name}.json"
        self.out_dir = Path(out_dir)
        self.deadline = T0 + budget
        self.tiny = tiny
        self.cuda = torch.cuda.is_available() and not tiny
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.dtype = torch.bfloat16
        self.config_name = "tiny" if tiny else "14b"
        self.geometries = {g[0]: g[1:] for g in (TINY_GEOMETRIES if tiny else GEOMETRIES)}
        self.compile_backend = compile_backend or ("aot_eager" if tiny else "inductor")
        self.rate = None  # FLOP/s of the best measured pass, for estimating the next calls
        if not self.cuda:
            torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        from bench.run import CONFIGS

        self.doc = dict(
            format=FORMAT, phase=name, tiny=tiny, started=_now(), budget_s=budget, device=str(self.device),
            hardware=hardware(torch, self.cuda), config_name=self.config_name, config=CONFIGS[self.config_name],
            dtype=str(self.dtype).replace("torch.", ""), geometries={k: list(v) for k, v in self.geometries.items()},
            rows=[], errors=[], skipped=[], notes=[],
        )
        signal.signal(signal.SIGTERM, self._terminated)
        self.save()

    # ------------------------------------------------------------------ bookkeeping
    def log(self, msg: str):
        print(f"  [{self.name} +{time.monotonic() - T0:6.1f}s] {msg}", flush=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self):
        self.doc["wall_s"] = round(time.monotonic() - T0, 2)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.doc, indent=1, default=str))
        os.replace(tmp, self.path)

    def _terminated(self, signum, frame):  # the shell's hard cap (timeout sends SIGTERM, then SIGKILL 5 s later)
        self.doc["errors"].append(dict(where="hard cap", error=f"terminated by signal {signum} (hard cap reached)"))
        self.save()
        print(f"  [{self.name}] terminated at its hard cap; {self.path.name} saved", flush=True)
        os._exit(124)

    def error(self, where: str, exc: BaseException):
        tb = traceback.format_exc()
        self.doc["errors"].append(dict(where=where, error=repr(exc)[:1000], traceback=tb[-4000:]))
        self.log(f"ERROR in {where}: {exc!r}\n{tb}")
        self.save()
        if self.cuda:
            self.torch.cuda.empty_cache()

    def skip(self, what: str, need: float) -> bool:
        if self.left() < need:
            self.doc["skipped"].append(f"{what}: needs ~{need:.0f} s, {self.left():.0f} s left")
            self.log(f"skip {what}: needs ~{need:.0f} s, {self.left():.0f} s left")
            self.save()
            return True
        return False

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    # ------------------------------------------------------------------ sizes and estimates
    def tokens(self, geometry: str) -> int:
        from steadydancer.sizing import token_grid

        lat_f, gh, gw = token_grid(*self.geometries[geometry])
        return (lat_f + 2) * gh * gw

    def pass_flop(self, geometry: str, batch: int = 1) -> float:
        from steadydancer.flops import transformer_pass_flops

        return transformer_pass_flops(self.doc["config"], *self.geometries[geometry], batch)["total"]

    def estimate(self, flop: float) -> float:
        """Seconds for `flop` of transformer work: at the measured rate, else a conservative guess."""
        if self.rate:
            return flop / self.rate
        return 2.0 if self.tiny else flop / 250e12

    def shape_fields(self, geometry: str, **extra) -> dict:
        frames, height, width = self.geometries[geometry]
        return dict(geometry=geometry, frames=frames, height=height, width=width, tokens=self.tokens(geometry), **extra)

    # ------------------------------------------------------------------ measuring
    def measure(self, name: str, fn, *, warmup: int, repeats: int, est_s: float, flop: float | None = None,
                first_is_compile: bool = False, keep_output: bool = False, **fields):
        """`warmup` untimed calls, then up to `repeats` timed ones; saves the row after every call. Stops early when
        the next call would not fit the budget (estimate: `est_s`, then the last call's time, except after a
        compiling warm-up). Returns (row, last output if `keep_output`)."""
        from bench.run import PeakMemory

        torch = self.torch
        row = dict(name=name, **fields, warmup=warmup, repeats=repeats, times_s=[], first_s=None, n=0, min_s=None,
                   median_s=None, flop=flop, tflops=None, peak_memory_gib=None,
                   peak_memory_kind="cuda_max_allocated" if self.cuda else "cpu_peak_rss")
        self.doc["rows"].append(row)
        peak, last, out = 0, est_s, None
        for i in range(warmup + repeats):
            if self.left() < last * 1.15 + 3:
                row["truncated"] = (f"stopped before call {i + 1}/{warmup + repeats}: {self.left():.0f} s left, "
                                    f"call ~{last:.0f} s")
                self.log(f"{name}: {row['truncated']}")
                break
            row["running"] = f"call {i + 1}/{warmup + repeats} started at +{time.monotonic() - T0:.1f} s"
            self.save()
            out = None
            try:
                with torch.no_grad(), PeakMemory(self.device) as memory:
                    start = time.perf_counter()
                    out = fn()
                    self.sync()
                    took = time.perf_counter() - start
            except BaseException as e:
                row["failed"] = f"call {i + 1}: {e!r}"[:500]
                del row["running"]
                self.save()
                raise
            del row["running"]
            peak = max(peak, memory.peak)
            last = est_s if first_is_compile and i < warmup else took
            if i < warmup:
                row["first_s"] = row["first_s"] if row["first_s"] is not None else round(took, 4)
            else:
                row["times_s"].append(round(took, 4))
                if i == 0:
                    row["first_s"] = round(took, 4)
            times = row["times_s"]
            row.update(n=len(times), min_s=min(times) if times else None,
                       median_s=statistics.median(times) if times else None, peak_memory_gib=round(peak / GIB, 3))
            if flop and times:
                row["tflops"] = float(f"{flop / min(times) / 1e12:.4g}")
            self.log(f"{name}: call {i + 1}/{warmup + repeats} {'warm-up' if i < warmup else 'timed'} {took:.3f} s, "
                     f"peak {peak / GIB:.2f} GiB" + (f", {row['tflops']} TFLOP/s" if row["tflops"] else ""))
            self.save()
            if not keep_output:
                out = None
        return row, out

    # ------------------------------------------------------------------ components
    def build_transformer(self):
        from bench.run import build_transformer

        start = time.perf_counter()
        model = build_transformer(self.config_name, self.device, self.dtype, meta_init=True)
        self.sync()
        self.doc["build_s"] = round(time.perf_counter() - start, 2)
        self.doc["params"] = sum(p.numel() for p in model.parameters())
        self.doc["weights_gib"] = round(sum(p.numel() * p.element_size() for p in model.parameters()) / GIB, 3)
        self.log(f"built {self.config_name}: {self.doc['params'] / 1e9:.3f} B params, {self.doc['weights_gib']} GiB "
                 f"in {self.doc['build_s']} s")
        self.save()
        return model

    def inputs(self, model, geometry: str):
        from bench.run import random_pass_inputs

        return random_pass_inputs(model, *self.geometries[geometry], self.device, self.dtype)

    def measured_backend(self) -> str:
        """What ``transformer`` found to run at the real shape, else the probe's choice."""
        try:
            return json.loads((self.out_dir / "transformer.json").read_text())["best_backend_used"]
        except Exception:
            from steadydancer.acceleration import best_attention_backend

            return best_attention_backend(self.device, self.dtype)

    def transformer_row(self, name: str) -> dict | None:
        try:
            rows = json.loads((self.out_dir / "transformer.json").read_text())["rows"]
        except Exception:
            return None
        return next((r for r in rows if r["name"] == name and r.get("min_s")), None)


def hardware(torch, cuda: bool) -> dict:
    if cuda:
        p = torch.cuda.get_device_properties(0)
        return dict(name=p.name, kind="gpu", memory_gib=round(p.total_memory / GIB, 2), sms=p.multi_processor_count,
                    capability=f"{p.major}.{p.minor}")
    return dict(name=f"cpu ({platform.processor() or platform.machine()})", kind="cpu", cpu_count=os.cpu_count())


def schedules() -> dict:
    """Steps and transformer passes of the released (quality) and fast presets, by passes per step."""
    from steadydancer.defaults import FAST, RELEASED
    from steadydancer.scheduling import pose_guidance_steps, transformer_passes

    out = {}
    for name, s in (("released", RELEASED), ("fast", FAST)):
        text = 2 if s.guidance_scale != 1.0 else 1
        window = pose_guidance_steps(s.num_inference_steps, s.pose_guidance_window)
        per_step = [text + int(w and s.pose_guidance_scale > 0) for w in window]
        passes = transformer_passes(s.num_inference_steps, s.guidance_scale, s.pose_guidance_scale,
                                    s.pose_guidance_window)
        assert sum(per_step) == passes, (per_step, passes)
        out[name] = dict(steps=s.num_inference_steps, passes=passes,
                         steps_by_passes={str(k): per_step.count(k) for k in sorted(set(per_step))})
    return out


# --------------------------------------------------------------------------------------------- phases
def phase_env(p: Phase):
    import importlib.metadata as md

    torch = p.torch
    p.doc.update(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
                 cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                 cpu_count=os.cpu_count())
    versions = {}
    for pkg in ("diffusers", "transformers", "peft", "accelerate", "huggingface_hub", "safetensors", "tokenizers",
                "numpy", "pillow", "triton", "kernels", "flash_attn"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    p.doc["versions"] = versions
    # The import check: everything the other phases import, so a missing package fails here, in seconds.
    import diffusers  # noqa: F401
    from diffusers import AutoencoderKLWan  # noqa: F401
    from diffusers.models.attention_dispatch import attention_backend, dispatch_attention_fn  # noqa: F401

    import bench.run  # noqa: F401
    import steadydancer.acceleration  # noqa: F401
    import steadydancer.pipeline_steadydancer  # noqa: F401
    from steadydancer.models import SteadyDancerTransformer3DModel  # noqa: F401

    p.doc["diffusers_path"] = str(Path(diffusers.__file__).parent)  # the carried wheel's (/tmp/site) or the image's
    p.doc["schedules"] = schedules()
    p.doc["imports_ok"] = True
    p.log(f"{p.doc['hardware']['name']}, torch {torch.__version__}, diffusers {versions['diffusers']}: imports ok")


def phase_transformer(p: Phase):
    from diffusers.models.attention_dispatch import attention_backend, dispatch_attention_fn

    from bench.run import core_pipeline, guidance_step
    from steadydancer.acceleration import (attention_backend_candidates, attention_backend_works,
                                           best_attention_backend, reset_attention_backend)
    from steadydancer.pipeline_steadydancer import SteadyDancerConditions

    torch = p.torch
    p.doc["schedules"] = schedules()
    try:  # the chip's bf16 matmul ceiling as found (random data), to read the TFLOP/s rows against
        n = 256 if p.tiny else 8192
        g = torch.Generator(device=p.device.type).manual_seed(1)
        a, b = (torch.randn(n, n, device=p.device, dtype=p.dtype, generator=g) for _ in range(2))
        row, _ = p.measure("matmul_ceiling", lambda: [a @ b for _ in range(10)][-1], warmup=1, repeats=3, est_s=1.0,
                           flop=10 * 2.0 * n**3, kind="matmul", variant="bf16")
        p.doc["matmul_ceiling_tflops"] = row["tflops"]
        del a, b
    except Exception as e:
        p.error("matmul ceiling", e)

    model = p.build_transformer()
    inputs = {g: p.inputs(model, g) for g in p.geometries}
    flop = {g: p.pass_flop(g) for g in p.geometries}
    p.doc["flop_per_pass"] = flop
    p.doc["tokens"] = {g: p.tokens(g) for g in p.geometries}

    # Attention backends: what `auto` sees, and each usable one on the real self-attention shape.
    best = "native"
    try:
        candidates = attention_backend_candidates(p.device)
        p.doc["probe"] = {n: attention_backend_works(n, p.device, p.dtype) for n in candidates}
        p.doc["best_backend"] = best = best_attention_backend(p.device, p.dtype)
        p.log(f"probe {p.doc['probe']} -> best {best}")
        p.save()
    except Exception as e:
        p.error("attention probe", e)
    working = [n for n, ok in p.doc.get("probe", {}).items() if ok] or ["native"]
    try:
        L, H, D = p.tokens("576p"), model.config.num_attention_heads, model.config.attention_head_dim
        g = torch.Generator(device=p.device.type).manual_seed(0)
        q, k, v = (torch.randn(1, L, H, D, device=p.device, dtype=p.dtype, generator=g) for _ in range(3))
        for name in working:
            def call(name=name):
                with attention_backend(name):
                    return dispatch_attention_fn(q, k, v)

            try:
                p.measure(f"attention_{name}_576p", call, warmup=1, repeats=3, est_s=1.0, flop=4.0 * L * L * H * D,
                          kind="attention", variant=name, backend=name, **p.shape_fields("576p", batch=1))
            except Exception as e:  # probes fine but fails at the real shape: noted, and the pass will skip it
                p.doc["rows"][-1]["failed"] = repr(e)[:300]
                p.error(f"attention micro-benchmark {name}", e)
        q = k = v = None  # free them (the closures above hold the same cells)
    except Exception as e:
        p.error("attention micro-benchmark", e)

    # One pass at each size, best backend then plain path. Should the best backend fail at the real shape, the next
    # one that probed fine takes its place.
    outputs = {}
    order = [best] + [n for n in working if n != best]
    for geometry in p.geometries:
        fields = p.shape_fields(geometry, batch=1, passes=1)
        for backend in list(order):
            if "best_backend_used" in p.doc and backend != p.doc["best_backend_used"]:
                continue
            need = p.estimate(flop[geometry]) * (3 if geometry == "576p" else 2) * 1.1 + 3
            if p.skip(f"pass_best_{geometry} ({backend})", need):
                break
            try:
                model.set_attention_backend(backend)
                row, out = p.measure(f"pass_best_{geometry}", lambda g=geometry: model(**inputs[g])[0], warmup=1,
                                     repeats=2 if geometry == "576p" else 1, est_s=p.estimate(flop[geometry]),
                                     flop=flop[geometry], keep_output=True, kind="pass", variant="best",
                                     backend=backend, **fields)
                p.doc["best_backend_used"] = backend
                if row["min_s"]:
                    p.rate = p.rate or flop[geometry] / row["min_s"]
                if out is not None:
                    outputs[("best", geometry)] = out.float()
                break
            except Exception as e:
                if p.doc["rows"] and p.doc["rows"][-1]["name"] == f"pass_best_{geometry}":
                    p.doc["rows"][-1]["name"] = f"failed_pass_{geometry}_{backend}"
                p.error(f"pass_best_{geometry} ({backend})", e)
                order.remove(backend)
    best = p.doc.get("best_backend_used", best)
    if best == "native":
        p.doc["notes"].append("the best backend is native: the plain-path rows repeat it")
    try:
        reset_attention_backend(model)  # the harness's --reference: diffusers' default attention (native SDPA)
        for geometry in p.geometries:
            if p.skip(f"pass_plain_{geometry}", p.estimate(flop[geometry]) * 1.3 + 3):
                continue
            row, out = p.measure(f"pass_plain_{geometry}", lambda g=geometry: model(**inputs[g])[0], warmup=0,
                                 repeats=1, est_s=p.estimate(flop[geometry]) * 1.3,
                                 flop=flop[geometry], keep_output=True, kind="pass", variant="plain",
                                 backend="native (default)", **p.shape_fields(geometry, batch=1, passes=1))
            if out is not None and ("best", geometry) in outputs:
                a, b = outputs.pop(("best", geometry)), out.float()
                row["finite"] = bool(torch.isfinite(b).all())
                p.doc.setdefault("best_vs_plain_rel_l2", {})[geometry] = float((a - b).norm() / b.norm().clamp_min(1e-12))
            p.save()
    except Exception as e:
        p.error("plain-path passes", e)
    outputs.clear()

    # One decoupled-CFG step through the pipeline's own _predict at 576p, best backend: 2 passes sequential vs
    # batched, then the batched 3-pass step of the pose-guidance window.
    try:
        model.set_attention_backend(best)
        pipe = core_pipeline(model, None)
        x = inputs["576p"]
        cond = SteadyDancerConditions(
            image_condition=x["image_condition"], reference_latents=x["reference_latents"],
            pose_reference_latents=x["pose_reference_latents"], pose_latents=x["pose_latents"],
            negative_pose_latents=x["pose_latents"].flip(-1))
        def step(passes, batched):
            return guidance_step(pipe, model, x, cond, passes, batched)

        for name, passes, batched in (("step2_sequential_576p", 2, False), ("step2_batched_576p", 2, True),
                                      ("step3_batched_576p", 3, True)):
            est = passes * p.estimate(flop["576p"]) * 1.1
            if p.skip(name, est + 3):
                continue
            p.measure(name, lambda n=passes, b=batched: step(n, b), warmup=0, repeats=1, est_s=est,
                      flop=passes * flop["576p"], kind="step", variant="batched" if batched else "sequential",
                      backend=best, **p.shape_fields("576p", batch=1, passes=passes))
    except Exception as e:
        p.error("guidance step", e)


def phase_job(p: Phase):
    from bench.run import build_vae, core_pipeline, weights_on_device
    from steadydancer.acceleration import apply_fast_paths
    from steadydancer.defaults import FAST
    from steadydancer.pipeline_steadydancer import SteadyDancerConditions

    torch = p.torch
    p.doc["schedules"] = schedules()
    model = p.build_transformer()
    start = time.perf_counter()
    vae = build_vae("tiny" if p.tiny else "wan21", p.device)
    p.doc["vae_build_s"] = round(time.perf_counter() - start, 2)
    p.doc["vae_params"] = sum(t.numel() for t in vae.parameters())
    p.doc["tf32"] = dict(cudnn=torch.backends.cudnn.allow_tf32, matmul=torch.backends.cuda.matmul.allow_tf32)
    best = p.measured_backend()
    model.set_attention_backend(best)
    p.doc["backend"] = best
    pipe = core_pipeline(model, vae)
    flop = p.pass_flop("576p")
    x = p.inputs(model, "576p")
    fields = p.shape_fields("576p", batch=1, passes=1)
    p1 = p.transformer_row("pass_best_576p")
    if p1:
        p.rate = flop / p1["min_s"]

    # 1. bf16 pass (its warm-up warms this process), the comparison for fp8 below.
    reference = None
    try:
        row, out = p.measure("pass_bf16_576p", lambda: model(**x)[0], warmup=1, repeats=1, est_s=p.estimate(flop),
                             flop=flop, keep_output=True, kind="pass", variant="bf16", backend=best, **fields)
        reference = out.float() if out is not None else None
        if row["min_s"] and not p1:
            p.rate = flop / row["min_s"]
    except Exception as e:
        p.error("pass_bf16_576p", e)

    # 2. The fast preset's job: FAST through __call__ on precomputed conditions, decode included.
    frames, height, width = p.geometries["576p"]
    decode_est = 2.0 if p.tiny else 25.0
    try:
        cond = SteadyDancerConditions(
            image_condition=x["image_condition"], reference_latents=x["reference_latents"],
            pose_reference_latents=x["pose_reference_latents"], pose_latents=x["pose_latents"],
            negative_pose_latents=x["pose_latents"].flip(-1))
        passes = p.doc["schedules"]["fast"]["passes"]
        calls, marks = [], []

        def count(module, args, kwargs):
            calls.append(int(kwargs["hidden_states"].shape[0]))

        def on_step(pipeline, i, t, tensors):
            p.sync()
            marks.append(time.perf_counter())
            return {}

        def job():
            calls.clear()
            marks.clear()
            marks.append(time.perf_counter())
            video = pipe(conditions=cond, prompt_embeds=x["encoder_hidden_states"],
                         image_embeds=x["encoder_hidden_states_image"],
                         pose_image_embeds=x["encoder_hidden_states_pose_image"], output_type="pt",
                         generator=torch.Generator().manual_seed(0), callback_on_step_end=on_step,
                         **asdict(FAST)).frames
            p.sync()
            marks.append(time.perf_counter())
            return video

        hook = model.register_forward_pre_hook(count, with_kwargs=True)
        try:
            est = p.estimate(passes * flop) * 1.1 + decode_est
            if not p.skip("job_fast_576p", est + 3):
                row, video = p.measure("job_fast_576p", job, warmup=0, repeats=1, est_s=est, keep_output=True,
                                       kind="job", variant="fast", backend=best,
                                       **p.shape_fields("576p", batch=1, passes=passes))
                steps = [round(b - a, 4) for a, b in zip(marks[:-2], marks[1:-1])]
                row.update(preset=asdict(FAST), steps_s=steps, decode_s=round(marks[-1] - marks[-2], 4),
                           transformer_calls=len(calls), transformer_samples=sum(calls),
                           output_shape=list(video.shape) if video is not None else None)
                if sum(calls) != passes:
                    p.doc["notes"].append(f"job_fast ran {sum(calls)} transformer samples, the schedule says {passes}")
                decode_est = row["decode_s"] or decode_est
                p.save()
        finally:
            hook.remove()
    except Exception as e:
        p.error("job_fast_576p", e)

    # 3. The VAE decode alone: 21 latent frames at 576p (then 480p, last).
    def decode_row(geometry):
        f, h, w = p.geometries[geometry]
        z = torch.randn(1, vae.config.z_dim, (f - 1) // 4 + 1, h // 8, w // 8, device=p.device, dtype=torch.float32,
                        generator=torch.Generator(device=p.device.type).manual_seed(0))
        est = decode_est * (h * w) / (height * width)
        if p.skip(f"vae_decode_{geometry}", est * 1.15 + 3):
            return
        row, out = p.measure(f"vae_decode_{geometry}", lambda: vae.decode(z, return_dict=False)[0], warmup=0,
                             repeats=1, est_s=est, keep_output=True, kind="vae_decode", variant="fp32",
                             latent_frames=z.shape[2], **p.shape_fields(geometry, batch=1))
        if out is not None:
            row["output_shape"] = list(out.shape)
            p.save()

    try:
        decode_row("576p")
    except Exception as e:
        p.error("vae_decode_576p", e)

    # 4. fp8 weight storage (layerwise casting, bf16 compute) against the bf16 pass above.
    try:
        if not p.skip("pass_fp8_576p", 2 * p.estimate(flop) * 1.2 + 10):
            p.doc["weights_gib_bf16"] = round(weights_on_device(model, p.device) / GIB, 3)
            report = apply_fast_paths(pipe, fp8_weights=True, device=p.device, compute_dtype=p.dtype)
            p.doc["fast_paths_fp8"] = report.as_dict()
            p.doc["weights_gib_fp8"] = round(weights_on_device(model, p.device) / GIB, 3)
            row, out = p.measure("pass_fp8_576p", lambda: model(**x)[0], warmup=1, repeats=1,
                                 est_s=p.estimate(flop) * 1.2, flop=flop, keep_output=True, kind="pass",
                                 variant="fp8", backend=best, **fields)
            if out is not None and reference is not None:
                out = out.float()
                row["rel_l2_vs_bf16"] = float((out - reference).norm() / reference.norm().clamp_min(1e-12))
                p.save()
    except Exception as e:
        p.error("pass_fp8_576p", e)
    reference = None

    try:
        decode_row("480p")
    except Exception as e:
        p.error("vae_decode_480p", e)


def phase_compile(p: Phase):
    from bench.run import core_pipeline
    from steadydancer.acceleration import apply_fast_paths

    model = p.build_transformer()
    flop = p.pass_flop("576p")
    x = p.inputs(model, "576p")
    fields = p.shape_fields("576p", batch=1, passes=1)
    best = p.measured_backend()
    eager = p.transformer_row("pass_best_576p")
    if eager and eager.get("backend") == best:
        p.doc["eager_from"] = "transformer.json pass_best_576p"
        p.doc["eager_min_s"] = eager["min_s"]
        p.rate = flop / eager["min_s"]
    else:  # no eager figure from the transformer phase: measure one here
        model.set_attention_backend(best)
        row, _ = p.measure("pass_eager_576p", lambda: model(**x)[0], warmup=1, repeats=1, est_s=p.estimate(flop),
                           flop=flop, kind="pass", variant="eager", backend=best, **fields)
        p.doc["eager_from"] = "pass_eager_576p"
        p.doc["eager_min_s"] = row["min_s"]
        if row["min_s"]:
            p.rate = flop / row["min_s"]
    report = apply_fast_paths(core_pipeline(model, None), attention_backend=best, compile_blocks=True,
                              device=p.device, compute_dtype=p.dtype,
                              compile_kwargs=dict(backend=p.compile_backend))
    p.doc["fast_paths"] = report.as_dict()
    p.doc["compile_backend"] = p.compile_backend
    compile_est = 30.0 if p.tiny else 60.0
    if not p.skip("pass_compiled_576p", compile_est + p.estimate(flop) + 3):
        p.measure("pass_compiled_576p", lambda: model(**x)[0], warmup=1, repeats=1, est_s=p.estimate(flop),
                  flop=flop, first_is_compile=True, kind="pass", variant="compiled", backend=best,
                  compile_backend=p.compile_backend, **fields)
    try:
        import torch._dynamo.utils as dynamo_utils

        p.doc["dynamo_counters"] = {k: dict(v) for k, v in dynamo_utils.counters.items()
                                    if k in ("stats", "recompiles", "graph_break")}
    except Exception as e:  # diagnostics only
        p.doc["notes"].append(f"no dynamo counters: {e!r}")


PHASE_FUNCTIONS = dict(env=phase_env, transformer=phase_transformer, job=phase_job, compile=phase_compile)


def run_phase(name: str, out_dir: Path, budget: float, tiny: bool, compile_backend: str | None = None) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        p = Phase(name, out_dir, budget, tiny, compile_backend)
    except Exception as e:  # torch or bench.run failed to import: write what we know
        (out_dir / f"{name}.json").write_text(json.dumps(dict(
            format=FORMAT, phase=name, tiny=tiny, started=_now(), rows=[], skipped=[], notes=[],
            errors=[dict(where="phase start", error=repr(e), traceback=traceback.format_exc()[-4000:])]), indent=1))
        traceback.print_exc()
        return 1
    try:
        PHASE_FUNCTIONS[name](p)
    except Exception as e:
        p.error(f"phase {name}", e)
    p.doc["finished"] = _now()
    p.save()
    p.log(f"done in {time.monotonic() - T0:.1f} s; {len(p.doc['errors'])} error(s)")
    return 1 if p.doc["errors"] else 0


# --------------------------------------------------------------------------------------------- summary
def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except Exception as e:
        return dict(missing=repr(e), rows=[], errors=[], skipped=[])


def _ratio(a, b, digits=3):
    return round(a / b, digits) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def summarize(out_dir: Path) -> dict:
    """The figures a reader (and BENCHMARKS.md) wants, derived from the phase files; writes summary.json."""
    docs = {name: _load(Path(out_dir) / f"{name}.json") for name in PHASES}
    rows = {r["name"]: r for name in PHASES for r in docs[name].get("rows", [])}

    def t(name):
        return rows.get(name, {}).get("min_s")

    env, tr, job = docs["env"], docs["transformer"], docs["job"]
    sched = tr.get("schedules") or job.get("schedules") or env.get("schedules") or {}
    s = dict(format=FORMAT, phase=SUMMARY, tiny=any(d.get("tiny") for d in docs.values()), written=_now(),
             hardware=next((d["hardware"] for d in docs.values() if d.get("hardware")), None),
             versions=dict(python=env.get("python"), torch=env.get("torch"), cuda=env.get("cuda"),
                           cudnn=env.get("cudnn"), **(env.get("versions") or {})),
             phases={name: dict(wall_s=d.get("wall_s"), finished=bool(d.get("finished")), missing=d.get("missing"),
                                errors=[f"{e.get('where')}: {str(e.get('error'))[:300]}" for e in d.get("errors", [])],
                                skipped=d.get("skipped", []),
                                running=[f"{r['name']}: {r['running']}" for r in d.get("rows", []) if r.get("running")])
                     for name, d in docs.items()},
             rows={name: {k: r.get(k) for k in ("kind", "variant", "tokens", "min_s", "median_s", "first_s", "n",
                                                 "tflops", "peak_memory_gib", "backend", "truncated")}
                   for name, r in rows.items()})
    f = {}
    f["matmul_ceiling_tflops"] = tr.get("matmul_ceiling_tflops")
    f["best_backend"] = tr.get("best_backend_used", tr.get("best_backend"))
    f["build_s"] = tr.get("build_s")
    f["pass"] = {g: dict(tokens=rows.get(f"pass_best_{g}", {}).get("tokens"), best_s=t(f"pass_best_{g}"),
                         plain_s=t(f"pass_plain_{g}"), best_tflops=rows.get(f"pass_best_{g}", {}).get("tflops"),
                         speedup_best_vs_plain=_ratio(t(f"pass_plain_{g}"), t(f"pass_best_{g}")),
                         peak_memory_gib=rows.get(f"pass_best_{g}", {}).get("peak_memory_gib"))
                 for g in ("576p", "480p")}
    f["guidance_step_576p"] = dict(
        sequential_2_s=t("step2_sequential_576p"), batched_2_s=t("step2_batched_576p"),
        batched_3_s=t("step3_batched_576p"),
        speedup_batched_vs_sequential=_ratio(t("step2_sequential_576p"), t("step2_batched_576p")),
        batched_2_over_2_passes=_ratio(t("step2_batched_576p"), 2 * t("pass_best_576p") if t("pass_best_576p") else None),
        batched_3_over_3_passes=_ratio(t("step3_batched_576p"), 3 * t("pass_best_576p") if t("pass_best_576p") else None),
        peak_memory_gib_batched_3=rows.get("step3_batched_576p", {}).get("peak_memory_gib"))
    f["vae_decode"] = {g: dict(s=t(f"vae_decode_{g}"), frames=rows.get(f"vae_decode_{g}", {}).get("frames"),
                               s_per_frame=_ratio(t(f"vae_decode_{g}"), rows.get(f"vae_decode_{g}", {}).get("frames"), 4),
                               peak_memory_gib=rows.get(f"vae_decode_{g}", {}).get("peak_memory_gib"))
                       for g in ("576p", "480p")}
    released = sched.get("released", {})
    by = released.get("steps_by_passes", {})
    step_s = {"2": t("step2_batched_576p"), "3": t("step3_batched_576p")}
    denoise = (sum(n * step_s[k] for k, n in by.items()) if by and all(step_s.get(k) for k in by) else None)
    f["released_preset_576p"] = dict(
        steps=released.get("steps"), passes=released.get("passes"), steps_by_passes=by, per_pass_s=t("pass_best_576p"),
        per_step_s=step_s, denoise_s=round(denoise, 2) if denoise else None,
        denoise_plus_decode_s=round(denoise + t("vae_decode_576p"), 2) if denoise and t("vae_decode_576p") else None,
        note="computed from the measured batched steps and decode; the 3 VAE encodes and the text/image encoders "
             "are not included")
    fast = rows.get("job_fast_576p", {})
    f["fast_preset_576p"] = dict(steps=sched.get("fast", {}).get("steps"), passes=sched.get("fast", {}).get("passes"),
                                 job_s=fast.get("min_s"), steps_s=fast.get("steps_s"), decode_s=fast.get("decode_s"),
                                 transformer_samples=fast.get("transformer_samples"),
                                 peak_memory_gib=fast.get("peak_memory_gib"),
                                 note="precomputed conditions: the 3 VAE encodes and the encoders are not included")
    f["fp8_576p"] = dict(bf16_s=t("pass_bf16_576p"), fp8_s=t("pass_fp8_576p"),
                         fp8_over_bf16=_ratio(t("pass_fp8_576p"), t("pass_bf16_576p")),
                         weights_gib_bf16=job.get("weights_gib_bf16"), weights_gib_fp8=job.get("weights_gib_fp8"),
                         rel_l2_vs_bf16=rows.get("pass_fp8_576p", {}).get("rel_l2_vs_bf16"))
    comp = docs["compile"]
    f["compile_576p"] = dict(backend=comp.get("compile_backend"), first_call_s=rows.get("pass_compiled_576p", {}).get("first_s"),
                             compiled_s=t("pass_compiled_576p"), eager_s=comp.get("eager_min_s"),
                             speedup_compiled_vs_eager=_ratio(comp.get("eager_min_s"), t("pass_compiled_576p")))
    s["figures"] = f
    path = Path(out_dir) / f"{SUMMARY}.json"
    path.write_text(json.dumps(s, indent=1, default=str))
    return s


def print_summary(s: dict):
    """A short table, printed last: the end of the output is what a device call's reply carries."""
    def num(v, w=9, d=3):
        return f"{v:{w}.{d}f}" if isinstance(v, (int, float)) else f"{'-':>{w}s}"

    hw = s.get("hardware") or {}
    print(f"\nSteadyDancer device check on {hw.get('name')} (tiny: {s['tiny']})")
    print(f"{'row':24s} {'min s':>9s} {'median s':>9s} {'first s':>9s} {'TFLOP/s':>8s} {'peak GiB':>8s}  backend")
    for name, r in s["rows"].items():
        print(f"{name[:24]:24s} {num(r['min_s'])} {num(r['median_s'])} {num(r['first_s'])} {num(r['tflops'], 8, 1)} "
              f"{num(r['peak_memory_gib'], 8, 2)}  {r.get('backend') or ''}{'  TRUNCATED' if r.get('truncated') else ''}")
    f = s["figures"]
    print(f"best backend {f['best_backend']}; matmul ceiling {f['matmul_ceiling_tflops']} TFLOP/s; build {f['build_s']} s")
    for g, v in f["pass"].items():
        print(f"pass {g}: {v['tokens']} tokens, best {v['best_s']} s ({v['best_tflops']} TFLOP/s), plain {v['plain_s']} s,"
              f" speed-up {v['speedup_best_vs_plain']}")
    print(f"guidance step 576p: {f['guidance_step_576p']}")
    print(f"released preset 576p: per step {f['released_preset_576p']['per_step_s']}, denoise "
          f"{f['released_preset_576p']['denoise_s']} s, + decode {f['released_preset_576p']['denoise_plus_decode_s']} s")
    print(f"fast preset 576p: job {f['fast_preset_576p']['job_s']} s, steps {f['fast_preset_576p']['steps_s']}, decode "
          f"{f['fast_preset_576p']['decode_s']} s, {f['fast_preset_576p']['transformer_samples']} transformer samples")
    print(f"vae decode: {f['vae_decode']}")
    print(f"fp8: {f['fp8_576p']}")
    print(f"compile: {f['compile_576p']}")
    for name, ph in s["phases"].items():
        if ph["errors"] or ph["skipped"] or ph["running"] or ph["missing"]:
            print(f"{name}: errors {ph['errors']} skipped {ph['skipped']} running {ph['running']} missing {ph['missing']}")


# --------------------------------------------------------------------------------------------- wheels, collect
# Always installed from the carried wheels: what the GPU image lacks or has in another version.
ALWAYS_INSTALL = {"diffusers", "transformers", "accelerate", "peft", "huggingface-hub", "safetensors", "tokenizers",
                  "httpx2", "httpcore2", "truststore", "ftfy", "wcwidth"}
# Otherwise only when the image lacks them or has an older version than the packages above need.
MIN_VERSIONS = {"numpy": "1.17", "regex": "2025.10.22", "pyyaml": "5.1", "packaging": "20.9", "tqdm": "4.60",
                "anyio": "4.10", "h11": "0.16", "idna": "3.18", "typing-extensions": "4.10", "psutil": "0",
                "requests": "0", "urllib3": "1.21.1", "certifi": "0", "charset-normalizer": "2", "pillow": "0"}


def select_wheels(whl_dir: Path) -> list[Path]:
    """The carried wheels to install (messages on stderr)."""
    import importlib.metadata as md

    def norm(n):
        return re.sub(r"[-_.]+", "-", n).lower()

    def vt(v):
        return tuple(int(x) for x in re.findall(r"\d+", v)[:4])

    chosen = []
    for path in sorted(Path(whl_dir).glob("*.whl")):
        name, version = path.name.split("-")[:2]
        n = norm(name)
        why = "always"
        if n not in ALWAYS_INSTALL:
            try:
                have = md.version(n)
            except md.PackageNotFoundError:
                why = "missing"
            else:
                if vt(have) >= vt(MIN_VERSIONS.get(n, "0")):
                    print(f"keep the image's {n} {have}", file=sys.stderr)
                    continue
                why = f"the image has {have}"
        print(f"install {n} {version} ({why})", file=sys.stderr)
        chosen.append(path)
    return chosen


def hardware_prefix(name: str) -> str:
    """'NVIDIA H200' -> 'h200'; 'NVIDIA A100-SXM4-80GB' -> 'a100'."""
    match = re.search(r"\b([a-z]{1,2}\d{2,4}[a-z]?)\b", name.lower())
    return match.group(1) if match else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def collect(src: Path, dest: Path, prefix: str | None = None, allow_tiny: bool = False) -> list[Path]:
    """Copies a device check's files from `src` into `dest` as <prefix>_<name>: the phase files, the summary and
    the log. Refuses tiny (CPU dry-run) results unless `allow_tiny`."""
    docs = {}
    for name in (*PHASES, SUMMARY):
        path = Path(src) / f"{name}.json"
        if path.exists():
            doc = json.loads(path.read_text())
            if doc.get("format") != FORMAT:
                raise ValueError(f"{path} is not a device-check file (format {doc.get('format')!r})")
            docs[name] = doc
    if not docs:
        raise FileNotFoundError(f"no device-check files in {src}")
    if any(d.get("tiny") for d in docs.values()) and not allow_tiny:
        raise ValueError(f"{src} holds TINY (CPU dry-run) results; they are not measurements to commit")
    if prefix is None:
        names = [d["hardware"]["name"] for d in docs.values() if d.get("hardware")]
        if not names:
            raise ValueError("no hardware named in the files; pass --prefix")
        prefix = hardware_prefix(names[0])
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name in docs:
        target = dest / f"{prefix}_{name}.json"
        shutil.copyfile(Path(src) / f"{name}.json", target)
        written.append(target)
    if (Path(src) / LOG).exists():
        target = dest / f"{prefix}_{LOG}"
        shutil.copyfile(Path(src) / LOG, target)
        written.append(target)
    return written


# --------------------------------------------------------------------------------------------- command line
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=[*PHASES, SUMMARY, "wheels", "collect"])
    parser.add_argument("path", type=Path, help="OUT_DIR (phases, summary), WHL_DIR (wheels) or SRC_DIR (collect)")
    parser.add_argument("--budget", type=float, default=120.0, help="soft time budget of the phase, seconds")
    parser.add_argument("--tiny", action="store_true", help="CPU dry run at tiny shapes")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (inductor; tiny: aot_eager)")
    parser.add_argument("--dest", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--prefix", default=None, help="collect: file prefix (default: from the GPU's name)")
    parser.add_argument("--allow-tiny", action="store_true", help="collect: accept TINY results (tests only)")
    args = parser.parse_args(argv)
    if args.command == "wheels":
        for path in select_wheels(args.path):
            print(path)
        return 0
    if args.command == "collect":
        for path in collect(args.path, args.dest, args.prefix, args.allow_tiny):
            print(f"wrote {path}")
        return 0
    if args.command == SUMMARY:
        print_summary(summarize(args.path))
        return 0
    return run_phase(args.command, args.path, args.budget, args.tiny, args.compile_backend)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no slow teardown (inductor's worker pool, 33 GB of CUDA tensors)
