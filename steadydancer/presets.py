"""Switching one loaded pipeline between the speed presets of `steadydancer.defaults.PRESETS` between requests.

The fast preset runs the released model plus lightx2v's step-distillation LoRA for 4 steps; the quality preset is
the released model alone for 40. Both share the 14B weights, so a Space loads them once and `PresetSwitch` flips
the LoRA (its PEFT layers and its full-tensor deltas, see `steadydancer.lora.set_wan_lora_enabled`) and the
scheduler per request::

    switch = PresetSwitch(pipe)  # loads the LoRA once
    video = pipe(image=..., pose_video=..., **switch.use("quality")).frames
    video = pipe(image=..., pose_video=..., **switch.use("fast")).frames

Load the switch before `steadydancer.memory.apply_memory_plan` (fp8, offloading) and ahead-of-time compilation: they
wrap the modules that exist when they are applied (`steadydancer.aot` keeps one graph per LoRA state, so compile
once in each preset). One job at a time per pipeline: `use` changes shared weights.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from .defaults import FAST, FAST_LORA, FAST_LORA_ADAPTER, FAST_LORA_WEIGHT, PRESETS, Preset
from .scheduling import NUM_TRAIN_TIMESTEPS

logger = logging.getLogger(__name__)


class StepDistillScheduler(FlowMatchEulerDiscreteScheduler):
    """The sampler lightx2v trains its step-distilled Wan models for: at each step predict x0 = x - sigma * v, then
    re-noise it to the next sigma with fresh Gaussian noise (the last step returns x0).

    It is diffusers' `FlowMatchEulerDiscreteScheduler` with ``stochastic_sampling=True``, made a drop-in for
    `SteadyDancerPipeline`: it answers to ``config.flow_shift`` (what `set_released_timesteps` sets) and draws its
    noise from `noise_generator` (set it, or pass `seed`, for reproducible runs).
    """

    def __init__(
        self, flow_shift: float = FAST.shift, seed: int | None = None, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
    ):
        super().__init__(num_train_timesteps=num_train_timesteps, shift=flow_shift, stochastic_sampling=True)
        self.register_to_config(flow_shift=flow_shift)
        self.noise_generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None, timesteps=None):
        self.set_shift(self.config.flow_shift)
        if sigmas is not None:
            sigmas = np.asarray(sigmas, dtype=np.float32)
        super().set_timesteps(num_inference_steps, device=device, sigmas=sigmas, mu=mu, timesteps=timesteps)

    def step(self, model_output, timestep, sample, *args, generator=None, **kwargs):
        if generator is None:
            # A CPU generator is fine on a GPU: diffusers' randn_tensor draws on the CPU and moves the noise.
            generator = self.noise_generator
        return super().step(model_output, timestep, sample, *args, generator=generator, **kwargs)


class PresetSwitch:
    r"""
    Holds a pipeline and the step-distillation LoRA, and puts the pipeline in the state a preset needs.

    Args:
        pipe: a `SteadyDancerPipeline` (or anything with ``transformer`` and ``scheduler``).
        lora: the distillation LoRA: a Hub repo id (default: lightx2v's, `FAST_LORA`), a local safetensors file or
            directory, or a state dict. None when the transformer carries no LoRA to switch (then every preset that
            `uses_distill_lora` is refused).
        weight_name, revision: the file in the repo and the revision to pin (pass a commit hash in deployments).
        presets: name -> `Preset` (default `PRESETS`: ``"fast"`` and ``"quality"``).
        fuse: merge the LoRA into the weights (faster passes, exportable as plain modules) for deployments that serve
            only presets using it; switching to one that does not is then refused.
        adapter_scale: the LoRA's strength.
        seed: seeds the noise of the ``"lightx2v"`` scheduler, for presets that use it.
        hub_kwargs: ``cache_dir``, ``token``, ``local_files_only`` for the download.

    The pipeline starts in the state just after loading: the first preset that uses the LoRA (``"fast"``), or
    without a LoRA the first that does not (``"quality"``).
    """

    def __init__(
        self,
        pipe,
        lora: str | os.PathLike | dict | None = FAST_LORA.repo_id,
        *,
        weight_name: str | None = FAST_LORA_WEIGHT,
        revision: str | None = FAST_LORA.revision,
        presets: dict[str, Preset] | None = None,
        fuse: bool = False,
        adapter_scale: float = 1.0,
        adapter_name: str = FAST_LORA_ADAPTER,
        seed: int | None = None,
        **hub_kwargs,
    ):
        from .lora import fuse_wan_lora, load_wan_lora

        if fuse and lora is None:
            raise ValueError("fuse=True needs a LoRA to fuse.")
        self.pipe = pipe
        self.presets = dict(PRESETS if presets is None else presets)
        self.adapter_name = adapter_name
        self.fused = fuse
        self.has_lora = lora is not None
        self._schedulers = {"unipc": pipe.scheduler}
        self._seed = seed
        if lora is not None:
            if isinstance(lora, (str, os.PathLike)) and revision is None and not os.path.exists(lora):
                logger.warning("Loading the LoRA %s without a pinned revision; pass revision=<commit> to pin it.", lora)
            load_wan_lora(
                pipe, lora, weight_name=weight_name, adapter_name=adapter_name, adapter_scale=adapter_scale,
                revision=revision, **hub_kwargs,
            )
            if fuse:
                fuse_wan_lora(pipe, adapter_name)
        start = next((n for n, p in self.presets.items() if p.uses_distill_lora == self.has_lora), None)
        self.current: str | None = None
        if start is not None:
            self._set_scheduler(self.presets[start])
            self.current = start

    # ---------------------------------------------------------------- queries
    @property
    def names(self) -> list[str]:
        return list(self.presets)

    def available(self, name: str) -> bool:
        """Whether `use(name)` would succeed on this switch."""
        preset = self.presets.get(name)
        if preset is None:
            return False
        if preset.uses_distill_lora:
            return self.has_lora
        return not self.fused

    def pipeline_kwargs(self, name: str | None = None) -> dict[str, Any]:
        """The `__call__` keyword arguments of a preset (default: the current one); changes nothing."""
        name = self.current if name is None else name
        if name not in self.presets:
            raise KeyError(f"Unknown preset {name!r}; presets: {self.names}.")
        return asdict(self.presets[name].settings)

    # ---------------------------------------------------------------- switching
    def use(self, name: str) -> dict[str, Any]:
        """Puts the pipeline in preset `name` (a no-op when it already is) and returns its `__call__` kwargs."""
        from .lora import set_wan_lora_enabled

        if name not in self.presets:
            raise KeyError(f"Unknown preset {name!r}; presets: {self.names}.")
        preset = self.presets[name]
        if preset.uses_distill_lora and not self.has_lora:
            raise ValueError(f"Preset {name!r} needs the distillation LoRA, and this switch was made without one.")
        if not preset.uses_distill_lora and self.fused:
            raise ValueError(
                f"Preset {name!r} runs without the distillation LoRA, but it was fused into the weights (fuse=True); "
                "make the PresetSwitch with fuse=False to serve both presets."
            )
        if name != self.current:
            if self.has_lora and not self.fused:
                set_wan_lora_enabled(self.pipe, self.adapter_name, preset.uses_distill_lora)
            self._set_scheduler(preset)
            self.current = name
        return self.pipeline_kwargs(name)

    def _set_scheduler(self, preset: Preset) -> None:
        if preset.scheduler not in self._schedulers:
            if preset.scheduler != "lightx2v":
                raise ValueError(f"Unknown scheduler {preset.scheduler!r}; use 'unipc' or 'lightx2v'.")
            self._schedulers["lightx2v"] = StepDistillScheduler(flow_shift=preset.settings.shift, seed=self._seed)
        self.pipe.scheduler = self._schedulers[preset.scheduler]

