"""Video reading: resampling to 16 fps with correct timing, 4n+1 lengths, rotation, errors."""

from __future__ import annotations

import math
import subprocess
from fractions import Fraction

import numpy as np
import pytest

av = pytest.importorskip("av")

from steadydancer.sizing import is_valid_frame_count, next_valid_frame_count  # noqa: E402
from steadydancer.pose import (  # noqa: E402
    EmptyVideoError,
    PoseError,
    SyntheticPoseDetector,
    VideoReadError,
    fit_length,
    iter_video_frames,
    prepare_poses,
    probe_video,
    read_video,
    resample_indices,
)

BITS = 7
BLOCK = 16


def encode_index(i: int, width: int = BITS * BLOCK, height: int = 2 * BLOCK) -> np.ndarray:
    """RGB frame showing ``i`` in binary as white/black blocks along the top row."""
    img = np.zeros((height, width, 3), np.uint8)
    for b in range(BITS):
        if (i >> b) & 1:
            img[:BLOCK, b * BLOCK:(b + 1) * BLOCK] = 255
    img[BLOCK:, :BLOCK] = 255  # bottom-left marker, to see rotations
    return img


def decode_index(img: np.ndarray) -> int:
    return sum(1 << b for b in range(BITS) if img[:BLOCK, b * BLOCK:(b + 1) * BLOCK].mean() > 128)


def write_clip(path, num_frames: int, fps: int, *, codec="libx264", rotation=None, frame_fn=encode_index):
    first = frame_fn(0)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.height, s.width = first.shape[:2]
        s.pix_fmt = "yuv420p"
        if rotation is not None:
            s.set_display_rotation(rotation)
        for i in range(num_frames):
            for p in s.encode(av.VideoFrame.from_ndarray(frame_fn(i), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return str(path)


def expected_nearest(k: int, target_fps: int, source_fps: int, num_source: int) -> int:
    """Source frame nearest to time k / target_fps (earlier one on an exact tie), exactly."""
    n = Fraction(k, target_fps) * source_fps  # time in source frames
    return min(num_source - 1, math.ceil(n - Fraction(1, 2)))


@pytest.fixture(scope="module")
def clip30(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("vid") / "clip30.mp4", 90, 30)


def test_probe_reports_fps_duration_and_size(clip30):
    info = probe_video(clip30)
    assert info.fps == pytest.approx(30.0)
    assert info.duration == pytest.approx(3.0, abs=1e-3)
    assert (info.width, info.height) == (BITS * BLOCK, 2 * BLOCK)
    assert info.rotation == 0 and not info.has_audio


def test_resampling_30fps_3s_to_16fps_picks_the_nearest_frames(clip30):
    frames = list(iter_video_frames(clip30, 16))
    assert len(frames) == 48  # k / 16 < 3 s
    for k, f in enumerate(frames):
        want = expected_nearest(k, 16, 30, 90)
        assert f.index == want
        assert decode_index(f.image) == want  # the pixels really are that frame
        assert f.time == pytest.approx(want / 30, abs=1e-3)


def test_thirty_fps_three_seconds_gives_49_frames_at_16fps(clip30):
    out = prepare_poses(np.zeros((96, 64, 3), np.uint8), clip30, detector=SyntheticPoseDetector(),
                        width=64, height=96, num_frames=None)
    assert out.num_frames == 49 and out.fps == 16.0
    assert out.padded.tolist() == [False] * 48 + [True]
    want = [expected_nearest(k, 16, 30, 90) / 30 for k in range(48)]
    assert np.allclose(out.frame_times[:48], want, atol=1e-3)
    assert out.frame_times[48] == out.frame_times[47]
    assert out.duration == pytest.approx(49 / 16)


def test_every_frame_mode_keeps_all_source_frames(clip30):
    frames = list(iter_video_frames(clip30, None))
    assert [decode_index(f.image) for f in frames] == list(range(90))
    clip = read_video(clip30, None, max_frames=10)
    assert clip.frames.shape == (10, 2 * BLOCK, BITS * BLOCK, 3) and clip.fps == pytest.approx(30)


def test_resample_indices_matches_the_streaming_reader(clip30):
    times = [f.time for f in iter_video_frames(clip30, None)]
    for fps in (16, 12.5, 24, 60):
        assert resample_indices(times, fps).tolist() == [f.index for f in iter_video_frames(clip30, fps)]


def test_upsampling_repeats_frames_and_max_frames_stops_early(tmp_path):
    path = write_clip(tmp_path / "c8.mp4", 16, 8)
    frames = list(iter_video_frames(path, 16))
    assert len(frames) == 32
    assert [f.index for f in frames] == [expected_nearest(k, 16, 8, 16) for k in range(32)]
    assert len(list(iter_video_frames(path, 16, max_frames=5))) == 5


@pytest.mark.parametrize("n,trimmed", [(1, 1), (4, 5), (5, 5), (48, 49), (81, 81), (82, 85)])
def test_next_valid_frame_count(n, trimmed):
    assert next_valid_frame_count(n) == trimmed and is_valid_frame_count(trimmed)


def test_fit_length_trims_and_pads():
    items = list(range(10))
    kept, padded = fit_length(items, 5)
    assert kept == [0, 1, 2, 3, 4] and not padded.any()
    kept, padded = fit_length(items, 13)
    assert kept == items + [9, 9, 9] and padded.tolist() == [False] * 10 + [True] * 3
    kept, padded = fit_length(items)
    assert len(kept) == 13
    with pytest.raises(PoseError, match="4n\\+1"):
        fit_length(items, 12)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_applied_like_ffmpeg(tmp_path, rotation):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    path = write_clip(tmp_path / f"rot{rotation}.mp4", 3, 10, rotation=rotation)
    info = probe_video(path)
    frame = next(iter_video_frames(path, None)).image
    # Oracle: the ffmpeg command line, which auto-rotates by default.
    h, w = frame.shape[:2]
    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", path, "-frames:v", "1",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    assert len(raw) == h * w * 3
    oracle = np.frombuffer(raw, np.uint8).reshape(h, w, 3)
    assert (info.width, info.height) == (w, h)
    assert (w, h) == ((2 * BLOCK, BITS * BLOCK) if rotation in (90, -90) else (BITS * BLOCK, 2 * BLOCK))
    assert np.abs(frame.astype(int) - oracle).mean() < 4


def test_unreadable_and_empty_videos(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video " * 100)
    with pytest.raises(VideoReadError, match="cannot open"):
        probe_video(text)
    with pytest.raises(VideoReadError, match="not found"):
        list(iter_video_frames(tmp_path / "missing.mp4"))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(EmptyVideoError):
        probe_video(empty)
    # A well-formed container with a video stream and no frames.
    zero = tmp_path / "zero.avi"
    with av.open(str(zero), "w") as c:
        s = c.add_stream("mpeg4", rate=30)
        s.width = s.height = 64
        c.start_encoding()
    with pytest.raises(EmptyVideoError, match="no video frames"):
        probe_video(zero)
    with pytest.raises(EmptyVideoError):
        list(iter_video_frames(zero))
    with pytest.raises(EmptyVideoError):
        prepare_poses(np.zeros((96, 64, 3), np.uint8), zero, detector=SyntheticPoseDetector(), width=64, height=96)
    with pytest.raises(VideoReadError):
        prepare_poses(np.zeros((96, 64, 3), np.uint8), text, detector=SyntheticPoseDetector(), width=64, height=96)
