"""Peak memory of preparing the model's pose inputs: 81 frames at 576p, a 4096x4096 reference photo
against a 1024x576 one. Not a timed test; a measurement to rerun when the pose path changes.

    python -m bench.pose_memory [--frames 81] [--json bench/results/cpu_pose_memory.json]

The released chain resizes every pose frame to the reference photo's own size before the generation size, so a
large photo could cost a video at its size (81 x 4096 x 4096 x 3 floats: 16 GB). `prepare_poses` +
`PreparedPoses.model_inputs()` do it frame by frame. Each case runs in its own process: `prepare_poses` on a
synthetic 16 fps keypoint clip (detection is not what is measured), then `model_inputs()`, then the pipeline's
own pixel steps on those inputs (reference and pose image for the image encoder, the reference resize, the pose
videos as the VAE would get them; no VAE). Reported: the resident set's high-water mark (`ru_maxrss`) after the
imports and at the end, and the difference between the cases. Both generation sizes hold 589,824 pixels
(768x768 and 576x1024), so the kept tensors are the same size and the difference is what the large photo costs.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/pose_memory.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CASES = {"reference_1024x576": (576, 1024), "reference_4096x4096": (4096, 4096)}
LIMIT_BYTES = 1.5 * 2**30  # allowed above the 1024x576 case


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def run_case(height: int, width: int, frames: int) -> dict:
    """One case, in this process; returns its measurements."""
    import numpy as np
    import torch

    from steadydancer.pixels import image_encoder_pixels, pose_video_pixels, resize, to_pixels
    from steadydancer.pose import PoseSequence, SyntheticPoseDetector, prepare_poses

    torch.set_num_threads(1)
    synthetic = SyntheticPoseDetector(animate=True)
    driving = PoseSequence([synthetic(np.full((180, 320, 3), 40 + (i * 37) % 200, np.uint8)) for i in range(frames)],
                           320, 180, 16.0)
    reference = np.empty((height, width, 3), np.uint8)  # a smooth photo, built without full-size temporaries
    reference[..., 0] = (np.arange(width) * 255 // width).astype(np.uint8)[None, :]
    reference[..., 1] = (np.arange(height) * 255 // height).astype(np.uint8)[:, None]
    reference[..., 2] = 128
    after_imports = _peak_bytes()

    start = time.perf_counter()
    prepared = prepare_poses(reference, driving, detector=synthetic, num_frames=frames)
    inputs = prepared.model_inputs()
    prepare_s = time.perf_counter() - start

    # The pipeline's pixel steps on those inputs (what `prepare_conditions` and `image_encoder_input` do), no VAE.
    h, w = prepared.height, prepared.width
    clip = image_encoder_pixels([to_pixels(reference), to_pixels(inputs.pose_image)],
                                (224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    reference_pixels = resize(to_pixels(reference)[None], h, w)
    videos = [pose_video_pixels(v, frames, reference.shape[:2], h, w)
              for v in (inputs.pose_video, inputs.negative_pose_video)]
    total_s = time.perf_counter() - start
    kept = sum(t.numel() * t.element_size() for t in (inputs.pose_video, inputs.negative_pose_video))
    return dict(reference_hw=[height, width], generation_hw=[h, w], frames=frames,
                peak_after_imports_bytes=after_imports, peak_bytes=_peak_bytes(),
                pose_pixels_kept_bytes=kept,
                display_frames_bytes=int(prepared.positive.nbytes + prepared.negative.nbytes),
                pose_image_bytes=int(inputs.pose_image.nbytes), prepare_and_model_inputs_s=round(prepare_s, 1),
                with_pipeline_pixel_steps_s=round(total_s, 1),
                checks=[float(clip.abs().max()), float(reference_pixels.abs().max()), len(videos)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pose_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--json", type=Path, default=Path("bench/results/cpu_pose_memory.json"))
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)  # internal: one case, JSON out
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(*CASES[args.case], args.frames)))
        return 0

    results = {}
    for name in CASES:
        out = subprocess.run([sys.executable, "-m", "bench.pose_memory", "--case", name, "--frames", str(args.frames)],
                             check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(name, results[name], flush=True)
    small, large = results["reference_1024x576"], results["reference_4096x4096"]
    above = large["peak_bytes"] - small["peak_bytes"]
    import torch

    report = dict(
        environment=dict(python=platform.python_version(), torch=torch.__version__, cpu=platform.machine()),
        cases=results, large_above_small_bytes=above, limit_bytes=int(LIMIT_BYTES), within_limit=above <= LIMIT_BYTES,
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"4096x4096 above 1024x576: {above / 2**30:.2f} GiB (limit {LIMIT_BYTES / 2**30:.1f} GiB) -> {args.json}")
    return 0 if report["within_limit"] else 1


if __name__ == "__main__":
    sys.exit(main())
