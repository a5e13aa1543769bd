"""Writing the app's videos: H.264 (yuv420p, even sizes, faststart) mp4 at 16 fps that every browser plays, with the
driving video's audio cut to match (AAC). PyAV does the encoding and muxing, so no ffmpeg binary is needed."""

import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .defaults import OUTPUT_FPS

AUDIO_RATE = 44100  # AAC at a rate every browser decodes


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
    times are) for `duration` seconds, resampled to 44.1 kHz mono or stereo; None when there is no audio."""
    import av

    with av.open(os.fspath(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        video_start = 0.0
        if container.streams.video:
            vs = container.streams.video[0]
            if vs.start_time is not None and vs.time_base is not None:
                video_start = float(vs.start_time * vs.time_base)
        channels = 1 if stream.codec_context.channels == 1 else 2
        resampler = av.AudioResampler(format="fltp", layout="mono" if channels == 1 else "stereo", rate=AUDIO_RATE)
        chunks, first_time = [], None
        for frame in container.decode(stream):
            if first_time is None:
                first_time = frame.time if frame.time is not None else video_start
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    if not chunks:
        return None
    samples = np.concatenate(chunks, axis=1).astype(np.float32)
    # Place the samples on the video's clock: audio may start before or after the first video frame.
    offset = int(round(((first_time or 0.0) - video_start) * AUDIO_RATE))
    if offset > 0:
        samples = np.concatenate([np.zeros((samples.shape[0], offset), np.float32), samples], axis=1)
    elif offset < 0:
        samples = samples[:, -offset:]
    begin = max(0, int(round(start * AUDIO_RATE)))
    end = samples.shape[1] if duration is None else begin + int(round(duration * AUDIO_RATE))
    samples = samples[:, begin:end]
    if samples.shape[1] == 0:
        return None
    return AudioClip(samples, AUDIO_RATE)


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
    `threads=1` makes the bytes reproducible (x264's threaded output varies from run to run); 0 lets x264 choose."""
    import av

    frames = _even(to_uint8_frames(frames))
    path = os.fspath(path)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height = frames.shape[2], frames.shape[1]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(crf), "preset": preset, "threads": str(threads)}
        audio_stream = None
        if audio is not None:
            layout = "mono" if audio.samples.shape[0] == 1 else "stereo"
            audio_stream = container.add_stream("aac", rate=audio.rate, layout=layout)
            audio_stream.bit_rate = 128_000

        video.time_base = 1 / rate
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index  # explicit timestamps: x264's rate control reads them
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)

        if audio_stream is not None:
            samples = audio.samples[:, : int(round(len(frames) / float(rate) * audio.rate))]
            samples = np.ascontiguousarray(samples, dtype=np.float32)
            chunk = audio_stream.codec_context.frame_size or 1024
            for begin in range(0, samples.shape[1], chunk):
                piece = np.ascontiguousarray(samples[:, begin : begin + chunk])
                frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=audio_stream.layout.name)
                frame.sample_rate = audio.rate
                frame.pts = begin
                for packet in audio_stream.encode(frame):
                    container.mux(packet)
            for packet in audio_stream.encode():
                container.mux(packet)
    return path


def probe_mp4(path: str | os.PathLike) -> VideoProbe:
    """Decodes the file and reports what a player would see (used by the tests and the app's checks)."""
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
