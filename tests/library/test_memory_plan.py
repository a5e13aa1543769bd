"""The memory planner's choices per GPU (`steadydancer.memory`) and each plan applied to the tiny CPU pipeline."""

import pytest
import torch

from steadydancer import memory
from steadydancer.memory import apply_memory_plan, plan_memory, supports_float8_compute

from helpers.inputs import random_video_inputs

BLACKWELL, HOPPER, ADA, AMPERE_A100, AMPERE_A6000 = (12, 0), (9, 0), (8, 9), (8, 0), (8, 6)


# --------------------------------------------------------------------------------------------- choices
@pytest.mark.parametrize(
    "memory_gb, capability, name, transformer, text_encoder_on_gpu",
    [
        (24, ADA, "offload", "bf16", False),  # RTX 4090: not even the fp8 transformer fits with room to work
        (40, AMPERE_A100, "fp8", "float8_storage", False),  # A100 40 GB: fp8 only as storage on Ampere
        (48, BLACKWELL, "fp8", "float8_compute", False),  # ZeroGPU large: half an RTX Pro 6000
        (48, ADA, "fp8", "float8_compute", False),  # L40S
        (48, AMPERE_A6000, "fp8", "float8_storage", False),
        (80, AMPERE_A100, "resident", "bf16", True),
        (80, HOPPER, "resident", "bf16", True),
        (96, BLACKWELL, "resident", "bf16", True),  # ZeroGPU xlarge: the whole card
        (141, HOPPER, "resident", "bf16", True),  # H200
    ],
)
def test_plan_per_gpu(memory_gb, capability, name, transformer, text_encoder_on_gpu):
    plan = plan_memory(memory_gb, capability)
    assert (plan.name, plan.transformer, plan.text_encoder_on_gpu) == (name, transformer, text_encoder_on_gpu)
    assert plan.transformer_offload == (name == "offload")
    if name != "offload":
        assert plan.estimated_peak_gb <= memory_gb * memory.USABLE_FRACTION


def test_48_gb_cannot_hold_the_bf16_weights():
    weights = memory.load_simulated_memory()["weights_gb"]
    total = weights["transformer_bf16"] + weights["text_encoder"] + weights["image_encoder"] + weights["vae"]
    assert 45 < total < 48
    assert plan_memory(48, BLACKWELL).name != "resident"


@pytest.mark.parametrize("memory_gb, capability, shards", [(40, AMPERE_A100, 4), (48, ADA, 2), (48, BLACKWELL, 2),
                                                           (48, BLACKWELL, 4)])
def test_several_gpus_shard_the_bf16_transformer_where_one_cannot_hold_it(memory_gb, capability, shards):
    """With 2 or more GPUs, bf16 blocks sharded across them (FSDP2) come before fp8; the peak is each rank's share
    of the transformer, the two blocks gathered while they run and the rest of the pipeline whole, counted here from
    the simulated table."""
    table = memory.load_simulated_memory()
    weights, (_, activations) = table["weights_gb"], memory.table_activations(table, **memory.DEFAULT_JOB)
    plan = plan_memory(memory_gb, capability, shards=shards)
    assert (plan.name, plan.transformer, plan.transformer_shards) == ("sharded", "bf16", shards)
    others = weights["text_encoder"] + weights["image_encoder"] + weights["vae"]
    batching = "batched" if plan.batch_guidance else "unbatched"
    step = (weights["transformer_bf16"] / shards + weights["transformer_streamed"] + others
            + activations["denoise_step"][batching]["bf16"])
    assert plan.phase_peaks_gb["denoise_step"] == pytest.approx(step)
    assert plan.estimated_peak_gb <= memory_gb * memory.USABLE_FRACTION
    assert plan_memory(memory_gb, capability).name == "fp8"  # one GPU


def test_sharding_comes_after_a_whole_copy_and_before_fp8():
    assert plan_memory(80, HOPPER, shards=2).name == "resident"  # fits whole: nothing to gather
    assert plan_memory(40, AMPERE_A100, shards=2).name == "fp8"  # half the bf16 blocks and the rest do not fit 40


def test_the_sharded_plan_needs_several_gpus():
    with pytest.raises(ValueError, match="several GPUs"):
        plan_memory(40, AMPERE_A100, force="sharded")


def test_compute_capability_matters_when_asking_for_float8_speed():
    # Both hold everything in bf16; only the Blackwell card has float8 matmuls worth switching to.
    a100 = plan_memory(80, AMPERE_A100, float8_for_speed=True)
    blackwell = plan_memory(96, BLACKWELL, float8_for_speed=True)
    assert (a100.name, a100.transformer) == ("resident", "bf16")
    assert (blackwell.name, blackwell.transformer) == ("resident", "float8_compute")
    assert blackwell.estimated_peak_gb < a100.estimated_peak_gb
    assert plan_memory(141, HOPPER, float8_for_speed=True).transformer == "float8_compute"
    # Without the opt-in, quality first: bf16 on both.
    assert plan_memory(96, BLACKWELL).transformer == "bf16"


