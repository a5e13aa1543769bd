"""One loaded pipeline switched between the fast and quality presets (`steadydancer.presets`) against fresh loads."""

import pytest
import torch

from steadydancer.defaults import FAST, FAST_LORA_ADAPTER, PRESETS, RELEASED, Preset
from steadydancer.lora import load_wan_lora, set_wan_lora_enabled, unload_wan_lora, wan_lora_enabled
from steadydancer.presets import PresetSwitch, StepDistillScheduler
from steadydancer.scheduling import transformer_passes
from steadydancer.tiny import tiny_transformer

from helpers.inputs import random_transformer_inputs, random_video_inputs
from helpers.lora_files import lightx2v_lora

pytestmark = pytest.mark.slow  # every test loads or runs several tiny pipelines

HEIGHT, WIDTH, FRAMES = 64, 48, 5


@pytest.fixture(scope="module")
def inputs():
    return random_video_inputs(HEIGHT, WIDTH, FRAMES)


def run(pipe, inputs, kwargs, batch_guidance=False):
    """Latents of one job; returns (latents, batch size of each transformer call)."""
    calls = []
    hook = pipe.transformer.register_forward_pre_hook(
        lambda m, a, k: calls.append(k["hidden_states"].shape[0]), with_kwargs=True
    )
    try:
        out = pipe(**inputs, **kwargs, generator=torch.Generator().manual_seed(0), batch_guidance=batch_guidance,
                   output_type="latent").frames
    finally:
        hook.remove()
    return out, calls


def fast_kwargs():
    return PRESETS["fast"].settings.__dict__


@pytest.fixture(scope="module")
def fresh(make_tiny_pipe, inputs):
    """Outputs and call counts of a fresh pipeline per preset: plain for quality, LoRA loaded for fast."""
    quality = make_tiny_pipe()
    fast = make_tiny_pipe()
    load_wan_lora(fast, lightx2v_lora(), adapter_name="fresh")
    return {"quality": run(quality, inputs, RELEASED.__dict__), "fast": run(fast, inputs, fast_kwargs())}


def test_fast_quality_fast_on_one_pipeline_equals_fresh_loads(make_tiny_pipe, inputs, fresh):
    pipe = make_tiny_pipe()
    switch = PresetSwitch(pipe, lora=lightx2v_lora())
    assert switch.current == "fast"
    loaded = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}

    outputs = {}
    for step, name in enumerate(["fast", "quality", "fast"]):
        kwargs = switch.use(name)
        assert kwargs == PRESETS[name].settings.__dict__ and switch.current == name
        outputs[step] = run(pipe, inputs, kwargs)[0]
    # The distilled weights differ from the released ones, so the comparisons below have something to catch.
    assert not torch.allclose(fresh["fast"][0], fresh["quality"][0], atol=1e-3)
    assert torch.equal(outputs[0], fresh["fast"][0])
    assert torch.equal(outputs[1], fresh["quality"][0])
    assert torch.equal(outputs[2], fresh["fast"][0])
    after = pipe.transformer.state_dict()
    assert after.keys() == loaded.keys() and all(torch.equal(after[k], loaded[k]) for k in loaded)


def test_presets_run_the_expected_transformer_calls(fresh, make_tiny_pipe, inputs):
    # One transformer call per pass with batch_guidance=False. Fast: 4 conditional passes (text guidance off at
    # scale 1) + the negative-pose pass at step 1 (0.1 < 1/4 < 0.4) = 5. Quality: 40 conditional + 40 negative-text
    # + 11 negative-pose passes (steps 5..15, 0.1 < i/40 < 0.4) = 91.
    assert len(fresh["fast"][1]) == 5 == transformer_passes(4, 1.0, 1.0, FAST.pose_guidance_window)
    assert len(fresh["quality"][1]) == 91 == transformer_passes(40, 5.0, 1.0, RELEASED.pose_guidance_window)
    assert set(fresh["fast"][1]) == set(fresh["quality"][1]) == {1}

    # Batched guidance: one call per step, whose batch holds the step's passes; same passes in all.
    switch = PresetSwitch(make_tiny_pipe(), lora=lightx2v_lora())
    out, calls = run(switch.pipe, inputs, switch.use("fast"), batch_guidance=True)
    assert calls == [1, 2, 1, 1]
    out, calls = run(switch.pipe, inputs, switch.use("quality"), batch_guidance=True)
    assert len(calls) == 40 and sum(calls) == 91 and calls.count(3) == 11
    torch.testing.assert_close(out, fresh["quality"][0], atol=1e-5, rtol=1e-5)


