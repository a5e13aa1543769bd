"""Reading the driving video: decoding, rotation, resampling to the output rate, 4n+1 length.

Decoding goes through PyAV (FFmpeg bindings, self-contained wheels), which reads the
common containers and codecs (mp4/mov/mkv/webm/avi/gif; H.264, HEVC, VP9, AV1 where FFmpeg
has a decoder, ...). Frames are returned upright: the display-matrix rotation that phones
write is applied, as players do.

The model's output plays at 16 fps. By default the driving motion is resampled to that rate
in time (each output frame takes the source frame nearest to k / fps), so the generated
video moves at the driving video's real speed. ``fps=None`` keeps every source frame, as
the released preprocessing does (a 30 fps clip then plays about 1.9x slower).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence, TypeVar

import numpy as np

from ..defaults import OUTPUT_FPS
from ..sizing import is_valid_frame_count, next_valid_frame_count
from .errors import EmptyVideoError, PoseError, VideoReadError

_TIE = 1e-9  # seconds: two source frames this close to equally near count as a tie (earlier wins)

T = TypeVar("T")


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the video stream (no full decode).

    Attributes:
        width, height: displayed frame size (after rotation).
        fps: average frame rate of the stream.
        duration: seconds, from the stream or the container (0.0 when unknown).
        num_frames: frame count declared by the container (0 when unknown).
        rotation: degrees counter-clockwise the frames are turned to display upright.
        has_audio: whether the file carries an audio stream (the app may cut it to match).
    """

    path: str
    width: int
    height: int
    fps: float
    duration: float
    num_frames: int
    rotation: int
    has_audio: bool


@dataclass
class VideoFrame:
    """One decoded frame. ``time`` is seconds from the first video frame; ``index`` its
    position in the source stream."""

    index: int
    time: float
    image: np.ndarray  # (H, W, 3) uint8 RGB, upright


@dataclass
class VideoClip:
    """Decoded (and possibly resampled) frames of a video.

    Attributes:
        frames: (N, H, W, 3) uint8 RGB.
        times: (N,) seconds in the source of each frame (from its first frame).
        source_indices: (N,) index of each frame in the source stream.
        fps: rate the frames are meant to play at (the resampling rate, or the source rate).
        info: the source video's :class:`VideoInfo`.
    """

    frames: np.ndarray
    times: np.ndarray
    source_indices: np.ndarray
    fps: float
    info: VideoInfo


def _open(path: str | os.PathLike):
    import av  # imported here so that keypoint-only use does not need PyAV

    path = os.fspath(path)
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise VideoReadError(f"driving video not found: {path}")
    if os.path.getsize(path) == 0:
        raise EmptyVideoError(f"{name} is an empty file")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoReadError(f"cannot open {name} as a video ({e})") from None
    if not container.streams.video:
        no_streams = len(container.streams) == 0
        container.close()
        if no_streams:  # e.g. an MP4 written with zero frames: FFmpeg drops the empty track
            raise EmptyVideoError(f"{name} holds no frames")
        raise VideoReadError(f"{name} holds no video stream")
    return container


def _rotation_of(stream, frame=None) -> int:
    """Counter-clockwise display rotation in degrees, a multiple of 90."""
    angle = getattr(frame, "rotation", None) if frame is not None else None
    if angle is None:  # older PyAV: the legacy "rotate" tag is clockwise
        tag = stream.metadata.get("rotate") if stream.metadata else None
        angle = -float(tag) if tag else 0
    return int(round(float(angle) / 90.0)) * 90 % 360


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


def stream_fps(stream) -> float:
    """The frame rate a video stream declares or FFmpeg guesses; 0.0 when none is known."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Reads the video's metadata and its first frame's rotation.

    Raises:
        VideoReadError: the file cannot be opened as a video.
        EmptyVideoError: it holds no decodable frame.
    """
    import av

    container = _open(path)
    try:
        stream = container.streams.video[0]
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as e:
            raise VideoReadError(f"cannot decode {os.path.basename(os.fspath(path))} ({e})") from None
        if first is None:
            raise EmptyVideoError(f"{os.path.basename(os.fspath(path))} holds no video frames")
        rotation = _rotation_of(stream, first)
        w, h = first.width, first.height
        if rotation in (90, 270):
            w, h = h, w
        fps = stream_fps(stream)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = 0.0
        return VideoInfo(os.fspath(path), w, h, fps, duration, int(stream.frames or 0), rotation,
                         bool(container.streams.audio))
    finally:
        container.close()


def _decode(path: str | os.PathLike) -> Iterator[VideoFrame]:
    """Every frame of the first video stream, upright, times from the first frame."""
    import av

    container = _open(path)
    name = os.path.basename(os.fspath(path))
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = stream_fps(stream) or OUTPUT_FPS
        t0 = None
        index = -1
        try:
            for frame in container.decode(stream):
                index += 1
                t = frame.time if frame.time is not None else index / fps
                t0 = t if t0 is None else t0
                image = _upright(frame.to_ndarray(format="rgb24"), _rotation_of(stream, frame))
                yield VideoFrame(index, float(t - t0), image)
        except av.error.FFmpegError as e:
            if index < 0:
                raise VideoReadError(f"cannot decode {name} ({e})") from None
            # A truncated file: keep what decoded, like players do.
        if index < 0:
            raise EmptyVideoError(f"{name} holds no video frames")
    finally:
        container.close()


