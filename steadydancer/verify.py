"""`python -m steadydancer.verify DIR`: checks this implementation against outputs of the released code.

DIR is either a transformer fixture (config.json, weights in the released layout, reference.safetensors and
reference.json) or a pose fixture (alignment.json and render_NN.png). One line per check; exit status 1 when any
check fails.
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

FORWARD_TOLERANCE = 1e-4
SAMPLE_TOLERANCE = 1e-3


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
            return f"{self.name} {self.metric}={self.value} {'OK' if self.ok else 'FAIL'}"
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


def verify(directory: str | Path) -> list[Check]:
    directory = Path(directory)
    if (directory / "alignment.json").is_file():
        from .pose.fixture_check import verify_pose_fixture

        return verify_pose_fixture(directory)
    if (directory / "reference.safetensors").is_file():
        return verify_transformer_fixture(directory)
    raise FileNotFoundError(f"{directory} holds neither reference.safetensors nor alignment.json")


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
