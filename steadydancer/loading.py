"""Loading the released SteadyDancer-14B checkpoint (original Wan naming) into `SteadyDancerTransformer3DModel`.

The Hub repo `MCG-NJU/SteadyDancer-14B` stores `config.json` with Wan's fields and sharded
`diffusion_pytorch_model*.safetensors` with keys such as `blocks.0.self_attn.q.weight`. The Wan part of the keys is
converted by diffusers' own Wan converter; the SteadyDancer additions are mapped here. Only safetensors are read:
nothing loaded can execute code.
"""

import json
import logging
import os
import re
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from safetensors import safe_open

from .defaults import TRANSFORMER
from .models import SteadyDancerTransformer3DModel

logger = logging.getLogger(__name__)

DEFAULT_TRANSFORMER_REPO = TRANSFORMER.repo_id
WEIGHTS_INDEX = "diffusion_pytorch_model.safetensors.index.json"
WEIGHTS_PATTERNS = ["config.json", "diffusion_pytorch_model*.safetensors", WEIGHTS_INDEX]

# Released config fields we read; everything else is reported and ignored.
_KNOWN_CONFIG_FIELDS = {
    "model_type", "patch_size", "text_len", "in_dim", "in_dim_c", "dim", "ffn_dim", "freq_dim", "text_dim",
    "out_dim", "num_heads", "num_layers", "window_size", "qk_norm", "cross_attn_norm", "eps",
}
_REQUIRED_CONFIG_FIELDS = ("dim", "num_heads", "num_layers", "ffn_dim", "in_dim", "out_dim")

# Released name prefix -> ours, for the SteadyDancer additions (used in both directions).
_POSE_RENAMES = {
    "patch_embedding.": "reference_patch_embedding.",
    "patch_embedding_fuse.": "patch_embedding.",
    "patch_embedding_ref_c.": "pose_reference_patch_embedding.",
    "condition_embedding_spatial.conv.": "pose_modulation.spatial.conv_residual.",
    "condition_embedding_spatial.conv_q.": "pose_modulation.spatial.conv_in.",
    "condition_embedding_spatial.conv_p.": "pose_modulation.spatial.conv_out.",
    "condition_embedding_spatial.fc.0.": "pose_modulation.spatial.squeeze.",
    "condition_embedding_spatial.fc.1.fc.0.": "pose_modulation.spatial.squeeze_excite.",
    "condition_embedding_spatial.fc_phi.": "pose_modulation.spatial.to_phi.",
    "condition_embedding_spatial.fc_scale.": "pose_modulation.spatial.to_scale.",
    "condition_embedding_spatial.bn1.": "pose_modulation.spatial.norm_in.",
    "condition_embedding_spatial.bn2.": "pose_modulation.spatial.norm_mix.",
    "condition_embedding_align.proj_p.": "pose_modulation.align.proj_pose.",
    "condition_embedding_align.proj_r.": "pose_modulation.align.proj_latent.",
    "condition_embedding_align.proj_p_back.": "pose_modulation.align.proj_back.",
    "condition_embedding_align.cross_attn.out_proj.": "pose_modulation.align.to_out.",
    "condition_embedding_align.ffn_pose.": "pose_modulation.align.ffn.",
    "condition_embedding_align.norm1.": "pose_modulation.align.norm1.",
    "condition_embedding_align.norm2.": "pose_modulation.align.norm2.",
}
# The temporal module's Sequential interleaves SiLUs: released layers 0, 2, 4 are our convs 0, 1, 2.
_RELEASED_TEMPORAL = re.compile(r"^condition_embedding_temporal\.(\d+)\.(spatial|temporal)\.")
_OUR_TEMPORAL = re.compile(r"^pose_modulation\.temporal\.convs\.(\d+)\.(spatial|temporal)_conv\.")


def _rename_pose_key(key: str, renames: dict[str, str]) -> str | None:
    """`key` with its longest matching prefix renamed, or None when no prefix matches."""
    matches = [prefix for prefix in renames if key.startswith(prefix)]
    if not matches:
        return None
    prefix = max(matches, key=len)
    return renames[prefix] + key[len(prefix) :]


