"""Long videos in windows on the tiny random pipeline: the window plan, what each window is conditioned on,
the per-window seeds, cancel, colour correction and blending. The tiny model's frames are noise; what is tested is
the plumbing, which is the same for the real one."""

from dataclasses import asdict

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from steadydancer.defaults import SamplerSettings
from steadydancer.long_video import LongVideo, generate_long_video, match_color, color_stats, plan_windows
from steadydancer.pose.render import PoseModelInputs
from steadydancer.scheduling import transformer_passes

HEIGHT, WIDTH, SEGMENT, STEPS, SEED = 32, 32, 9, 2, 7
SAMPLER = SamplerSettings(num_inference_steps=STEPS, guidance_scale=5.0, pose_guidance_scale=1.0,
                          pose_guidance_window=(0.0, 0.5), shift=3.0)
SETTINGS = dict(settings=SAMPLER, batch_guidance=False, noise_device="cpu")


@pytest.fixture(scope="module")
def pipe(make_tiny_pipe):
    return make_tiny_pipe()


@pytest.fixture(scope="module")
def embeds(pipe):
    """Prompt embeddings computed once (the tiny text encoder is cheap, but the tests compare runs)."""
    with torch.no_grad():
        return dict(prompt_embeds=pipe.encode_prompt("a person dancing", pipe.device),
                    negative_prompt_embeds=pipe.encode_prompt("static", pipe.device))


def make_poses(frames: int) -> PoseModelInputs:
    gen = torch.Generator().manual_seed(0)
    video = torch.rand(frames, 3, HEIGHT, WIDTH, generator=gen) * 2 - 1
    negative = torch.rand(frames, 3, HEIGHT, WIDTH, generator=gen) * 2 - 1
    pose_image = np.random.default_rng(1).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return PoseModelInputs(pose_video=video, negative_pose_video=negative, pose_image=pose_image)


PHOTO = np.random.default_rng(2).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


class Recorder:
    """Records what each window's `denoise` receives, the raw decoded windows, and counts transformer calls."""

    def __init__(self, pipe):
        self.pipe, self.denoised, self.decoded, self.calls = pipe, [], [], 0
        self._denoise, self._decode = pipe.denoise, pipe.decode_latents
        pipe.denoise = self.denoise
        pipe.decode_latents = self.decode
        self.handle = pipe.transformer.register_forward_pre_hook(self.count)

    def count(self, module, args):
        self.calls += 1

    def denoise(self, latents, conditions, prompt_embeds, negative_prompt_embeds, image_embeds, pose_image_embeds,
                **kwargs):
        self.denoised.append(dict(noise=latents.clone(), conditions=conditions, image_embeds=image_embeds.clone(),
                                  pose_image_embeds=pose_image_embeds.clone()))
        return self._denoise(latents, conditions, prompt_embeds, negative_prompt_embeds, image_embeds,
                             pose_image_embeds, **kwargs)

    def decode(self, latents):
        pixels = self._decode(latents)
        self.decoded.append(self.pipe.video_processor.postprocess_video(pixels, output_type="np")[0])
        return pixels

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for name, saved in (("denoise", self._denoise), ("decode_latents", self._decode)):
            if getattr(saved, "__self__", None) is self.pipe:  # the class's method: drop the wrapper
                delattr(self.pipe, name)
            else:  # another wrapper (a test's monkeypatch): put it back
                setattr(self.pipe, name, saved)
        self.handle.remove()


def run(pipe, embeds, frames=25, **kwargs):
    with Recorder(pipe) as rec:
        out = generate_long_video(pipe, PHOTO, make_poses(frames), frames, segment_frame_length=SEGMENT, seed=SEED,
                                  height=HEIGHT, width=WIDTH, **embeds, **{**SETTINGS, **kwargs})
    return out, rec


def test_plan_windows():
    assert [(w.start, w.num_frames, w.seed) for w in plan_windows(25, 9, seed=3)] == [(0, 9, 3), (8, 9, 4), (16, 9, 5)]
    assert [(w.start, w.num_frames) for w in plan_windows(481, 81)][-1] == (400, 81)  # 30 s = 6 windows of 81
    assert len(plan_windows(481, 81)) == 6
    # Any length: the last window is the shortest 4n+1 reaching the end; blending moves the starts closer.
    assert [(w.start, w.num_frames) for w in plan_windows(20, 9)] == [(0, 9), (8, 9), (16, 5)]
    assert [(w.start, w.num_frames) for w in plan_windows(25, 9, blend_frames=2)] == [(0, 9), (6, 9), (12, 9),
                                                                                     (18, 9)]
    assert [(w.start, w.num_frames) for w in plan_windows(7, 81)] == [(0, 9)]
    with pytest.raises(ValueError, match="blend_frames"):
        plan_windows(25, 9, blend_frames=4)
    with pytest.raises(ValueError, match="4n\\+1"):
        plan_windows(25, 10)


