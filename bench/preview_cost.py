"""What the live preview costs per step, next to a 14B transformer pass.

    python -m bench.preview_cost        # CPU, 576p latent grid; JSON to bench/results/cpu_preview_cost.json
    python -m bench.preview_cost --device cuda --json bench/results/h200_preview_cost.json

Times `steadydancer.preview.preview_strip` on a (1, 16, 21, 72, 128) latent (81 frames at 576x1024) from the step's
latents, velocity and sigma (x0 = x_t - sigma v on the chosen frames, the 16 -> 3 projection, uint8, the copy of the
strip to the CPU), and from a ready x0 (what the pipeline's "denoised" callback tensor will give); for contrast, the
projection of all 21 frames. FLOP are counted like `steadydancer.flops` counts the transformer's, but with every
elementwise operation included, so the preview's side is an overestimate, and set against one 14B pass (a step is
1 pass in the fast preset, 2-3 at the released settings).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/preview_cost.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from steadydancer.flops import CONFIG_14B, transformer_pass_flops
from steadydancer.preview import preview_frame_indices, preview_strip

LATENT_SHAPE = (1, 16, 21, 72, 128)  # 81 x 576 x 1024 through the 4x8x8 VAE
PIXEL_SHAPE = (81, 576, 1024)
DEFAULT_JSON = Path("bench/results/cpu_preview_cost.json")  # run from the repository root


def preview_flops(channels: int, frames: int, height: int, width: int, from_velocity: bool) -> dict[str, float]:
    """FLOP of a preview of `frames` latent frames of (channels, height, width), all arithmetic counted."""
    voxels = frames * height * width
    flops = {
        "x0": 2.0 * voxels * channels if from_velocity else 0.0,  # x_t - sigma * v: one multiply, one subtract
        "projection": voxels * 3 * (2.0 * channels + 1),  # 16 multiply-adds and the bias per colour
        "to_uint8": voxels * 3 * 4.0,  # + 1, * 127.5, clamp, round
    }
    flops["total"] = sum(flops.values())
    return flops


def _time(fn, device: torch.device, warmup: int, repeats: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()  # ends with the strip on the CPU, which synchronises
        times.append(time.perf_counter() - start)
    return dict(median_ms=1e3 * statistics.median(times), min_ms=1e3 * min(times))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="the latents' dtype (the pipeline keeps them in float32; the velocity comes in the model's)")
    p.add_argument("--max-frames", type=int, default=4)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    from bench.run import environment

    g = torch.Generator().manual_seed(0)
    latents = torch.randn(LATENT_SHAPE, generator=g).to(device, dtype)
    velocity = torch.randn(LATENT_SHAPE, generator=g).to(device, dtype)
    x0 = latents - 0.5 * velocity
    _, channels, num_frames, height, width = LATENT_SHAPE
    shown = len(preview_frame_indices(num_frames, args.max_frames))

    calls = {
        "strip_from_velocity": lambda: preview_strip(latents=latents, velocity=velocity, sigma=0.5,
                                                     max_frames=args.max_frames),
        "strip_from_x0": lambda: preview_strip(x0, max_frames=args.max_frames),
        "all_frames_from_x0": lambda: preview_strip(x0, max_frames=num_frames),
    }
    timings = {name: _time(call, device, args.warmup, args.repeats) for name, call in calls.items()}
    flops = {
        "strip_from_velocity": preview_flops(channels, shown, height, width, from_velocity=True),
        "strip_from_x0": preview_flops(channels, shown, height, width, from_velocity=False),
        "all_frames_from_x0": preview_flops(channels, num_frames, height, width, from_velocity=False),
    }
    pass_flops = transformer_pass_flops(CONFIG_14B, *PIXEL_SHAPE)["total"]
    rows = []
    for name in timings:
        rows.append(dict(variant=name, frames_shown=shown if name != "all_frames_from_x0" else num_frames,
                         **timings[name], flops=flops[name]["total"], flops_detail=flops[name],
                         share_of_14b_pass=flops[name]["total"] / pass_flops))
    strip = preview_strip(x0, max_frames=args.max_frames)
    result = dict(
        environment=environment(device),
        args={k: str(v) for k, v in vars(args).items()},
        latent_shape=list(LATENT_SHAPE),
        pixel_shape=list(PIXEL_SHAPE),
        strip_shape=list(strip.shape),
        strip_bytes=int(strip.nbytes),
        latent_bytes_fp32=int(latents[0].numel() * 4),
        flop_14b_pass=pass_flops,
        goal="preview FLOP < 1 % of one 14B pass",
        rows=rows,
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    for row in rows:
        print(f"{row['variant']:22s} {row['median_ms']:8.2f} ms (min {row['min_ms']:.2f})  {row['flops']:.3e} FLOP"
              f"  = {row['share_of_14b_pass']:.2e} of a 14B pass")
    print(f"14B pass at 81x576x1024: {pass_flops:.3e} FLOP; strip {tuple(strip.shape)}; wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