_PACKED_QKV = re.compile(r"^condition_embedding_align\.cross_attn\.in_proj_(weight|bias)$")
_POSE_PREFIXES = ("patch_embedding", "condition_embedding_")


class CheckpointMismatchError(ValueError):
    """The checkpoint and the model do not match tensor for tensor."""


def convert_released_state_dict(checkpoint: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Maps a released SteadyDancer state dict (Wan naming) to `SteadyDancerTransformer3DModel` names.

    The input dict is consumed. Keys that match no rule are kept under their released names, so the caller's
    strict check reports them.
    """
    checkpoint = {k.removeprefix("model.diffusion_model."): v for k, v in checkpoint.items()}
    pose_part = {k: checkpoint.pop(k) for k in list(checkpoint) if k.startswith(_POSE_PREFIXES)}
    converted = convert_wan_transformer_to_diffusers(checkpoint)

    for key, tensor in pose_part.items():
        packed = _PACKED_QKV.match(key)
        if packed:
            for name, part in zip(("to_q", "to_k", "to_v"), tensor.chunk(3, dim=0)):
                converted[f"pose_modulation.align.{name}.{packed[1]}"] = part.contiguous()
            continue
        temporal = _RELEASED_TEMPORAL.match(key)
        if temporal:
            new_key = _RELEASED_TEMPORAL.sub(
                f"pose_modulation.temporal.convs.{int(temporal[1]) // 2}.{temporal[2]}_conv.", key
            )
        else:
            new_key = _rename_pose_key(key, _POSE_RENAMES)
        converted[new_key or key] = tensor
    return converted


def config_from_released(released: dict) -> dict:
    """Translates a released `config.json` (Wan's fields) into `SteadyDancerTransformer3DModel` arguments."""
    missing = [f for f in _REQUIRED_CONFIG_FIELDS if f not in released]
    if missing:
        raise ValueError(f"The checkpoint's config.json lacks required fields: {', '.join(missing)}")
    if released.get("model_type", "i2v") != "i2v":
        raise ValueError(f"SteadyDancer is an image-to-video model; config.json says model_type={released['model_type']!r}")
    if tuple(released.get("window_size", (-1, -1))) != (-1, -1):
        raise ValueError("Windowed attention (window_size != (-1, -1)) is not supported.")
    if not released.get("qk_norm", True):
        raise ValueError("Checkpoints without qk_norm are not supported.")
    unknown = sorted(set(released) - _KNOWN_CONFIG_FIELDS - {k for k in released if k.startswith("_")})
    if unknown:
        logger.warning("Ignoring unknown fields in the checkpoint's config.json: %s", ", ".join(unknown))

    dim, heads = released["dim"], released["num_heads"]
    if dim % heads:
        raise ValueError(f"dim ({dim}) must be divisible by num_heads ({heads}).")
    noise_channels = released["out_dim"]
    return dict(
        patch_size=tuple(released.get("patch_size", (1, 2, 2))),
        num_attention_heads=heads,
        attention_head_dim=dim // heads,
        in_channels=noise_channels,
        image_condition_channels=released["in_dim"] - noise_channels,
        pose_channels=released.get("in_dim_c", 16),
        out_channels=noise_channels,
        text_dim=released.get("text_dim", 4096),
        freq_dim=released.get("freq_dim", 256),
        ffn_dim=released["ffn_dim"],
        num_layers=released["num_layers"],
        cross_attn_norm=released.get("cross_attn_norm", True),
        eps=released.get("eps", 1e-6),
        text_len=released.get("text_len", 512),
    )


def resolve_checkpoint_dir(
    path_or_repo_id: str | os.PathLike,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    cache_dir: str | None = None,
    token: str | bool | None = None,
) -> Path:
    """A local directory as is, or the transformer files of a Hub repo downloaded (config, safetensors shards and
    their index; cache and HF_HUB_OFFLINE honoured)."""
    local = Path(path_or_repo_id).expanduser()
    if local.is_dir():
        return local / subfolder if subfolder else local
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    patterns = [f"{subfolder}/{p}" for p in WEIGHTS_PATTERNS] if subfolder else WEIGHTS_PATTERNS
    try:
        root = snapshot_download(
            str(path_or_repo_id), revision=revision, allow_patterns=patterns, cache_dir=cache_dir, token=token
        )
    except HFValidationError as error:
        raise FileNotFoundError(f"{path_or_repo_id!s} is neither a local directory nor a Hub repo id.") from error
    except Exception as error:  # network, auth, offline-without-cache: say what to do
        raise OSError(
            f"Could not download {path_or_repo_id} (revision {revision or 'main'}) from the Hugging Face Hub: {error}. "
            "Check the network, the repo id and revision, HF_TOKEN for gated repos, or pass a local directory; "
            "with HF_HUB_OFFLINE=1 the files must already be in the cache."
        ) from error
    return Path(root) / subfolder if subfolder else Path(root)


def _weight_files(directory: Path) -> list[Path]:
    index = directory / WEIGHTS_INDEX
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [directory / n for n in names]
    else:
        files = sorted(directory.glob("diffusion_pytorch_model*.safetensors"))
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise FileNotFoundError(f"{directory} lacks weight shards named in its index: {', '.join(absent)}")
    if not files:
        pickles = [p.name for p in directory.glob("*") if p.suffix in {".pth", ".bin", ".pt", ".ckpt"}]
        hint = f" (found {', '.join(pickles)}; pickle files are never loaded)" if pickles else ""
        raise FileNotFoundError(f"No diffusion_pytorch_model*.safetensors in {directory}{hint}")
    return files


def _keeps_fp32(name: str) -> bool:
    parts = name.split(".")
    return any(m in parts for m in SteadyDancerTransformer3DModel._keep_in_fp32_modules)


def load_released_transformer(
    path_or_repo_id: str | os.PathLike = DEFAULT_TRANSFORMER_REPO,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    torch_dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    cache_dir: str | None = None,
    token: str | bool | None = None,
) -> SteadyDancerTransformer3DModel:
    """Builds the transformer from a checkpoint in the released layout, refusing any mismatch.

    Every checkpoint tensor must land on a model tensor of the same shape and every model tensor must be set;
    otherwise `CheckpointMismatchError` lists the offenders. The model is built on the meta device, so no memory is
    spent before the weights are read. `torch_dtype` applies to all weights except diffusers' fp32-kept modules.
    """
    directory = resolve_checkpoint_dir(
        path_or_repo_id, revision=revision, subfolder=subfolder, cache_dir=cache_dir, token=token
    )
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"No config.json in {directory}")
    config = config_from_released(json.loads(config_path.read_text()))

    checkpoint = {}
    for file in _weight_files(directory):
        with safe_open(str(file), framework="pt", device="cpu") as reader:
            for key in reader.keys():
                checkpoint[key] = reader.get_tensor(key)
    state_dict = convert_released_state_dict(checkpoint)

    with init_empty_weights(include_buffers=False):
        model = SteadyDancerTransformer3DModel(**config)
    expected = dict(model.state_dict())
    unused = sorted(set(state_dict) - set(expected))
    unset = sorted(set(expected) - set(state_dict))
    wrong_shape = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state_dict) & set(expected)
        if state_dict[k].shape != expected[k].shape
    )
    if unused or unset or wrong_shape:
        lines = [f"The checkpoint in {directory} does not match SteadyDancerTransformer3DModel({config}):"]
        for title, items in (("unused checkpoint tensors", unused), ("model tensors not set", unset), ("shape mismatches", wrong_shape)):
            if items:
                lines.append(f"  {len(items)} {title}: " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
        raise CheckpointMismatchError("\n".join(lines))

    state_dict = {
        k: v.to(device=device, dtype=torch.float32 if _keeps_fp32(k) and v.is_floating_point() else torch_dtype)
        for k, v in state_dict.items()
    }
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)


