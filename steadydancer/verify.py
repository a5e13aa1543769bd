"""`python -m steadydancer.verify DIR`: checks this implementation against outputs of the released code.

DIR is one of three fixture kinds:

- a transformer fixture (config.json, weights in the released layout, reference.safetensors and reference.json);
- a pose fixture (alignment.json and render_NN.png);
- a conditioning fixture (fixture.json with "kind": "conditioning"): a reference photo, stored pose and negative-pose
  frames, a Wan VAE in the original naming, and what the released `generate` fed its transformer. The photo and the
  frames go through this library's own default path (`SteadyDancerPipeline.prepare_conditions`,
  `image_encoder_input`, `first_pose_frame`, `prompt_clean`, `prepare_latents`, `decode_latents`).

One line per check; exit status 1 when any check fails.
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

FORWARD_TOLERANCE = 1e-4
SAMPLE_TOLERANCE = 1e-3
CONDITIONING_TOLERANCE = 1e-5


@dataclass
class Check:
    name: str
    value: float | bool
    threshold: float | None = None
    metric: str = "max_abs_err"

    @property
    def ok(self) -> bool:
        return bool(self.value) if self.threshold is None else self.value <= self.threshold

    def __str__(self) -> str:
        if self.threshold is None:
            value = ("yes" if self.value else "no") if isinstance(self.value, bool) else self.value
            return f"{self.name} {self.metric}={value} {'OK' if self.ok else 'FAIL'}"
        return f"{self.name} {self.metric}={self.value:.3g} (<= {self.threshold:g}) {'OK' if self.ok else 'FAIL'}"


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def verify_transformer_fixture(directory: Path) -> list[Check]:
    """Loads the checkpoint through the released-layout loader, runs the forward pass and the 8-step sampling."""
    from safetensors.torch import load_file

    from .loading import load_released_transformer
    from .pipeline_steadydancer import SteadyDancerConditions, SteadyDancerPipeline
    from .scheduling import make_scheduler, pose_guidance_steps

    model = load_released_transformer(directory)
    ref = load_file(str(directory / "reference.safetensors"))
    settings = json.loads((directory / "reference.json").read_text())
    one = {k: v[None] if v.ndim in (2, 4) else v for k, v in ref.items()}  # add the batch dimension

    checks = []
    with torch.no_grad():
        pose = model.encode_pose(one["noise"], one["condition"])
        for name in ("temporal", "spatial", "fused", "aligned"):
            checks.append(Check(f"pose_{name}", _max_err(getattr(pose, name), one[f"pose_{name}"]), FORWARD_TOLERANCE))
        out = model(
            hidden_states=one["noise"], timestep=ref["t"], encoder_hidden_states=one["context"],
            encoder_hidden_states_image=ref["clip_fea_x"], encoder_hidden_states_pose_image=ref["clip_fea_c"],
            image_condition=one["y"], reference_latents=one["ref_x"], pose_reference_latents=one["ref_c"],
            pose_latents=one["condition"],
        ).sample
        checks.insert(0, Check("forward", _max_err(out, one["forward_out"]), FORWARD_TOLERANCE))

        sampling = settings["sampling"]
        pipe = SteadyDancerPipeline(None, None, None, None, model, None, make_scheduler(sampling["shift"]))
        conditions = SteadyDancerConditions(one["y"], one["ref_x"], one["ref_c"], one["condition"], one["condition_null"])
        window = (sampling["window_start"], sampling["window_end"])
        pipe.set_progress_bar_config(disable=True)
        sample = pipe.denoise(
            one["noise"], conditions, one["context"], one["context_null"], ref["clip_fea_x"], ref["clip_fea_c"],
            num_inference_steps=sampling["steps"], guidance_scale=sampling["text_guide_scale"],
            pose_guidance_scale=sampling["pose_guide_scale"], pose_guidance_window=window, shift=sampling["shift"],
        )
    checks.append(Check("sample", _max_err(sample, one["sample_out"]), SAMPLE_TOLERANCE))
    timesteps = pipe.scheduler.timesteps.tolist()
    checks.append(Check("timesteps", timesteps == ref["timesteps"].tolist(), metric="equal"))
    in_window = pose_guidance_steps(sampling["steps"], window)
    checks.append(Check("guidance_window", in_window == ref["in_window"].tolist(), metric="equal"))
    return checks


def load_wan_vae(path: Path, **config):
    """An `AutoencoderKLWan(**config)` with weights stored in the original Wan naming (`Wan2.1_VAE.pth` keys),
    mapped by diffusers' single-file conversion."""
    import inspect

    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
    from safetensors.torch import load_file

    known = inspect.signature(AutoencoderKLWan.__init__).parameters
    vae = AutoencoderKLWan(**{k: v for k, v in config.items() if k in known})
    vae.load_state_dict(convert_wan_vae_to_diffusers(load_file(str(path))), strict=True)
    return vae.eval()


