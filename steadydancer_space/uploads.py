"""Checks on what a visitor uploads, before any decoding or GPU work.

A file's kind is read from its first bytes, never from its name, so a video renamed `.png` (or an image renamed
`.mp4`) is recognised for what it is. The limits (`Limits`) are settings of the Space (`steadydancer_space.config`), so a deployment can tighten them. They bound
what one request may upload and decode; the GPU time a request may take is bounded separately, from the estimate of
`steadydancer_space.estimate` (STEADYDANCER_MAX_GPU_SECONDS).

Every check raises `InputError` (a ValueError) with a message written for the person who uploaded the file; the
messages never contain server paths.
"""

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from steadydancer.pose.errors import PoseFormatError

from .config import Limits


class InputError(ValueError):
    """An input a visitor can fix; the message says what is wrong and what is accepted."""


class KeypointFileError(InputError, PoseFormatError):
    """A keypoint JSON that cannot be used: both an `InputError` and the pose package's `PoseFormatError`."""


# (offset, magic bytes, kind, format)
_SIGNATURES = [
    (0, b"\x89PNG\r\n\x1a\n", "image", "PNG"),
    (0, b"\xff\xd8\xff", "image", "JPEG"),
    (0, b"GIF87a", "image", "GIF"),
    (0, b"GIF89a", "image", "GIF"),
    (0, b"BM", "image", "BMP"),
    (0, b"II*\x00", "image", "TIFF"),
    (0, b"MM\x00*", "image", "TIFF"),
    (4, b"ftypavif", "image", "AVIF"),
    (4, b"ftypheic", "image", "HEIC"),
    (4, b"ftypheix", "image", "HEIC"),
    (4, b"ftypmif1", "image", "HEIF"),
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
    if head.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] in (b"{", b"["):  # a UTF-8 BOM is allowed
        return "json", "JSON"
    return "unknown", "unknown"


def _size(n: float) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB"


def _check_file(path: str | os.PathLike | None, what: str, limits: Limits, max_bytes: int | None = None) -> Path:
    if path is None or str(path) == "":
        raise InputError(f"No {what} was given.")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The {what} could not be found on the server (uploads are deleted after a while); upload it again.")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"The {what} is empty (0 bytes).")
    limit = limits.max_file_bytes if max_bytes is None else min(max_bytes, limits.max_file_bytes)
    if size > limit:
        raise InputError(f"The {what} is {_size(size)}; the limit is {_size(limit)}.")
    return path


def _check_aspect(width: int, height: int, what: str, limits: Limits) -> None:
    if width <= 0 or height <= 0:
        raise InputError(f"The {what} has no pixels ({width}x{height}).")
    ratio = max(width, height) / min(width, height)
    if ratio > limits.max_aspect_ratio:
        raise InputError(
            f"The {what} is {width}x{height}, an aspect ratio of {ratio:.1f}:1; at most {limits.max_aspect_ratio:g}:1 is "
            "supported. Crop it first."
        )


def _reference_header(path: str | os.PathLike | None, limits: Limits) -> tuple[int, int, bool]:
    """(width, height, turned by EXIF) of a reference photo, from its header only: kind, file size, pixels, aspect."""
    from PIL import Image

    path = _check_file(path, "reference image", limits)
    kind, name = sniff(path)
    if kind == "video":
        raise InputError(f"The reference image is actually a video ({name}); upload a photo (PNG, JPEG or WebP).")
    if kind != "image":
        raise InputError("The reference image is not an image file; upload a photo (PNG, JPEG or WebP).")
    try:
        with Image.open(path) as image:
            width, height = image.size
            turned = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # orientations that turn the photo by 90 degrees
            animated = bool(getattr(image, "is_animated", False))  # from the header (WebP, APNG) or a second frame (GIF)
    except Image.DecompressionBombError as error:  # PIL's own ceiling (about 179 megapixels)
        raise InputError(f"The reference image has far too many pixels; at most "
                         f"{limits.max_image_pixels / 1e6:.1f} megapixels are accepted.") from error
    except Exception as error:  # Pillow raises many kinds of errors for broken files
        raise InputError(_unreadable_image(name)) from error
    if animated:
        raise InputError(f"The reference image is animated ({name} with several frames); upload a still photo, "
                         "e.g. one frame of it.")
    if width * height > limits.max_image_pixels:
        raise InputError(
            f"The reference image is {width}x{height}; at most {limits.max_image_pixels / 1e6:.1f} megapixels are "
            "accepted. Resize it first."
        )
    _check_aspect(width, height, "reference image", limits)
    return width, height, turned


