"""How the released `generate` turns images into the tensors it encodes, written once.

Pixel ranges, one per input type (the pipeline documents the same):

- PIL images: 8-bit RGB (other modes are converted to RGB).
- numpy arrays (H, W, 3): uint8 in [0, 255], or float in [0, 1].
- torch tensors (3, H, W): float in [-1, 1]. Pose pixels may overshoot that range: the released resize of pose
  frames is bicubic and not clamped (about [-1.4, 1.5] at stroke edges).

8-bit images (PIL images and uint8 arrays) are what the released code reads from disk. It reads each pose frame,
resizes it with PIL bicubic to the reference photo's own size, and only then resizes the [-1, 1] tensor with torch
bicubic to the generation size: `pose_frame_pixels` does both steps. Float pose frames are taken as pixels already
through the first step (see `steadydancer.pose.render_pose_pixels`) and get the torch step only.

Light on purpose (torch, numpy, PIL): the pose package uses it without the diffusion stack.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor


def is_8bit(image: ImageInput) -> bool:
    """Whether `image` is a stored 8-bit image (PIL or uint8 array), as opposed to float pixels."""
    return isinstance(image, PIL.Image.Image) or (isinstance(image, np.ndarray) and image.dtype == np.uint8)


def image_size(image: ImageInput) -> tuple[int, int]:
    """(height, width) of a valid image."""
    if isinstance(image, PIL.Image.Image):
        return image.height, image.width
    if isinstance(image, np.ndarray):
        return int(image.shape[0]), int(image.shape[1])
    return int(image.shape[-2]), int(image.shape[-1])


def check_image(image: object, name: str) -> None:
    """Raises ValueError naming `name` unless `image` is one of the accepted image types and shapes."""
    if isinstance(image, PIL.Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"{name} is an empty image.")
        return
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3 or 0 in image.shape:
            raise ValueError(f"{name} must be an RGB array (H, W, 3), got shape {image.shape}.")
        if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
            raise ValueError(f"{name} must be a uint8 array in [0, 255] or a float array in [0, 1], got {image.dtype}.")
        return
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3 or 0 in image.shape:
            raise ValueError(f"{name} must be a tensor (3, H, W) in [-1, 1], got shape {tuple(image.shape)}.")
        if not image.is_floating_point():
            raise ValueError(f"{name} must be a float tensor in [-1, 1], got {image.dtype} (8-bit images: pass "
                             "PIL images or uint8 numpy arrays).")
        return
    raise ValueError(f"{name} must be a PIL image, a numpy array (H, W, 3) or a tensor (3, H, W), "
                     f"got {type(image).__name__}.")


def to_pixels(image: ImageInput) -> torch.Tensor:
    """A valid image as float32 pixels (3, H, W) in [-1, 1] (a new tensor).

    8-bit input is scaled as the released code does (`to_tensor`, then normalise by 0.5 and 0.5), so the values are
    the same to the last bit.
    """
    if isinstance(image, PIL.Image.Image):
        image = np.array(image if image.mode == "RGB" else image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if not (image.flags.writeable and image.flags.c_contiguous):
            image = np.array(image)  # torch cannot wrap read-only arrays (uploads often are)
        chw = torch.from_numpy(image).permute(2, 0, 1)
        if image.dtype == np.uint8:
            return chw.float().div_(255.0).sub_(0.5).div_(0.5)
        return chw.to(torch.float32, copy=True).mul_(2.0).sub_(1.0)
    return image.to(torch.float32, copy=True)


def resize(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Torch bicubic, align_corners False, no antialiasing, not clamped, as released: (N, 3, H, W) -> (N, 3, height,
    width). The same size is returned unchanged (bicubic weights are then exactly 0, 1, 0, 0)."""
    return F.interpolate(pixels, size=(int(height), int(width)), mode="bicubic", align_corners=False)


def jpeg_roundtrip(frame: np.ndarray, quality: int = 95) -> np.ndarray:
    """An 8-bit RGB frame (H, W, 3) after a JPEG file of `quality` with 4:2:0 chroma: what the released code's stored
    frame files hold (OpenCV's `imwrite` defaults are quality 95 and 4:2:0; PIL writes the very same bytes)."""
    import io

    buffer = io.BytesIO()
    PIL.Image.fromarray(frame).save(buffer, format="JPEG", quality=int(quality), subsampling="4:2:0")
    with PIL.Image.open(buffer) as image:
        return np.array(image.convert("RGB"))


