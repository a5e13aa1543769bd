"""Ahead-of-time compilation of the transformer (`steadydancer.aot`) against the eager model, on tiny components."""

import importlib.machinery
import io
import logging
import shutil
import sys
import types

import pytest
import torch

from steadydancer import aot
from steadydancer.lora import load_wan_lora, set_wan_lora_enabled
from steadydancer.models import PoseFeatures, SteadyDancerTransformer3DModel

from helpers.inputs import random_video_inputs
from helpers.lora_files import lightx2v_lora

pytestmark = pytest.mark.slow  # export and compilation of the tiny transformer

JOB = dict(num_inference_steps=2, output_type="latent", batch_guidance=False)


def transformer_call(model, frames=3, height=6, width=4, seed=0):
    """The keyword arguments the pipeline passes to the transformer (pose features precomputed), batch 1."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    latents = r(1, 16, frames, height, width)
    with torch.no_grad():
        pose = model.encode_pose(latents, r(1, 16, frames, height, width))
    return dict(
        hidden_states=latents, timestep=torch.tensor([500.0]), encoder_hidden_states=r(1, 512, 32),
        encoder_hidden_states_image=r(1, 5, 1280), encoder_hidden_states_pose_image=r(1, 5, 1280),
        image_condition=r(1, 20, frames, height, width), reference_latents=r(1, 36, 1, height, width),
        pose_reference_latents=r(1, 16, 1, height, width), pose_features=pose, attention_kwargs=None,
        return_dict=False,
    )


# --------------------------------------------------------------------------------------------- cheap checks
def test_capture_returns_the_pipelines_first_transformer_call(make_tiny_pipe):
    pipe = make_tiny_pipe()
    inputs = random_video_inputs(64, 48, 5)
    args, kwargs = aot.capture_transformer_call(pipe, **inputs, **JOB)
    assert args == () and kwargs["hidden_states"].shape == (1, 16, 2, 8, 6)
    assert isinstance(kwargs["pose_features"], PoseFeatures) and kwargs["return_dict"] is False
    assert "forward" not in pipe.transformer.__dict__  # the eager forward is back
    assert pipe(**inputs, **JOB).frames.shape == (1, 16, 2, 8, 6)


def test_adapter_state_follows_the_lora_switch(make_tiny_pipe):
    transformer = make_tiny_pipe().transformer
    assert aot.adapter_state(transformer) == ()
    load_wan_lora(transformer, lightx2v_lora(), adapter_name="distill")
    assert aot.adapter_state(transformer) == (("distill",), False)
    set_wan_lora_enabled(transformer, "distill", False)
    assert aot.adapter_state(transformer) == ((), False)


def test_signature_tells_shapes_and_values_apart():
    model = tiny_model()
    call = transformer_call(model)
    same = aot.input_signature((), transformer_call(model, seed=1))
    assert aot.input_signature((), call) == same
    assert aot.input_signature((), transformer_call(model, frames=2)) != same
    assert aot.input_signature((), {**call, "return_dict": True}) != same


def test_hooked_transformers_are_refused_and_a_failed_compile_stays_eager(make_tiny_pipe, caplog):
    pipe = make_tiny_pipe()
    pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    call = transformer_call(pipe.transformer)
    with pytest.raises(ValueError, match="hooks"):
        aot.export_module(pipe.transformer, (), call)
    with caplog.at_level(logging.WARNING, logger="steadydancer.aot"):
        assert aot.compile_transformer_aot(pipe, **random_video_inputs(64, 48, 5), **JOB) is None
    assert "stays eager" in caplog.text and "forward" not in pipe.transformer.__dict__


# --------------------------------------------------------------------------------------------- one real compile
def tiny_model():
    torch.manual_seed(0)  # one block: the C++ build of its graph is the slow part of this file (~1 min on 2 cores)
    return SteadyDancerTransformer3DModel(
        num_attention_heads=2, attention_head_dim=12, text_dim=32, ffn_dim=48, num_layers=1
    ).eval()


@pytest.fixture(scope="module")
def compiled():
    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("AOTInductor builds a C++ library and this machine has no C++ compiler")
    model = tiny_model()
    call = transformer_call(model)
    exported = aot.export_module(model, (), call)
    try:
        # -O0: a faster build; the numerics are those of the generated kernels either way.
        package = aot.compile_package(exported, inductor_configs={"aot_inductor.debug_compile": True})
    except Exception as error:
        if "CppCompileError" in type(error).__name__ or "inductor" in type(error).__module__:
            pytest.skip(f"AOTInductor cannot build here: {type(error).__name__}: {error}")
        raise
    return model, call, package


def eager(model, call):
    with torch.no_grad():
        return type(model).forward(model, **call)[0]


def test_compiled_transformer_matches_eager(compiled):
    model, call, package = compiled
    assert package.adapters == () and len(package.data) > 0
    forward = aot.install_aot(model, package)
    try:
        with torch.no_grad():
            got = model(**call)[0]
        assert forward.compiled_calls == 1 and forward.eager_calls == 0
        torch.testing.assert_close(got, eager(model, call), atol=1e-5, rtol=1e-5)

        # The graph reads the live weights: an in-place change (what a preset switch does) is seen at once.
        with torch.no_grad():
            model.blocks[0].norm2.weight.mul_(1.5)
            model.scale_shift_table.add_(0.1)
            got = model(**call)[0]
        assert forward.compiled_calls == 2
        torch.testing.assert_close(got, eager(model, call), atol=1e-5, rtol=1e-5)

        # Another shape has no graph: the eager forward runs.
        other = transformer_call(model, frames=2)
        with torch.no_grad():
            got = model(**other)[0]
        assert forward.eager_calls == 1
        assert torch.equal(got, eager(model, other))
        # The pose branch, which the pipeline calls outside the transformer's forward, still has its weights.
        assert isinstance(model.encode_pose(other["hidden_states"], other["hidden_states"]), PoseFeatures)
    finally:
        aot.uninstall_aot(model)
    assert "forward" not in model.__dict__


def test_the_zerogpu_path_is_taken_when_spaces_is_importable(compiled, monkeypatch):
    model, call, package = compiled
    used = []

    class Call:
        args, kwargs = (), {}

    class Captured(Exception):
        pass

    class capture:
        """spaces.aoti_capture's contract: record the module's first call and stop the caller there."""

        def __init__(self, module):
            self.module, self.call = module, Call()

        def __enter__(self):
            used.append("aoti_capture")

            def stop(*args, **kwargs):
                self.call.args, self.call.kwargs = args, kwargs
                raise Captured

            self.module.forward = stop
            return self.call

        def __exit__(self, kind, error, tb):
            del self.module.forward
            return kind is Captured

    def aoti_compile(exported, inductor_configs):
        used.append("aoti_compile")
        assert inductor_configs["aot_inductor.package_constants_in_so"] is False
        return types.SimpleNamespace(archive_file=io.BytesIO(package.data))

    spaces = types.ModuleType("spaces")
    spaces.__spec__ = importlib.machinery.ModuleSpec("spaces", None)
    spaces.aoti_capture, spaces.aoti_compile = capture, aoti_compile
    monkeypatch.setitem(sys.modules, "spaces", spaces)

    class Pipe:
        transformer = model

        def __call__(self, **kwargs):
            return self.transformer(**call)

    args, kwargs = aot.capture_transformer_call(Pipe())
    assert kwargs["hidden_states"] is call["hidden_states"]
    rebuilt = aot.compile_package(aot.export_module(model, args, kwargs))
    assert used == ["aoti_capture", "aoti_compile"] and rebuilt.data == package.data
    assert rebuilt.signature == package.signature


# --------------------------------------------------------------------------------------------- the real size
@pytest.fixture(scope="module")
def real_transformer():
    """The released 14B transformer under FakeTensorMode: real shapes and dtypes, no storage."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from steadydancer.loading import config_from_released
    from steadydancer.model_configs import RELEASED_TRANSFORMER_CONFIG

    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    default = torch.get_default_dtype()
    with fake_mode:
        torch.set_default_dtype(torch.bfloat16)
        try:
            model = SteadyDancerTransformer3DModel(**config_from_released(RELEASED_TRANSFORMER_CONFIG)).eval()
        finally:
            torch.set_default_dtype(default)
    return model, fake_mode


