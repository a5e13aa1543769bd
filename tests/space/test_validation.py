import shutil

import av
import numpy as np
import pytest
from PIL import Image

from steadydancer.pose import load_image
from steadydancer_space.config import AppConfig, ConfigError
from steadydancer_space.request import check_number, check_prompt
from steadydancer_space.uploads import (
    reference_size,
    InputError,
    Limits,
    check_driving_video,
    check_keypoint_file,
    load_keypoints,
    load_reference_image,
    sniff,
)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    image = root / "person.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 64, 3), dtype=np.uint8)).save(image)
    video = root / "dance.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = 64, 96, "yuv420p"
        for i in range(8):
            frame = av.VideoFrame.from_ndarray(np.full((96, 64, 3), i * 20, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return root, image, video


def test_kind_comes_from_content_not_name(media, tmp_path):
    _, image, video = media
    video_as_png = tmp_path / "video.png"
    shutil.copy(video, video_as_png)
    image_as_mp4 = tmp_path / "image.mp4"
    shutil.copy(image, image_as_mp4)
    assert sniff(video_as_png)[0] == "video"
    assert sniff(image_as_mp4) == ("image", "PNG")
    with pytest.raises(InputError, match="actually a video"):
        load_reference_image(video_as_png)
    with pytest.raises(InputError, match="actually an image"):
        check_driving_video(image_as_mp4)


def test_valid_inputs_pass(media):
    _, image, video = media
    assert load_reference_image(image).shape == (96, 64, 3)
    check_driving_video(video)  # accepted: raises nothing
    assert reference_size(image) == (96, 64)


def test_truncated_and_empty_files(media, tmp_path):
    _, image, video = media
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(image.read_bytes()[:60])
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_reference_image(truncated)
    cut_video = tmp_path / "cut.mp4"
    cut_video.write_bytes(video.read_bytes()[:200])
    with pytest.raises(InputError, match="corrupt|no frames"):
        check_driving_video(cut_video)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        check_driving_video(empty)
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(InputError, match="not an image"):
        load_reference_image(text)


def test_tiff_references_and_unknown_video_codecs(media, tmp_path):
    _, image, video = media
    tiff = tmp_path / "photo.tif"
    Image.open(image).save(tiff, compression="tiff_lzw")
    assert sniff(tiff) == ("image", "TIFF")
    np.testing.assert_array_equal(load_reference_image(tiff), load_reference_image(image))
    unknown = tmp_path / "unknown_codec.mp4"  # the H.264 sample entry renamed: FFmpeg has no decoder for it
    unknown.write_bytes(video.read_bytes().replace(b"avc1", b"zzzz"))
    with pytest.raises(InputError, match="corrupt, or its video codec cannot be decoded"):
        check_driving_video(unknown)


def test_limits_are_enforced_and_configurable(media, tmp_path):
    _, image, video = media
    with pytest.raises(InputError, match="megapixels"):
        load_reference_image(image, Limits(max_image_pixels=1000))
    with pytest.raises(InputError, match="lasts"):
        check_driving_video(video, Limits(max_video_seconds=0.1))
    wide = tmp_path / "wide.png"
    Image.new("RGB", (500, 50)).save(wide)
    with pytest.raises(InputError, match="aspect ratio of 10.0:1"):
        load_reference_image(wide)
    tight = AppConfig.from_env({"STEADYDANCER_MAX_FILE_MB": "0.0001"}).limits
    with pytest.raises(InputError, match="the limit is"):
        load_reference_image(image, tight)
    with pytest.raises(ConfigError, match="STEADYDANCER_MAX_FRAMES='lots' is not a whole number"):
        AppConfig.from_env({"STEADYDANCER_MAX_FRAMES": "lots"})


def test_a_raw_h264_stream_without_a_duration_is_bounded_by_counting_its_frames(tmp_path):
    """A raw H.264 stream has no container duration: its length comes from its frames (80 of them, at the 25 fps
    FFmpeg assumes for a raw stream: 3.2 s)."""
    raw = tmp_path / "dance.h264"
    with av.open(str(raw), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width = stream.height = 32
        for i in range(80):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), i, np.uint8), "rgb24")))
        container.mux(stream.encode())
    with av.open(str(raw)) as container:
        assert not container.duration and not container.streams.video[0].duration  # nothing says how long it is
    with pytest.raises(InputError, match="lasts over 3 s; at most 3 s"):
        check_driving_video(raw, Limits(max_video_seconds=3.0))
    check_driving_video(raw, Limits(max_video_seconds=3.5))