def test_float8_compute_needs_sm89_or_newer():
    assert [supports_float8_compute(c) for c in (AMPERE_A100, AMPERE_A6000, ADA, HOPPER, (10, 0), BLACKWELL, None)] == [
        False, False, True, True, True, True, False,
    ]


def test_plan_for_device_reads_the_cuda_properties(monkeypatch):
    class Properties:
        total_memory, major, minor = 95_000_000_000, 12, 0

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Properties())
    plan = memory.plan_for_device("cuda:0", float8_for_speed=True)
    assert (plan.name, plan.transformer) == ("resident", "float8_compute")


# --------------------------------------------------------------------------------------------- applying
HEIGHT, WIDTH, FRAMES = 64, 48, 5
JOB = dict(num_inference_steps=2, pose_guidance_window=(0.0, 1.0), output_type="latent", batch_guidance=False)


@pytest.fixture(scope="module")
def inputs():
    return random_video_inputs(HEIGHT, WIDTH, FRAMES)


@pytest.fixture(scope="module")
def reference(make_tiny_pipe, inputs):
    pipe = make_tiny_pipe()
    return pipe(**inputs, **JOB, generator=torch.Generator().manual_seed(0)).frames


def run(pipe, inputs):
    return pipe(**inputs, **JOB, generator=torch.Generator().manual_seed(0)).frames


def test_resident_plan_is_exact(make_tiny_pipe, inputs, reference):
    pipe = make_tiny_pipe()
    applied = apply_memory_plan(pipe, plan_memory(141, HOPPER), device="cpu")
    assert applied.transformer == "bf16" and not applied.notes
    assert torch.equal(run(pipe, inputs), reference)


def test_fp8_plan_streams_the_text_encoder_and_stores_fp8(make_tiny_pipe, inputs, reference):
    from diffusers.hooks.group_offloading import _get_group_onload_device

    pipe = make_tiny_pipe()
    with torch.no_grad():
        expected_embeds = pipe.encode_prompt("a person dancing")
    plan = plan_memory(48, AMPERE_A6000)
    applied = apply_memory_plan(pipe, plan, device="cpu")
    assert applied.transformer == "float8_storage"
    assert pipe.transformer.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert pipe.transformer.blocks[0].norm2.weight.dtype == torch.float32  # norms stay exact
    assert _get_group_onload_device(pipe.text_encoder) == torch.device("cpu")
    assert pipe.vae.use_tiling == plan.vae_tiling
    # Streaming the encoder changes where it runs, not what it computes.
    with torch.no_grad():
        assert torch.equal(pipe.encode_prompt("a person dancing"), expected_embeds)
    got = run(pipe, inputs)
    assert (got - reference).norm() / reference.norm() < 0.1  # e4m3 weights: ~6 % per weight


@pytest.mark.slow
def test_float8_compute_falls_back_to_fp8_storage_without_a_capable_gpu(make_tiny_pipe, inputs):
    pipe = make_tiny_pipe()
    applied = apply_memory_plan(pipe, plan_memory(48, BLACKWELL), device="cpu")
    assert applied.plan.transformer == "float8_compute" and applied.transformer == "float8_storage"
    assert "float8 compute unavailable" in applied.notes[0]
    assert pipe.transformer.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert torch.isfinite(run(pipe, inputs)).all()


@pytest.mark.slow
def test_offload_plan_matches_the_reference(make_tiny_pipe, inputs, reference):
    from diffusers.hooks import HookRegistry

    pipe = make_tiny_pipe()
    applied = apply_memory_plan(pipe, plan_memory(24, ADA), device="cpu")
    assert applied.plan.transformer_offload
    registry = HookRegistry.check_if_exists_or_initialize(pipe.transformer.blocks[0])
    assert any("group_offloading" in name for name in registry.hooks)
    torch.testing.assert_close(run(pipe, inputs), reference, atol=1e-5, rtol=1e-5)


def test_float8_compute_with_lora_on_a_capable_gpu(make_tiny_pipe):
    if memory.float8_compute_problem("cuda") is not None:
        pytest.skip(f"torchao float8 compute: {memory.float8_compute_problem('cuda')}")
    from helpers.inputs import random_transformer_inputs
    from helpers.lora_files import lightx2v_lora

    from steadydancer.presets import PresetSwitch

    pipe = make_tiny_pipe().to(torch.bfloat16)
    switch = PresetSwitch(pipe, lora=lightx2v_lora())
    applied = apply_memory_plan(pipe, plan_memory(48, BLACKWELL), device="cuda")
    assert applied.transformer == "float8_compute" and not applied.notes
    inputs = {k: v.cuda().to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() else v
              for k, v in random_transformer_inputs().items()}
    with torch.no_grad():
        fast = pipe.transformer(**inputs)[0]
        switch.use("quality")
        quality = pipe.transformer(**inputs)[0]
    assert torch.isfinite(fast).all() and not torch.equal(fast, quality)
