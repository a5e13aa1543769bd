"""The generate path feeds the transformer what the released `generate` does.

The released chain is written out here independently of the library: each pose canvas resized with PIL bicubic to
the reference photo's own size, to [-1, 1] as `to_tensor` then `normalize(0.5, 0.5)`, then torch bicubic to the
generation size (align_corners False, unclamped), then the VAE.
"""

import io

import cv2
import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

from steadydancer.defaults import DEFAULT_NEGATIVE_PROMPT, RELEASED, RELEASED_CLI
from steadydancer.pipeline_steadydancer import SteadyDancerPipeline, prompt_clean
from steadydancer.pose import Pose, PoseError, PoseSequence, SyntheticPoseDetector, draw_pose, prepare_poses
from steadydancer.fidelity import FIDELITY_MODES, get_fidelity_mode
from steadydancer.sizing import RESOLUTIONS

HEIGHT, WIDTH, FRAMES = 96, 64, 5
SYNTH = SyntheticPoseDetector(animate=True)


@pytest.fixture(scope="module")
def pipe(make_tiny_pipe):
    return make_tiny_pipe()


@pytest.fixture(scope="module")
def driving_video(tmp_path_factory):
    """A short clip whose brightness swings the synthetic detector's arms."""
    av = pytest.importorskip("av")
    path = tmp_path_factory.mktemp("clip") / "dance.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = 64, 96, "yuv420p"
        for i in range(FRAMES):
            frame = np.full((96, 64, 3), 40 + 45 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return str(path)


def reference_photo(height: int, width: int) -> np.ndarray:
    """A smooth, person-free photo of the given size (same aspect as the generation size)."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx / width, yy / height, 0.5 + 0.5 * np.sin(xx / 7.0) * np.cos(yy / 5.0)], axis=-1)
    return np.ascontiguousarray(rgb * 200 + 20).astype(np.uint8)


# -------------------------------------------------------------------- the released chain, written out
def released_tensor(image: PIL.Image.Image) -> torch.Tensor:
    return (torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous().float().div(255) - 0.5) / 0.5


def released_pose_pixels(poses, reference_hw) -> torch.Tensor:
    """(3, N, H, W): canvas -> PIL bicubic to the reference size -> [-1, 1] -> torch bicubic, unclamped."""
    frames = []
    for pose in poses:
        canvas = PIL.Image.fromarray(draw_pose(pose, 2 * HEIGHT, 2 * WIDTH))
        at_reference = released_tensor(canvas.resize(reference_hw[::-1], PIL.Image.BICUBIC))
        frames.append(F.interpolate(at_reference[None], size=(HEIGHT, WIDTH), mode="bicubic", align_corners=False)[0])
    return torch.stack(frames, dim=1)


def released_latents(vae, video: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        latents = vae.encode(video[None]).latent_dist.mode()
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    return (latents - mean) / std


def released_clip_input(processor, image: torch.Tensor) -> torch.Tensor:
    size = (processor.crop_size["height"], processor.crop_size["width"])
    x = F.interpolate(image[None], size=size, mode="bicubic", align_corners=False).mul(0.5).add(0.5)
    mean, std = torch.tensor(processor.image_mean).view(1, 3, 1, 1), torch.tensor(processor.image_std).view(1, 3, 1, 1)
    return (x - mean) / std


# -------------------------------------------------------------------- pose frames and image-encoder input
@pytest.mark.slow
@pytest.mark.parametrize("reference_hw", [(600, 400), (48, 32)], ids=["larger-reference", "smaller-reference"])
def test_app_style_pose_path_matches_the_released_chain(pipe, driving_video, reference_hw):
    reference = reference_photo(*reference_hw)
    prepared = prepare_poses(reference, driving_video, detector=SYNTH, max_area=HEIGHT * WIDTH, num_frames=FRAMES)
    assert (prepared.height, prepared.width) == (HEIGHT, WIDTH) and prepared.reference_size == reference_hw
    inputs = prepared.model_inputs()
    assert inputs.pose_video.shape == (FRAMES, 3, HEIGHT, WIDTH) and inputs.pose_image.shape == (*reference_hw, 3)

    conditions = pipe.prepare_conditions(reference, inputs.pose_video, inputs.negative_pose_video, HEIGHT, WIDTH,
                                         FRAMES)

    pose = released_pose_pixels(prepared.poses, reference_hw)
    negative = released_pose_pixels(prepared.negative_poses, reference_hw)
    assert pose.min() < -1.0 or pose.max() > 1.0  # the unclamped overshoot is kept
    torch.testing.assert_close(inputs.pose_video.transpose(0, 1), pose, atol=1e-6, rtol=0)
    torch.testing.assert_close(conditions.pose_latents, released_latents(pipe.vae, pose), atol=1e-5, rtol=0)
    torch.testing.assert_close(conditions.negative_pose_latents, released_latents(pipe.vae, negative),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(conditions.pose_reference_latents, released_latents(pipe.vae, pose[:, :1]),
                               atol=1e-5, rtol=0)

    # The same chain when the stored 8-bit canvases are given instead (what the released code reads from disk).
    canvases = [draw_pose(p, 2 * HEIGHT, 2 * WIDTH) for p in prepared.poses]
    from_canvases = pipe.prepare_conditions(reference, canvases, None, HEIGHT, WIDTH, FRAMES)
    torch.testing.assert_close(from_canvases.pose_latents, conditions.pose_latents, atol=1e-6, rtol=0)

    # The old shortcut (canvas straight to the generation size) is measurably different: the test can tell.
    direct = torch.stack([released_tensor(PIL.Image.fromarray(f)) for f in prepared.positive], dim=1)
    assert (released_latents(pipe.vae, direct) - conditions.pose_latents).abs().max() > 1e-3

    # Image-encoder inputs: torch bicubic of the [-1, 1] images at their own size, no 8-bit round trip.
    first_at_reference = released_tensor(PIL.Image.fromarray(canvases[0]).resize(reference_hw[::-1], PIL.Image.BICUBIC))
    torch.testing.assert_close(pipe.image_encoder_input([inputs.pose_image]),
                               released_clip_input(pipe.image_processor, first_at_reference), atol=1e-6, rtol=0)
    reference_pixels = released_tensor(PIL.Image.fromarray(reference))
    torch.testing.assert_close(pipe.image_encoder_input([reference]),
                               released_clip_input(pipe.image_processor, reference_pixels), atol=1e-6, rtol=0)


@pytest.mark.slow
def test_the_call_feeds_the_image_encoder_the_released_inputs(pipe, driving_video):
    reference = reference_photo(300, 200)
    prepared = prepare_poses(reference, driving_video, detector=SYNTH, max_area=HEIGHT * WIDTH, num_frames=FRAMES)
    seen = []
    hook = pipe.image_encoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["pixel_values"].clone()), with_kwargs=True)
    try:
        for kwargs in (prepared.model_inputs().pipeline_kwargs(),
                       dict(pose_video=[draw_pose(p, 2 * HEIGHT, 2 * WIDTH) for p in prepared.poses])):
            pipe(image=reference, **kwargs, max_area=HEIGHT * WIDTH, pose_guidance_scale=0.0, num_inference_steps=1,
                 seed=0, output_type="latent")
    finally:
        hook.remove()
    canvas = PIL.Image.fromarray(draw_pose(prepared.poses[0], 2 * HEIGHT, 2 * WIDTH))
    at_reference = released_tensor(canvas.resize((200, 300), PIL.Image.BICUBIC))
    expected_pose = released_clip_input(pipe.image_processor, at_reference)
    expected_ref = released_clip_input(pipe.image_processor, released_tensor(PIL.Image.fromarray(reference)))
    assert len(seen) == 4  # reference, then pose, for each of the two calls
    for got, want in zip(seen, [expected_ref, expected_pose] * 2):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_each_input_type_has_one_pixel_range(pipe):
    rgb = reference_photo(HEIGHT, WIDTH)
    from_uint8 = pipe.image_encoder_input([rgb])
    for same in (PIL.Image.fromarray(rgb), rgb.astype(np.float32) / 255.0,
                 torch.from_numpy(rgb).permute(2, 0, 1).float() / 127.5 - 1.0):
        torch.testing.assert_close(pipe.image_encoder_input([same]), from_uint8, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="image must be a float tensor in \\[-1, 1\\]"):
        pipe(image=torch.from_numpy(rgb).permute(2, 0, 1), pose_video=[rgb] * FRAMES, pose_guidance_scale=0.0)
    with pytest.raises(ValueError, match="pose_video\\[1\\] must be an RGB array"):
        pipe(image=rgb, pose_video=[rgb, rgb[..., :2]], pose_guidance_scale=0.0)


# -------------------------------------------------------------------- prompts
def test_prompt_cleaning_is_the_released_one():
    assert prompt_clean("  A woman  dancing\n in a studio &amp; smiling  ") == "A woman dancing in a studio & smiling"
    assert prompt_clean("rock &amp;amp; roll") == "rock & roll"  # unescaped twice
    assert prompt_clean("cafÃ©") == "café"  # ftfy repairs mojibake
    assert prompt_clean("镜头晃动，色调艳丽") == "镜头晃动,色调艳丽"  # full-width commas fold to ASCII


def test_empty_negative_prompt_means_the_released_default(pipe):
    rgb = reference_photo(HEIGHT, WIDTH)
    seen = []
    hook = pipe.text_encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        for negative in (None, "", DEFAULT_NEGATIVE_PROMPT, "dancing"):
            pipe(image=rgb, pose_video=[rgb] * FRAMES, max_area=HEIGHT * WIDTH, prompt="a person",
                 negative_prompt=negative, pose_guidance_scale=0.0, num_inference_steps=1, seed=0, output_type="latent")
    finally:
        hook.remove()
    negatives = seen[1::2]  # each call encodes the prompt, then the negative prompt
    assert torch.equal(negatives[0], negatives[1]) and torch.equal(negatives[0], negatives[2])
    assert not torch.equal(negatives[0], negatives[3])


def test_a_list_of_prompts_is_a_batch(pipe):
    rgb = reference_photo(HEIGHT, WIDTH)
    args = dict(image=rgb, pose_video=[rgb] * FRAMES, max_area=HEIGHT * WIDTH, pose_guidance_scale=0.0,
                num_inference_steps=2, output_type="latent")
    noise = torch.randn(2, 16, 2, HEIGHT // 8, WIDTH // 8, generator=torch.Generator().manual_seed(0))
    both = pipe(**args, prompt=["a person dancing", "a person spins"], latents=noise).frames
    assert both.shape == noise.shape
    for k, prompt in enumerate(["a person dancing", "a person spins"]):
        alone = pipe(**args, prompt=prompt, latents=noise[k:k + 1]).frames
        torch.testing.assert_close(both[k:k + 1], alone, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(both[0], both[1])
    for bad in ([], ["a", 3], 3):
        with pytest.raises(ValueError, match="prompt must be a string or a non-empty list of strings"):
            pipe(**args, prompt=bad)
    with pytest.raises(ValueError, match="negative_prompt has 1 entries but prompt has 2"):
        pipe(**args, prompt=["a", "b"], negative_prompt=["c"])


# -------------------------------------------------------------------- seeds
def test_seed_draws_the_noise_on_the_execution_device(pipe):
    device = pipe._execution_device
    noise = pipe.prepare_latents(1, 9, HEIGHT, WIDTH, seed=7)
    expected = torch.randn(1, 16, 3, HEIGHT // 8, WIDTH // 8, generator=torch.Generator(device).manual_seed(7),
                           device=device)
    assert torch.equal(noise, expected)
    cpu = pipe.prepare_latents(1, 9, HEIGHT, WIDTH, generator=torch.Generator("cpu").manual_seed(7))
    assert cpu.device == torch.device(device) and (device.type != "cpu" or torch.equal(cpu, noise))
    rgb = reference_photo(HEIGHT, WIDTH)
    with pytest.raises(ValueError, match="either `seed` or `generator`"):
        pipe(image=rgb, pose_video=[rgb] * FRAMES, pose_guidance_scale=0.0, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="seed must be an integer"):
        pipe(image=rgb, pose_video=[rgb] * FRAMES, pose_guidance_scale=0.0, seed="1")


# -------------------------------------------------------------------- components
def test_core_pipeline_without_encoders(pipe):
    assert set(SteadyDancerPipeline._optional_components) == {"tokenizer", "text_encoder", "image_encoder",
                                                              "image_processor"}
    assert (pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal) == (8, 4)
    core = SteadyDancerPipeline(None, None, None, None, pipe.transformer, pipe.vae, pipe.scheduler)
    rgb = reference_photo(HEIGHT, WIDTH)
    calls = []
    hook = pipe.vae.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match="no tokenizer or text_encoder; pass `prompt_embeds`"):
            core(image=rgb, pose_video=[rgb] * FRAMES, pose_guidance_scale=0.0, prompt="a person")
        embeds = torch.zeros(1, 8, pipe.transformer.config.text_dim)
        with pytest.raises(ValueError, match="no image_encoder or image_processor; pass `image_embeds"):
            core(image=rgb, pose_video=[rgb] * FRAMES, pose_guidance_scale=0.0, prompt_embeds=embeds,
                 negative_prompt_embeds=embeds)
    finally:
        hook.remove()
    assert calls == []
    assert not hasattr(SteadyDancerPipeline, "from_hub")


# -------------------------------------------------------------------- the released switch
def test_released_fidelity_mode_is_the_released_cli():
    released, default = get_fidelity_mode("released"), get_fidelity_mode("default")
    assert set(FIDELITY_MODES) == {"default", "released"}
    assert released.pose_kwargs()["fps"] is None and default.pose_kwargs()["fps"] == 16
    assert released.sampler_kwargs()["pose_guidance_scale"] == RELEASED_CLI.pose_guidance_scale == 1.5
    assert default.sampler_kwargs()["pose_guidance_scale"] == RELEASED.pose_guidance_scale == 1.0
    assert released.sampler_kwargs(RESOLUTIONS["480p"])["shift"] == 3.0
    assert released.sampler_kwargs(RESOLUTIONS["576p"])["shift"] == 5.0
    with pytest.raises(ValueError, match="fidelity must be one of default, released"):
        get_fidelity_mode("paper")

    # 30 fps keypoints, the person lost in one frame, aligned on frame 2.
    poses = [SYNTH(np.full((180, 320, 3), b, np.uint8)) for b in (10, 60, 110, 160, 210, 250, 200, 150, 100, 50)]
    poses[4] = Pose.empty(320, 180)
    sequence = PoseSequence(poses, 320, 180, 30.0)
    reference = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    kwargs = dict(detector=SYNTH, max_area=HEIGHT * WIDTH, num_frames=5, align_frame=2)
    out = prepare_poses(reference, sequence, **kwargs, **released.pose_kwargs())
    assert out.start_index == 2 and out.align_index == 2
    np.testing.assert_allclose(out.frame_times, np.arange(2, 7) / 30.0)  # every frame, from the align frame
    assert out.lost.tolist() == [False, False, True, False, False] and not out.positive[2].any()  # left black
    ours = prepare_poses(reference, sequence, **kwargs, **default.pose_kwargs())
    assert ours.start_index == 0 and ours.align_index == 2 and ours.positive[2].any()

    # The released pose frames are written by OpenCV (JPEG quality 95, 4:2:0) and read back by PIL.
    stored = []
    for pose in out.poses:
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(draw_pose(pose, 2 * HEIGHT, 2 * WIDTH), cv2.COLOR_RGB2BGR))
        image = PIL.Image.open(io.BytesIO(data.tobytes())).convert("RGB")
        stored.append(image.resize((WIDTH, HEIGHT), PIL.Image.BICUBIC))  # the reference's size (here = generation)
    expected = torch.stack([F.interpolate(released_tensor(im)[None], size=(HEIGHT, WIDTH), mode="bicubic",
                                          align_corners=False)[0] for im in stored])
    inputs = out.model_inputs()
    torch.testing.assert_close(inputs.pose_video, expected, atol=1e-6, rtol=0)
    assert np.array_equal(inputs.pose_image, np.array(stored[0]))
    assert (ours.model_inputs().pose_video - inputs.pose_video).abs().max() > 1e-2  # ours stays lossless
    with pytest.raises(PoseError, match="jpeg_quality must be an integer from 1 to 100"):
        prepare_poses(reference, sequence, detector=SYNTH, num_frames=5, jpeg_quality=0)
