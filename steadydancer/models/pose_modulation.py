"""SteadyDancer's Synergistic Pose Modulation Modules.

Three small modules refine the pose latent ``z_p`` (16 channels, same grid as the video latent) before it is
fused into the video tokens:

- `TemporalMotionCoherence` (TMCM): stacked factorised (2+1)-D convolutions for motion smoothness.
- `SpatialStructureAdapter` (SSAR): a per-frame dynamic convolution (DCD style) that adapts to each frame's structure.
- `FrameAlignmentUnit` (FAAU): attention from the noisy latent (queries) to the refined pose (keys and values),
  which aligns the pose to what is being denoised.

Module names follow diffusers; `steadydancer.loading` maps the released names onto them.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


def released_hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    # The released weights were trained with relu6(x + 3) / 3, not the usual / 6.
    return F.relu6(x + 3.0) / 3.0


class FactorizedConv3d(nn.Module):
    """A 3x3x3 convolution factorised as a depthwise 1x3x3 spatial conv, SiLU, and a 3x1x1 temporal conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.spatial_conv = nn.Conv3d(
            channels, channels, kernel_size=(1, 3, 3), padding=(0, 1, 1), groups=channels, bias=False
        )
        self.temporal_conv = nn.Conv3d(channels, channels, kernel_size=(3, 1, 1), padding=(1, 0, 0), bias=True)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.temporal_conv(F.silu(self.spatial_conv(hidden_states)))


class TemporalMotionCoherence(nn.Module):
    """TMCM: three [factorised conv, SiLU] layers over the (C, F, h, w) pose latent."""

    def __init__(self, channels: int, num_layers: int = 3):
        super().__init__()
        self.convs = nn.ModuleList([FactorizedConv3d(channels) for _ in range(num_layers)])

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        # pose: (B, C, F, h, w)
        for conv in self.convs:
            pose = F.silu(conv(pose))
        return pose


