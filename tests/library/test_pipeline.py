import numpy as np
import pytest
import torch

from helpers.inputs import random_video_inputs
from steadydancer.assembly import load_transformer
from steadydancer.defaults import DEFAULT_NEGATIVE_PROMPT
from steadydancer.pipeline_steadydancer import SteadyDancerConditions
from steadydancer.pixels import resize, to_pixels
from steadydancer.scheduling import pose_guidance_steps

HEIGHT, WIDTH, FRAMES = 96, 64, 9


@pytest.fixture(scope="module")
def pipe(make_tiny_pipe):
    return make_tiny_pipe()


@pytest.fixture(scope="module")
def inputs():
    return random_video_inputs(HEIGHT, WIDTH, FRAMES)


class CallCounter:
    """Counts transformer calls and the batch size of each."""

    def __init__(self, transformer):
        self.batches = []
        self.handle = transformer.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        self.batches.append(kwargs["hidden_states"].shape[0])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def run(pipe, inputs, seed=0, steps=3, **kwargs):
    kwargs.setdefault("output_type", "np")
    return pipe(**inputs, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed), **kwargs)


@pytest.mark.slow
def test_generates_a_video_of_the_right_shape_and_is_seeded(pipe, inputs):
    out = run(pipe, inputs)
    assert out.frames.shape == (1, FRAMES, HEIGHT, WIDTH, 3)
    assert out.frames.dtype == np.float32 and 0.0 <= out.frames.min() and out.frames.max() <= 1.0
    assert out.fps == 16
    assert np.array_equal(run(pipe, inputs).frames, out.frames)
    assert not np.array_equal(run(pipe, inputs, seed=1).frames, out.frames)
    pil = pipe(**inputs, num_inference_steps=1, output_type="pil")
    assert len(pil.frames[0]) == FRAMES and pil.frames[0][0].size == (WIDTH, HEIGHT)


@pytest.mark.slow
@pytest.mark.parametrize(
    "steps, window, pose_scale, text_scale",
    [(10, (0.1, 0.4), 1.0, 5.0), (10, (0.0, 1.0), 1.0, 5.0), (10, (0.1, 0.4), 0.0, 5.0), (8, (0.2, 0.6), 1.5, 1.0)],
)
def test_guidance_passes_run_exactly_where_they_should(pipe, inputs, steps, window, pose_scale, text_scale):
    # Expected counts from the released rule, written out independently of the pipeline's helper.
    pose_steps = sum(1 for i in range(steps) if window[0] < i / steps < window[1]) if pose_scale > 0 else 0
    text_passes = 2 if text_scale != 1.0 else 1
    with CallCounter(pipe.transformer) as sequential:
        run(pipe, inputs, steps=steps, batch_guidance=False, pose_guidance_window=window,
            pose_guidance_scale=pose_scale, guidance_scale=text_scale, output_type="latent")
    assert len(sequential.batches) == steps * text_passes + pose_steps
    assert set(sequential.batches) == {1}
    with CallCounter(pipe.transformer) as batched:
        run(pipe, inputs, steps=steps, batch_guidance=True, pose_guidance_window=window,
            pose_guidance_scale=pose_scale, guidance_scale=text_scale, output_type="latent")
    assert len(batched.batches) == steps
    assert sum(batched.batches) == steps * text_passes + pose_steps


@pytest.mark.slow
def test_batched_and_sequential_guidance_agree(pipe, inputs):
    a = run(pipe, inputs, steps=4, batch_guidance=True, pose_guidance_window=(0.0, 1.0), output_type="latent").frames
    b = run(pipe, inputs, steps=4, batch_guidance=False, pose_guidance_window=(0.0, 1.0), output_type="latent").frames
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_window_rule_is_strict():
    assert pose_guidance_steps(10, (0.1, 0.4)) == [False, False, True, True] + [False] * 6
    assert pose_guidance_steps(8, (0.1, 0.4)) == [False, True, True, True, False, False, False, False]


def test_precomputed_inputs_need_no_encoders(pipe, inputs):
    device = pipe._execution_device
    prompt_embeds = pipe.encode_prompt(inputs["prompt"])
    negative = pipe.encode_prompt(DEFAULT_NEGATIVE_PROMPT)  # "" means the released default, as None does
    image_embeds = pipe.encode_image([inputs["image"]])
    pose_image_embeds = pipe.encode_image([pipe.first_pose_frame(inputs["pose_video"], inputs["image"])])
    conditions = pipe.prepare_conditions(inputs["image"], inputs["pose_video"], inputs["negative_pose_video"], HEIGHT, WIDTH, FRAMES)
    expected = run(pipe, inputs, negative_prompt="", output_type="latent").frames

    core = type(pipe)(None, None, None, None, pipe.transformer, pipe.vae, pipe.scheduler)
    core.set_progress_bar_config(disable=True)
    got = core(
        prompt_embeds=prompt_embeds, negative_prompt_embeds=negative, image_embeds=image_embeds,
        pose_image_embeds=pose_image_embeds, conditions=conditions, num_inference_steps=3,
        generator=torch.Generator(device).manual_seed(0), output_type="latent",
    ).frames
    torch.testing.assert_close(got, expected)


