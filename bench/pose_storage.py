"""How much the released code's lossy storage of the pose frames changes what the model gets.

    python -m bench.pose_storage [--frames 9] [--json bench/results/cpu_pose_storage.json]

The released code draws each pose frame on the 2x canvas, stores the frames (a video, then JPEG files), reads them
back and resizes them (PIL bicubic to the reference photo's size, then torch bicubic to the generation size). The
library runs the same chain on the canvases themselves, without the storage. This measures, against that lossless
chain, at 576p with a 1080x1920 portrait reference:

- ``jpeg``: the canvases stored as JPEG (quality 95, 4:2:0: the quantisation tables of the released fixture's files;
  what ``prepare_poses(jpeg_quality=95)``, part of the "released" preset, does);
- ``h264_jpeg``: first through H.264 (libx264, yuv420p, CRF 23, x264's default; the released video settings are not
  known), then JPEG;
- ``shortcut``: the library's old path, the canvas resized once (OpenCV bicubic) to the generation size, 8-bit.

For each: the pose pixels' max and mean absolute difference (in [-1, 1] units) and the pose latents' max absolute
difference through a narrow random Wan VAE (the conditioning fixture's when present, else the tiny test VAE).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python bench/pose_storage.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import torch

REFERENCE_HW = (1920, 1080)
FIXTURES = Path(os.environ.get("STEADYDANCER_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures"))
FIXTURE_VAE = FIXTURES / "conditioning_tiny" / "vae_wan_naming.safetensors"


def _vae():
    from diffusers import AutoencoderKLWan

    if FIXTURE_VAE.is_file():
        from steadydancer.verify import load_wan_vae

        return load_wan_vae(FIXTURE_VAE, base_dim=8), FIXTURE_VAE.parent.name
    torch.manual_seed(1)
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    return vae.eval(), "tiny test VAE"


def _h264(canvases: list[np.ndarray]) -> list[np.ndarray]:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=16, options={"crf": "23"})
        stream.height, stream.width = canvases[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for canvas in canvases:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def main(argv: list[str] | None = None) -> int:
    from steadydancer.pixels import jpeg_roundtrip, pose_frame_pixels, to_pixels
    from steadydancer.pose import SyntheticPoseDetector, draw_pose
    from steadydancer.sizing import generation_size

    parser = argparse.ArgumentParser(prog="python -m bench.pose_storage", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--json", type=Path, default=Path("bench/results/cpu_pose_storage.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    height, width = generation_size(*REFERENCE_HW)
    synthetic = SyntheticPoseDetector(animate=True)
    poses = [synthetic(np.full((height, width, 3), 25 * i % 256, np.uint8)) for i in range(args.frames)]
    canvases = [draw_pose(p, 2 * height, 2 * width) for p in poses]

    def chain(frames):  # (3, N, h, w): PIL bicubic to the reference's size, then torch bicubic
        return torch.stack([pose_frame_pixels(f, REFERENCE_HW, height, width) for f in frames], dim=1)

    variants = {
        "lossless": chain(canvases),
        "jpeg": chain([jpeg_roundtrip(c, 95) for c in canvases]),
        "h264_jpeg": chain([jpeg_roundtrip(c, 95) for c in _h264(canvases)]),
        "shortcut": torch.stack([to_pixels(cv2.resize(c, (width, height), interpolation=cv2.INTER_CUBIC))
                                 for c in canvases], dim=1),
    }
    vae, vae_name = _vae()
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        latents = {k: (vae.encode(v[None]).latent_dist.mode() - mean) / std for k, v in variants.items()}
    def compare(name, base):
        diff = (variants[name] - variants[base]).abs()
        latent_diff = (latents[name] - latents[base]).abs()
        return dict(pixels_max_abs=round(float(diff.max()), 4), pixels_mean_abs=round(float(diff.mean()), 5),
                    latents_max_abs=round(float(latent_diff.max()), 4),
                    latents_mean_abs=round(float(latent_diff.mean()), 5))

    rows = {name: compare(name, "lossless") for name in ("jpeg", "h264_jpeg", "shortcut")}
    # Would emulating the JPEG step alone get closer to a video-then-JPEG storage than the lossless chain does?
    rows["jpeg_against_h264_jpeg"] = compare("jpeg", "h264_jpeg")
    for name, row in rows.items():
        print(name, row, flush=True)
    report = dict(reference_hw=list(REFERENCE_HW), generation_hw=[height, width], frames=args.frames, vae=vae_name,
                  against="lossless chain (the library's default), unless the name says otherwise", variants=rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