def check_reference_image(path: str | os.PathLike | None, limits: Limits | None = None) -> tuple[int, int]:
    """(width, height) of a reference photo as stored, from its header only."""
    width, height, _ = _reference_header(path, limits or Limits())
    return width, height


def _unreadable_image(name: str) -> str:
    unsupported = f", or its format ({name}) is not supported" if name in ("HEIC", "HEIF", "AVIF") else ""
    return f"The reference image is corrupt or truncated{unsupported} and cannot be read; upload a PNG, JPEG or WebP."


def reference_size(path: str | os.PathLike, limits: Limits | None = None) -> tuple[int, int]:
    """(height, width) of a reference photo as shown upright (EXIF orientation applied), from its header."""
    width, height, turned = _reference_header(path, limits or Limits())
    return (width, height) if turned else (height, width)


def load_reference_image(path: str | os.PathLike | None, limits: Limits | None = None,
                         checked: bool = False) -> np.ndarray:
    """A reference photo as upright RGB uint8 (H, W, 3), by the library's one image loader; `checked`: its header
    has been checked already (`reference_size`)."""
    from steadydancer.pose import PoseError, load_image

    if not checked:
        check_reference_image(path, limits or Limits())
    try:
        return load_image(path)
    except PoseError as error:
        raise InputError(_unreadable_image(sniff(path)[1])) from error


def _seconds_counting_frames(path: str, limit_seconds: float) -> float:
    """The length of a video whose container does not say, from its frames at the stream's rate: packets are
    demuxed (none decoded) up to the first one past `limit_seconds`, so a long file costs no more than the limit."""
    import av

    from steadydancer.defaults import OUTPUT_FPS
    from steadydancer.pose.video import stream_fps

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream_fps(stream) or OUTPUT_FPS  # as the pose step will read it
        past_limit, frames = math.floor(limit_seconds * rate) + 1, 0
        for packet in container.demux(stream):
            frames += packet.size > 0
            if frames >= past_limit:
                break
    return frames / rate


def check_driving_video(path: str | os.PathLike | None, limits: Limits | None = None) -> None:
    """Validates a driving video from its header and first frame, without decoding the whole file (its metadata is
    read later by `steadydancer.pose.probe_video`, the one video-metadata reader)."""
    import av

    limits = limits or Limits()
    path = _check_file(path, "driving video", limits)
    kind, name = sniff(path)
    if kind == "image" and name != "GIF":
        raise InputError(f"The driving video is actually an image ({name}); upload a video (MP4, MOV, WebM, AVI or GIF).")
    if kind == "json":
        raise InputError("The driving video is a JSON file; give it as the keypoint file instead.")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError("The driving video has no video stream (an audio-only or zero-length file).")
            stream = container.streams.video[0]
            if stream.codec_context is None:  # a codec FFmpeg does not know, often a corrupt header
                raise InputError("The driving video is corrupt, or its video codec cannot be decoded; upload an MP4 "
                                 "(H.264), MOV, WebM or AVI.")
            width, height = stream.codec_context.width, stream.codec_context.height
            if stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = (container.duration or 0) / 1e6
            if width * height > limits.max_video_pixels:  # before decoding anything
                raise InputError(
                    f"The driving video is {width}x{height}; at most {limits.max_video_pixels / 1e6:.1f} megapixels "
                    "per frame are accepted."
                )
            first = next(container.decode(video=0), None)
        counted = not duration  # the container does not say (a raw stream): its frames do
        if counted:
            duration = _seconds_counting_frames(path, limits.max_video_seconds)
    except InputError:
        raise
    except Exception as error:  # PyAV raises many kinds of errors for broken files
        raise InputError(
            f"The driving video is corrupt, truncated or in a format that cannot be read ({error.__class__.__name__}); "
            "upload an MP4, MOV, WebM or AVI."
        ) from error
    if first is None:
        raise InputError("The driving video has no frames (zero length).")
    if not math.isfinite(duration) or duration > limits.max_video_seconds:
        raise InputError(
            f"The driving video lasts {'over ' if counted else ''}"
            f"{limits.max_video_seconds if counted else duration:.0f} s; at most {limits.max_video_seconds:g} s are "
            "accepted. Trim it first."
        )
    _check_aspect(width, height, "driving video", limits)


# The two keypoint files a request may bring, as messages name them (API parameters `keypoints`, `reference_keypoints`).
KEYPOINTS = "keypoint file"
REFERENCE_KEYPOINTS = "reference keypoint file"


