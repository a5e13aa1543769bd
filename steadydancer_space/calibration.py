"""Measured GPU figures for the GPU-time estimate: what `bench/device_check.sh` measured, read from bench/results/.

The device check writes one JSON file per phase (``"format": "steadydancer-device-check/1"``), and
``python -m bench.device_phases collect`` copies them into bench/results/ as ``<gpu>_<phase>.json`` (h200_*.json on
the lent H200). This module reads every such file there (the ``format`` field identifies them, not the name),
leaves out CPU dry runs (``"tiny": true``), groups the rest by the hardware they were measured on, and gives:

- `Calibration.pass_seconds(tokens)`: one transformer pass (batch 1, the best attention backend, eager, bf16) by
  token count T. A pass is linear in T (projections, FFN, cross-attention) plus quadratic in T (self-attention
  scores and values), so the measured points are fitted with ``s(T) = a*T + b*T**2`` (least squares through the
  origin; exact through the two sizes the device check measures, 576p and 480p). With a single measured point, or
  when that fit gives a negative coefficient (noise between close points), the shape comes from the project's FLOP
  model instead: ``s(T) = k * (l*T + q*T**2)``, where ``q*T**2`` is the self-attention score/value FLOP and ``l*T``
  the rest (`steadydancer.flops.transformer_pass_flops` at the measured sizes, averaged over them), with ``k``
  fitted to the points. Inside the measured range this interpolates; outside it extrapolates along the same curve.
- `Calibration.vae_decode_seconds(frames, height, width)`: the Wan VAE decode, linear in output frames; its cost
  per frame and pixel is interpolated linearly in the pixel count between the measured sizes and held constant
  beyond them.
- `Calibration.step_factor(passes)`: a batched guidance step of n passes over n single passes, as measured
  (1.0 where not measured); `Calibration.denoise_seconds` adds up a schedule with it.
- `hardware`, `measured` (when), `sources` (file names), the raw points, and the fast preset's measured job.

`load_calibration()` returns None when no measured file exists (or none with a transformer pass). No torch import:
this runs in the Space's main process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from steadydancer.flops import transformer_pass_flops
from steadydancer.sizing import token_grid

FORMAT = "steadydancer-device-check/1"  # bench.device_phases.FORMAT
RESULTS_DIR = Path(__file__).resolve().parents[1] / "bench" / "results"


def pass_tokens(frames: int, height: int, width: int) -> int:
    """Tokens of one transformer pass: the latent frames plus the reference and pose-reference frames."""
    lat_f, grid_h, grid_w = token_grid(frames, height, width)
    return (lat_f + 2) * grid_h * grid_w


@dataclass(frozen=True)
class PassPoint:
    """One measured transformer pass (batch 1): the fastest timed call."""

    tokens: int
    frames: int
    height: int
    width: int
    seconds: float
    backend: str | None = None
    tflops: float | None = None


@dataclass(frozen=True)
class VaePoint:
    """One measured VAE decode of `frames` output frames at height x width."""

    frames: int
    height: int
    width: int
    seconds: float

    @property
    def seconds_per_frame(self) -> float:
        return self.seconds / self.frames

    @property
    def seconds_per_frame_pixel(self) -> float:
        return self.seconds / (self.frames * self.height * self.width)


@dataclass(frozen=True)
class Calibration:
    """Measured figures of one piece of hardware; see the module docstring for the models."""

    hardware: str
    measured: str | None
    sources: tuple[str, ...]
    pass_points: tuple[PassPoint, ...]
    a: float  # s(T) = a*T + b*T**2
    b: float
    fit: str  # "quadratic" (a, b fitted) or "flop-shape" (a, b from the FLOP model's shape and one scale)
    vae_points: tuple[VaePoint, ...] = ()
    step_seconds: dict[int, float] = field(default_factory=dict)  # batched step of n passes, at step_tokens
    step_tokens: int | None = None
    sequential_step_seconds: dict[int, float] = field(default_factory=dict)
    fast_job_seconds: float | None = None  # FAST preset, precomputed conditions, decode included
    fast_job_tokens: int | None = None
    compile_speedup: float | None = None  # eager / compiled pass at 576p, if measured
    fp8_over_bf16: float | None = None  # pass time with fp8 weight storage over bf16
    hardware_info: dict = field(default_factory=dict)
    tiny: bool = False

    # ------------------------------------------------------------------ transformer
    def pass_seconds(self, tokens: int) -> float:
        """Seconds of one transformer pass over `tokens` tokens (batch 1)."""
        if tokens <= 0:
            raise ValueError(f"tokens must be positive, got {tokens}")
        return self.a * tokens + self.b * tokens * tokens

    def pass_seconds_for(self, frames: int, height: int, width: int) -> float:
        """Seconds of one transformer pass at a generation size."""
        return self.pass_seconds(pass_tokens(frames, height, width))

    def step_factor(self, passes: int) -> float:
        """A batched step of `passes` passes over `passes` single passes, as measured at the same size."""
        if passes <= 1 or passes not in self.step_seconds or self.step_tokens is None:
            return 1.0
        return self.step_seconds[passes] / (passes * self.pass_seconds(self.step_tokens))

    def denoise_seconds(self, frames: int, height: int, width: int, passes_per_step: Iterable[int]) -> float:
        """The sampling loop: each step's passes, batched, at the measured batching factor."""
        one = self.pass_seconds_for(frames, height, width)
        return sum(n * one * self.step_factor(n) for n in passes_per_step)

    # ------------------------------------------------------------------ VAE
    def vae_seconds_per_frame_pixel(self, height: int, width: int) -> float | None:
        """Decode seconds per output frame and pixel at height x width (None when the decode was not measured)."""
        points = sorted({p.height * p.width: p for p in self.vae_points}.items())
        if not points:
            return None
        pixels = height * width
        if pixels <= points[0][0]:
            return points[0][1].seconds_per_frame_pixel
        if pixels >= points[-1][0]:
            return points[-1][1].seconds_per_frame_pixel
        for (x0, p0), (x1, p1) in zip(points, points[1:]):
            if x0 <= pixels <= x1:
                w = (pixels - x0) / (x1 - x0)
                return (1 - w) * p0.seconds_per_frame_pixel + w * p1.seconds_per_frame_pixel
        raise AssertionError("unreachable")

    def vae_decode_seconds_per_frame(self, height: int, width: int) -> float | None:
        per_pixel = self.vae_seconds_per_frame_pixel(height, width)
        return None if per_pixel is None else per_pixel * height * width

    def vae_decode_seconds(self, frames: int, height: int, width: int) -> float | None:
        per_frame = self.vae_decode_seconds_per_frame(height, width)
        return None if per_frame is None else per_frame * frames

    def describe(self) -> str:
        sizes = ", ".join(f"{p.tokens:,} tokens {p.seconds:.2f} s" for p in self.pass_points)
        return f"{self.hardware}: pass {sizes} ({self.fit} fit); measured {self.measured}"


