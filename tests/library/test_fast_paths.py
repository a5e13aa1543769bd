"""Each fast path of `steadydancer.acceleration` against the plain path, on tiny components (CPU, fp32)."""

import functools
import multiprocessing
import os
import socket
from dataclasses import asdict

import numpy as np
import pytest
import torch

from steadydancer.acceleration import (
    apply_fast_paths,
    attention_backend_candidates,
    attention_backend_works,
    best_attention_backend,
    reset_attention_backend,
)
from steadydancer.defaults import FAST, Preset
from steadydancer.presets import PresetSwitch, StepDistillScheduler
from helpers.inputs import random_video_inputs
from steadydancer.pipeline_steadydancer import SteadyDancerPipeline

HEIGHT, WIDTH, FRAMES = 96, 64, 9
STEPS = 3
# Pose guidance in every step but the first (the window rule is strict), so steps run both 2 and 3 passes.
BASE = dict(num_inference_steps=STEPS, pose_guidance_window=(0.0, 1.0), output_type="latent")


@pytest.fixture(scope="module")
def make_pipe(make_tiny_pipe):
    return make_tiny_pipe


@pytest.fixture(scope="module")
def inputs():
    return random_video_inputs(HEIGHT, WIDTH, FRAMES)


def run(pipe, inputs, **kwargs):
    args = {**BASE, **kwargs}
    return pipe(**inputs, generator=torch.Generator().manual_seed(0), **args).frames


@pytest.fixture(scope="module")
def reference(make_pipe, inputs):
    """The plain path's output: sequential guidance passes, default attention, no compile; cached per settings."""
    pipe = make_pipe()

    @functools.lru_cache(maxsize=None)
    def get(**kwargs):
        return run(pipe, inputs, batch_guidance=False, **kwargs)

    return get


@pytest.fixture(autouse=True)
def restore_attention_backend():
    yield
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    _AttentionBackendRegistry.set_active_backend(AttentionBackendName.NATIVE)


def assert_close(got, expected, tol=1e-5):
    torch.testing.assert_close(got, expected, atol=tol, rtol=tol)


# --------------------------------------------------------------------------------------------- attention
@pytest.mark.parametrize("backend", ["_native_math", "_native_flash", "flex", "native"])
def test_attention_backends_match_the_reference(make_pipe, inputs, reference, backend):
    pipe = make_pipe()
    report = apply_fast_paths(pipe, attention_backend=backend, device="cpu")
    assert report.attention_backend == backend and not report.notes
    processors = [m.processor for m in pipe.transformer.modules() if hasattr(m, "processor")]
    assert processors and all(str(p._attention_backend.value) == backend for p in processors)
    assert_close(run(pipe, inputs), reference())
    reset_attention_backend(pipe.transformer)
    assert all(p._attention_backend is None for p in processors)


def test_an_unusable_backend_falls_back_cleanly(make_pipe, inputs, reference):
    pipe = make_pipe()
    # cuDNN attention exists only on CUDA: the probe fails on a CPU and the best working backend is used instead.
    report = apply_fast_paths(pipe, attention_backend="_native_cudnn", device="cpu")
    assert report.attention_backend == best_attention_backend("cpu")
    assert report.attention_backend != "_native_cudnn" and "not usable" in report.notes[0]
    assert_close(run(pipe, inputs), reference())


def test_best_attention_backend_only_offers_what_runs_here():
    candidates = attention_backend_candidates("cpu")
    assert candidates[-1] == "native"
    assert not {"flash", "flash_hub", "_flash_3", "_flash_3_hub", "_native_cudnn", "sage"} & set(candidates)
    best = best_attention_backend("cpu")
    assert best in candidates and attention_backend_works(best, "cpu")
    assert not attention_backend_works("_native_efficient", "cpu")  # no CPU kernel: the probe must say so
    assert not attention_backend_works("no_such_backend", "cpu")