def test_three_windows_conditioning_seeds_and_passes(pipe, embeds):
    out, rec = run(pipe, embeds, color_correction=False)
    assert out.frames.shape == (25, HEIGHT, WIDTH, 3)  # 9 + 8 + 8
    assert (out.windows_done, out.num_windows, out.cancelled) == (3, 3, False)
    assert len(rec.denoised) == 3

    # Transformer calls: windows x passes per window (guidance passes run one by one).
    assert rec.calls == 3 * transformer_passes(STEPS, 5.0, 1.0, (0.0, 0.5))

    first = rec.denoised[0]["conditions"]
    for i, window in enumerate(rec.denoised):
        c = window["conditions"]
        # The identity anchor never changes: the photo's reference latent and image tokens in every window.
        assert torch.equal(c.reference_latents, first.reference_latents)
        assert torch.equal(window["image_embeds"], rec.denoised[0]["image_embeds"])
        # Window i's noise is randn from seed + i.
        expected = randn_tensor(tuple(window["noise"].shape), generator=torch.Generator().manual_seed(SEED + i))
        assert torch.equal(window["noise"], expected)
        # The pose reference latent is the window's own first pose frame.
        assert torch.equal(c.pose_reference_latents, c.pose_latents[:, :, :1])
        if i:
            # The I2V first-frame condition is the encoding of the previous window's last frame (= output frame
            # at the window's start), not the photo's.
            start = 8 * i
            frame = torch.from_numpy(out.frames[start]).permute(2, 0, 1)[None, :, None] * 2 - 1  # (1, 3, 1, H, W)
            assert torch.allclose(c.image_condition[:, 4:, :1], pipe.encode_video(frame), atol=1e-5)
            assert not torch.allclose(c.image_condition[:, 4:, :1], first.image_condition[:, 4:, :1])
            assert torch.equal(c.image_condition[:, :4], first.image_condition[:, :4])  # mask: first frame given
            # The pose tokens are the window's own first pose frame's.
            assert not torch.equal(window["pose_image_embeds"], rec.denoised[0]["pose_image_embeds"])

    # With correction off the video is the plain concatenation of the windows, each join frame once.
    plain = np.concatenate([rec.decoded[0], rec.decoded[1][1:], rec.decoded[2][1:]])
    np.testing.assert_array_equal(out.frames, plain)
    # ... and each window's last frame is the next one's first (the conditioning frame, re-encoded).
    np.testing.assert_array_equal(rec.decoded[0][-1], out.frames[8])


def test_one_window_is_a_single_call(pipe, embeds):
    poses = make_poses(9)
    out, _ = run(pipe, embeds, frames=9, noise_device=None)
    single = pipe(image=PHOTO, **poses.pipeline_kwargs(), height=HEIGHT, width=WIDTH, num_frames=9, seed=SEED,
                  output_type="np", batch_guidance=False, **embeds, **asdict(SAMPLER)).frames[0]
    np.testing.assert_array_equal(out.frames, single)


@pytest.mark.slow
def test_windows_are_public_pipeline_calls_on_carried_conditions(pipe, embeds):
    """The same video by hand: window 0 is a plain call; window 1 is a call on conditions encoded from window 0's
    frame 8 with the photo's reference latent put back, the photo's image tokens, its own first pose frame's tokens
    and noise from seed + 1."""
    out, _ = run(pipe, embeds, frames=17, color_correction=False)
    poses = make_poses(17)
    common = dict(output_type="np", batch_guidance=False, **embeds, **asdict(SAMPLER))
    first = pipe(image=PHOTO, pose_video=poses.pose_video[:9], negative_pose_video=poses.negative_pose_video[:9],
                 pose_image=poses.pose_image, height=HEIGHT, width=WIDTH, num_frames=9,
                 generator=torch.Generator().manual_seed(SEED), **common).frames[0]
    with torch.no_grad():
        carried = torch.from_numpy(first[8]).permute(2, 0, 1) * 2.0 - 1.0
        conditions = pipe.prepare_conditions(carried, poses.pose_video[8:], poses.negative_pose_video[8:], HEIGHT,
                                             WIDTH, 9)
        photo = pipe.prepare_conditions(PHOTO, poses.pose_video[:9], None, HEIGHT, WIDTH, 9)
        conditions.reference_latents = photo.reference_latents
        image_embeds = pipe.encode_image([PHOTO])
        pose_image_embeds = pipe.encode_image([poses.pose_video[8]])
    second = pipe(conditions=conditions, image_embeds=image_embeds, pose_image_embeds=pose_image_embeds,
                  generator=torch.Generator().manual_seed(SEED + 1), **common).frames[0]
    np.testing.assert_array_equal(out.frames, np.concatenate([first, second[1:]]))


