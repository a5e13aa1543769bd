"""Generation size and frame-count rules of the released model (the one home of the 4n+1 rule and the strides)."""

import math

VAE_TEMPORAL_STRIDE = 4
VAE_SPATIAL_STRIDE = 8
PATCH = 2
SIZE_MULTIPLE = VAE_SPATIAL_STRIDE * PATCH  # 16

# Pixel budgets (width x height of a landscape frame) by name; 576p is the paper's.
RESOLUTIONS = {"480p": 832 * 480, "576p": 1024 * 576, "720p": 1280 * 720}
DEFAULT_MAX_AREA = RESOLUTIONS["576p"]


def generation_size(image_height: int, image_width: int, max_area: int = DEFAULT_MAX_AREA) -> tuple[int, int]:
    """(height, width) for a reference of the given size, as the released code computes it.

    Keeps the reference's aspect ratio within a budget of `max_area` pixels; both sides are multiples of 16.
    The released float arithmetic is kept: an 832x480 reference at an 832*480 budget gives 464x832.
    """
    if image_height <= 0 or image_width <= 0:
        raise ValueError(f"Image sizes must be positive, got {image_height}x{image_width}.")
    return generation_size_for_aspect(image_height / image_width, max_area)


def generation_size_for_aspect(aspect: float, max_area: int = DEFAULT_MAX_AREA) -> tuple[int, int]:
    """(height, width) for a height / width ratio `aspect` within `max_area` pixels."""
    if not (aspect > 0 and math.isfinite(aspect)) or max_area <= 0:
        raise ValueError(f"Aspect ratio and area must be positive, got {aspect} and {max_area}.")
    lat_h = round(math.sqrt(max_area * aspect) // VAE_SPATIAL_STRIDE // PATCH * PATCH)
    lat_w = round(math.sqrt(max_area / aspect) // VAE_SPATIAL_STRIDE // PATCH * PATCH)
    if lat_h == 0 or lat_w == 0:
        raise ValueError(f"An aspect ratio of {aspect:.3g} is too extreme for a {max_area}-pixel budget.")
    return lat_h * VAE_SPATIAL_STRIDE, lat_w * VAE_SPATIAL_STRIDE


def is_valid_frame_count(num_frames: int) -> bool:
    """The Wan VAE maps 4n+1 frames to n+1 latent frames."""
    return num_frames >= 1 and (num_frames - 1) % VAE_TEMPORAL_STRIDE == 0


def check_frame_count(num_frames: int, name: str = "num_frames", minimum: int = 1) -> None:
    """Raises `ValueError` naming `name` unless `num_frames` is 4n+1 and at least `minimum`."""
    if not is_valid_frame_count(num_frames) or num_frames < minimum:
        at_least = f" and at least {minimum}" if minimum > 1 else ""
        raise ValueError(f"{name} must be 4n+1 (1, 5, 9, ..., 81){at_least}, got {num_frames}.")


def check_enough_frames(num_frames: int, available: int, name: str) -> None:
    """Raises `ValueError` naming `name` when it holds fewer than the `num_frames` frames asked for."""
    if available < num_frames:
        raise ValueError(f"{num_frames} frames asked for but only {available} {name} frames given.")


def nearest_valid_frame_count(num_frames: int) -> int:
    """The largest 4n+1 not above `num_frames` (at least 1)."""
    return max(1, (num_frames - 1) // VAE_TEMPORAL_STRIDE * VAE_TEMPORAL_STRIDE + 1)


def next_valid_frame_count(num_frames: int) -> int:
    """The smallest 4n+1 not below `num_frames` (at least 1)."""
    return max(1, -(-(max(num_frames, 1) - 1) // VAE_TEMPORAL_STRIDE) * VAE_TEMPORAL_STRIDE + 1)


def latent_frame_count(num_frames: int) -> int:
    """Latent frames of a 4n+1-frame video (n + 1: the causal VAE encodes the first frame alone)."""
    return (num_frames - 1) // VAE_TEMPORAL_STRIDE + 1


def token_grid(num_frames: int, height: int, width: int) -> tuple[int, int, int]:
    """(latent frames, token rows, token columns) of a video after the VAE and the 1x2x2 patch."""
    return latent_frame_count(num_frames), height // SIZE_MULTIPLE, width // SIZE_MULTIPLE
