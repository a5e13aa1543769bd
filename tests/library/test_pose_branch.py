"""The pose branch's cost does not grow in operators with the latent grid, and batching keeps samples apart."""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from steadydancer.tiny import tiny_transformer


def encode_pose_operators(model, frames: int, height: int, width: int) -> int:
    """Events torch.profiler records (CPU) in one `encode_pose` call, after an unprofiled warm-up call."""
    latents, pose = torch.randn(2, 1, 16, frames, height, width).unbind(0)
    with torch.no_grad():
        model.encode_pose(latents, pose)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.encode_pose(latents, pose)
    return len(prof.events())


# Frozen weights are how the checkpoint loader leaves the model, and the case where a Linear on a strided
# (pixels, frames, channels) view ran one matrix product per pixel; trainable weights take another matmul path.
@pytest.mark.parametrize("frozen", [True, False], ids=["frozen", "trainable"])
@pytest.mark.parametrize("larger", [(5, 24, 40), (21, 6, 10)], ids=["16x-pixels", "4x-frames"])
def test_encode_pose_operator_count_does_not_grow_with_the_grid(frozen, larger):
    torch.manual_seed(0)
    model = tiny_transformer().eval().requires_grad_(not frozen)
    small = encode_pose_operators(model, 5, 6, 10)
    large = encode_pose_operators(model, *larger)
    assert abs(large - small) <= 0.1 * small, (small, large)


def test_alignment_unit_keeps_the_samples_of_a_batch_apart():
    """Pixels of all samples share one attention batch; each must still see only its own frames."""
    torch.manual_seed(0)
    align = tiny_transformer().pose_modulation.align.eval()
    pose, latents = torch.randn(2, 3, 16, 5, 4, 6).unbind(0)
    with torch.no_grad():
        batched = align(pose, latents)
        alone = torch.cat([align(pose[i : i + 1], latents[i : i + 1]) for i in range(3)])
    assert batched.shape == pose.shape
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
