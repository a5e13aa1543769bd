"""The released sampler's schedule on diffusers' UniPC scheduler, and which passes each step runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the window rule below is read by the Space before torch may be imported
    import torch
    from diffusers import UniPCMultistepScheduler

from .defaults import RELEASED

NUM_TRAIN_TIMESTEPS = 1000


def make_scheduler(shift: float = RELEASED.shift) -> UniPCMultistepScheduler:
    """UniPC (order 2, bh2) for flow matching with a final sigma of 0, as the released sampler."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=shift,
        solver_order=2,
        solver_type="bh2",
        final_sigmas_type="zero",
    )


def released_sigmas(num_steps: int) -> np.ndarray:
    """The unshifted sigmas linspace(1 - 1/1000, 0, N + 1)[:N]; the scheduler applies the shift.

    diffusers' own default sigmas differ from these by about 1e-2 over 8 steps.
    """
    return np.linspace(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS, 0.0, num_steps + 1)[:num_steps]


def set_released_timesteps(
    scheduler: UniPCMultistepScheduler, num_steps: int, shift: float, device: torch.device | str | None = None
) -> torch.Tensor:
    """Sets `shift` and the released sigmas on `scheduler`; returns its timesteps (int(1000 * shifted sigma))."""
    if scheduler.config.flow_shift != shift:
        scheduler.register_to_config(flow_shift=shift)
    scheduler.set_timesteps(sigmas=released_sigmas(num_steps), device=device)
    return scheduler.timesteps


def pose_guidance_steps(num_steps: int, window: tuple[float, float]) -> list[bool]:
    """Whether the pose guidance runs at each step: strictly start < i / N < end, as released."""
    start, end = window
    return [start < i / num_steps < end for i in range(num_steps)]


def passes_per_step(num_steps: int, guidance_scale: float, pose_guidance_scale: float,
                    window: tuple[float, float]) -> list[int]:
    """Transformer passes of each step: one, +1 for text guidance (scale != 1), +1 in the pose-guidance window."""
    base = 2 if guidance_scale != 1.0 else 1
    in_window = pose_guidance_steps(num_steps, window) if pose_guidance_scale > 0 else [False] * num_steps
    return [base + int(pose_step) for pose_step in in_window]


def transformer_passes(num_steps: int, guidance_scale: float, pose_guidance_scale: float,
                       window: tuple[float, float]) -> int:
    """Transformer passes of a job (`passes_per_step`, summed)."""
    return sum(passes_per_step(num_steps, guidance_scale, pose_guidance_scale, window))