# --------------------------------------------------------------------------------------------- guidance batching
def test_batched_guidance_matches_sequential_passes(make_pipe, inputs, reference):
    pipe = make_pipe()
    batches = []
    hook = pipe.transformer.register_forward_pre_hook(
        lambda m, a, k: batches.append(k["hidden_states"].shape[0]), with_kwargs=True
    )
    try:
        got = run(pipe, inputs, batch_guidance=True)
    finally:
        hook.remove()
    assert batches == [2] + [3] * (STEPS - 1)  # cond + negative text, then + negative pose inside the window
    assert_close(got, reference())


# --------------------------------------------------------------------------------------------- compile
def test_regional_compile_matches_the_reference(make_pipe, inputs, reference):
    pipe = make_pipe()
    report = apply_fast_paths(pipe, compile_blocks=True)
    assert report.compiled_blocks
    assert all(getattr(b, "_compiled_call_impl", None) is not None for b in pipe.transformer.blocks)
    # Two steps without pose guidance: every call has the same shape, so inductor compiles once.
    kwargs = dict(num_inference_steps=2, pose_guidance_scale=0.0)
    try:
        got = run(pipe, inputs, **kwargs)
    except Exception as error:  # a machine without a working C++ toolchain for inductor
        if "inductor" in type(error).__module__ or "dynamo" in type(error).__module__ or "CppCompileError" in repr(error):
            pytest.skip(f"torch.compile (inductor) does not work on this machine: {type(error).__name__}: {error}")
        raise
    assert_close(got, reference(**kwargs))