def test_reference_latents_equal_separate_single_frame_encodes(pipe, inputs):
    conditions = pipe.prepare_conditions(inputs["image"], inputs["pose_video"], None, HEIGHT, WIDTH, FRAMES)
    reference = resize(to_pixels(inputs["image"])[None], HEIGHT, WIDTH).transpose(0, 1)  # (3, 1, H, W)
    first_pose = resize(to_pixels(inputs["pose_video"][0])[None], HEIGHT, WIDTH).transpose(0, 1)
    ref_alone, pose_alone = pipe.encode_video(reference[None]), pipe.encode_video(first_pose[None])
    torch.testing.assert_close(conditions.reference_latents[:, :16], ref_alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conditions.reference_latents[:, 20:], ref_alone, atol=1e-5, rtol=1e-5)
    assert torch.all(conditions.reference_latents[:, 16:20] == 1)
    torch.testing.assert_close(conditions.pose_reference_latents, pose_alone, atol=1e-5, rtol=1e-5)
    mask = conditions.image_condition[:, :4]
    assert torch.all(mask[:, :, 0] == 1) and torch.all(mask[:, :, 1:] == 0)
    assert conditions.pose_latents.shape == (1, 16, 3, HEIGHT // 8, WIDTH // 8)


def test_callback_sees_every_step_and_interrupt_stops(pipe, inputs):
    seen = []

    def callback(p, step, timestep, tensors):
        seen.append(step)
        if step == 1:
            p.interrupt_generation()
        return tensors

    with CallCounter(pipe.transformer) as counter:
        run(pipe, inputs, steps=6, callback_on_step_end=callback, output_type="latent")
    assert seen == [0, 1]
    assert len(counter.batches) == 2
    assert len(run(pipe, inputs, steps=2, output_type="latent").frames)  # the next call runs normally


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_frames=8), "4n\\+1"),
        (dict(pose_guidance_window=(0.5, 0.2)), "start <= end"),
        (dict(pose_guidance_window=(-0.1, 0.4)), "0 <= start"),
        (dict(height=-16, width=64), "positive multiple of 16"),
        (dict(height=100, width=64), "positive multiple of 16"),
        (dict(negative_pose_video=None), "needs negative poses"),
        (dict(num_inference_steps=0), "positive integer"),
        (dict(num_frames=13), "only 9 pose_video frames"),
    ],
)
def test_bad_arguments_fail_before_any_heavy_work(pipe, inputs, kwargs, message):
    args = {**inputs, "num_inference_steps": 2, **kwargs}
    calls = []
    hooks = [m.register_forward_pre_hook(lambda *a: calls.append(1)) for m in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.image_encoder)]
    try:
        with pytest.raises(ValueError, match=message):
            pipe(**args)
    finally:
        for h in hooks:
            h.remove()
    assert calls == []


def test_pose_guidance_off_needs_no_negative_poses(pipe, inputs):
    args = {**inputs, "negative_pose_video": None}
    out = pipe(**args, pose_guidance_scale=0.0, num_inference_steps=1, output_type="latent")
    assert out.frames.shape == (1, 16, 3, HEIGHT // 8, WIDTH // 8)


def test_transformer_loads_from_either_layout(tiny_checkpoints, tmp_path):
    transformer_dir, _ = tiny_checkpoints
    released = load_transformer(transformer_dir, torch_dtype=torch.float32)
    released.save_pretrained(tmp_path)
    ours = load_transformer(tmp_path, torch_dtype=torch.float32)
    for (name, a), (_, b) in zip(released.state_dict().items(), ours.state_dict().items()):
        assert torch.equal(a, b), name


def test_hub_download_failure_is_actionable(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="HF_HUB_OFFLINE"):
        load_transformer("MCG-NJU/SteadyDancer-14B", cache_dir=str(tmp_path))


def test_step_callback_gets_the_predicted_clean_latent(make_tiny_pipe):
    """With "denoised" asked for, each step's callback gets x0 = x_t - sigma_t v; at the last step (sigma 0 next) the
    sampler lands on it, so the last one equals the returned latents."""
    from helpers.inputs import random_video_inputs
    pipe, seen = make_tiny_pipe(), []

    def callback(pipeline, i, t, tensors):
        seen.append((tensors["denoised"].clone(), tensors["latents"].clone()))
        return {}

    out = pipe(**random_video_inputs(32, 32, 5), num_inference_steps=3, pose_guidance_scale=0.0, guidance_scale=1.0,
               output_type="latent", seed=0, callback_on_step_end=callback,
               callback_on_step_end_tensor_inputs=["latents", "denoised"]).frames
    assert len(seen) == 3 and seen[0][0].shape == out.shape
    torch.testing.assert_close(seen[-1][0], out, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(seen[0][0], seen[0][1])  # early on, x0 is not the noisy latent


def test_prepare_conditions_checks_its_counts_before_allocating(pipe, inputs, monkeypatch):
    """A public entry point (long videos call it directly): a bad frame count, or fewer pose frames than asked for,
    is refused naming the parameter before any (num_frames, H, W) buffer is made."""
    import steadydancer.pipeline_steadydancer as module

    monkeypatch.setattr(module, "pose_video_pixels", lambda *a, **k: pytest.fail("allocated before checking"))
    with pytest.raises(ValueError, match="num_frames must be 4n\\+1"):
        pipe.prepare_conditions(inputs["image"], inputs["pose_video"], None, HEIGHT, WIDTH, FRAMES + 1)
    with pytest.raises(ValueError, match=f"{FRAMES + 4} frames asked for but only {len(inputs['pose_video'])} "
                                         "pose_video frames given"):
        pipe.prepare_conditions(inputs["image"], inputs["pose_video"], None, HEIGHT, WIDTH, FRAMES + 4)
