"""The live preview (`steadydancer.preview`) and the side-by-side video (`steadydancer.video_io`)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from steadydancer.preview import (
    WAN21_LATENT_RGB,
    channel_correlation,
    decode_on_latent_grid,
    fit_latent_rgb,
    pixels_to_latent_grid,
    predicted_clean_latents,
    preview_frame_indices,
    preview_strip,
    step_sigma,
)


# ------------------------------------------------------------------------------------------------ x0 of a step
def test_predicted_clean_latents_is_latents_minus_sigma_velocity():
    g = torch.Generator().manual_seed(0)
    latents, velocity = torch.randn(2, 16, 3, 4, 5, generator=g), torch.randn(2, 16, 3, 4, 5, generator=g)
    torch.testing.assert_close(predicted_clean_latents(latents, velocity, 0.7), latents - 0.7 * velocity)
    per_sample = predicted_clean_latents(latents, velocity, torch.tensor([0.2, 0.9]))
    torch.testing.assert_close(per_sample[0], latents[0] - 0.2 * velocity[0])
    torch.testing.assert_close(per_sample[1], latents[1] - 0.9 * velocity[1])

    # The flow-matching path it inverts: x_t = (1 - s) x0 + s noise, v = noise - x0.
    x0, noise = torch.randn(1, 16, 2, 3, 3, generator=g), torch.randn(1, 16, 2, 3, 3, generator=g)
    x_t = 0.6 * x0 + 0.4 * noise
    torch.testing.assert_close(predicted_clean_latents(x_t, noise - x0, 0.4), x0)


def test_predicted_clean_latents_matches_the_samplers_own():
    """At each step, the x0 UniPC (flow_prediction) builds its update on is the preview's x0 with `step_sigma`."""
    from steadydancer.scheduling import make_scheduler, set_released_timesteps

    scheduler = make_scheduler()
    set_released_timesteps(scheduler, 4, 5.0)
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 16, 2, 3, 3, generator=g)
    for i, t in enumerate(scheduler.timesteps):
        velocity = torch.randn(latents.shape, generator=g)
        if scheduler.step_index is None:
            scheduler._init_step_index(t)
        expected = scheduler.convert_model_output(velocity, sample=latents)
        torch.testing.assert_close(predicted_clean_latents(latents, velocity, step_sigma(scheduler, i)), expected)
        latents = scheduler.step(velocity, t, latents, return_dict=False)[0]


# --------------------------------------------------------------------------------------------- the strip
def test_preview_strip_shape_dtype_and_content():
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(2, 16, 21, 9, 16, generator=g)
    strip = preview_strip(x0, WAN21_LATENT_RGB, max_frames=4)
    assert strip.dtype == np.uint8 and strip.shape == (9, 4 * 16, 3)

    # Panels are the projected frames, first to last latent frame, of sample 0.
    frames = preview_frame_indices(21, 4)
    assert frames[0] == 0 and frames[-1] == 20 and len(frames) == 4
    rgb = WAN21_LATENT_RGB(x0[:1])[0]  # (3, 21, 9, 16)
    for k, f in enumerate(frames):
        expected = ((rgb[:, f] + 1) * 127.5).clamp(0, 255).round().permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(strip[:, 16 * k : 16 * (k + 1)], expected.astype(np.uint8))

    assert preview_strip(x0, max_frames=4, scale=3).shape == (27, 4 * 48, 3)
    assert preview_strip(x0[:, :, :2], max_frames=4).shape == (9, 2 * 16, 3)  # fewer latent frames than asked


def test_preview_strip_from_latents_velocity_sigma():
    g = torch.Generator().manual_seed(3)
    latents, velocity = torch.randn(1, 16, 5, 6, 8, generator=g), torch.randn(1, 16, 5, 6, 8, generator=g)
    from_step = preview_strip(latents=latents, velocity=velocity, sigma=0.35, max_frames=3)
    np.testing.assert_array_equal(from_step, preview_strip(latents - 0.35 * velocity, max_frames=3))
    with pytest.raises(ValueError):
        preview_strip(latents=latents, velocity=velocity)  # no sigma