@pytest.mark.slow
def test_color_correction_touches_only_later_windows(pipe, embeds, monkeypatch):
    # A join's drift, simulated: windows after the first decode with a red tint.
    decode, seen = pipe.decode_latents, []

    def tinted(latents):
        pixels = decode(latents)
        seen.append(None)
        if len(seen) > 1:
            pixels = pixels + torch.tensor([0.3, -0.1, -0.1]).view(1, 3, 1, 1, 1)
        return pixels

    monkeypatch.setattr(pipe, "decode_latents", tinted)
    off, _ = run(pipe, embeds, color_correction=False)
    seen.clear()
    on, _ = run(pipe, embeds, color_correction=True)
    np.testing.assert_array_equal(on.frames[:9], off.frames[:9])  # window 0 is the target, left as generated
    assert not np.allclose(on.frames[9:], off.frames[9:])
    # The tint is mostly removed: each later window's Lab mean is back near window 0's (not exactly: the tiny
    # model's noisy frames clip in RGB after the Lab map).
    target, _ = color_stats(on.frames[:9])
    for start in (9, 17):
        corrected = np.abs(color_stats(on.frames[start:start + 8])[0] - target)
        uncorrected = np.abs(color_stats(off.frames[start:start + 8])[0] - target)
        assert uncorrected[1] > 10  # a* (red) moved by the tint
        assert corrected.max() < 0.5 * uncorrected.max()


def test_match_color_moves_statistics():
    rng = np.random.default_rng(0)
    frames = (rng.random((3, 8, 8, 3)) * 0.5).astype(np.float32)
    target = color_stats((rng.random((2, 8, 8, 3)) * 0.5 + 0.4).astype(np.float32))
    mean, std = color_stats(match_color(frames, target))
    np.testing.assert_allclose(mean, target[0], atol=0.5)
    np.testing.assert_allclose(std, target[1], rtol=0.05, atol=0.5)


def test_cancel_between_windows_and_during_a_window(pipe, embeds):
    done = []
    job = LongVideo(pipe, PHOTO, make_poses(25), 25, segment_frame_length=SEGMENT, seed=SEED, height=HEIGHT,
                    width=WIDTH, cancel=lambda: bool(done), **embeds, **SETTINGS)
    for frames in job:
        done.append(frames)
    assert [len(f) for f in done] == [9] and job.state.next_window == 1 and not job.done

    progress = []
    cancel_at = (1, 1)  # window 1, after step 1
    with Recorder(pipe) as rec:
        out = generate_long_video(pipe, PHOTO, make_poses(25), 25, segment_frame_length=SEGMENT, seed=SEED,
                                  height=HEIGHT, width=WIDTH, callback=lambda *a: progress.append(a),
                                  cancel=lambda: progress[-1][0::2] == cancel_at if progress else False,
                                  **embeds, **SETTINGS)
    assert out.cancelled and out.windows_done == 1 and out.frames.shape[0] == 9  # window 1 discarded
    assert progress == [(0, 3, 1, 2), (0, 3, 2, 2), (1, 3, 1, 2)]
    assert len(rec.decoded) == 1  # the cancelled window was never decoded
    # The interrupt asked of the pipeline ends with its call: the next job runs every step of its windows.
    steps = []
    out = generate_long_video(pipe, PHOTO, make_poses(9), 9, segment_frame_length=SEGMENT, seed=SEED, height=HEIGHT,
                              width=WIDTH, callback=lambda *a: steps.append(a), **embeds, **SETTINGS)
    assert not out.cancelled and steps == [(0, 1, 1, 2), (0, 1, 2, 2)]


@pytest.mark.slow
def test_blend_frames_cross_fade(pipe, embeds):
    out, rec = run(pipe, embeds, frames=15, color_correction=False, blend_frames=2)
    # Windows [0, 9) and [6, 15): window 1 is conditioned on frame 6; frames 7-8 are cross-faded.
    assert out.frames.shape[0] == 15
    a, b = rec.decoded
    np.testing.assert_array_equal(out.frames[:7], a[:7])
    np.testing.assert_allclose(out.frames[7], a[7] * 2 / 3 + b[1] / 3, atol=1e-6)
    np.testing.assert_allclose(out.frames[8], a[8] / 3 + b[2] * 2 / 3, atol=1e-6)
    np.testing.assert_array_equal(out.frames[9:], b[3:])


def test_prepared_poses_window_matches_model_inputs():
    from steadydancer.pose import PoseSequence, SyntheticPoseDetector, prepare_poses

    synthetic = SyntheticPoseDetector(animate=True)
    driving = PoseSequence([synthetic(np.full((36, 64, 3), 40 + 9 * i, np.uint8)) for i in range(13)], 64, 36, 16.0)
    prepared = prepare_poses(PHOTO, driving, detector=synthetic, num_frames=13, width=WIDTH, height=HEIGHT)
    full = prepared.model_inputs()
    part = prepared.window(4, 13)
    torch.testing.assert_close(part.pose_video, full.pose_video[4:13], rtol=0, atol=0)
    torch.testing.assert_close(part.negative_pose_video, full.negative_pose_video[4:13], rtol=0, atol=0)
    np.testing.assert_array_equal(prepared.window(0, 5).pose_image, full.pose_image)