class SpatialStructureAdapter(nn.Module):
    """SSAR: a dynamic convolution decomposed into a static 1x1 conv plus an input-dependent low-rank mixing.

    Applied frame by frame. With ``x`` one frame (C, h, w) and ``s`` the squeezed global descriptor of ``x``:
    ``out = conv_out(x_mix) + hard_sigmoid(to_scale(s)) * conv_residual(x)`` where
    ``x_mix = norm_mix(phi(s) @ u) + u`` and ``u = norm_in(conv_in(x))`` flattened over pixels.
    """

    def __init__(self, channels: int, rank: int = 4):
        super().__init__()
        self.rank = rank
        self.conv_residual = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.squeeze = nn.Linear(channels, rank, bias=False)
        self.squeeze_excite = nn.Linear(rank, rank, bias=False)
        self.to_phi = nn.Linear(rank, rank * rank, bias=False)
        self.to_scale = nn.Linear(rank, channels, bias=False)
        self.conv_in = nn.Conv2d(channels, rank, kernel_size=1, bias=False)
        self.norm_in = nn.GroupNorm(rank, rank)
        self.norm_mix = nn.GroupNorm(rank, rank)
        self.conv_out = nn.Conv2d(rank, channels, kernel_size=1, bias=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        # frames: (N, C, h, w), N = batch * frames
        n, _, height, width = frames.shape
        residual = self.conv_residual(frames)

        descriptor = self.squeeze(frames.mean(dim=(2, 3)))  # (N, rank)
        descriptor = descriptor * released_hard_sigmoid(self.squeeze_excite(descriptor))
        phi = self.to_phi(descriptor).view(n, self.rank, self.rank)
        scale = released_hard_sigmoid(self.to_scale(descriptor))[:, :, None, None]  # (N, C, 1, 1)

        mixed = self.norm_in(self.conv_in(frames)).flatten(2)  # (N, rank, h*w)
        mixed = self.norm_mix(torch.bmm(phi, mixed)) + mixed
        return self.conv_out(mixed.view(n, self.rank, height, width)) + scale * residual


class ChannelLayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (N, C, h, w) map, with (1, C, 1, 1) affine parameters as released."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Statistics in fp32 (the affine parameters may be kept in fp32 too); the result keeps the input's dtype.
        x32 = x.float()
        mean = x32.mean(dim=1, keepdim=True)
        var = x32.var(dim=1, keepdim=True, unbiased=False)
        return ((x32 - mean) * torch.rsqrt(var + self.eps) * self.weight.float() + self.bias.float()).to(x.dtype)


class FrameAlignmentUnit(nn.Module):
    """FAAU: the noisy latent (queries) attends to the refined pose (keys, values), then a norm/FFN refines it.

    The released module feeds `nn.MultiheadAttention` (sequence-first) with (frames, pixels, channels) tensors, so
    each pixel position attends across the latent frames of its sample; that is what the released weights compute
    (checked against the released outputs), and what this module reproduces per sample: the attention runs on
    (B*h*w, heads, F, D/heads), one batch entry per pixel, in a constant number of operators whatever the grid.
    """

    def __init__(self, channels: int = 16, hidden_dim: int = 128, num_heads: int = 8):
        super().__init__()
        self.num_heads = num_heads
        self.proj_latent = nn.Conv2d(channels, hidden_dim, kernel_size=1)
        self.proj_pose = nn.Conv2d(channels, hidden_dim, kernel_size=1)
        self.to_q = nn.Linear(hidden_dim, hidden_dim)
        self.to_k = nn.Linear(hidden_dim, hidden_dim)
        self.to_v = nn.Linear(hidden_dim, hidden_dim)
        self.to_out = nn.Linear(hidden_dim, hidden_dim)
        self.norm1 = ChannelLayerNorm2d(hidden_dim)
        self.ffn = nn.Sequential(
            nn.Conv2d(hidden_dim, hidden_dim, kernel_size=1),
            nn.SiLU(),
            nn.Conv2d(hidden_dim, hidden_dim, kernel_size=1),
        )
        self.norm2 = ChannelLayerNorm2d(hidden_dim)
        self.proj_back = nn.Conv2d(hidden_dim, channels, kernel_size=1)  # not "proj_out": LoRAs target the head by that suffix

    def forward(self, pose: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        # pose, latents: (B, C, F, h, w) -> (B, C, F, h, w)
        batch, _, frames, height, width = pose.shape
        query = self._frame_sequences(self.proj_latent, latents)  # (B*h*w, F, D)
        context = self._frame_sequences(self.proj_pose, pose)  # (B*h*w, F, D)
        query, key, value = self.to_q(query), self.to_k(context), self.to_v(context)

        # (batch, heads, seq, dim) with batch = B*h*w and seq = F: the 4-D layout SDPA's fused kernels take.
        query, key, value = (x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for x in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value)  # (B*h*w, heads, F, D/heads)
        out = self.to_out(out.transpose(1, 2).flatten(2))  # (B*h*w, F, D)

        # The rest is per position (1x1 convs, norms over channels), so it runs on (B, D, h*w, F) maps that keep
        # the sequences' pixel-major memory (channels last): no copy of the D-channel features on the way.
        out = out.unflatten(0, (batch, height * width)).permute(0, 3, 1, 2)  # (B, D, h*w, F)
        out = self.norm1(out)
        out = self.norm2(out + self.ffn(out))
        out = self.proj_back(out)  # (B, C, h*w, F)
        return out.unflatten(2, (height, width)).permute(0, 1, 4, 2, 3)

    @staticmethod
    def _frame_sequences(proj: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """Applies the 1x1 conv `proj` at every position of (B, C, F, h, w) maps; returns one sequence over the F
        frames per pixel, (B*h*w, F, D), contiguous."""
        batch, channels, frames, height, width = x.shape
        # A pixel-major copy of the C-channel input, seen as a channels-last (B, C, h*w, F) map: the conv keeps
        # that layout, so its D-channel output is already laid out as the sequences.
        x = x.permute(0, 3, 4, 2, 1).contiguous().view(batch, height * width, frames, channels)
        x = proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, h*w, F, D)
        # Contiguous (free when the conv kept the layout) so that each Linear that follows is one matrix product:
        # on a strided view with frozen weights it becomes a bmm over the pixels, which the CPU runs pixel by pixel.
        return x.contiguous().flatten(0, 1)


@dataclass
class PoseFeatures:
    """The pose branch's outputs for one pose latent, each (B, 16, F, h, w)."""

    temporal: torch.Tensor
    spatial: torch.Tensor
    fused: torch.Tensor  # z_p* = z_p + spatial + temporal
    aligned: torch.Tensor  # z_p+


class PoseModulation(nn.Module):
    """The three pose modules combined as the released model combines them."""

    def __init__(self, channels: int = 16, spatial_rank: int = 4, align_dim: int = 128, align_heads: int = 8):
        super().__init__()
        self.temporal = TemporalMotionCoherence(channels)
        self.spatial = SpatialStructureAdapter(channels, spatial_rank)
        self.align = FrameAlignmentUnit(channels, align_dim, align_heads)

    def forward(self, pose_latents: torch.Tensor, noisy_latents: torch.Tensor) -> PoseFeatures:
        # pose_latents: (B, 16, F, h, w); noisy_latents: (B, 16, F, h, w), the 16 noise channels only
        temporal = self.temporal(pose_latents)
        spatial = self.spatial(pose_latents.transpose(1, 2).flatten(0, 1))
        spatial = spatial.unflatten(0, (pose_latents.shape[0], -1)).transpose(1, 2)
        fused = pose_latents + spatial + temporal
        aligned = self.align(fused, noisy_latents)
        return PoseFeatures(temporal=temporal, spatial=spatial, fused=fused, aligned=aligned)
