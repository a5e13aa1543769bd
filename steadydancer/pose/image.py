"""Loading images as upright RGB uint8 arrays."""

from __future__ import annotations

import os
from typing import Union

import numpy as np

from .errors import PoseError

ImageLike = Union[str, os.PathLike, np.ndarray, "PIL.Image.Image"]  # noqa: F821


def _pil_to_rgb(image) -> np.ndarray:
    """An upright (EXIF-applied) RGB uint8 array from any mode Pillow opens; transparency is composited on white.

    Pillow's own `convert("RGB")` clips high-bit-depth modes (I;16, I, F) instead of scaling them, which turns a
    16-bit photo white; those are scaled to 8 bits here first.
    """
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            top = 1.0 if values.size and np.nanmax(values) <= 1.0 else 255.0
        else:
            top = 65535.0 if image.mode.startswith("I;16") or (values.size and values.max() > 255) else 255.0
        grey = np.clip(np.rint(np.nan_to_num(values) * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=-1))
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info)
    return _to_rgb(np.asarray(image.convert("RGBA" if has_alpha else "RGB")))


def _to_rgb(arr: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 from grey, RGB or RGBA arrays (uint8, or floats in [0, 1] / [0, 255])."""
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise PoseError(f"expected an image of shape (H, W, 3), got {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        arr = np.clip(arr[..., :3] * alpha + 255.0 * (1.0 - alpha), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def load_image(image: ImageLike) -> np.ndarray:
    """Returns (H, W, 3) uint8 RGB from a path, a PIL image or an array: the project's one image loader.

    Paths and PIL images honour the EXIF orientation (phone photos) and every mode Pillow opens (16-bit and float
    grey scaled to 8 bits, palettes, CMYK, transparency composited on white). Arrays are taken as RGB; grey
    (H, W) / (H, W, 1) and RGBA (alpha composited on white) are converted.
    """
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as im:
                im.load()
                return _pil_to_rgb(im)
        except Exception as e:  # Pillow raises many kinds of errors for broken files (OSError, struct.error, ...)
            raise PoseError(f"cannot read the image {os.path.basename(os.fspath(image))} ({e})") from None
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    return _to_rgb(np.asarray(image))