def iter_video_frames(path: str | os.PathLike, fps: float | None = OUTPUT_FPS, *,
                      max_frames: int | None = None) -> Iterator[VideoFrame]:
    """Streams the video's frames, resampled to ``fps`` (or every frame when None).

    With ``fps`` set, output frame k stands for time k / fps and takes the source frame
    nearest to it (the earlier one on a tie); output stops before the end of the last
    source frame (its time plus one source frame duration). Frames are decoded one at a
    time, so long videos do not need to fit in memory; ``max_frames`` stops decoding early.

    Raises:
        VideoReadError / EmptyVideoError: unreadable or empty video.
    """
    if fps is not None and not fps > 0:
        raise PoseError(f"fps must be positive or None, got {fps}")
    if max_frames is not None and max_frames <= 0:
        return
    emitted = 0
    if fps is None:
        for frame in _decode(path):
            yield frame
            emitted += 1
            if max_frames is not None and emitted >= max_frames:
                return
        return

    step = 1.0 / float(fps)
    prev: VideoFrame | None = None
    intervals: list[float] = []
    for cur in _decode(path):
        while True:
            target = emitted * step
            if target > cur.time:
                break
            # ``target`` lies between prev and cur: take the nearer one.
            if prev is not None and (target - prev.time) <= (cur.time - target) + _TIE:
                chosen = prev
            else:
                chosen = cur
            yield VideoFrame(chosen.index, chosen.time, chosen.image)
            emitted += 1
            if max_frames is not None and emitted >= max_frames:
                return
        if prev is not None:
            intervals.append(cur.time - prev.time)
        prev = cur
    if prev is None:
        return
    # The last source frame lasts one frame interval; cover the targets that fall inside it.
    last_duration = float(np.median(intervals)) if intervals else step
    end = prev.time + last_duration
    while emitted * step < end - _TIE:
        yield VideoFrame(prev.index, prev.time, prev.image)
        emitted += 1
        if max_frames is not None and emitted >= max_frames:
            return


def read_video(path: str | os.PathLike, fps: float | None = OUTPUT_FPS, *,
               max_frames: int | None = None) -> VideoClip:
    """Decodes a whole video into memory (resampled like :func:`iter_video_frames`).

    Mind the memory: N x H x W x 3 bytes. The pose pipeline streams instead.
    """
    info = probe_video(path)
    frames = list(iter_video_frames(path, fps, max_frames=max_frames))
    if not frames:
        raise EmptyVideoError(f"{os.path.basename(os.fspath(path))} holds no video frames")
    return VideoClip(np.stack([f.image for f in frames]), np.array([f.time for f in frames]),
                     np.array([f.index for f in frames]), float(fps) if fps else info.fps, info)


def resample_indices(source_times: Sequence[float], fps: float, end_time: float | None = None,
                     max_count: int | None = None) -> np.ndarray:
    """Indices of the source frames :func:`iter_video_frames` picks for ``fps``.

    Args:
        source_times: (N,) increasing times in seconds (first one 0).
        end_time: end of the last source frame; default last time + median interval.
        max_count: stop after this many indices (the loop is otherwise sized by the times).
    """
    times = np.asarray(source_times, dtype=np.float64)
    if len(times) == 0:
        return np.zeros(0, dtype=np.int64)
    if end_time is None:
        end_time = times[-1] + (float(np.median(np.diff(times))) if len(times) > 1 else 1.0 / fps)
    out = []
    k = 0
    while k / fps < end_time - _TIE and (max_count is None or k < max_count):
        target = k / fps
        j = int(np.searchsorted(times, target, side="right"))  # first frame after target
        if j == 0:
            out.append(0)
        elif j == len(times):
            out.append(len(times) - 1)
        else:
            before, after = times[j - 1], times[j]
            out.append(j - 1 if (target - before) <= (after - target) + _TIE else j)
        k += 1
    return np.asarray(out, dtype=np.int64)


# ---------------------------------------------------------------------- 4n+1 frame counts
def fit_length(items: Sequence[T], num_frames: int | None = None) -> tuple[list[T], np.ndarray]:
    """Trims or pads (repeating the last item) to a 4n+1 length.

    Args:
        num_frames: the length wanted (must be 4n+1); None pads up to the next 4n+1.

    Returns:
        The items, and a (num_frames,) bool mask of the padded positions.
    """
    if not items:
        raise PoseError("no frames to fit")
    target = next_valid_frame_count(len(items)) if num_frames is None else int(num_frames)
    if not is_valid_frame_count(target):
        raise PoseError(f"num_frames must be of the form 4n+1 (e.g. 49, 81), got {num_frames}")
    kept = list(items[:target])
    padded = np.zeros(target, dtype=bool)
    padded[len(kept):] = True
    kept += [items[-1]] * (target - len(kept))
    return kept, padded

