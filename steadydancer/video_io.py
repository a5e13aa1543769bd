"""Writing the app's videos: H.264 (yuv420p, even sizes, faststart) mp4 at 16 fps that every browser plays, with the
driving video's audio cut to match (AAC). PyAV does the encoding and muxing, so no ffmpeg binary is needed."""

import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .defaults import OUTPUT_FPS

AUDIO_RATE = 44100  # AAC at a rate every browser decodes
MAX_AUDIO_SECONDS = 600.0  # read_audio's span at most: bounds its memory whatever the file's timestamps say


@dataclass
class AudioClip:
    """Planar float samples (channels, samples) in [-1, 1] at `rate`; channels is 1 or 2."""

    samples: np.ndarray
    rate: int = AUDIO_RATE

    @property
    def duration(self) -> float:
        return self.samples.shape[1] / self.rate


@dataclass(frozen=True)
class VideoProbe:
    num_frames: int
    width: int
    height: int
    fps: float
    codec: str
    pix_fmt: str
    duration: float
    audio_codec: str | None
    audio_duration: float


def to_uint8_frames(frames) -> np.ndarray:
    """(N, H, W, 3) uint8 from uint8 or float frames in [0, 1]."""
    frames = np.asarray(frames)
    if frames.ndim == 5:  # the pipeline's (batch, frames, H, W, 3)
        frames = frames[0]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"Expected frames (N, H, W, 3), got shape {frames.shape}.")
    if frames.dtype != np.uint8:
        frames = np.clip(np.rint(frames.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    return frames


def _even(frames: np.ndarray) -> np.ndarray:
    # yuv420p halves the chroma planes, so H.264 needs even sides: repeat the last row/column.
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


def read_audio(path: str | os.PathLike, start: float = 0.0, duration: float | None = None) -> AudioClip | None:
    """The first audio stream of `path` from `start` seconds (measured from the first video frame, as pose frame
    times are) for `duration` seconds (None: to the end of the file), resampled to 44.1 kHz mono or stereo; None when
    there is no audio in that span. At most `MAX_AUDIO_SECONDS` are read.

    Only that span is decoded and allocated: a track much longer than the clip, or a corrupt timestamp placing the
    audio hours after the video, costs no more than the clip itself."""
    import av

    begin = max(0, int(round(start * AUDIO_RATE)))
    with av.open(os.fspath(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        video_start = 0.0
        if container.streams.video:
            vs = container.streams.video[0]
            if vs.start_time is not None and vs.time_base is not None:
                video_start = float(vs.start_time * vs.time_base)
        seconds = MAX_AUDIO_SECONDS if duration is None else min(max(0.0, duration), MAX_AUDIO_SECONDS)
        end = begin + int(round(seconds * AUDIO_RATE))
        channels = 1 if stream.codec_context.channels == 1 else 2
        resampler = av.AudioResampler(format="fltp", layout="mono" if channels == 1 else "stereo", rate=AUDIO_RATE)
        kept, position = [], None  # position: the next sample's index on the video's clock
        for frame in container.decode(stream):
            if position is None:
                first_time = frame.time if frame.time is not None else video_start
                position = int(round((first_time - video_start) * AUDIO_RATE))
            for out in resampler.resample(frame):
                position = _keep_span(out.to_ndarray(), position, begin, end, kept)
            if position >= end:
                break
        else:
            for out in resampler.resample(None) if position is not None else ():
                position = _keep_span(out.to_ndarray(), position, begin, end, kept)
    if not kept:
        return None
    last = max(at + chunk.shape[1] for at, chunk in kept)
    samples = np.zeros((channels, last - begin), np.float32)  # silence where the audio starts late
    for at, chunk in kept:
        samples[:, at - begin:at - begin + chunk.shape[1]] = chunk
    return AudioClip(samples, AUDIO_RATE)


def _keep_span(chunk: np.ndarray, position: int, begin: int, end: int, kept: list) -> int:
    """Appends (index, samples) of the part of `chunk` (starting at `position`) inside [begin, end); returns the
    position after it."""
    lo, hi = max(position, begin), min(position + chunk.shape[1], end)
    if hi > lo:
        kept.append((lo, chunk[:, lo - position:hi - position].astype(np.float32)))
    return position + chunk.shape[1]


def delayed(audio: AudioClip, seconds: float) -> AudioClip:
    """The clip preceded by `seconds` of silence (e.g. under the smooth-start frames)."""
    pad = int(round(seconds * audio.rate))
    if pad <= 0:
        return audio
    silence = np.zeros((audio.samples.shape[0], pad), np.float32)
    return AudioClip(np.concatenate([silence, audio.samples], axis=1), audio.rate)


def write_mp4(path: str | os.PathLike, frames, fps: float = OUTPUT_FPS, *, audio: AudioClip | None = None,
              crf: int = 18, preset: str = "medium", threads: int = 0) -> str:
    """Writes `frames` ((N, H, W, 3) uint8, or floats in [0, 1]) as H.264 High/yuv420p at `fps`, with `audio` as AAC
    (cut to the video's length). `movflags=+faststart` puts the index first so browsers start playing at once.
    `threads=1` makes the bytes reproducible (x264's threaded output varies from run to run); 0 lets x264 choose.
    `crf=0` is lossless (the High 4:4:4 Predictive profile, which not every player decodes)."""
    frames = np.asarray(frames)
    frames = frames[0] if frames.ndim == 5 else frames  # the pipeline's (batch, frames, H, W, 3)
    # Frame by frame: the stream converts each to uint8, so no second copy of the whole video is made.
    return write_mp4_stream(path, iter(frames), fps, audio=audio, crf=crf, preset=preset, threads=threads)


def probe_mp4(path: str | os.PathLike) -> VideoProbe:
    """Decodes the file and reports what a player would see: frames, size, rate, codecs, durations."""
    import av

    with av.open(os.fspath(path)) as container:
        vs = container.streams.video[0]
        num_frames = sum(1 for _ in container.decode(vs))
        fps = float(vs.average_rate) if vs.average_rate else 0.0
        codec, pix_fmt = vs.codec_context.name, vs.codec_context.pix_fmt
        width, height = vs.codec_context.width, vs.codec_context.height
        duration = float(vs.duration * vs.time_base) if vs.duration is not None else num_frames / (fps or 1)
    audio_codec, audio_duration = None, 0.0
    with av.open(os.fspath(path)) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            audio_codec = stream.codec_context.name
            samples = sum(f.samples for f in container.decode(stream))
            audio_duration = samples / float(stream.rate or 1)
    return VideoProbe(num_frames, width, height, fps, codec, pix_fmt, duration, audio_codec, audio_duration)


def write_mp4_stream(path: str | os.PathLike, frames, fps: float = OUTPUT_FPS, *, audio: AudioClip | None = None,
                     crf: int = 18, preset: str = "medium", threads: int = 0) -> str:
    """`write_mp4` for an iterable of frames ((H, W, 3) uint8, or floats in [0, 1], all of one size), encoded one at
    a time: a long video never has to be held whole in memory. Returns `path`."""
    import av

    path = os.fspath(path)
    rate = Fraction(fps).limit_denominator(1001)
    num_frames = 0
    with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        video = audio_stream = None
        for image in frames:
            image = _even(to_uint8_frames(np.asarray(image)[None]))[0]
            if video is None:
                video = container.add_stream("libx264", rate=rate)
                video.width, video.height = image.shape[1], image.shape[0]
                video.pix_fmt = "yuv420p"
                video.options = {"crf": str(crf), "preset": preset, "threads": str(threads)}
                video.time_base = 1 / rate
                # The audio stream is declared before any packet is muxed (the mp4 header lists both).
                audio_stream = _add_audio_stream(container, audio)
            elif image.shape[:2] != (video.height, video.width):
                raise ValueError(f"Frame {num_frames} is {image.shape[1]}x{image.shape[0]}, the video "
                                 f"{video.width}x{video.height}.")
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = num_frames
            for packet in video.encode(frame):
                container.mux(packet)
            num_frames += 1
        if video is None:
            raise ValueError("No frames to write.")
        for packet in video.encode():
            container.mux(packet)
        if audio_stream is not None:
            _encode_audio(container, audio_stream, audio, num_frames / float(rate))
    return path


def _add_audio_stream(container, audio: AudioClip | None):
    if audio is None:
        return None
    layout = "mono" if audio.samples.shape[0] == 1 else "stereo"
    stream = container.add_stream("aac", rate=audio.rate, layout=layout)
    stream.bit_rate = 128_000
    return stream


def _encode_audio(container, stream, audio: AudioClip, duration: float) -> None:
    import av

    samples = np.ascontiguousarray(audio.samples[:, : int(round(duration * audio.rate))], dtype=np.float32)
    chunk = stream.codec_context.frame_size or 1024
    for begin in range(0, samples.shape[1], chunk):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, begin : begin + chunk]), format="fltp",
                                           layout=stream.layout.name)
        frame.sample_rate = audio.rate
        frame.pts = begin
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def _frame_uint8(frame) -> np.ndarray:
    """One frame (H, W, 3) as uint8, from uint8, floats in [0, 1] or a PIL image."""
    return to_uint8_frames(np.asarray(frame)[None])[0]


def _even_size(value: float) -> int:
    return max(2, 2 * int(value / 2 + 0.5))  # nearest even, halves up


def _fit_height(frame: np.ndarray, height: int) -> np.ndarray:
    """`frame` resized to `height` (even) and the even width that keeps its aspect ratio."""
    width = _even_size(frame.shape[1] * height / frame.shape[0])
    if frame.shape[:2] == (height, width):
        return frame
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR))


