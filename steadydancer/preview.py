"""A live preview of a generation: the predicted clean latent of a step, projected linearly to RGB.

A full VAE decode per step would cost about as much as a step of a small model; a 16 -> 3 linear map per latent
voxel costs nothing next to a 14B transformer step (`bench/preview_cost.py`), and the picture it gives (colours and
layout at 1/8 of the resolution) is enough to see the video take shape.

Conventions:

- Latents are the pipeline's *normalised* latents, z_n = (z - latents_mean) / latents_std with the VAE config's
  statistics (what `SteadyDancerPipeline._normalize_latents` makes and what the sampler steps). Every
  `LatentRGBProjection` here acts on that space and returns pixels in the VAE's range [-1, 1].
- Flow matching: x_t = (1 - sigma) x_0 + sigma * noise and the transformer predicts v = noise - x_0, so the clean
  latent predicted at a step is x_0 = x_t - sigma * v, with x_t the latents the transformer saw at that step and sigma
  that step's (shifted) sigma, `scheduler.sigmas[i]` at step i (`step_sigma`). It is what UniPC computes itself for
  `prediction_type="flow_prediction"`. The latents a step callback gets are those *after* `scheduler.step` (x at
  the next sigma), so they do not pair with that step's velocity: pass the step's x0 itself when the callback has it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LatentRGBProjection:
    """rgb[r] = sum_c z_n[c] * factors[c][r] + bias[r]: normalised latents (16 channels) to pixels in [-1, 1]."""

    factors: tuple[tuple[float, ...], ...]  # (latent channels, 3): row c is channel c's (R, G, B) weight
    bias: tuple[float, float, float]

    def __post_init__(self):
        if any(len(row) != 3 for row in self.factors) or len(self.bias) != 3:
            raise ValueError("A latent-RGB projection has one (R, G, B) row per latent channel and 3 biases.")

    @classmethod
    def from_tensors(cls, factors: torch.Tensor, bias: torch.Tensor) -> "LatentRGBProjection":
        """From `factors` (C, 3) and `bias` (3,)."""
        factors = factors.detach().double().cpu()
        return cls(tuple(tuple(row) for row in factors.tolist()), tuple(bias.detach().double().cpu().tolist()))

    @property
    def num_channels(self) -> int:
        return len(self.factors)

    def tensors(self, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(factors (C, 3), bias (3,)) on `device`."""
        return (torch.tensor(self.factors, device=device, dtype=dtype),
                torch.tensor(self.bias, device=device, dtype=dtype))

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, F, h, w) in about [-1, 1] (not clamped) of normalised latents (B, C, F, h, w)."""
        if latents.shape[1] != self.num_channels:
            raise ValueError(f"Expected {self.num_channels} latent channels, got shape {tuple(latents.shape)}.")
        factors, bias = self.tensors(latents.device)  # float32: a preview's few frames cost nothing to upcast
        return torch.einsum("bcfhw,cr->brfhw", latents.float(), factors) + bias.view(1, 3, 1, 1, 1)


# ComfyUI's published Wan 2.1 preview factors (`latent_formats.Wan21`). ComfyUI's sampler works on latents it has
# normalised with the same 16 means/stds as the diffusers Wan VAE config, and its previewer maps the result from [-1, 1]
# to [0, 1], so the numbers carry over unchanged to this module's convention.
WAN21_LATENT_RGB = LatentRGBProjection(
    factors=(
        (-0.1299, -0.1692, 0.2932),
        (0.0671, 0.0406, 0.0442),
        (0.3568, 0.2548, 0.1747),
        (0.0372, 0.2344, 0.1420),
        (0.0313, 0.0189, -0.0328),
        (0.0296, -0.0956, -0.0665),
        (-0.3477, -0.4059, -0.2925),
        (0.0166, 0.1902, 0.1975),
        (-0.0412, 0.0267, -0.1364),
        (-0.1293, 0.0740, 0.1636),
        (0.0680, 0.3019, 0.1128),
        (0.0032, 0.0581, 0.0639),
        (-0.1251, 0.0927, 0.1699),
        (0.0060, -0.0633, 0.0005),
        (0.3477, 0.2275, 0.2950),
        (0.1984, 0.0913, 0.1861),
    ),
    bias=(-0.1835, -0.0868, -0.3360),
)


# ------------------------------------------------------------------------------------------ the predicted clean latent
def predicted_clean_latents(latents: torch.Tensor, velocity: torch.Tensor, sigma) -> torch.Tensor:
    """x_0 = x_t - sigma * v (flow matching, see the module docstring).

    `latents` (B, C, F, h, w) are the latents the transformer was given at the step (before `scheduler.step`),
    `velocity` its guided prediction for them, `sigma` a number, a 0-d tensor or one value per sample (B,).
    """
    sigma = torch.as_tensor(sigma, device=latents.device, dtype=torch.float32)
    if sigma.ndim == 1:
        sigma = sigma.view(-1, *([1] * (latents.ndim - 1)))
    return latents.float() - sigma * velocity.float()


def step_sigma(scheduler, step_index: int) -> float:
    """The sigma of step `step_index` (what x_t was noised to), for `predicted_clean_latents`.

    `scheduler.sigmas` holds the shifted sigmas and a final 0; the timestep `t` the step callback gets is
    int(1000 * sigma), too coarse to divide back.
    """
    return float(scheduler.sigmas[step_index])


# ----------------------------------------------------------------------------------------------------- the preview
def preview_frame_indices(num_latent_frames: int, max_frames: int) -> list[int]:
    """Up to `max_frames` latent frames spread evenly from the first to the last."""
    count = max(1, min(max_frames, num_latent_frames))
    return sorted({int(round(i)) for i in np.linspace(0, num_latent_frames - 1, count)})


def preview_strip(
    x0: torch.Tensor | None = None,
    projection: LatentRGBProjection = WAN21_LATENT_RGB,
    *,
    latents: torch.Tensor | None = None,
    velocity: torch.Tensor | None = None,
    sigma=None,
    max_frames: int = 4,
    sample: int = 0,
    scale: int = 1,
) -> np.ndarray:
    """A strip of up to `max_frames` preview frames side by side: uint8 (h * scale, k * w * scale, 3).

    Pass the predicted clean latents `x0` (B, C, F, h, w), or the step's `latents`, `velocity` and `sigma`
    (`predicted_clean_latents`). Only the chosen frames are computed and projected, on the latents' device; just
    the small uint8 strip comes back to the CPU. `scale` enlarges it by pixel repetition (the latent grid is 1/8
    of the video's side).
    """
    source = x0 if x0 is not None else latents
    if source is None or (x0 is None and (velocity is None or sigma is None)):
        raise ValueError("Pass x0, or latents with velocity and sigma.")
    if x0 is not None and latents is not None:
        raise ValueError("Pass x0 or (latents, velocity, sigma), not both.")
    if source.ndim != 5:
        raise ValueError(f"Expected latents (B, C, F, h, w), got shape {tuple(source.shape)}.")

    with torch.no_grad():
        frames = torch.tensor(preview_frame_indices(source.shape[2], max_frames), device=source.device)
        chosen = source[sample : sample + 1].index_select(2, frames)  # (1, C, k, h, w)
        if x0 is None:
            sig = torch.as_tensor(sigma)
            sig = sig[sample : sample + 1] if sig.ndim == 1 else sig
            chosen = predicted_clean_latents(chosen, velocity[sample : sample + 1].index_select(2, frames), sig)
        rgb = projection(chosen)[0]  # (3, k, h, w) in [-1, 1]
        rgb = ((rgb + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8)
        strip = rgb.permute(2, 1, 3, 0).flatten(1, 2)  # (h, k * w, 3)
        strip = strip.cpu().numpy()
    if scale > 1:
        strip = np.repeat(np.repeat(strip, scale, axis=0), scale, axis=1)
    return strip


# ----------------------------------------------------------------------------------------------------- fitting
def pixels_to_latent_grid(pixels: torch.Tensor, latent_shape: Sequence[int]) -> torch.Tensor:
    """Pixels (B, 3, T, H, W) averaged onto a latent grid (F, h, w): (B, 3, F, h, w).

    Space: the mean of each (H / h) x (W / w) block. Time, as the causal VAE compresses it: latent frame 0 is pixel
    frame 0 alone, latent frame k >= 1 the mean of pixel frames s(k-1)+1 .. sk, with s = (T - 1) / (F - 1) (4 for
    Wan).
    """
    num_frames, height, width = latent_shape[-3:]
    b, c, t, hp, wp = pixels.shape
    if hp % height or wp % width:
        raise ValueError(f"Pixel size {hp}x{wp} is not a multiple of the latent grid {height}x{width}.")
    pixels = pixels.double() if pixels.dtype == torch.float64 else pixels.float()
    pixels = F.avg_pool3d(pixels, kernel_size=(1, hp // height, wp // width))  # (B, 3, T, h, w)
    if num_frames == 1:
        return pixels[:, :, :1]
    stride, rest = divmod(t - 1, num_frames - 1)
    if rest or stride < 1:
        raise ValueError(f"{t} pixel frames do not come from {num_frames} latent frames of a causal VAE.")
    later = pixels[:, :, 1:].reshape(b, c, num_frames - 1, stride, height, width).mean(dim=3)
    return torch.cat([pixels[:, :, :1], later], dim=2)


def _latent_statistics(vae, num_channels: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    config = vae.config
    shape = (1, num_channels, 1, 1, 1)
    return (torch.tensor(config.latents_mean, device=device, dtype=dtype).view(shape),
            torch.tensor(config.latents_std, device=device, dtype=dtype).view(shape))


def decode_on_latent_grid(vae, latents: torch.Tensor) -> torch.Tensor:
    """The VAE's decode of normalised `latents` (B, C, F, h, w), averaged back onto their grid: (B, 3, F, h, w)."""
    mean, std = _latent_statistics(vae, latents.shape[1], latents.device, torch.float64)
    with torch.no_grad():
        raw = (latents.double() * std + mean).to(vae.dtype)
        pixels = vae.decode(raw, return_dict=False)[0]
    return pixels_to_latent_grid(pixels, latents.shape)


def solve_latent_rgb(latents: Sequence[torch.Tensor], pixels: Sequence[torch.Tensor]) -> LatentRGBProjection:
    """Least squares for the projection from paired grids: latents (B, C, F, h, w) and pixels (B, 3, F, h, w)."""
    rows = torch.cat([z.detach().double().movedim(1, -1).reshape(-1, z.shape[1]) for z in latents])  # (N, C)
    targets = torch.cat([p.detach().double().movedim(1, -1).reshape(-1, 3) for p in pixels])  # (N, 3)
    if rows.shape[0] <= rows.shape[1]:
        raise ValueError(f"{rows.shape[0]} latent voxels cannot determine {rows.shape[1] + 1} unknowns per colour.")
    design = torch.cat([rows, torch.ones_like(rows[:, :1])], dim=1)  # (N, C + 1): the last column fits the bias
    # gelsd: minimum-norm solution, stable when some channels are nearly constant
    solution = torch.linalg.lstsq(design.cpu(), targets.cpu(), driver="gelsd").solution  # (C + 1, 3)
    return LatentRGBProjection.from_tensors(solution[:-1], solution[-1])


def fit_latent_rgb(vae, *latents: torch.Tensor) -> LatentRGBProjection:
    """Fits the projection of `vae` from normalised `latents` tensors (B, C, F, h, w), each decoded by `vae`.

    Fit on latents like the ones to be previewed (e.g. encodings of real videos): the VAE decoder is not linear, and
    a linear map only approximates it near the latents it was fitted on.
    """
    if not latents:
        raise ValueError("Pass at least one latents tensor to fit on.")
    return solve_latent_rgb(latents, [decode_on_latent_grid(vae, z) for z in latents])


def channel_correlation(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per colour channel (dim 1) of two (B, 3, ...) tensors: (3,)."""
    a = predicted.detach().double().movedim(1, 0).reshape(predicted.shape[1], -1)
    b = target.detach().double().movedim(1, 0).reshape(target.shape[1], -1)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1))
