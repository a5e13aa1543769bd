"""Wan LoRA layouts onto the SteadyDancer transformer: `steadydancer.lora` and diffusers' own loader."""

import copy
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import save_file

from steadydancer.defaults import FAST, FAST_LORA_ADAPTER
from steadydancer.presets import PresetSwitch
from steadydancer.lora import convert_wan_lora, load_wan_lora, read_lora_file, unload_wan_lora
from steadydancer.tiny import tiny_transformer

from helpers.inputs import random_transformer_inputs
from helpers.lora_files import DIM, FFN, LAYERS, RANK, kohya_lora, lightx2v_lora, lora_ab, wan_layers

# Wan delta key -> our parameter (the loader's renaming: Wan norm3 is diffusers' norm2, modulation the table)
DIFF_TARGETS = {
    "blocks.{i}.norm3.diff": "blocks.{i}.norm2.weight",
    "blocks.{i}.norm3.diff_b": "blocks.{i}.norm2.bias",
    "blocks.{i}.self_attn.norm_q.diff": "blocks.{i}.attn1.norm_q.weight",
    "blocks.{i}.cross_attn.norm_k_img.diff": "blocks.{i}.attn2.norm_added_k.weight",
    "blocks.{i}.diff_m": "blocks.{i}.scale_shift_table",
}


@pytest.fixture
def model():
    return tiny_transformer().eval()


def forward(model, inputs):
    with torch.no_grad():
        return model(**inputs)[0]


def effective_linear(model, module_name, x):
    with torch.no_grad():
        return model.get_submodule(module_name)(x)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, {n: p.requires_grad for n, p in model.named_parameters()}


def assert_restored(model, before):
    tensors, grads = before
    after = model.state_dict()
    assert list(after) == list(tensors)  # no PEFT wrappers left
    assert all(torch.equal(after[k], tensors[k]) for k in tensors)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads


# --------------------------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("layout, scale", [("kohya", 2.0 / RANK), ("lora_ab", 1.0)])
def test_layouts_put_the_right_delta_on_every_layer(model, layout, scale):
    sd = kohya_lora() if layout == "kohya" else lora_ab()
    down, up = ("lora_down", "lora_up") if layout == "kohya" else ("lora_A", "lora_B")
    x = torch.randn(5, FFN)
    base = {ours: copy.deepcopy(model.get_submodule(ours)) for _, ours, _, _ in wan_layers()}

    report = load_wan_lora(model, sd, adapter_name=layout)
    assert sorted(report.lora_modules) == sorted(ours for _, ours, _, _ in wan_layers())
    assert set(report.ranks) == {RANK} and not report.diff_params
    # The pose alignment unit's output conv must stay a plain conv.
    assert type(model.pose_modulation.align.proj_back) is torch.nn.Conv2d

    for wan, ours, fan_in, _ in wan_layers():
        layer_scale = 1.0 if wan.startswith("head") else scale  # the head carries no alpha: scale 1
        delta = sd[f"diffusion_model.{wan}.{up}.weight"] @ sd[f"diffusion_model.{wan}.{down}.weight"]
        reference = base[ours]
        expected = torch.nn.functional.linear(x[:, :fan_in], reference.weight + layer_scale * delta, reference.bias)
        torch.testing.assert_close(effective_linear(model, ours, x[:, :fan_in]), expected, atol=1e-5, rtol=1e-5)


def test_the_callers_state_dict_is_not_modified(model):
    # diffusers' Wan converter folds some alphas into its input tensors in place; loading the same dict twice must
    # still give the same LoRA.
    sd = kohya_lora()
    pristine = {k: v.clone() for k, v in sd.items()}
    x = torch.randn(3, DIM)
    load_wan_lora(model, sd, adapter_name="first")
    first = effective_linear(model, "blocks.0.attn2.to_q", x)
    unload_wan_lora(model)
    assert all(torch.equal(sd[k], pristine[k]) for k in sd)
    load_wan_lora(model, sd, adapter_name="second")
    torch.testing.assert_close(effective_linear(model, "blocks.0.attn2.to_q", x), first)