def side_by_side_frames(result, pose, reference, *, driving=None, height: int | None = None):
    """Yields the side-by-side frames (height, W, 3) uint8, one per frame of `result`: the reference photo (held
    still), the driving video (if given), the pose video and the result, left to right.

    `result`, `pose` and `driving`: sequences of frames (an (N, H, W, 3) array, a list of arrays or images; a
    (1, N, H, W, 3) pipeline output too), uint8 or floats in [0, 1]. Each panel is resized to `height` (default: the
    result's, made even) keeping its aspect ratio at an even width. A pose or driving video shorter than the result
    holds its last frame; frames past the result's end are not shown.
    """
    videos = [np.asarray(v)[0] if isinstance(v, np.ndarray) and v.ndim == 5 else v for v in (result, pose, driving)]
    result, pose, driving = videos
    if len(result) == 0:
        raise ValueError("The result has no frames.")
    first = _frame_uint8(result[0])
    height = _even_size(first.shape[0] if height is None else height)
    photo = _fit_height(_frame_uint8(reference), height)
    sources = [v for v in (driving, pose) if v is not None]
    for v in sources:
        if len(v) == 0:
            raise ValueError("A pose or driving video has no frames.")

    for index in range(len(result)):
        panels = [photo] + [_fit_height(_frame_uint8(v[min(index, len(v) - 1)]), height) for v in sources]
        panels.append(_fit_height(first if index == 0 else _frame_uint8(result[index]), height))
        yield np.concatenate(panels, axis=1)


def write_side_by_side_mp4(path: str | os.PathLike, result, pose, reference, *, driving=None,
                           audio: AudioClip | None = None, fps: float = OUTPUT_FPS, height: int | None = None,
                           crf: int = 18, preset: str = "medium", threads: int = 0) -> str:
    """One H.264 mp4 of the reference photo, the driving video (optional), the aligned pose video and the result side
    by side (`side_by_side_frames`), with `audio` cut to its length, at `fps` (16): as many frames as the result,
    encoded one frame at a time. Returns `path`."""
    frames = side_by_side_frames(result, pose, reference, driving=driving, height=height)
    return write_mp4_stream(path, frames, fps, audio=audio, crf=crf, preset=preset, threads=threads)
