"""Seeded random inputs for the tiny pipeline and the tiny transformer."""

import torch


def random_video_inputs(height: int, width: int, frames: int) -> dict:
    """A random reference, pose and negative-pose video (uint8) and a prompt, seeded."""
    import numpy as np

    rng = np.random.default_rng(0)
    return dict(
        image=rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        pose_video=rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8),
        negative_pose_video=rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8),
        prompt="a person dancing in the studio",
        max_area=height * width,
    )


def random_transformer_inputs(batch=1, frames=3, height=6, width=4, seed=0) -> dict:
    """Keyword arguments of one tiny transformer call (pose latents, not precomputed pose features), seeded."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    return dict(
        hidden_states=r(batch, 16, frames, height, width), timestep=torch.full((batch,), 500.0),
        encoder_hidden_states=r(batch, 7, 32), encoder_hidden_states_image=r(batch, 5, 1280),
        encoder_hidden_states_pose_image=r(batch, 5, 1280), image_condition=r(batch, 20, frames, height, width),
        reference_latents=r(batch, 36, 1, height, width), pose_reference_latents=r(batch, 16, 1, height, width),
        pose_latents=r(batch, 16, frames, height, width), return_dict=False,
    )