def test_fused_lora_serves_fast_only(make_tiny_pipe, inputs, fresh):
    from peft.tuners.tuners_utils import BaseTunerLayer

    switch = PresetSwitch(make_tiny_pipe(), lora=lightx2v_lora(), fuse=True)
    assert not any(isinstance(m, BaseTunerLayer) for m in switch.pipe.transformer.modules())
    out, calls = run(switch.pipe, inputs, switch.use("fast"))
    # Merged weights round differently from W x + B (A x): close, not equal.
    torch.testing.assert_close(out, fresh["fast"][0], atol=1e-4, rtol=1e-4)
    assert not switch.available("quality")
    with pytest.raises(ValueError, match="fuse"):
        switch.use("quality")
    assert switch.current == "fast"


def test_scheduler_follows_the_preset(make_tiny_pipe):
    pipe = make_tiny_pipe()
    unipc = pipe.scheduler
    presets = {"fast": Preset(FAST, uses_distill_lora=True, scheduler="lightx2v"), "quality": Preset(RELEASED)}
    switch = PresetSwitch(pipe, lora=lightx2v_lora(), presets=presets, seed=0)
    assert isinstance(pipe.scheduler, StepDistillScheduler)
    switch.use("quality")
    assert pipe.scheduler is unipc
    switch.use("fast")
    assert isinstance(pipe.scheduler, StepDistillScheduler)


def test_refusals(make_tiny_pipe):
    switch = PresetSwitch(make_tiny_pipe(), lora=None)
    assert switch.current == "quality" and not switch.available("fast")
    with pytest.raises(ValueError, match="needs the distillation LoRA"):
        switch.use("fast")
    with pytest.raises(KeyError, match="Unknown preset"):
        switch.use("turbo")


# --------------------------------------------------------------------------------------------- the LoRA switch itself
def test_switching_an_adapter_off_and_on_is_exact():
    model = tiny_transformer().eval()
    inputs = random_transformer_inputs()
    with torch.no_grad():
        base = model(**inputs)[0]
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    load_wan_lora(model, lightx2v_lora(), adapter_name=FAST_LORA_ADAPTER)
    with torch.no_grad():
        on = model(**inputs)[0]
    on_weights = {k: v.clone() for k, v in model.state_dict().items()}

    for _ in range(2):
        set_wan_lora_enabled(model, FAST_LORA_ADAPTER, False)
        assert not wan_lora_enabled(model, FAST_LORA_ADAPTER)
        current = {n.replace(".base_layer", ""): p for n, p in model.named_parameters() if "lora_" not in n}
        assert all(torch.equal(current[n], params[n]) for n in params)
        with torch.no_grad():
            assert torch.equal(model(**inputs)[0], base)
        set_wan_lora_enabled(model, FAST_LORA_ADAPTER, True)
        assert wan_lora_enabled(model, FAST_LORA_ADAPTER)
        assert all(torch.equal(model.state_dict()[k], on_weights[k]) for k in on_weights)
        with torch.no_grad():
            assert torch.equal(model(**inputs)[0], on)

    # Unloading while off restores the original weights too.
    set_wan_lora_enabled(model, FAST_LORA_ADAPTER, False)
    unload_wan_lora(model)
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())
    with pytest.raises(ValueError, match="No adapter"):
        set_wan_lora_enabled(model, FAST_LORA_ADAPTER, True)


def test_other_adapters_stay_on_while_one_is_switched():
    from helpers.lora_files import lora_ab

    model = tiny_transformer().eval()
    inputs = random_transformer_inputs()
    load_wan_lora(model, lora_ab(seed=5), adapter_name="style")
    with torch.no_grad():
        style_only = model(**inputs)[0]
    load_wan_lora(model, lightx2v_lora(), adapter_name=FAST_LORA_ADAPTER)
    set_wan_lora_enabled(model, FAST_LORA_ADAPTER, False)
    assert model.active_adapters() == ["style"]
    with torch.no_grad():
        assert torch.equal(model(**inputs)[0], style_only)


def test_switching_round_trips_under_the_fp8_memory_plan(make_tiny_pipe, inputs):
    from steadydancer.memory import apply_memory_plan, plan_memory

    pipe = make_tiny_pipe()
    switch = PresetSwitch(pipe, lora=lightx2v_lora())  # LoRA first, then the plan wraps the final modules
    applied = apply_memory_plan(pipe, plan_memory(48, (8, 6)), device="cpu")
    assert applied.transformer == "float8_storage"
    outputs = [run(pipe, inputs, switch.use(name))[0] for name in ("fast", "quality", "fast")]
    assert torch.equal(outputs[0], outputs[2]) and not torch.allclose(outputs[0], outputs[1], atol=1e-3)
