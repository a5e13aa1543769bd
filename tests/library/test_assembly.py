"""Loading the pipeline from the Hub layouts: what is downloaded, pinned revisions, offline mode, weight formats."""

import json
import pickle
import shutil

import pytest
import torch

from helpers.fake_hub import FakeHub
from steadydancer.assembly import DEFAULT_BASE_REPO, load_pipeline
from steadydancer.loading import DEFAULT_TRANSFORMER_REPO
from steadydancer.tiny import tiny_transformer

TRANSFORMER_COMMIT, BASE_COMMIT = "a" * 40, "b" * 40


@pytest.fixture
def hub(tiny_checkpoints):
    """The tiny checkpoints served under the real repo ids, next to files the loader must leave alone: the base
    repo's own (14B) transformer and pickle copies of weights."""
    transformer_dir, base_dir = tiny_checkpoints
    fake = FakeHub()
    fake.add_repo(DEFAULT_TRANSFORMER_REPO, transformer_dir, {"README.md": b"card", "steadydancer.pth": b"pickle"})
    fake.add_repo(DEFAULT_BASE_REPO, base_dir, {
        "transformer/config.json": b"{}",
        "transformer/diffusion_pytorch_model-00001-of-00014.safetensors": b"14B",
        "transformer/diffusion_pytorch_model.safetensors.index.json": b"{}",
        "vae/diffusion_pytorch_model.bin": b"pickle",
        "text_encoder/pytorch_model.bin": b"pickle",
        "examples/i2v_input.JPG": b"jpeg",
    })
    fake.install()
    yield fake
    fake.uninstall()


def test_the_hub_gives_only_the_files_needed_at_the_pinned_revisions(hub, tmp_path, monkeypatch):
    kwargs = dict(transformer_revision=TRANSFORMER_COMMIT, base_revision=BASE_COMMIT, torch_dtype=torch.float32,
                  cache_dir=str(tmp_path / "cache"))
    pipe = load_pipeline(**kwargs)

    base_files = hub.downloads(DEFAULT_BASE_REPO)
    assert {"vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
            "image_encoder/model.safetensors", "tokenizer/tokenizer.json",
            "image_processor/preprocessor_config.json"} <= base_files
    asked = {path for _, repo, _, path in hub.requests if repo == DEFAULT_BASE_REPO and path}
    assert not [f for f in asked if f.startswith("transformer/")]  # not even a HEAD for the 14B Wan transformer
    everything = base_files | hub.downloads(DEFAULT_TRANSFORMER_REPO)
    assert not [f for f in everything if f.endswith((".bin", ".pth", ".JPG", ".md"))]
    revisions = {repo: {rev for _, r, rev, _ in hub.requests if r == repo} for repo in hub.repos}
    assert revisions == {DEFAULT_TRANSFORMER_REPO: {TRANSFORMER_COMMIT}, DEFAULT_BASE_REPO: {BASE_COMMIT}}
    expected = tiny_transformer().state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in pipe.transformer.state_dict().items())

    # HF_HUB_OFFLINE: everything again from the cache, without a single request.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    hub.requests.clear()
    offline = load_pipeline(**kwargs)
    assert hub.requests == [] and type(offline.vae) is type(pipe.vae)


class _Trap:
    """Unpickling it creates `path`: proof that a pickle was executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("component, pickle_name", [
    ("vae", "diffusion_pytorch_model.bin"),
    ("text_encoder", "pytorch_model.bin"),
    ("image_encoder", "pytorch_model.bin"),
])
def test_pickled_weights_are_refused_never_executed(tiny_checkpoints, tmp_path, component, pickle_name):
    transformer_dir, base_dir = tiny_checkpoints
    base = shutil.copytree(base_dir, tmp_path / "base")
    for weights in (base / component).glob("*.safetensors"):
        weights.unlink()
    marker = tmp_path / "executed"
    (base / component / pickle_name).write_bytes(pickle.dumps({"weight": _Trap(marker)}))
    with pytest.raises(OSError, match="safetensors"):
        load_pipeline(transformer_dir, base, torch_dtype=torch.float32)
    assert not marker.exists()


def test_code_shipped_with_a_repo_is_never_run(tiny_checkpoints, tmp_path):
    transformer_dir, base_dir = tiny_checkpoints
    base = shutil.copytree(base_dir, tmp_path / "base")
    index = json.loads((base / "model_index.json").read_text())
    index["tokenizer"] = ["custom_tokenizer", "CustomTokenizer"]
    (base / "model_index.json").write_text(json.dumps(index))
    marker = tmp_path / "executed"
    (base / "tokenizer" / "custom_tokenizer.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n\nclass CustomTokenizer:\n    pass\n"
    )
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_pipeline(transformer_dir, base, torch_dtype=torch.float32)
    assert not marker.exists()
