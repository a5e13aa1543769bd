"""The released model's rules and defaults, each defined once: the library's signatures, the Space's settings, the
GPU-time estimate and the benchmarks all read them from here.

Sources: the released sampler and `generate` defaults (../shared/SPEC.md), and the Hub repos the weights come from.
"""

from dataclasses import dataclass

# Frames per second of every video SteadyDancer makes (Wan2.1 I2V's training rate); driving motion is resampled to it.
OUTPUT_FPS = 16


@dataclass(frozen=True)
class SamplerSettings:
    """The sampler's settings. `SamplerSettings()` is the released quality setting (40 UniPC steps, decoupled
    text / pose guidance); `FAST` is the 4-step preset of a step-distillation LoRA (text guidance off, pose guidance
    kept in its window)."""

    num_inference_steps: int = 40
    guidance_scale: float = 5.0  # text
    pose_guidance_scale: float = 1.0
    pose_guidance_window: tuple[float, float] = (0.1, 0.4)  # fraction of the steps, strictly inside
    shift: float = 5.0  # released advice: 5.0 at 1024x576, 3.0 at 832x480


RELEASED = SamplerSettings()
# The released command line's defaults: as RELEASED but with pose guidance 1.5 (its README and the paper use 1.0).
RELEASED_CLI = SamplerSettings(pose_guidance_scale=1.5)
# The 4-step preset of a step-distillation LoRA of Wan2.1 I2V 14B (lightx2v). guidance_scale 1.0: the LoRA was
# CFG-distilled, and the pipeline then skips the negative-text pass. shift 5.0: lightx2v's `sample_shift` for its
# 4-step I2V models, and the released shift at 1024x576. Pose guidance keeps the released scale and window: with 4
# steps the strict rule start < i/4 < end selects step 1 only (the same quarter of the trajectory as the released 11
# of 40 steps), and the window stays meaningful if the step count changes (8 steps -> steps 1-3).
FAST = SamplerSettings(num_inference_steps=4, guidance_scale=1.0)
SHIFT_480P = 3.0

# Wan's standard negative prompt, prefixed with "镜头晃动，" (camera shake) as in the released SteadyDancer.
DEFAULT_NEGATIVE_PROMPT = (
    "镜头晃动，色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，"
    "残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，"
    "背景人很多，倒着走"
)


def negative_or_default(negative_prompt: str | None) -> str:
    """The negative prompt a job encodes: None and "" mean the released default, as in the released code."""
    return negative_prompt if negative_prompt else DEFAULT_NEGATIVE_PROMPT


@dataclass(frozen=True)
class HubSource:
    """A Hub repo and the revision loaded by default (None: the default branch)."""

    repo_id: str
    revision: str | None = None

    def revision_for(self, repo_id: str, revision: str | None = None) -> str | None:
        """`revision` when given; else this source's pinned one for its own repo, the default branch for another."""
        return revision if revision is not None else (self.revision if repo_id == self.repo_id else None)


# The SteadyDancer DiT (released Wan layout), the diffusers-format Wan2.1 I2V repo for the VAE, encoders, tokenizer and
# image processor, the DWPose ONNX models, and lightx2v's 4-step Wan2.1 I2V distillation LoRA (rank 64).
TRANSFORMER = HubSource("MCG-NJU/SteadyDancer-14B")
BASE = HubSource("Wan-AI/Wan2.1-I2V-14B-720P-Diffusers")
# DWPose is pinned to the commit that public projects cache (its files have not changed since 2023). The other
# hashes could not be looked up from this project's machines (no Hub access): deployments pin them (README).
DWPOSE = HubSource("yzd-v/DWPose", "1a7144101628d69ee7a3768d1ee3a094070dc388")
FAST_LORA = HubSource("lightx2v/Wan2.1-Distill-Loras")
FAST_LORA_WEIGHT = "wan2.1_i2v_lora_rank64_lightx2v_4step.safetensors"
FAST_LORA_ADAPTER = "step_distill"  # the PEFT adapter name the LoRA is loaded under


@dataclass(frozen=True)
class Preset:
    """A named speed/quality setting of one loaded pipeline: the sampler's settings, whether the step-distillation
    LoRA (`FAST_LORA`) must be on, and the scheduler (``"unipc"``: the released UniPC solver; ``"lightx2v"``: the
    x0-and-renoise sampler lightx2v distilled for, `steadydancer.presets.StepDistillScheduler`)."""

    settings: SamplerSettings
    uses_distill_lora: bool = False
    scheduler: str = "unipc"


# Switched between requests by `steadydancer.presets.PresetSwitch` without reloading weights. Transformer passes per
# job (`scheduling.transformer_passes`): fast 4 + 1 = 5, quality 40 + 40 + 11 = 91.
PRESETS = {
    "fast": Preset(FAST, uses_distill_lora=True),
    "quality": Preset(RELEASED),
}