def test_lora_changes_the_output_and_unloading_restores_it_exactly(model):
    inputs = random_transformer_inputs()
    before, expected = snapshot(model), forward(model, inputs)
    load_wan_lora(model, kohya_lora(), adapter_name="a")
    assert not torch.allclose(forward(model, inputs), expected, atol=1e-3)
    unload_wan_lora(model, "a")
    assert_restored(model, before)
    assert torch.equal(forward(model, inputs), expected)


def test_lightx2v_deltas_are_applied_and_restored(model):
    inputs = random_transformer_inputs()
    sd = lightx2v_lora()
    before, expected = snapshot(model), forward(model, inputs)
    params = dict(model.named_parameters())
    originals = {n: p.detach().clone() for n, p in params.items()}

    report = load_wan_lora(model, sd, adapter_name="lightx2v", adapter_scale=0.5)
    targets = {ours.format(i=i): wan.format(i=i) for i in range(LAYERS) for wan, ours in DIFF_TARGETS.items()}
    targets["scale_shift_table"] = "head.diff_m"
    targets["condition_embedder.text_embedder.linear_1.bias"] = "text_embedding.0.diff_b"
    assert sorted(report.diff_params) == sorted(targets)
    current = {n.replace(".base_layer", ""): p for n, p in model.named_parameters()}
    for ours, wan in targets.items():
        torch.testing.assert_close(current[ours], originals[ours] + 0.5 * sd[f"diffusion_model.{wan}"])
    # A .diff_b on a layer with a LoRA pair becomes that LoRA's bias (diffusers' convention), scaled like it.
    lora_b = model.blocks[0].ffn.net[2].lora_B["lightx2v"]
    torch.testing.assert_close(lora_b.bias, sd["diffusion_model.blocks.0.ffn.2.diff_b"])
    # Wan's 36-channel patch embedding has no counterpart: skipped, and said so.
    assert sum("patch_embedding" in s for s in report.skipped) == 2
    assert torch.equal(current["patch_embedding.weight"], originals["patch_embedding.weight"])
    assert torch.equal(current["reference_patch_embedding.weight"], originals["reference_patch_embedding.weight"])

    assert not torch.allclose(forward(model, inputs), expected, atol=1e-3)
    unload_wan_lora(model)
    assert_restored(model, before)
    assert torch.equal(forward(model, inputs), expected)


def test_deltas_can_be_left_out(model):
    report = load_wan_lora(model, lightx2v_lora(), adapter_name="x", apply_diffs=False)
    assert not report.diff_params and sum("apply_diffs=False" in s for s in report.skipped) == 2 * 5 + 2


def test_adapter_scale_scales_only_that_adapter(model):
    x = torch.randn(3, DIM)
    load_wan_lora(model, lora_ab(seed=3), adapter_name="full")
    with_full = effective_linear(model, "blocks.0.attn1.to_q", x)
    load_wan_lora(model, lora_ab(seed=4), adapter_name="weak", adapter_scale=0.5)
    layer = model.blocks[0].attn1.to_q
    assert layer.scaling == {"full": 1.0, "weak": 0.5}
    sd = lora_ab(seed=4)
    delta = sd["diffusion_model.blocks.0.self_attn.q.lora_B.weight"] @ sd["diffusion_model.blocks.0.self_attn.q.lora_A.weight"]
    torch.testing.assert_close(effective_linear(model, "blocks.0.attn1.to_q", x), with_full + 0.5 * x @ delta.T)
    with pytest.raises(ValueError, match="already loaded"):
        load_wan_lora(model, lora_ab(), adapter_name="weak")