@pytest.mark.parametrize("bucket, height, width", [("480p", 480, 832), ("576p", 576, 1024)])
def test_the_real_size_block_exports_whole_at_a_bucket_shape(real_transformer, bucket, height, width):
    from steadydancer.sizing import latent_frame_count

    model, fake_mode = real_transformer
    grid = (latent_frame_count(81), height // 8, width // 8)
    bf16 = torch.bfloat16
    with fake_mode, torch.no_grad():
        latents = torch.zeros(1, 16, *grid, dtype=bf16)
        call = dict(
            hidden_states=latents, timestep=torch.tensor([500.0]),
            encoder_hidden_states=torch.zeros(1, 512, 4096, dtype=bf16),
            encoder_hidden_states_image=torch.zeros(1, 257, 1280, dtype=bf16),
            encoder_hidden_states_pose_image=torch.zeros(1, 257, 1280, dtype=bf16),
            image_condition=torch.zeros(1, 20, *grid, dtype=bf16),
            reference_latents=torch.zeros(1, 36, 1, *grid[1:], dtype=bf16),
            pose_reference_latents=torch.zeros(1, 16, 1, *grid[1:], dtype=bf16),
            pose_latents=torch.zeros(1, 16, *grid, dtype=bf16), return_dict=False,
        )
        args, kwargs = aot.capture_call(model.blocks[0], lambda: model(**call))
        exported = aot.export_module(model.blocks[0], args, kwargs)

    tokens = (grid[0] + 2) * (grid[1] // 2) * (grid[2] // 2)  # the two reference frames join the video's
    assert tokens == {"480p": 35_880, "576p": 52_992}[bucket]
    assert tuple(args[0].shape) == (1, tokens, 5120)
    # One graph with every weight of the block as an input: nothing broke it, nothing was left to Python.
    graph_calls = [n for n in exported.graph.nodes if n.op == "call_function"]
    assert any("scaled_dot_product" in str(n.target) or "flash" in str(n.target) for n in graph_calls)
    weights = {name for name, _ in model.blocks[0].named_parameters()}
    assert weights <= set(exported.graph_signature.inputs_to_parameters.values())
    assert [tuple(o.meta["val"].shape) for o in exported.graph.output_node().args[0]] == [(1, tokens, 5120)]