# --------------------------------------------------------------------------------------------- fitting
class LinearVAE:
    """A 'VAE' whose decode is exactly linear + bias per latent voxel, spread over its 8x8 pixels and, causally,
    over its pixel frames (latent frame 0 -> frame 0, latent frame k -> frames 4k-3 .. 4k)."""

    def __init__(self, weight, bias, generator):
        self.weight, self.bias = weight, bias  # (16, 3), (3,) on raw latents
        self.config = SimpleNamespace(latents_mean=torch.randn(16, generator=generator).tolist(),
                                      latents_std=(torch.rand(16, generator=generator) + 0.5).tolist())
        self.dtype = torch.float64

    def decode(self, raw, return_dict=False):
        rgb = torch.einsum("bcfhw,cr->brfhw", raw, self.weight) + self.bias.view(1, 3, 1, 1, 1)
        rgb = torch.cat([rgb[:, :, :1], rgb[:, :, 1:].repeat_interleave(4, dim=2)], dim=2)
        return (rgb.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4),)


def test_fit_recovers_an_exactly_linear_decoder():
    g = torch.Generator().manual_seed(4)
    weight = torch.randn(16, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(3, generator=g, dtype=torch.float64)
    vae = LinearVAE(weight, bias, g)
    latents = [torch.randn(1, 16, 3, 4, 5, generator=g, dtype=torch.float64) for _ in range(2)]
    fitted = fit_latent_rgb(vae, *latents)

    # On normalised latents z_n = (z - mean) / std the map is W * std (per row) and bias b + mean @ W.
    mean, std = (torch.tensor(v, dtype=torch.float64) for v in (vae.config.latents_mean, vae.config.latents_std))
    factors, fitted_bias = fitted.tensors(dtype=torch.float64)
    torch.testing.assert_close(factors, weight * std[:, None], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(fitted_bias, bias + mean @ weight, rtol=1e-9, atol=1e-9)


def test_pixels_to_latent_grid_aligns_the_causal_time_axis():
    # Pixel frame t holds the value t: latent frame 0 <- frame 0, latent frame k <- mean of frames 4k-3 .. 4k.
    pixels = torch.arange(9, dtype=torch.float32).view(1, 1, 9, 1, 1).expand(1, 3, 9, 16, 24)
    grid = pixels_to_latent_grid(pixels, (3, 2, 3))
    assert grid.shape == (1, 3, 3, 2, 3)
    torch.testing.assert_close(grid[0, 0, :, 0, 0], torch.tensor([0.0, 2.5, 6.5]))


def _smooth_video(seed: int, frames: int = 9, size: int = 32) -> torch.Tensor:
    # (1, 3, frames, size, size) in [-1, 1]: random values on a 3x4x4 grid, trilinearly interpolated
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 3, 4, 4, generator=g) * 2 - 1
    return F.interpolate(coarse, size=(frames, size, size), mode="trilinear", align_corners=True)


@pytest.mark.slow
def test_fit_on_the_tiny_vae_predicts_its_decode(tiny_checkpoints):
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan.from_pretrained(tiny_checkpoints[1] / "vae").eval()
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)

    def encode(video):  # normalised posterior means, as the pipeline's encode_video
        with torch.no_grad():
            return (vae.encode(video).latent_dist.mode() - mean) / std

    # The latents a preview sees are near encodings of images, so fit and test on encodings of smooth images: on
    # that part of latent space the decoder is close to its linearisation. Test on videos the fit never saw.
    train = [encode(_smooth_video(seed)) for seed in range(6)]
    held_out = torch.cat([encode(_smooth_video(100 + seed)) for seed in range(3)])
    projection = fit_latent_rgb(vae, *train)

    correlation = channel_correlation(projection(held_out), decode_on_latent_grid(vae, held_out))
    # Measured with these seeded weights and videos: 0.91 / 0.84 / 0.91 (R, G, B) held out, 0.90 / 0.86 / 0.92 on
    # the training videos (so no overfitting: 17 unknowns per colour, 288 voxels), and at least 0.88 / 0.84 / 0.89
    # on each of 10 further videos. For contrast, a fit on i.i.d. Gaussian latents (off the image-like part, where
    # this random decoder is far from linear) predicts held-out Gaussian latents at about 0 (|r| < 0.1). 0.75 leaves
    # room for float differences across machines and still fails a preview that does not track the decode.
    assert correlation.min() > 0.75, correlation


# ------------------------------------------------------------------------------------------ side-by-side video
def _decoded_frames(path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(container.streams.video[0])]