# --------------------------------------------------------------------------------------------- VAE tiling
def test_vae_tiling_tiles_and_is_a_no_op_below_the_tile_size(make_pipe, inputs, reference):
    pipe = make_pipe()
    calls = {"tiled_encode": 0, "tiled_decode": 0}
    for name in calls:
        original = getattr(pipe.vae, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        setattr(pipe.vae, name, counted)

    # Frames no larger than the tile: the tiled code path is not taken and the output is bit-identical.
    report = apply_fast_paths(pipe, vae_tiling=True, vae_tile_size=128)
    assert report.vae_tiling and pipe.vae.use_tiling
    reference_video = run(make_pipe(), inputs, output_type="np", num_inference_steps=1)
    assert np.array_equal(run(pipe, inputs, output_type="np", num_inference_steps=1), reference_video)
    assert calls == {"tiled_encode": 0, "tiled_decode": 0}

    # 64-pixel tiles with a 48-pixel stride on 96 x 64 frames: the encoder and the decoder both tile (two rows).
    apply_fast_paths(pipe, vae_tiling=True, vae_tile_size=64, vae_tile_stride=48)
    video = run(pipe, inputs, output_type="np", num_inference_steps=1)
    assert calls["tiled_encode"] == 3 and calls["tiled_decode"] == 1  # reference, pose, negative pose; one decode
    assert video.shape == reference_video.shape and np.isfinite(video).all()
    # Tiling blends overlapping tiles: an approximation of the whole-frame VAE, not an exact rewrite (with these
    # random weights the receptive field spans the frame). A loose guard against misplaced tiles only.
    assert np.abs(video - reference_video).mean() < 0.15


# --------------------------------------------------------------------------------------------- offloading
def test_group_offload_matches_the_reference(make_pipe, inputs, reference):
    from diffusers.hooks import HookRegistry

    pipe = make_pipe()
    report = apply_fast_paths(pipe, group_offload=True, device="cpu")
    assert report.group_offload
    registry = HookRegistry.check_if_exists_or_initialize(pipe.transformer.blocks[0])
    assert any("group_offloading" in name for name in registry.hooks)
    assert pipe._execution_device == torch.device("cpu")
    assert_close(run(pipe, inputs), reference())


# --------------------------------------------------------------------------------------------- fp8 storage
def test_fp8_weight_storage_is_close_to_the_reference(make_pipe, inputs, reference):
    pipe = make_pipe()
    report = apply_fast_paths(pipe, fp8_weights=True, compute_dtype=torch.float32)
    assert report.fp8_weights
    dtypes = {name: p.dtype for name, p in pipe.transformer.named_parameters()}
    assert dtypes["blocks.0.attn1.to_q.weight"] == torch.float8_e4m3fn
    assert dtypes["blocks.0.ffn.net.0.proj.weight"] == torch.float8_e4m3fn
    for kept in ("patch_embedding.weight", "pose_modulation.align.to_q.weight", "blocks.0.norm2.weight",
                 "condition_embedder.time_embedder.linear_1.weight", "blocks.0.scale_shift_table"):
        assert dtypes[kept] == torch.float32, kept
    assert pipe.transformer.dtype == torch.float32  # the compute dtype, which the pipeline casts its inputs to
    got, expected = run(pipe, inputs), reference()
    # e4m3 keeps 3 mantissa bits (~6 % per weight): compare the latents' relative error, not elementwise.
    relative = (got - expected).norm() / expected.norm()
    assert relative < 0.1, relative


# --------------------------------------------------------------------------------------------- fast preset
def test_fast_preset_runs_five_passes_and_passes_the_pipeline_checks(make_pipe, inputs):
    pipe = make_pipe()
    preset = PresetSwitch(pipe, lora=None, presets={"fast": Preset(FAST)}).use("fast")
    SteadyDancerPipeline.check_inputs(
        height=HEIGHT, width=WIDTH, num_frames=FRAMES, has_negative_pose=True,
        **{k: v for k, v in preset.items()},
    )
    batches = []
    hook = pipe.transformer.register_forward_pre_hook(
        lambda m, a, k: batches.append(k["hidden_states"].shape[0]), with_kwargs=True
    )
    try:
        out = pipe(**inputs, **preset, batch_guidance=False, output_type="latent").frames
    finally:
        hook.remove()
    # guidance_scale 1.0 skips the negative-text pass; the pose pass runs at step 1 only (0.1 < 1/4 < 0.4).
    assert len(batches) == 5
    assert out.shape == (1, 16, 3, HEIGHT // 8, WIDTH // 8)


def test_step_distill_scheduler_follows_lightx2v(make_pipe, inputs):
    from steadydancer.scheduling import set_released_timesteps

    scheduler = StepDistillScheduler(flow_shift=5.0, seed=0)
    set_released_timesteps(scheduler, 4, 5.0)
    unshifted = np.linspace(1 - 1 / 1000, 0, 5)[:4]
    expected = 5 * unshifted / (1 + 4 * unshifted)  # lightx2v: shift * s / (1 + (shift - 1) s)
    np.testing.assert_allclose(scheduler.sigmas.numpy(), np.append(expected, 0.0), rtol=1e-6)
    np.testing.assert_allclose(scheduler.timesteps.numpy(), 1000 * expected, rtol=1e-6)

    # One step: x0 = x - sigma v, re-noised with fresh noise to the next sigma.
    sample, velocity = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 16, 2, 4, 4)
    noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(0))
    out = scheduler.step(velocity, scheduler.timesteps[0], sample, return_dict=False)[0]
    sigma, next_sigma = scheduler.sigmas[0], scheduler.sigmas[1]
    assert_close(out, (1 - next_sigma) * (sample - sigma * velocity) + next_sigma * noise)

    # In the pipeline: seeded, and different from the UniPC run.
    pipe = make_pipe()
    fast = asdict(FAST)
    unipc = pipe(**inputs, **fast, generator=torch.Generator().manual_seed(0), output_type="latent").frames
    PresetSwitch(pipe, lora=None, presets={"x0": Preset(FAST, scheduler="lightx2v")}, seed=1)
    assert isinstance(pipe.scheduler, StepDistillScheduler)
    first = pipe(**inputs, **fast, generator=torch.Generator().manual_seed(0), output_type="latent").frames
    pipe.scheduler.noise_generator.manual_seed(1)
    second = pipe(**inputs, **fast, generator=torch.Generator().manual_seed(0), output_type="latent").frames
    assert torch.equal(first, second) and not torch.allclose(first, unipc)
    with pytest.raises(ValueError, match="scheduler"):
        PresetSwitch(pipe, lora=None, presets={"x0": Preset(FAST, scheduler="euler")})