def verify_conditioning_fixture(directory: Path) -> list[Check]:
    """Feeds the fixture's reference photo and stored pose frames through our default path and compares what it
    would hand the transformer (and a decode) with what the released `generate` did. Sizes, frame counts, seed and
    settings all come from the fixture's files."""
    import PIL.Image
    from safetensors.torch import load_file

    from .pipeline_steadydancer import CLIPImageProcessor, SteadyDancerPipeline, prompt_clean
    from .pixels import image_size
    from .scheduling import make_scheduler
    from .sizing import DEFAULT_MAX_AREA, generation_size

    fixture = json.loads((directory / "fixture.json").read_text())
    expected = load_file(str(directory / "expected.safetensors"))
    vae_settings = fixture.get("vae", {})
    weights = directory / str(vae_settings.get("weights", "")).split(" ")[0]  # "file.safetensors (a note)"
    if not weights.is_file():
        weights = next(p for p in sorted(directory.glob("*.safetensors")) if p.name != "expected.safetensors")
    vae = load_wan_vae(weights, **{k: v for k, v in vae_settings.items() if not isinstance(v, str)})
    clip_size = int(fixture.get("clip_input_size", 224))
    processor = CLIPImageProcessor(size={"shortest_edge": clip_size},  # OpenAI CLIP mean and std by default
                                   crop_size={"height": clip_size, "width": clip_size})
    pipe = SteadyDancerPipeline(None, None, None, processor, None, vae, make_scheduler())

    def images(folder: str) -> list:
        return [PIL.Image.open(p).convert("RGB") for p in sorted((directory / folder).glob("*.jpg"))]

    reference = PIL.Image.open(directory / "reference.png").convert("RGB")
    pose, negative = images("pose"), images("negative_pose")
    num_frames = int(fixture.get("num_frames", len(pose)))
    height, width = generation_size(*image_size(reference), int(fixture.get("max_area", DEFAULT_MAX_AREA)))
    checks = []
    if "size_hw" in fixture:
        checks.append(Check("generation_size", [height, width] == list(fixture["size_hw"]), metric="equal"))

    with torch.no_grad():
        ours = pipe.prepare_conditions(reference, pose, negative, height, width, num_frames)
        pairs = [(ours.image_condition, expected["y"]), (ours.pose_latents, expected["condition"]),
                 (ours.negative_pose_latents, expected["condition_null"]), (ours.reference_latents, expected["ref_x"]),
                 (ours.pose_reference_latents, expected["ref_c"][:16])]
        checks.append(Check("conditioning", max(_compare(a[0], b) for a, b in pairs), CONDITIONING_TOLERANCE))

        clip_x = pipe.image_encoder_input([reference])
        clip_c = pipe.image_encoder_input([pipe.first_pose_frame(pose, reference)])
        clip_err = max(_compare(clip_x, expected["clip_in_x"]), _compare(clip_c, expected["clip_in_c"]))
        checks.append(Check("clip_input", clip_err, CONDITIONING_TOLERANCE))

        cleaned = [prompt_clean(p["raw"]) == p["cleaned"] for p in fixture.get("prompts", [])]
        checks.append(Check("prompt_clean", all(cleaned), metric="equal"))

        noise_device = fixture.get("noise_generator_device", "cpu")
        noise = pipe.prepare_latents(1, num_frames, height, width, device=noise_device, seed=int(fixture["seed"]))
        checks.append(Check("noise", _compare(noise[0], expected["noise"]), 0.0))

        if "decode_latent" in expected and "decode_pixels" in expected:
            decoded = pipe.decode_latents(expected["decode_latent"][None])[0]
            checks.append(Check("decode", _compare(decoded, expected["decode_pixels"]), CONDITIONING_TOLERANCE))
    return checks


def _compare(ours: torch.Tensor, expected: torch.Tensor) -> float:
    """Max abs error, or inf when the shapes differ."""
    if tuple(ours.shape) != tuple(expected.shape):
        return float("inf")
    return _max_err(ours, expected)


def verify(directory: str | Path) -> list[Check]:
    directory = Path(directory)
    fixture_file = directory / "fixture.json"
    if fixture_file.is_file() and json.loads(fixture_file.read_text()).get("kind") == "conditioning":
        return verify_conditioning_fixture(directory)
    if (directory / "alignment.json").is_file():
        from .pose.fixture_check import verify_pose_fixture

        return verify_pose_fixture(directory)
    if (directory / "reference.safetensors").is_file():
        return verify_transformer_fixture(directory)
    raise FileNotFoundError(f"{directory} holds no reference.safetensors, alignment.json or conditioning fixture.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m steadydancer.verify", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    try:
        checks = verify(args.directory)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for check in checks:
        print(check)
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
