"""Loading images as upright RGB uint8 arrays."""

from __future__ import annotations

import os
from typing import Union

import numpy as np

from .errors import PoseError

ImageLike = Union[str, os.PathLike, np.ndarray, "PIL.Image.Image"]  # noqa: F821


def load_image(image: ImageLike) -> np.ndarray:
    """Returns (H, W, 3) uint8 RGB from a path, a PIL image or an array.

    Paths and PIL images honour the EXIF orientation (phone photos). Arrays are taken as
    RGB; grey (H, W) / (H, W, 1) and RGBA (alpha composited on white) are converted.
    """
    from PIL import Image, ImageOps

    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as im:
                image = ImageOps.exif_transpose(im).convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB")
                image = image.copy()
        except (OSError, ValueError) as e:
            raise PoseError(f"cannot read the image {os.fspath(image)} ({e})") from None
    if isinstance(image, Image.Image):
        image = ImageOps.exif_transpose(image)
        image = np.asarray(image.convert("RGBA") if image.mode in ("RGBA", "LA", "P") else image.convert("RGB"))
    arr = np.asarray(image)
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