# Our names -> released names for the Wan part (the inverse of diffusers' converter).
_WAN_EXPORT_RULES = [
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^condition_embedder\.image_embedder\.norm1\.", "img_emb.proj.0."),
    (r"^condition_embedder\.image_embedder\.ff\.net\.0\.proj\.", "img_emb.proj.1."),
    (r"^condition_embedder\.image_embedder\.ff\.net\.2\.", "img_emb.proj.3."),
    (r"^condition_embedder\.image_embedder\.norm2\.", "img_emb.proj.4."),
    (r"^scale_shift_table$", "head.modulation"),
    (r"^proj_out\.", "head.head."),
    (r"^(blocks\.\d+\.)scale_shift_table$", r"\1modulation"),
    (r"^(blocks\.\d+\.)norm2\.", r"\1norm3."),
    (r"^(blocks\.\d+\.)ffn\.net\.0\.proj\.", r"\1ffn.0."),
    (r"^(blocks\.\d+\.)ffn\.net\.2\.", r"\1ffn.2."),
    (r"^(blocks\.\d+\.)attn1\.(to_)?", r"\1self_attn."),
    (r"^(blocks\.\d+\.)attn2\.(to_)?", r"\1cross_attn."),
]
_ATTN_EXPORT_RULES = [(r"\.out\.0\.", ".o."), (r"\.add_k_proj\.", ".k_img."), (r"\.add_v_proj\.", ".v_img."), (r"\.norm_added_k\.", ".norm_k_img.")]