# --------------------------------------------------------------------------------------------- reading
def _documents(results_dir: Path, include_tiny: bool) -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("rows"), list):
            continue
        if doc.get("tiny") and not include_tiny:
            continue
        if not (doc.get("hardware") or {}).get("name"):
            continue
        docs.append((path.name, doc))
    return docs


def _good(row: dict) -> bool:
    seconds = row.get("min_s")
    return isinstance(seconds, (int, float)) and seconds > 0 and not row.get("failed")


def _flop_shape(config: dict, points: list[PassPoint]) -> tuple[float, float]:
    """(l, q) with FLOP(T) ~ l*T + q*T**2 from the FLOP model at the measured sizes (averaged)."""
    ls, qs = [], []
    for p in points:
        flops = transformer_pass_flops(config, p.frames, p.height, p.width)
        t = flops["tokens"]
        qs.append(flops["self_attn_sdpa"] / t**2)
        ls.append((flops["total"] - flops["self_attn_sdpa"]) / t)
    return sum(ls) / len(ls), sum(qs) / len(qs)


def fit_pass_model(points: list[PassPoint], config: dict) -> tuple[float, float, str]:
    """(a, b, method) for s(T) = a*T + b*T**2; see the module docstring."""
    ts = [float(p.tokens) for p in points]
    ss = [p.seconds for p in points]
    if len(set(ts)) >= 2:
        scale = max(ts)  # fit in T / scale for conditioning
        x = [t / scale for t in ts]
        s11 = sum(v**2 for v in x)
        s12 = sum(v**3 for v in x)
        s22 = sum(v**4 for v in x)
        r1 = sum(s * v for s, v in zip(ss, x))
        r2 = sum(s * v**2 for s, v in zip(ss, x))
        det = s11 * s22 - s12**2
        if det > 0:
            a = (r1 * s22 - r2 * s12) / det / scale
            b = (s11 * r2 - s12 * r1) / det / scale**2
            if a >= 0 and b >= 0:
                return a, b, "quadratic"
    lin, quad = _flop_shape(config, points)
    f = [lin * t + quad * t * t for t in ts]
    k = sum(s * v for s, v in zip(ss, f)) / sum(v * v for v in f)
    return k * lin, k * quad, "flop-shape"