def test_side_by_side_mp4_panels_frames_fps_and_audio(tmp_path):
    from steadydancer.video_io import AudioClip, probe_mp4, write_side_by_side_mp4

    def solid(colour, frames, height, width):
        return np.broadcast_to(np.array(colour, np.uint8), (frames, height, width, 3))

    red, green, blue, yellow = (220, 30, 30), (30, 200, 40), (30, 40, 220), (230, 220, 30)
    result = solid(red, 9, 32, 48)
    pose = solid(green, 9, 32, 48).astype(np.float32) / 255.0  # floats in [0, 1] too
    reference = solid(blue, 1, 64, 64)[0]  # square photo: 32 x 32 at the common height
    driving = list(solid(yellow, 5, 16, 24))  # half size, and shorter: its last frame is held
    t = np.arange(44100 * 2) / 44100
    audio = AudioClip(np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)]).astype(np.float32) * 0.3)

    path = write_side_by_side_mp4(tmp_path / "sbs.mp4", result, pose, reference, driving=driving, audio=audio,
                                  threads=1)
    probe = probe_mp4(path)
    assert probe.num_frames == 9 and probe.fps == 16 and probe.codec == "h264" and probe.pix_fmt == "yuv420p"
    assert (probe.width, probe.height) == (32 + 48 + 48 + 48, 32)
    assert probe.audio_codec == "aac" and abs(probe.audio_duration - 9 / 16) < 0.05

    # Left to right: photo [0, 32), driving [32, 80), pose [80, 128), result [128, 176); check each panel's centre.
    for frame in (_decoded_frames(path)[i] for i in (0, 8)):
        for centre, colour in ((16, blue), (56, yellow), (104, green), (152, red)):
            np.testing.assert_allclose(frame[16, centre].astype(int), colour, atol=12)


def test_side_by_side_without_driving_and_odd_sizes(tmp_path):
    from steadydancer.video_io import probe_mp4, write_side_by_side_mp4

    result = np.full((1, 5, 33, 41, 3), 0.5, np.float32)  # the pipeline's (1, N, H, W, 3) floats, odd size
    pose = np.zeros((7, 33, 41, 3), np.uint8)  # longer than the result: cut
    path = write_side_by_side_mp4(tmp_path / "odd.mp4", result, pose, np.zeros((20, 10, 3), np.uint8), threads=1)
    probe = probe_mp4(path)
    # Height 33 -> 34; widths 41 * 34/33 -> 42 and 10 * 34/20 -> 18 (even).
    assert probe.num_frames == 5 and (probe.width, probe.height) == (18 + 42 + 42, 34) and probe.audio_codec is None


def test_write_mp4_stream_takes_a_generator(tmp_path):
    from steadydancer.video_io import probe_mp4, write_mp4_stream

    frames = (np.full((16, 24, 3), 10 * i, np.uint8) for i in range(20))
    probe = probe_mp4(write_mp4_stream(tmp_path / "stream.mp4", frames, threads=1))
    assert probe.num_frames == 20 and probe.fps == 16 and (probe.width, probe.height) == (24, 16)


def test_crf_0_keeps_one_step_differences_where_they_are(tmp_path):
    """Lossless (`crf=0`): pixels one step off stay a step or two off, in their own 2x2 chroma blocks only, where a
    lossy encode of noise codes whole blocks otherwise."""
    from steadydancer.pose import iter_video_frames
    from steadydancer.video_io import write_mp4

    rng = np.random.default_rng(0)
    frames = rng.integers(1, 255, (5, 32, 48, 3), dtype=np.uint8)
    nudged_at = rng.random(frames.shape[:3]) < 0.01
    nudged = frames + nudged_at[..., None].astype(np.uint8)

    def decoded(video, name, crf):
        path = write_mp4(tmp_path / name, video, crf=crf)
        return np.stack([f.image for f in iter_video_frames(path, None)]).astype(int)

    lossless = np.abs(decoded(frames, "a.mp4", 0) - decoded(nudged, "b.mp4", 0)).max(axis=-1)
    blocks = nudged_at.reshape(5, 16, 2, 24, 2).any(axis=(2, 4)).repeat(2, axis=1).repeat(2, axis=2)
    assert 0 < lossless.max() <= 2 and not lossless[~blocks].any()
    lossy = np.abs(decoded(frames, "c.mp4", 18) - decoded(nudged, "d.mp4", 18)).max(axis=-1)
    assert lossy.max() > 2 and lossy[~blocks].any()