# --------------------------------------------------------------------------------------------- context parallel
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _context_parallel_worker(rank, world, port, queue):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from torch.distributed.device_mesh import init_device_mesh

        from steadydancer.parallel import enable_ulysses
        from steadydancer.tiny import tiny_transformer

        torch.manual_seed(0)
        model = tiny_transformer().eval()
        g = torch.Generator().manual_seed(0)
        b, f, h, w = 2, 3, 6, 4

        def r(*shape):
            return torch.randn(*shape, generator=g)

        inputs = dict(
            hidden_states=r(b, 16, f, h, w), timestep=torch.tensor([500.0, 250.0]),
            encoder_hidden_states=r(b, 7, 32), encoder_hidden_states_image=r(b, 5, 1280),
            encoder_hidden_states_pose_image=r(b, 5, 1280), image_condition=r(b, 20, f, h, w),
            reference_latents=r(b, 36, 1, h, w), pose_reference_latents=r(b, 16, 1, h, w),
            pose_latents=r(b, 16, f, h, w), return_dict=False,
        )
        seen = []
        model.blocks[0].attn1.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
        with torch.no_grad():
            expected = model(**inputs)[0]
            mesh = init_device_mesh("cpu", (1, world), mesh_dim_names=("ring", "ulysses"))
            enable_ulysses(model, mesh, world)  # the class's _cp_plan, on the CPU too
            got = model(**inputs)[0]
        queue.put((rank, seen, (got - expected).abs().max().item(), tuple(got.shape)))
    except Exception as error:  # report, don't hang the parent
        queue.put((rank, None, repr(error), None))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_ulysses_context_parallel_plan_matches_one_process():
    world = 2
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_context_parallel_worker, args=(r, world, port, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    tokens = (3 + 2) * 3 * 2  # (F + 2 reference frames) x h/2 x w/2
    for rank, seen, error, shape in sorted(results):
        assert seen is not None, error
        assert seen == [tokens, tokens // world]  # the unsplit reference call, then the split one
        assert shape == (2, 16, 3, 6, 4) and error < 1e-5, error


# --------------------------------------------------------------------------------------------- benchmark harness
@pytest.mark.slow
def test_benchmark_harness_runs_both_variants_and_writes_json(tmp_path):
    import json

    from bench.run import main

    out = tmp_path / "bench.json"
    summary = main([
        "--device", "cpu", "--config", "tiny", "--frames", "5", "--height", "64", "--width", "64", "--reference",
        "--benchmarks", "pass,step2,step3,vae_encode,vae_decode", "--warmup", "1", "--repeats", "2",
        "--attention-backend", "_native_math", "--json", str(out),
    ])
    rows = {(r["benchmark"], r["variant"]): r for r in summary["rows"]}
    assert set(rows) == {(b, v) for b in ("pass", "step2", "step3", "vae_encode", "vae_decode")
                         for v in ("reference", "fast")}
    assert rows[("step3", "fast")]["flop"] == 3 * rows[("pass", "fast")]["flop"] > 0
    assert all(r["median_s"] > 0 and r["peak_bytes"] > 0 for r in rows.values())
    assert summary["fast_paths"]["attention_backend"] == "_native_math"
    assert {"released_40_steps_s", "fast_preset_s"} <= set(summary["projected_jobs"]["fast"])
    assert json.loads(out.read_text())["rows"][0]["benchmark"] == "pass"