def _calibration(hardware: str, docs: list[tuple[str, dict]]) -> Calibration | None:
    docs = sorted(docs, key=lambda item: item[1].get("started") or "")
    latest: dict[tuple, dict] = {}  # the newest run's row for each (kind, variant, size, passes)
    for _, doc in docs:
        for row in doc["rows"]:
            if _good(row):
                key = (row.get("kind"), row.get("variant"), row.get("frames"), row.get("height"), row.get("width"),
                       row.get("passes"), row.get("batch"))
                latest[key] = row
    rows = list(latest.values())
    passes = {}
    for r in rows:
        if r.get("kind") == "pass" and r.get("variant") == "best" and r.get("batch", 1) == 1:
            point = PassPoint(tokens=int(r["tokens"]), frames=int(r["frames"]), height=int(r["height"]),
                              width=int(r["width"]), seconds=float(r["min_s"]), backend=r.get("backend"),
                              tflops=r.get("tflops"))
            passes[point.tokens] = point
    if not passes:
        return None
    points = sorted(passes.values(), key=lambda p: p.tokens)
    config = next((d["config"] for _, d in reversed(docs) if d.get("phase") == "transformer" and d.get("config")),
                  next((d["config"] for _, d in reversed(docs) if d.get("config")), None))
    a, b, method = fit_pass_model(points, config)
    vae = {}
    for r in rows:
        if r.get("kind") == "vae_decode":
            vae[(r["frames"], r["height"], r["width"])] = VaePoint(int(r["frames"]), int(r["height"]), int(r["width"]),
                                                                   float(r["min_s"]))
    steps, sequential = {}, {}
    step_rows = [r for r in rows if r.get("kind") == "step" and r.get("passes") and r.get("tokens")]
    step_tokens = max((int(r["tokens"]) for r in step_rows), default=None)  # the largest measured size
    for r in step_rows:
        if int(r["tokens"]) == step_tokens:
            (steps if r.get("variant") == "batched" else sequential)[int(r["passes"])] = float(r["min_s"])
    fast = next((r for r in rows if r.get("kind") == "job" and r.get("variant") == "fast"), None)

    def seconds(kind, variant, tokens):
        row = next((r for r in rows if r.get("kind") == kind and r.get("variant") == variant
                    and r.get("tokens") == tokens), None)
        return float(row["min_s"]) if row else None

    top = points[-1].tokens
    compiled, bf16, fp8 = seconds("pass", "compiled", top), seconds("pass", "bf16", top), seconds("pass", "fp8", top)
    info = next((d["hardware"] for _, d in reversed(docs)), {})
    return Calibration(
        hardware=hardware, measured=docs[-1][1].get("started"), sources=tuple(name for name, _ in docs),
        pass_points=tuple(points), a=a, b=b, fit=method, vae_points=tuple(vae.values()), step_seconds=steps,
        step_tokens=step_tokens, sequential_step_seconds=sequential,
        fast_job_seconds=float(fast["min_s"]) if fast else None, fast_job_tokens=fast.get("tokens") if fast else None,
        compile_speedup=passes[top].seconds / compiled if compiled else None,
        fp8_over_bf16=fp8 / bf16 if fp8 and bf16 else None, hardware_info=dict(info),
        tiny=any(d.get("tiny") for _, d in docs),
    )


def load_calibrations(results_dir: str | Path | None = None, *, include_tiny: bool = False) -> dict[str, Calibration]:
    """Every hardware with measured passes in `results_dir` (default: the repository's bench/results/)."""
    results_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    if not results_dir.is_dir():
        return {}
    groups: dict[str, list[tuple[str, dict]]] = {}
    for name, doc in _documents(results_dir, include_tiny):
        groups.setdefault(doc["hardware"]["name"], []).append((name, doc))
    out = {}
    for hardware, docs in groups.items():
        calibration = _calibration(hardware, docs)
        if calibration is not None:
            out[hardware] = calibration
    return out


def load_calibration(results_dir: str | Path | None = None, *, hardware: str | None = None,
                     include_tiny: bool = False) -> Calibration | None:
    """The measured figures of `hardware` (a case-insensitive part of its name, e.g. "h200"), or of the most
    recently measured hardware when None; None when nothing measured is there."""
    found = load_calibrations(results_dir, include_tiny=include_tiny)
    if hardware is not None:
        found = {k: v for k, v in found.items() if hardware.lower() in k.lower()}
    if not found:
        return None
    return max(found.values(), key=lambda c: c.measured or "")
