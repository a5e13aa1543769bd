import json
import subprocess
import sys

import pytest
import torch
from accelerate import init_empty_weights
from safetensors.torch import load_file, save_file

from helpers.inputs import random_transformer_inputs
from helpers.paths import REPO, shared_fixture
from steadydancer.loading import (
    CheckpointMismatchError,
    config_from_released,
    convert_released_state_dict,
    export_released_state_dict,
    load_released_transformer,
    save_released_layout,
)
from steadydancer.models import SteadyDancerTransformer3DModel


def random_inputs(model, batch=1, frames=3, height=6, width=10, text_tokens=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = model.config

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    return dict(
        hidden_states=rand(batch, c.in_channels, frames, height, width),
        timestep=torch.full((batch,), 500.0),
        encoder_hidden_states=rand(batch, text_tokens, c.text_dim),
        encoder_hidden_states_image=rand(batch, 257, c.image_dim),
        encoder_hidden_states_pose_image=rand(batch, 257, c.image_dim),
        image_condition=rand(batch, c.image_condition_channels, frames, height, width),
        reference_latents=rand(batch, c.in_channels + c.image_condition_channels, 1, height, width),
        pose_reference_latents=rand(batch, 36, 1, height, width),
        pose_latents=rand(batch, c.pose_channels, frames, height, width),
    )


@pytest.mark.slow
def test_verify_command_passes_on_released_fixture():
    fixture = shared_fixture("official_tiny")
    result = subprocess.run(
        [sys.executable, "-m", "steadydancer.verify", str(fixture)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for name in ("forward", "pose_temporal", "pose_spatial", "pose_fused", "pose_aligned", "sample"):
        assert any(line.startswith(f"{name} max_abs_err=") and line.endswith("OK") for line in lines), name


@pytest.mark.slow
def test_verify_fails_on_a_corrupted_checkpoint(tmp_path):
    fixture = shared_fixture("official_tiny")
    for f in fixture.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    shard = tmp_path / "diffusion_pytorch_model-00001-of-00002.safetensors"
    tensors = load_file(str(shard))
    key = next(k for k in tensors if "self_attn.q.weight" in k)
    tensors[key] = tensors[key] + 0.05
    save_file(tensors, str(shard))
    result = subprocess.run([sys.executable, "-m", "steadydancer.verify", str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1
    assert "forward" in result.stdout and "FAIL" in result.stdout


def test_export_is_the_exact_inverse_of_loading():
    fixture = shared_fixture("official_tiny")
    raw = {}
    for shard in fixture.glob("diffusion_pytorch_model-*.safetensors"):
        raw.update(load_file(str(shard)))
    exported = export_released_state_dict(load_released_transformer(fixture))
    assert set(exported) == set(raw)
    assert all(torch.equal(exported[k], raw[k]) for k in raw)


def test_alignment_unit_matches_sequence_first_multihead_attention():
    """The released FAAU feeds torch's sequence-first MultiheadAttention with (frames, pixels, channels)."""
    torch.manual_seed(0)
    model = SteadyDancerTransformer3DModel(num_attention_heads=2, attention_head_dim=12, text_dim=16, ffn_dim=32, num_layers=1)
    align = model.pose_modulation.align
    mha = torch.nn.MultiheadAttention(128, 8).eval()
    state = export_released_state_dict(model)
    mha.load_state_dict({
        "in_proj_weight": state["condition_embedding_align.cross_attn.in_proj_weight"],
        "in_proj_bias": state["condition_embedding_align.cross_attn.in_proj_bias"],
        "out_proj.weight": align.to_out.weight, "out_proj.bias": align.to_out.bias,
    })
    for frames, height, width in [(1, 4, 4), (5, 6, 8), (3, 2, 10)]:
        pose, latents = torch.randn(2, 1, 16, frames, height, width).unbind(0)
        with torch.no_grad():
            ours = align(pose, latents)
            # released: (F, C, h, w) maps, projected, then MHA over the F axis (sequence-first)
            p = align.proj_pose(pose[0].transpose(0, 1)).flatten(2).transpose(1, 2)
            r = align.proj_latent(latents[0].transpose(0, 1)).flatten(2).transpose(1, 2)
            out = mha(r, p, p, need_weights=False)[0].transpose(1, 2).reshape(frames, 128, height, width)
            out = align.norm1(out)
            out = align.proj_back(align.norm2(out + align.ffn(out)))
        torch.testing.assert_close(ours[0], out.transpose(0, 1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "sizes, grid",
    [((48, 4, 1), (2, 4, 6)), ((64, 2, 3), (5, 8, 4)), ((96, 4, 2), (1, 2, 2))],
)
def test_released_layout_round_trip_for_other_sizes(tmp_path, sizes, grid):
    dim, heads, layers = sizes
    torch.manual_seed(1)
    model = SteadyDancerTransformer3DModel(
        num_attention_heads=heads, attention_head_dim=dim // heads, text_dim=24, ffn_dim=2 * dim, num_layers=layers
    ).eval()
    save_released_layout(model, tmp_path)
    loaded = load_released_transformer(tmp_path)
    assert loaded.config.num_layers == layers and loaded.config.num_attention_heads == heads
    inputs = random_inputs(model, batch=2, frames=grid[0], height=grid[1], width=grid[2])
    with torch.no_grad():
        expected = model(**inputs).sample
        got = loaded(**inputs).sample
        # each sample of a batch is computed independently of the others
        single = loaded(**{k: v[:1] for k, v in inputs.items()}).sample
    assert got.shape == (2, 16, *grid)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(single, got[:1], atol=1e-5, rtol=1e-4)


def test_conversion_covers_every_tensor_of_the_14b_checkpoint():
    keys = json.loads(shared_fixture("official_14b_keys.json").read_text())
    assert len(keys["shapes"]) == 1345
    checkpoint = {k: torch.empty(shape, device="meta") for k, shape in keys["shapes"].items()}
    converted = convert_released_state_dict(checkpoint)
    with init_empty_weights():
        model = SteadyDancerTransformer3DModel(**config_from_released(keys["config"]))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    assert sum(v.numel() for v in model.parameters()) == keys["num_parameters"]


def test_loader_lists_unused_and_unset_tensors(tmp_path):
    model = SteadyDancerTransformer3DModel(num_attention_heads=2, attention_head_dim=12, text_dim=16, ffn_dim=32, num_layers=1)
    save_released_layout(model, tmp_path, num_shards=1)
    shard = next(tmp_path.glob("*.safetensors"))
    tensors = load_file(str(shard))
    del tensors["head.head.weight"]
    tensors["blocks.0.extra.weight"] = torch.zeros(3)
    save_file(tensors, str(shard))
    with pytest.raises(CheckpointMismatchError, match=r"(?s)blocks\.0\.extra\.weight.*proj_out\.weight"):
        load_released_transformer(tmp_path)


def test_loader_refuses_pickles_and_warns_on_unknown_config(tmp_path, caplog):
    (tmp_path / "config.json").write_text(json.dumps({"dim": 24, "num_heads": 2, "num_layers": 1, "ffn_dim": 8, "in_dim": 36, "out_dim": 16, "text_dim": 8, "new_field": 1}))
    (tmp_path / "model.pth").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="pickle files are never loaded"):
        load_released_transformer(tmp_path)
    assert "new_field" in caplog.text
    with pytest.raises(ValueError, match="image-to-video"):
        config_from_released({"dim": 24, "num_heads": 2, "num_layers": 1, "ffn_dim": 8, "in_dim": 36, "out_dim": 16, "model_type": "t2v"})


def test_save_and_load_in_our_own_format(tmp_path):
    torch.manual_seed(2)
    model = SteadyDancerTransformer3DModel(num_attention_heads=2, attention_head_dim=12, text_dim=16, ffn_dim=32, num_layers=1).eval()
    model.save_pretrained(tmp_path)
    loaded = SteadyDancerTransformer3DModel.from_pretrained(tmp_path)
    inputs = random_inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).sample, model(**inputs).sample, atol=0, rtol=0)


def test_bf16_stays_close_to_fp32():
    fixture = shared_fixture("official_tiny")
    model = load_released_transformer(fixture)
    model_bf16 = load_released_transformer(fixture, torch_dtype=torch.bfloat16)
    assert model_bf16.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert model_bf16.blocks[0].scale_shift_table.dtype == torch.float32  # diffusers' fp32-kept modules
    inputs = random_inputs(model, frames=3, height=6, width=10)
    with torch.no_grad():
        ref = model(**inputs).sample
        low = model_bf16(**{k: v.to(torch.bfloat16) if k != "timestep" else v for k, v in inputs.items()}).sample.float()
    relative = (low - ref).norm() / ref.norm()
    assert relative < 0.05, relative


def test_patch_embedded_tokens_are_not_held_through_the_blocks():
    import weakref

    from torch.utils._python_dispatch import TorchDispatchMode

    from steadydancer.tiny import tiny_transformer

    model = tiny_transformer().eval()
    inputs = random_transformer_inputs(frames=3, height=6, width=4)
    config = model.config
    tokens_shape = (1, config.num_attention_heads * config.attention_head_dim, 3 + 2, 3, 2)
    video_shape = (1, config.in_channels + config.image_condition_channels + 2 * config.pose_channels, 3, 6, 4)

    class FiveDimensionalResults(TorchDispatchMode):
        """Weak references to every 5-D tensor an operator returns (the pose features, the video, the tokens)."""

        def __init__(self):
            super().__init__()
            self.results = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.ndim == 5:
                self.results.append((tuple(out.shape), weakref.ref(out)))
            return out

    alive_in_last_block = []
    model.blocks[-1].register_forward_pre_hook(
        lambda module, args: alive_in_last_block.extend(shape for shape, ref in results.results if ref() is not None))
    with torch.no_grad(), FiveDimensionalResults() as results:
        model(**inputs)
    made = [shape for shape, _ in results.results]
    assert tokens_shape in made and video_shape in made  # the probe sees them being made
    assert tokens_shape not in alive_in_last_block and video_shape not in alive_in_last_block