def _export_key(key: str) -> str:
    temporal = _OUR_TEMPORAL.match(key)
    if temporal:
        return _OUR_TEMPORAL.sub(f"condition_embedding_temporal.{2 * int(temporal[1])}.{temporal[2]}.", key)
    pose_key = _rename_pose_key(key, _OUR_POSE_RENAMES)
    if pose_key is not None:
        return pose_key
    for pattern, replacement in _WAN_EXPORT_RULES:
        new_key, count = re.subn(pattern, replacement, key)
        if count:
            if ".self_attn." in new_key or ".cross_attn." in new_key:
                for attn_pattern, attn_replacement in _ATTN_EXPORT_RULES:
                    new_key = re.sub(attn_pattern, attn_replacement, new_key)
            return new_key
    return key


_OUR_POSE_RENAMES = {ours: released for released, ours in _POSE_RENAMES.items()}


def export_released_state_dict(model: SteadyDancerTransformer3DModel) -> dict[str, torch.Tensor]:
    """The model's weights under the released (original Wan) names: the inverse of `convert_released_state_dict`.

    Useful to hand a fine-tuned model to tools that read the released layout, and to write small test checkpoints.
    """
    state = dict(model.state_dict())
    out = {}
    align = "pose_modulation.align."
    for kind in ("weight", "bias"):
        parts = [state.pop(f"{align}{name}.{kind}") for name in ("to_q", "to_k", "to_v")]
        out[f"condition_embedding_align.cross_attn.in_proj_{kind}"] = torch.cat(parts)
    for key, tensor in state.items():
        out[_export_key(key)] = tensor
    return out


def released_config(model: SteadyDancerTransformer3DModel) -> dict:
    """The released `config.json` fields describing `model` (the inverse of `config_from_released`)."""
    c = model.config
    return {
        "_class_name": "WanModel",
        "model_type": "i2v",
        "patch_size": list(c.patch_size),
        "text_len": c.text_len,
        "in_dim": c.in_channels + c.image_condition_channels,
        "dim": c.num_attention_heads * c.attention_head_dim,
        "ffn_dim": c.ffn_dim,
        "freq_dim": c.freq_dim,
        "text_dim": c.text_dim,
        "out_dim": c.out_channels,
        "num_heads": c.num_attention_heads,
        "num_layers": c.num_layers,
        "eps": c.eps,
    }


def save_released_layout(model: SteadyDancerTransformer3DModel, directory: str | os.PathLike, num_shards: int = 2) -> Path:
    """Writes `model` as the Hub repo stores the released one: config.json, N safetensors shards and their index."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in export_released_state_dict(model).items()}
    keys = sorted(state)
    chunk = -(-len(keys) // num_shards)
    weight_map = {}
    for index in range(num_shards):
        name = f"diffusion_pytorch_model-{index + 1:05d}-of-{num_shards:05d}.safetensors"
        shard = {k: state[k] for k in keys[index * chunk : (index + 1) * chunk]}
        save_file(shard, str(directory / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    (directory / WEIGHTS_INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    (directory / "config.json").write_text(json.dumps(released_config(model), indent=1))
    return directory