def test_musubi_and_diffusers_layouts(model):
    inputs = random_transformer_inputs()
    sd = {k: v for k, v in kohya_lora(alpha=None).items() if ".head." not in k}  # musubi files have no head
    load_wan_lora(model, sd, adapter_name="kohya")
    expected = forward(model, inputs)
    unload_wan_lora(model)

    # diffusers' own layout, as diffusers' converter writes it
    peft, _, _ = convert_wan_lora(sd)
    load_wan_lora(model, {f"transformer.{k}": v for k, v in peft.items()}, adapter_name="diffusers")
    torch.testing.assert_close(forward(model, inputs), expected)
    unload_wan_lora(model)

    # musubi-tuner: lora_unet_blocks_0_self_attn_q.lora_down.weight (+ alpha = rank: scale 1)
    musubi = {}
    for k, v in sd.items():
        module, _, leaf = k.removeprefix("diffusion_model.").partition(".lora_")
        musubi[f"lora_unet_{module.replace('.', '_')}.lora_{leaf}"] = v
        musubi[f"lora_unet_{module.replace('.', '_')}.alpha"] = torch.tensor(float(RANK))
    report = load_wan_lora(model, musubi, adapter_name="musubi")
    assert len(report.lora_modules) == len(wan_layers()) - 1
    torch.testing.assert_close(forward(model, inputs), expected)


# --------------------------------------------------------------------------------------------- files and the pipeline
def test_reads_files_directories_and_refuses_pickles(tmp_path):
    sd = kohya_lora()
    save_file(sd, tmp_path / "lora.safetensors")
    assert read_lora_file(tmp_path / "lora.safetensors").keys() == sd.keys()
    assert read_lora_file(tmp_path).keys() == sd.keys()
    assert read_lora_file(tmp_path, "lora.safetensors").keys() == sd.keys()
    save_file(sd, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="pass weight_name"):
        read_lora_file(tmp_path)
    torch.save(sd, tmp_path / "lora.pt")
    with pytest.raises(ValueError, match="Only .safetensors"):
        read_lora_file(tmp_path / "lora.pt")
    with pytest.raises(ValueError, match="nothing that applies"):
        load_wan_lora(tiny_transformer(), {"diffusion_model.patch_embedding.diff": torch.zeros(DIM, 36, 1, 2, 2)})


@pytest.fixture(scope="module")
def pipe(tiny_checkpoints):
    from steadydancer.assembly import load_pipeline

    transformer_dir, base_dir = tiny_checkpoints
    return load_pipeline(transformer_dir, base_dir, torch_dtype=torch.float32)


def test_diffusers_load_lora_weights_maps_onto_our_blocks(pipe, tmp_path):
    """diffusers' own `pipe.load_lora_weights` (WanLoraLoaderMixin) gives the same LoRA as `load_wan_lora`."""
    inputs = random_transformer_inputs()
    save_file(kohya_lora(), tmp_path / "lora.safetensors")
    expected = forward(pipe.transformer, inputs)
    flags = {n: p.requires_grad for n, p in pipe.transformer.named_parameters()}

    pipe.load_lora_weights(tmp_path, weight_name="lora.safetensors", adapter_name="via_diffusers")
    via_diffusers = forward(pipe.transformer, inputs)
    assert type(pipe.transformer.pose_modulation.align.proj_back) is torch.nn.Conv2d
    pipe.unload_lora_weights()
    for n, p in pipe.transformer.named_parameters():  # diffusers leaves the base weights frozen
        p.requires_grad_(flags[n])
    torch.testing.assert_close(forward(pipe.transformer, inputs), expected, atol=0, rtol=0)

    load_wan_lora(pipe, tmp_path / "lora.safetensors", adapter_name="ours")
    torch.testing.assert_close(forward(pipe.transformer, inputs), via_diffusers, atol=1e-6, rtol=1e-6)
    unload_wan_lora(pipe)
    torch.testing.assert_close(forward(pipe.transformer, inputs), expected, atol=0, rtol=0)


def test_preset_switch_loads_the_lora_from_a_file(pipe, tmp_path):
    save_file(lightx2v_lora(), tmp_path / "distill.safetensors")
    switch = PresetSwitch(pipe, lora=tmp_path, weight_name="distill.safetensors")
    try:
        assert switch.current == "fast" and switch.pipeline_kwargs() == asdict(FAST)
        assert FAST_LORA_ADAPTER in pipe.transformer.peft_config
        assert pipe.transformer.blocks[0].attn1.to_q.scaling == {FAST_LORA_ADAPTER: 1.0}
    finally:
        unload_wan_lora(pipe)
