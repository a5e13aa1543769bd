"""Peak memory of a long video: a 481-frame (30 s) windowed job against an 81-frame one, on the tiny
random components. Not a timed test; a measurement to rerun when the long-video path changes.

    python -m bench.long_video_memory [--size 128] [--steps 2] [--json bench/results/cpu_long_video_memory.json]

Each case runs in its own process: `prepare_poses` on a synthetic 16 fps keypoint clip (detection is not what is
measured), then `generate_long_video` with 81-frame windows, pose inputs rendered per window
(`PreparedPoses.window`) and each window handed to a writer callback that keeps nothing (as a file writer would).
Reported: the resident set's high-water mark (`ru_maxrss`) after loading and at the end, and the ratio of the two
cases (goal: at most 1.5). The 81-frame case is the same code path with one window.

The 81-frame process also measures, on the tiny model, the continuation choice: how far the last latent frame of a
window is from the latent of its decoded last frame encoded alone (what the next window's I2V condition must be),
and the pixel error of one decode(encode(frame)) round trip and of six in a row (one per join of a 30 s video).
Tiny random weights make the absolute values meaningless for the real VAE; see BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/long_video_memory.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CASES = {"frames_81": 81, "frames_481": 481}
LIMIT_RATIO = 1.5


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _continuation(pipe, latents, height: int, width: int) -> dict:
    """Latent reuse against re-encoding, and the pixel round trip, on `latents` (1, 16, F, h, w) of a window."""
    import torch

    with torch.no_grad():
        pixels = pipe.decode_latents(latents).clamp(-1, 1)  # (1, 3, 4n+1, H, W)
        last = pixels[:, :, -1:]  # (1, 3, 1, H, W)
        encoded = pipe.encode_video(last)  # (1, 16, 1, h, w): the next window's first-frame latent
        reused = latents[:, :, -1:]
        round_trip = pipe.decode_latents(encoded).clamp(-1, 1)
        frame = last
        for _ in range(6):
            frame = pipe.decode_latents(pipe.encode_video(frame)).clamp(-1, 1)
    rel = float((reused - encoded).norm() / encoded.norm())
    return dict(last_latent_vs_reencoded_relative_l2=round(rel, 4),
                round_trip_pixel_mean_abs=round(float((round_trip - last).abs().mean()), 4),
                six_round_trips_pixel_mean_abs=round(float((frame - last).abs().mean()), 4),
                pixel_range="[-1, 1]")


def run_case(frames: int, size: int, steps: int) -> dict:
    import numpy as np
    import torch

    from steadydancer.assembly import load_pipeline
    from steadydancer.defaults import SamplerSettings
    from steadydancer.long_video import generate_long_video
    from steadydancer.pose import PoseSequence, SyntheticPoseDetector, prepare_poses
    from steadydancer.tiny import build_tiny_checkpoints

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = load_pipeline(*build_tiny_checkpoints(tmp), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    synthetic = SyntheticPoseDetector(animate=True)
    driving = PoseSequence([synthetic(np.full((90, 160, 3), 40 + (i * 37) % 200, np.uint8)) for i in range(frames)],
                           160, 90, 16.0)
    reference = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    prepared = prepare_poses(reference, driving, detector=synthetic, num_frames=frames, width=size, height=size)
    after_setup = _peak_bytes()

    written, windows, last = [0], [], {}
    decode = pipe.decode_latents

    def keep_last(latents):  # the bench's own hook: the last window's latents for the continuation measurement
        last["latents"] = latents
        return decode(latents)

    pipe.decode_latents = keep_last
    start = time.perf_counter()
    out = generate_long_video(
        pipe, reference, prepared, frames, prompt="a person dancing",
        settings=SamplerSettings(num_inference_steps=steps, guidance_scale=1.0, pose_guidance_scale=0.0), seed=0,
        noise_device="cpu",
        on_window=lambda i, f: (written.__setitem__(0, written[0] + len(f)), windows.append(i)))
    seconds = time.perf_counter() - start
    del pipe.decode_latents
    result = dict(frames=frames, written_frames=written[0], windows=len(windows), generation_hw=[size, size],
                  steps=steps, peak_after_setup_bytes=after_setup, peak_bytes=_peak_bytes(),
                  seconds=round(seconds, 1), cancelled=out.cancelled,
                  all_pose_inputs_at_once_bytes=2 * frames * 3 * size * size * 4)
    if frames == 81:
        result["continuation"] = _continuation(pipe, last["latents"], size, size)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.long_video_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="generation height and width (multiple of 16)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("bench/results/cpu_long_video_memory.json"))
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)  # internal: one case, JSON out
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(CASES[args.case], args.size, args.steps)))
        return 0

    results = {}
    for name in CASES:
        out = subprocess.run([sys.executable, "-m", "bench.long_video_memory", "--case", name, "--size",
                              str(args.size), "--steps", str(args.steps)],
                             check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(name, results[name], flush=True)
    ratio = results["frames_481"]["peak_bytes"] / results["frames_81"]["peak_bytes"]
    import torch

    report = dict(environment=dict(python=platform.python_version(), torch=torch.__version__, cpu=platform.machine()),
                  cases=results, peak_ratio_481_over_81=round(ratio, 3), limit_ratio=LIMIT_RATIO,
                  within_limit=ratio <= LIMIT_RATIO)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"481 / 81 frames peak RSS: {ratio:.2f} (limit {LIMIT_RATIO}) -> {args.json}")
    return 0 if report["within_limit"] else 1


if __name__ == "__main__":
    sys.exit(main())
