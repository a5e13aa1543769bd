"""Checks on what a visitor uploads, before any decoding or GPU work.

A file's kind is read from its first bytes, never from its name, so a video renamed `.png` (or an image renamed
`.mp4`) is recognised for what it is. Limits come from environment variables so a Space can tighten them; the
defaults keep one ZeroGPU call within its time budget.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class InputError(ValueError):
    """An input a visitor can fix; the message says what is wrong and what is accepted."""


def _env_number(name: str, default: float, kind=float):
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return kind(value)
    except ValueError as error:
        raise ValueError(f"Environment variable {name}={value!r} is not a number.") from error


@dataclass(frozen=True)
class Limits:
    """Upload and request limits (environment variable in brackets)."""

    max_file_bytes: int = 100 * 2**20  # STEADYDANCER_MAX_FILE_MB
    max_image_pixels: int = 4096 * 4096  # STEADYDANCER_MAX_IMAGE_PIXELS
    max_video_pixels: int = 3840 * 2160  # STEADYDANCER_MAX_VIDEO_PIXELS (per frame)
    max_video_seconds: float = 60.0  # STEADYDANCER_MAX_VIDEO_SECONDS
    max_aspect_ratio: float = 4.0  # STEADYDANCER_MAX_ASPECT (long side / short side)
    max_prompt_chars: int = 2000  # STEADYDANCER_MAX_PROMPT_CHARS
    max_frames: int = 161  # STEADYDANCER_MAX_FRAMES (4n+1)
    max_steps: int = 60  # STEADYDANCER_MAX_STEPS
    max_keypoint_bytes: int = 20 * 2**20  # STEADYDANCER_MAX_KEYPOINT_MB

    @classmethod
    def from_env(cls) -> "Limits":
        d = cls()
        return cls(
            max_file_bytes=int(_env_number("STEADYDANCER_MAX_FILE_MB", d.max_file_bytes / 2**20) * 2**20),
            max_image_pixels=_env_number("STEADYDANCER_MAX_IMAGE_PIXELS", d.max_image_pixels, int),
            max_video_pixels=_env_number("STEADYDANCER_MAX_VIDEO_PIXELS", d.max_video_pixels, int),
            max_video_seconds=_env_number("STEADYDANCER_MAX_VIDEO_SECONDS", d.max_video_seconds),
            max_aspect_ratio=_env_number("STEADYDANCER_MAX_ASPECT", d.max_aspect_ratio),
            max_prompt_chars=_env_number("STEADYDANCER_MAX_PROMPT_CHARS", d.max_prompt_chars, int),
            max_frames=_env_number("STEADYDANCER_MAX_FRAMES", d.max_frames, int),
            max_steps=_env_number("STEADYDANCER_MAX_STEPS", d.max_steps, int),
            max_keypoint_bytes=int(_env_number("STEADYDANCER_MAX_KEYPOINT_MB", d.max_keypoint_bytes / 2**20) * 2**20),
        )


# (offset, magic bytes, kind, format)
_SIGNATURES = [
    (0, b"\x89PNG\r\n\x1a\n", "image", "PNG"),
    (0, b"\xff\xd8\xff", "image", "JPEG"),
    (0, b"GIF87a", "image", "GIF"),
    (0, b"GIF89a", "image", "GIF"),
    (0, b"BM", "image", "BMP"),
    (4, b"ftypavif", "image", "AVIF"),
    (4, b"ftypheic", "image", "HEIC"),
    (4, b"ftyp", "video", "MP4/MOV"),
    (0, b"\x1a\x45\xdf\xa3", "video", "WebM/Matroska"),
    (0, b"OggS", "video", "Ogg"),
    (0, b"\x00\x00\x01\xba", "video", "MPEG-PS"),
]
_TS_PACKET = 188  # MPEG-TS: a 0x47 sync byte at the start of every 188-byte packet


def sniff(path: str | os.PathLike) -> tuple[str, str]:
    """(kind, format) of a file from its first bytes: kind is "image", "video", "json" or "unknown"."""
    with open(path, "rb") as f:
        head = f.read(_TS_PACKET + 1)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "WebP"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", "AVI"
    for offset, magic, kind, name in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return kind, name
    if len(head) > _TS_PACKET and head[0] == head[_TS_PACKET] == 0x47:
        return "video", "MPEG-TS"
    if head.lstrip()[:1] in (b"{", b"["):
        return "json", "JSON"
    return "unknown", "unknown"


def _check_file(path: str | os.PathLike | None, what: str, limits: Limits) -> Path:
    if path is None or str(path) == "":
        raise InputError(f"No {what} was given.")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The {what} could not be found.")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"The {what} is empty (0 bytes).")
    if size > limits.max_file_bytes:
        raise InputError(f"The {what} is {size / 2**20:.0f} MB; the limit is {limits.max_file_bytes / 2**20:.0f} MB.")
    return path


def _check_aspect(width: int, height: int, what: str, limits: Limits) -> None:
    ratio = max(width, height) / max(1, min(width, height))
    if ratio > limits.max_aspect_ratio:
        raise InputError(
            f"The {what} is {width}x{height}, an aspect ratio of {ratio:.1f}:1; at most {limits.max_aspect_ratio:g}:1 is supported."
        )


def load_reference_image(path: str | os.PathLike | None, limits: Limits | None = None) -> np.ndarray:
    """A validated reference photo as RGB uint8 (H, W, 3)."""
    from PIL import Image, UnidentifiedImageError

    limits = limits or Limits.from_env()
    path = _check_file(path, "reference image", limits)
    kind, name = sniff(path)
    if kind == "video":
        raise InputError(f"The reference image is actually a video ({name}); upload a photo (PNG, JPEG or WebP).")
    if kind != "image":
        raise InputError("The reference image is not an image file; upload a photo (PNG, JPEG or WebP).")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > limits.max_image_pixels:
                raise InputError(
                    f"The reference image is {width}x{height}; at most {limits.max_image_pixels / 1e6:.0f} megapixels are accepted."
                )
            _check_aspect(width, height, "reference image", limits)
            image.load()
            return np.asarray(image.convert("RGB"))
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise InputError(f"The reference image is corrupt or truncated and cannot be read ({name}).") from error


@dataclass
class VideoCheck:
    width: int
    height: int
    fps: float
    duration: float
    has_audio: bool
    notes: list[str] = field(default_factory=list)


def check_driving_video(path: str | os.PathLike | None, limits: Limits | None = None) -> VideoCheck:
    """Validates a driving video from its header and first frame, without decoding the whole file."""
    import av

    limits = limits or Limits.from_env()
    path = _check_file(path, "driving video", limits)
    kind, name = sniff(path)
    if kind == "image" and name != "GIF":
        raise InputError(f"The driving video is actually an image ({name}); upload a video (MP4, MOV, WebM, AVI or GIF).")
    if kind in ("json",):
        raise InputError("The driving video is a JSON file; upload it as keypoints instead.")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError("The driving video has no video stream.")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            duration = float(stream.duration * stream.time_base) if stream.duration else (container.duration or 0) / 1e6
            has_audio = bool(container.streams.audio)
            first = next(container.decode(video=0), None)
    except InputError:
        raise
    except Exception as error:  # PyAV raises many kinds of errors for broken files
        raise InputError(f"The driving video is corrupt or in a format that cannot be read ({error.__class__.__name__}).") from error
    if first is None:
        raise InputError("The driving video has no frames (zero length).")
    if width * height > limits.max_video_pixels:
        raise InputError(f"The driving video is {width}x{height}; at most {limits.max_video_pixels / 1e6:.1f} megapixels per frame are accepted.")
    if duration > limits.max_video_seconds:
        raise InputError(f"The driving video lasts {duration:.0f} s; at most {limits.max_video_seconds:g} s are accepted. Trim it first.")
    _check_aspect(width, height, "driving video", limits)
    return VideoCheck(width=width, height=height, fps=fps, duration=duration, has_audio=has_audio)


def check_keypoint_file(path: str | os.PathLike | None, limits: Limits | None = None) -> Path:
    limits = limits or Limits.from_env()
    path = _check_file(path, "keypoint file", limits)
    if path.stat().st_size > limits.max_keypoint_bytes:
        raise InputError(f"The keypoint file is larger than {limits.max_keypoint_bytes / 2**20:.0f} MB.")
    kind, _ = sniff(path)
    if kind != "json":
        raise InputError("The keypoint file is not JSON; see the README for the keypoint schema.")
    return path


def check_prompt(prompt: str | None, limits: Limits | None = None, what: str = "prompt") -> str:
    limits = limits or Limits.from_env()
    prompt = "" if prompt is None else str(prompt)
    if len(prompt) > limits.max_prompt_chars:
        raise InputError(f"The {what} has {len(prompt)} characters; at most {limits.max_prompt_chars} are accepted.")
    return prompt


def check_number(value, name: str, low: float, high: float, integer: bool = False) -> float | int:
    """A finite number within [low, high] (an integer when asked), or `InputError` naming the field."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}.") from None
    if not np.isfinite(number) or not (low <= number <= high):
        raise InputError(f"{name} must be between {low:g} and {high:g}, got {value!r}.")
    if integer:
        if number != int(number):
            raise InputError(f"{name} must be a whole number, got {value!r}.")
        return int(number)
    return number