def stored_frame(frame: PIL.Image.Image | np.ndarray, size: tuple[int, int]) -> PIL.Image.Image:
    """The first step of the released pose-frame chain: an 8-bit frame resized with PIL bicubic to `size` (height,
    width; the reference photo's own size). Still 8-bit: PIL rounds and clips."""
    image = frame if isinstance(frame, PIL.Image.Image) else PIL.Image.fromarray(frame)
    image = image if image.mode == "RGB" else image.convert("RGB")
    height, width = size
    if image.size != (width, height):
        image = image.resize((int(width), int(height)), PIL.Image.BICUBIC)
    return image


def stored_frame_pixels(frame: ImageInput, size: tuple[int, int]) -> torch.Tensor:
    """`stored_frame` as pixels (3, H, W) in [-1, 1]; float frames are returned as pixels, unresized."""
    return to_pixels(stored_frame(frame, size)) if is_8bit(frame) else to_pixels(frame)


def pose_frame_pixels(frame: ImageInput, reference_size: tuple[int, int], height: int, width: int) -> torch.Tensor:
    """One pose frame as the released `generate` feeds it to the VAE: (3, height, width), [-1, 1], unclamped.

    8-bit frames: PIL bicubic to `reference_size`, then torch bicubic to (height, width). Float frames: torch step
    only. Only this frame is held at the reference's size, so a video costs one frame of that size at a time.
    """
    return resize(stored_frame_pixels(frame, reference_size)[None], height, width)[0]


def pose_video_pixels(frames: Iterable[ImageInput] | torch.Tensor, num_frames: int, reference_size: tuple[int, int],
                      height: int, width: int) -> torch.Tensor:
    """The first `num_frames` pose frames through `pose_frame_pixels`, frame by frame: (3, num_frames, height, width).

    A float32 tensor (N, 3, height, width), pixels already at the generation size, is returned as a view (the torch
    step would be the identity), so the pipeline holds no second copy of a prepared pose video.
    """
    if (isinstance(frames, torch.Tensor) and frames.dtype == torch.float32 and frames.ndim == 4
            and tuple(frames.shape[-2:]) == (int(height), int(width)) and len(frames) >= num_frames):
        return frames[:num_frames].transpose(0, 1)
    out = torch.empty(3, num_frames, int(height), int(width))
    count = 0
    for frame in frames:
        if count == num_frames:
            break
        out[:, count] = pose_frame_pixels(frame, reference_size, height, width)
        count += 1
    if count < num_frames:
        raise ValueError(f"{num_frames} pose frames needed, got {count}.")
    return out


def image_encoder_pixels(images: Sequence[torch.Tensor], size: tuple[int, int], mean: Sequence[float],
                         std: Sequence[float]) -> torch.Tensor:
    """The image encoder's input as released: each [-1, 1] image (3, H, W) resized with torch bicubic (no
    antialiasing, no 8-bit round trip, no centre crop) to `size`, mapped to [0, 1], then normalised by CLIP's
    mean and std. Returns (B, 3, *size)."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    batch = torch.cat([resize(im.float()[None], *size) for im in images])
    return (batch.mul(0.5).add(0.5) - mean_t) / std_t


def frames_of(video: object, name: str) -> list[ImageInput]:
    """The frames of a video input: a list of images, an array (N, H, W, 3) or a tensor (N, 3, H, W); each frame
    is checked (errors name `name`)."""
    if isinstance(video, np.ndarray) and video.ndim == 4:
        frames = list(video)
    elif isinstance(video, torch.Tensor) and video.ndim == 4:
        frames = list(video)
    elif isinstance(video, (list, tuple)):
        frames = list(video)
    else:
        shape = f" of shape {tuple(video.shape)}" if hasattr(video, "shape") else ""
        raise ValueError(f"{name} must be a list of images, an array (N, H, W, 3) or a tensor (N, 3, H, W), got "
                         f"{type(video).__name__}{shape}.")
    if not frames:
        raise ValueError(f"{name} has no frames.")
    for i, frame in enumerate(frames):
        check_image(frame, f"{name}[{i}]")
    return frames