def test_a_keypoint_frame_of_16384x1_is_refused_by_its_aspect(tmp_path):
    import json

    path = tmp_path / "thin.json"
    path.write_text(json.dumps({"format": "steadydancer.pose_sequence", "version": 1, "width": 16384, "height": 1,
                                "fps": 16, "frames": [{"body": [[0.5, 0.5]] * 18}]}))
    with pytest.raises(InputError, match="16384x1, an aspect ratio"):
        load_keypoints(path)


def test_numbers_prompts_and_keypoints(tmp_path):
    assert check_number("7", "steps", 1, 60, integer=True) == 7
    for bad in (float("nan"), float("inf"), -1, 61, "x", None, 2.5):
        with pytest.raises(InputError, match="steps"):
            check_number(bad, "steps", 1, 60, integer=True)
    with pytest.raises(InputError, match="at most 5"):
        check_prompt("x" * 6, Limits(max_prompt_chars=5))
    not_json = tmp_path / "poses.json"
    not_json.write_bytes(b"\x89PNG\r\n\x1a\n....")
    with pytest.raises(InputError, match="not JSON"):
        check_keypoint_file(not_json)


def test_every_pillow_mode_loads_as_what_it_shows(tmp_path):
    """16-bit and float grey are scaled (Pillow's own convert would clip them to white), palettes with transparency
    and grey+alpha are composited on white, CMYK is converted: each mode gives the 8-bit RGB picture it shows."""
    grey = np.random.default_rng(0).integers(0, 256, (24, 16), dtype=np.uint8)
    expected = np.repeat(grey[..., None], 3, axis=-1)
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")  # a 16-bit PNG (mode I;16)
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    np.testing.assert_array_equal(load_reference_image(tmp_path / "grey16.png"), expected)
    float_grey = Image.fromarray(grey.astype(np.float32) / 255.0, mode="F")
    np.testing.assert_allclose(load_image(float_grey).astype(int), expected, atol=1)
    transparent = Image.new("LA", (16, 24), (0, 0))
    np.testing.assert_array_equal(load_image(transparent), np.full((24, 16, 3), 255, np.uint8))
    palette = Image.new("P", (16, 24), 0)
    palette.putpalette([10, 20, 30] * 256)
    palette.info["transparency"] = 0
    np.testing.assert_array_equal(load_image(palette), np.full((24, 16, 3), 255, np.uint8))
    cmyk = Image.new("CMYK", (16, 24), (0, 255, 255, 0))  # pure red in CMYK
    np.testing.assert_array_equal(load_image(cmyk)[0, 0], [255, 0, 0])


@pytest.mark.parametrize("fmt,suffix", [("WEBP", "webp"), ("PNG", "png"), ("GIF", "gif")])
def test_an_animated_reference_photo_is_refused_not_cut_to_its_first_frame(tmp_path, fmt, suffix):
    frames = [Image.new("RGB", (64, 96), colour) for colour in ("red", "blue", "green")]
    animated = tmp_path / f"animated.{suffix}"
    frames[0].save(animated, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(animated) as image:
        assert image.n_frames == 3  # the file really holds three frames
    with pytest.raises(InputError, match="The reference image is animated"):
        load_reference_image(animated)
    with pytest.raises(InputError, match="The reference image is animated"):
        reference_size(animated)
    still = tmp_path / f"still.{suffix}"
    frames[0].save(still, format=fmt)
    assert load_reference_image(still).shape == (96, 64, 3)