def check_keypoint_file(path: str | os.PathLike | None, limits: Limits | None = None, what: str = KEYPOINTS) -> Path:
    limits = limits or Limits()
    path = _check_file(path, what, limits, limits.max_keypoint_bytes)
    kind, name = sniff(path)
    if kind in ("image", "video"):
        instead = ", or the video as the driving video" if what == KEYPOINTS else ""
        raise KeypointFileError(f"The {what} is not JSON: it is {'an image' if kind == 'image' else 'a video'} ({name}). "
                         f"Give a keypoint JSON (schema in steadydancer/pose/keypoints.py){instead}.")
    if kind != "json":
        raise KeypointFileError(f"The {what} is not JSON; see the schema in steadydancer/pose/keypoints.py.")
    return path


MAX_KEYPOINT_FRAME_SIDE = 16384


def _reject_constant(name: str, what: str):
    raise KeypointFileError(f"The {what} contains {name}; JSON numbers must be finite (use -1 for missing points).")


def _parse_int(text: str) -> int | float:
    """A JSON integer; a long one becomes a float (inf when huge, as 1e999 does) for the checks that name the field,
    instead of Python's error for integers of over 4300 digits."""
    return int(text) if len(text) <= 300 else float(text)


def load_keypoints(path: str | os.PathLike | None, limits: Limits | None = None, what: str = KEYPOINTS):
    """A validated keypoint JSON file as a `steadydancer.pose.PoseSequence`; `InputError` naming the problem."""
    limits = limits or Limits()
    path = check_keypoint_file(path, limits, what)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise KeypointFileError(f"The {what} is not UTF-8 text, so it is not a keypoint JSON.") from None
    try:
        data = json.loads(text, parse_constant=lambda name: _reject_constant(name, what), parse_int=_parse_int)
    except json.JSONDecodeError as error:
        raise KeypointFileError(f"The {what} is not valid JSON (line {error.lineno}, column {error.colno}: "
                         f"{error.msg}).") from None
    except RecursionError:
        raise KeypointFileError(f"The {what} is nested too deeply to be a keypoint JSON.") from None
    return keypoints_from_data(data, limits, what)


def _check_frame_size(data, where: str, limits: Limits) -> None:
    for key in ("width", "height"):
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value) or value > MAX_KEYPOINT_FRAME_SIDE:
                raise KeypointFileError(f"{where}.{key}: expected the frame size in pixels (1 to "
                                        f"{MAX_KEYPOINT_FRAME_SIDE}), got {value:.6g}.")
    width, height = (data.get(key) if isinstance(data, dict) else None for key in ("width", "height"))
    if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        _check_aspect(width, height, f"{where} frame", limits)


def load_reference_keypoints(path: str | os.PathLike | None, limits: Limits | None = None):
    """A validated reference keypoint JSON (the same schema, one frame) as a `steadydancer.pose.Pose`."""
    from steadydancer.pose import reference_pose_from

    sequence = load_keypoints(path, limits, REFERENCE_KEYPOINTS)
    with _schema_errors(REFERENCE_KEYPOINTS):
        return reference_pose_from(sequence, REFERENCE_KEYPOINTS)


@contextmanager
def _schema_errors(where: str):
    """The pose package's errors about a file's content as `KeypointFileError`s (their messages name the field)."""
    from steadydancer.pose import PoseError

    try:
        yield
    except PoseError as error:  # e.g. "keypoint file.frames[3].body: ..."
        raise KeypointFileError(f"{error}.".replace("..", ".")) from None
    except (TypeError, ValueError, OverflowError, AttributeError, KeyError, IndexError) as error:
        raise KeypointFileError(f"The {where} does not match the schema ({type(error).__name__}); see "
                         "steadydancer/pose/keypoints.py.") from None


def keypoints_from_data(data, limits: Limits | None = None, where: str = KEYPOINTS):
    """`PoseSequence.from_dict` for data nobody checked: every failure becomes an `InputError` naming the field."""
    from steadydancer.pose import PoseSequence

    limits = limits or Limits()
    if not isinstance(data, dict):
        raise KeypointFileError(f"The {where} must hold one JSON object with \"format\": \"steadydancer.pose_sequence\"; "
                         f"it holds a {type(data).__name__}.")
    _check_frame_size(data, where, limits)
    frames = data.get("frames")
    if isinstance(frames, list):
        if not frames:
            raise KeypointFileError(f"The {where} has no frames.")
        if len(frames) > limits.max_keypoint_frames:
            raise KeypointFileError(f"The {where} has {len(frames)} frames; at most {limits.max_keypoint_frames} are accepted.")
        for index, frame in enumerate(frames):  # a frame may declare its own size
            _check_frame_size(frame, f"{where}.frames[{index}]", limits)
    with _schema_errors(where):
        return PoseSequence.from_dict(data, where=where)
