"""The pose branch's cost (issue 17): time and operator count of one `encode_pose`, before and after the FAAU fix.

    python -m bench.pose_branch                              # 21x24x40 and 21x72x128, 2 threads, before and after
    python -m bench.pose_branch --grids 21x36x64 --repeats 3 --no-before

The branch is `PoseModulation` at the released sizes (16 pose channels, FAAU width 128 with 8 heads; the same in
every SteadyDancer size, so no transformer is built), random weights, frozen as the checkpoint loader leaves them
(``requires_grad=False``: PyTorch picks a different matmul path for frozen weights), fp32, batch 1. Grids are latent
(frames x h x w): 21x72x128 is 81 frames at 1024x576.

Variants: ``after`` is `steadydancer.models.pose_modulation` as it is; ``before`` swaps in the FAAU forward of
commit c852ce9 (kept below, for this comparison only), same weights. The timed calls alternate between the variants
(the order flipping every round), because other work on a shared machine slows single calls down; times are the
median and minimum of ``--repeats`` calls after ``--warmup`` untimed ones. Operators: the number of events
`torch.profiler` records (CPU) in one call, for the whole branch and for the FAAU alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/pose_branch.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

from steadydancer.models.pose_modulation import FrameAlignmentUnit, PoseModulation

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "cpu_pose_branch.json"


class FrameAlignmentUnitBefore(FrameAlignmentUnit):
    """The FAAU forward as of commit c852ce9: the projections run on a permuted (B, h*w, F, D) view (one small
    matrix product per pixel with frozen weights) and SDPA gets 5-D tensors (its math fallback)."""

    def forward(self, pose: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        batch, _, frames, height, width = pose.shape

        def project(conv, x):
            x = conv(x.transpose(1, 2).flatten(0, 1))  # (B*F, D, h, w)
            return x.unflatten(0, (batch, frames)).flatten(3).permute(0, 3, 1, 2)  # (B, h*w, F, D)

        query, context = project(self.proj_latent, latents), project(self.proj_pose, pose)

        def heads(x):
            return x.unflatten(-1, (self.num_heads, -1)).transpose(-2, -3)  # (B, h*w, heads, F, D/heads)

        out = F.scaled_dot_product_attention(heads(self.to_q(query)), heads(self.to_k(context)), heads(self.to_v(context)))
        out = self.to_out(out.transpose(-2, -3).flatten(-2))  # (B, h*w, F, D)
        out = out.permute(0, 2, 3, 1).flatten(0, 1).unflatten(2, (height, width))  # (B*F, D, h, w)
        out = self.norm1(out)
        out = self.norm2(out + self.ffn(out))
        out = self.proj_back(out)
        return out.unflatten(0, (batch, frames)).transpose(1, 2)


def build_variants(seed: int = 0) -> dict[str, PoseModulation]:
    torch.manual_seed(seed)
    after = PoseModulation().eval().requires_grad_(False)
    before = PoseModulation().eval().requires_grad_(False)
    before.align = FrameAlignmentUnitBefore().eval().requires_grad_(False)
    before.load_state_dict(after.state_dict())
    return {"before": before, "after": after}


class Labelled(nn.Module):
    """Runs `module` inside a profiler range named `label`, so its operators can be told apart in one profile."""

    def __init__(self, module: nn.Module, label: str):
        super().__init__()
        self.module, self.label = module, label

    def forward(self, *args):
        with record_function(self.label):
            return self.module(*args)


def count_operators(branch: PoseModulation, pose: torch.Tensor, noisy: torch.Tensor) -> tuple[int, int]:
    """Operators (torch.profiler CPU events) of one call of the branch, and of the FAAU within it. One profile:
    recording and walking 300k events (the old FAAU at 576p) takes minutes."""
    align = branch.align
    branch.align = Labelled(align, "FAAU")
    try:
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
            branch(pose, noisy)
    finally:
        branch.align = align
    events = [e for e in prof.events() if e.name != "FAAU"]  # the range itself is not an operator

    def in_faau(event) -> bool:
        while event is not None:
            if event.name == "FAAU":
                return True
            event = event.cpu_parent
        return False

    return len(events), sum(map(in_faau, events))


def measure_grid(variants: dict[str, PoseModulation], grid: tuple[int, int, int], warmup: int, repeats: int):
    frames, height, width = grid
    g = torch.Generator().manual_seed(0)
    pose, noisy = torch.randn(2, 1, 16, frames, height, width, generator=g).unbind(0)
    rows = {}
    outputs = {}
    with torch.no_grad():
        for name, module in variants.items():
            outputs[name] = module(pose, noisy).aligned  # untimed: the first warm-up call, and the output to compare
            for _ in range(warmup - 1):
                module(pose, noisy)
            operators, faau_operators = count_operators(module, pose, noisy)
            rows[name] = dict(operators=operators, faau_operators=faau_operators, times_s=[])
        order = list(variants)
        for round_ in range(repeats):
            for name in order if round_ % 2 == 0 else order[::-1]:
                module = variants[name]
                start = time.perf_counter()
                module(pose, noisy)
                rows[name]["times_s"].append(time.perf_counter() - start)
    for name, row in rows.items():
        row.update(median_s=statistics.median(row["times_s"]), min_s=min(row["times_s"]))
    if len(outputs) == 2:
        rows["after"]["max_abs_diff_vs_before"] = (outputs["after"] - outputs["before"]).abs().max().item()
    return rows


def parse_grid(text: str) -> tuple[int, int, int]:
    frames, height, width = (int(v) for v in text.lower().split("x"))
    return frames, height, width


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grids", default="21x24x40,21x72x128", help="comma-separated latent grids, frames x h x w")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per variant (at least 1)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--before", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure the FAAU of commit c852ce9 (default on)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    if args.warmup < 1:
        p.error("--warmup must be at least 1")
    torch.set_num_threads(args.threads)
    load = os.getloadavg()  # other work on the machine: the timings' noise

    variants = build_variants()
    if not args.before:
        del variants["before"]
    results = []
    for text in args.grids.split(","):
        grid = parse_grid(text)
        print(f"pose branch at {'x'.join(map(str, grid))} (frames x h x w)", flush=True)
        for variant, row in measure_grid(variants, grid, args.warmup, args.repeats).items():
            results.append(dict(grid=list(grid), variant=variant, **row))
            print(f"  {variant:6s} median {row['median_s']:8.3f} s   min {row['min_s']:8.3f} s   "
                  f"operators {row['operators']:7d} (FAAU {row['faau_operators']})", flush=True)

    print()
    print(table(results))
    summary = dict(
        environment=dict(python=platform.python_version(), torch=torch.__version__, cpu=platform.processor() or platform.machine(),
                         cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), load_average_at_start=load),
        args={k: str(v) for k, v in vars(args).items()}, rows=results,
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.json}")
    return summary


def table(rows: list[dict]) -> str:
    before = {tuple(r["grid"]): r for r in rows if r["variant"] == "before"}
    lines = ["| grid (F x h x w) | variant | median s | min s | operators | FAAU operators | speed-up (min) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        ref = before.get(tuple(r["grid"]))
        speedup = f"{ref['min_s'] / r['min_s']:.1f}x" if ref is not None and r is not ref else "-"
        lines.append(f"| {'x'.join(map(str, r['grid']))} | {r['variant']} | {r['median_s']:.3f} | {r['min_s']:.3f} | "
                     f"{r['operators']:,} | {r['faau_operators']:,} | {speedup} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
