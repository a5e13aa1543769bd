"""The pose branch's cost: time and operator count of one `encode_pose`.

    python -m bench.pose_branch                              # 21x24x40 and 21x72x128, 2 threads
    python -m bench.pose_branch --grids 21x36x64 --repeats 3

The branch is `PoseModulation` at the released sizes (16 pose channels, FAAU width 128 with 8 heads; the same in
every SteadyDancer size, so no transformer is built), random weights, frozen as the checkpoint loader leaves them
(``requires_grad=False``: PyTorch picks a different matmul path for frozen weights), fp32, batch 1. Grids are latent
(frames x h x w): 21x72x128 is 81 frames at 1024x576.

The branch is `steadydancer.models.pose_modulation` as it is. Times are the median and minimum of ``--repeats`` calls
after ``--warmup`` untimed ones (the minimum is the steadier figure on a shared machine). Operators: the number of
events `torch.profiler` records (CPU) in one call, for the whole branch and for the FAAU alone: the FAAU attends
across the frames of each pixel, and a per-pixel formulation shows up as hundreds of thousands of operators.
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
from torch.profiler import ProfilerActivity, profile, record_function

from steadydancer.models.pose_modulation import PoseModulation

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "cpu_pose_branch.json"


def build_branch(seed: int = 0) -> PoseModulation:
    """The branch with random weights, frozen as the checkpoint loader leaves them."""
    torch.manual_seed(seed)
    return PoseModulation().eval().requires_grad_(False)


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
    recording and walking a per-pixel FAAU's 300k events at 576p takes minutes."""
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


def measure_grid(branch: PoseModulation, grid: tuple[int, int, int], warmup: int, repeats: int) -> dict:
    frames, height, width = grid
    g = torch.Generator().manual_seed(0)
    pose, noisy = torch.randn(2, 1, 16, frames, height, width, generator=g).unbind(0)
    times = []
    with torch.no_grad():
        for _ in range(warmup):
            branch(pose, noisy)
        operators, faau_operators = count_operators(branch, pose, noisy)
        for _ in range(repeats):
            start = time.perf_counter()
            branch(pose, noisy)
            times.append(time.perf_counter() - start)
    return dict(operators=operators, faau_operators=faau_operators, times_s=times, median_s=statistics.median(times),
                min_s=min(times))


def parse_grid(text: str) -> tuple[int, int, int]:
    frames, height, width = (int(v) for v in text.lower().split("x"))
    return frames, height, width


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grids", default="21x24x40,21x72x128", help="comma-separated latent grids, frames x h x w")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1, help="untimed calls (at least 1)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    if args.warmup < 1:
        p.error("--warmup must be at least 1")
    torch.set_num_threads(args.threads)
    load = os.getloadavg()  # other work on the machine: the timings' noise

    branch = build_branch()
    results = []
    for text in args.grids.split(","):
        grid = parse_grid(text)
        print(f"pose branch at {'x'.join(map(str, grid))} (frames x h x w)", flush=True)
        row = measure_grid(branch, grid, args.warmup, args.repeats)
        results.append(dict(grid=list(grid), **row))
        print(f"  median {row['median_s']:8.3f} s   min {row['min_s']:8.3f} s   "
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
    lines = ["| grid (F x h x w) | median s | min s | operators | FAAU operators |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {'x'.join(map(str, r['grid']))} | {r['median_s']:.3f} | {r['min_s']:.3f} | "
                     f"{r['operators']:,} | {r['faau_operators']:,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
