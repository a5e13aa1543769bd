"""`python -m steadydancer.verify` on conditioning fixtures: the released one, and one of another size, frame count,
seed and image-encoder size built here from the released recipe (written out independently of the library)."""

import json
import shutil

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
from safetensors.torch import load_file, save_file

from helpers.paths import shared_fixture
from steadydancer import verify
from steadydancer.pose import SyntheticPoseDetector, draw_pose

pytestmark = pytest.mark.slow  # the verify command runs the tiny VAE over whole fixtures

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def run_verify(directory, capsys) -> tuple[int, dict[str, str]]:
    status = verify.main([str(directory)])
    lines = capsys.readouterr().out.strip().splitlines()
    return status, {line.split()[0]: line for line in lines}


def test_released_conditioning_fixture_passes(capsys):
    status, lines = run_verify(shared_fixture("conditioning_tiny"), capsys)
    assert status == 0, lines
    for name in ("conditioning", "clip_input", "noise", "decode"):
        assert lines[name].startswith(f"{name} max_abs_err=") and lines[name].endswith("OK")
    assert lines["prompt_clean"] == "prompt_clean equal=yes OK"


def to_tensor(image: PIL.Image.Image) -> torch.Tensor:
    return (torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255) - 0.5) / 0.5


def bicubic(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x[None], size=size, mode="bicubic", align_corners=False)[0]


def build_fixture(directory, vae_file):
    """A conditioning fixture: 140x90 reference (96x48 at a 96x64 budget), 5 of 6 stored frames, seed 7, a 112-pixel
    image-encoder input."""
    directory.mkdir()
    shutil.copy(vae_file, directory / "vae_wan_naming.safetensors")
    vae = AutoencoderKLWan(base_dim=8)
    vae.load_state_dict(convert_wan_vae_to_diffusers(load_file(str(vae_file))))
    vae.eval()
    mean = torch.tensor(vae.config.latents_mean).view(-1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(-1, 1, 1, 1)

    def latent(video):  # (3, F, H, W) -> normalised (16, f, h, w)
        with torch.no_grad():
            return (vae.encode(video[None]).latent_dist.mode()[0] - mean) / std

    size, frames, seed, clip = (96, 48), 5, 7, 112
    yy, xx = np.mgrid[0:140, 0:90]
    reference = PIL.Image.fromarray(np.stack([xx * 2, yy, 255 - yy], -1).astype(np.uint8))
    reference.save(directory / "reference.png")
    synth = SyntheticPoseDetector(animate=True)
    for folder, scale in (("pose", 1.0), ("negative_pose", 0.8)):
        (directory / folder).mkdir()
        for i in range(frames + 1):
            pose = synth(np.full((96, 48, 3), 30 * i, np.uint8))
            pose.body = 0.5 + (pose.body - 0.5) * scale
            PIL.Image.fromarray(draw_pose(pose, 2 * size[0], 2 * size[1])).save(directory / folder / f"{i:04d}.jpg",
                                                                                 quality=95)

    def pose_video(folder):
        stored = [PIL.Image.open(p).convert("RGB") for p in sorted((directory / folder).glob("*.jpg"))[:frames]]
        at_reference = [to_tensor(im.resize(reference.size, PIL.Image.BICUBIC)) for im in stored]
        return torch.stack([bicubic(x, size) for x in at_reference], 1), at_reference[0]

    pose, first_pose = pose_video("pose")
    negative, _ = pose_video("negative_pose")
    ref = to_tensor(reference)
    first = torch.cat([bicubic(ref, size)[:, None], torch.zeros(3, frames - 1, *size)], 1)
    y_latent, pose_latent = latent(first), latent(pose)
    mask = torch.zeros(4, *y_latent.shape[1:])
    mask[:, 0] = 1
    decode_latent = torch.randn(y_latent.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        decoded = vae.decode((decode_latent * std + mean)[None]).sample[0].clamp(-1, 1)

    def clip_input(x):
        return (F.interpolate(x[None], size=(clip, clip), mode="bicubic", align_corners=False) * 0.5 + 0.5
                - CLIP_MEAN) / CLIP_STD

    save_file({
        "noise": torch.randn(y_latent.shape, generator=torch.Generator("cpu").manual_seed(seed)),
        "y": torch.cat([mask, y_latent]), "condition": pose_latent, "condition_null": latent(negative),
        "ref_x": torch.cat([y_latent[:, :1], torch.ones(4, 1, *y_latent.shape[2:]), y_latent[:, :1]]),
        "ref_c": torch.cat([pose_latent[:, :1], torch.zeros(4, 1, *y_latent.shape[2:]), pose_latent[:, :1]]),
        "clip_in_x": clip_input(ref), "clip_in_c": clip_input(first_pose),
        "decode_latent": decode_latent, "decode_pixels": decoded,
    }, str(directory / "expected.safetensors"))
    fixture = {"kind": "conditioning", "num_frames": frames, "max_area": 96 * 64, "size_hw": list(size), "seed": seed,
               "noise_generator_device": "cpu", "clip_input_size": clip,
               "vae": {"class": "AutoencoderKLWan", "base_dim": 8, "weights": "vae_wan_naming.safetensors"},
               "prompts": [{"raw": " Two  people\tdancing &amp;amp; laughing ",
                            "cleaned": "Two people dancing & laughing"}]}
    (directory / "fixture.json").write_text(json.dumps(fixture))
    return fixture


def test_every_number_comes_from_the_fixture(tmp_path, capsys):
    vae_file = shared_fixture("conditioning_tiny") / "vae_wan_naming.safetensors"
    directory = tmp_path / "other_size"
    fixture = build_fixture(directory, vae_file)
    status, lines = run_verify(directory, capsys)
    assert status == 0, lines
    assert lines["noise"].startswith("noise max_abs_err=0 ")

    fixture["seed"] = 8  # other noise, and a cleaned prompt the released code would not produce
    fixture["prompts"][0]["cleaned"] = "Two people dancing &amp; laughing"
    (directory / "fixture.json").write_text(json.dumps(fixture))
    status, lines = run_verify(directory, capsys)
    assert status == 1
    assert lines["noise"].endswith("FAIL") and lines["prompt_clean"] == "prompt_clean equal=no FAIL"
    assert lines["conditioning"].endswith("OK")
