"""Loading Wan2.1 LoRAs (e.g. lightx2v's step-distillation LoRA) onto `SteadyDancerTransformer3DModel`.

The transformer's blocks carry diffusers' Wan names, so diffusers' own Wan LoRA conversion maps the published
layouts onto them and `pipe.load_lora_weights(...)` (`WanLoraLoaderMixin`) works as is for the LoRA matrices
(checked on this model: every block's attention, image-attention and FFN layers and the output head receive them;
the pose alignment unit's output conv is named ``proj_back`` so that the head's target name ``proj_out`` matches
nothing else). What diffusers does not do, and this thin adapter adds:

1. Full-tensor deltas. lightx2v's and other ComfyUI-style files also carry ``.diff`` (weight), ``.diff_b`` (bias
   of a layer without a LoRA pair) and ``.diff_m`` (a block's modulation table) tensors, which diffusers drops.
   Here they are mapped with the checkpoint loader's Wan -> diffusers renaming and added to the weights in place
   (scaled by `adapter_scale`), keeping the originals. ``patch_embedding`` deltas are skipped: Wan's 36-channel
   patch embedding has no single counterpart here (SteadyDancer embeds the video through a new 68-channel conv and
   only the reference frame through the Wan one).
2. Exact switching. `set_wan_lora_enabled` turns one adapter off and on again between calls without reloading:
   the LoRA layers leave and rejoin PEFT's active set, and the few delta-changed tensors swap between their two
   kept versions (copies, so switching back is bit-exact). `fuse_wan_lora` merges an adapter for good instead.
3. Exact unloading. `unload_wan_lora` removes the PEFT layers, restores the changed weights and the
   ``requires_grad`` flags PEFT cleared (some CPU kernels take another path for frozen weights, so outputs differ
   by ~1e-6 without it).
4. Per-adapter scale. `adapter_scale` scales this adapter only, leaving other loaded adapters as they are.

Accepted layouts: kohya/ComfyUI (``diffusion_model.blocks.0.self_attn.q.lora_down.weight`` / ``lora_up.weight`` /
``.alpha``), ``lora_A`` / ``lora_B`` with the ``diffusion_model.`` prefix (or none), musubi-tuner (``lora_unet_``),
diffusers' own (``transformer.blocks.0.attn1.to_q.lora_A.weight``), and lightx2v's ``.diff`` / ``.diff_b`` /
``.diff_m`` extras. Only safetensors files are read.

Load LoRAs before `steadydancer.acceleration.apply_fast_paths` (fp8 casting, offloading and compilation wrap the
modules that exist when they are applied).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

logger = logging.getLogger(__name__)

_DIFF_SUFFIXES = {".diff": "weight", ".diff_b": "bias", ".diff_m": "modulation"}
_BACKUP_ATTR = "_steadydancer_lora_backups"
_GRAD_ATTR = "_steadydancer_requires_grad"  # PEFT freezes the base weights; unloading the last adapter restores this
_APPLIED_ATTR = "_steadydancer_lora_applied"  # while an adapter is switched off: its weights with the deltas, kept aside


@dataclass
class LoraLoadReport:
    """What `load_wan_lora` did."""

    adapter_name: str
    lora_modules: list[str] = field(default_factory=list)  # transformer modules that received a LoRA
    ranks: list[int] = field(default_factory=list)
    diff_params: list[str] = field(default_factory=list)  # transformer parameters changed in place
    skipped: list[str] = field(default_factory=list)  # file keys not applied, with the reason


# --------------------------------------------------------------------------------------------- reading
def read_lora_file(
    source: str | os.PathLike | dict,
    weight_name: str | None = None,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool | None = None,
) -> dict[str, torch.Tensor]:
    """The raw tensors of a LoRA: a state dict as is, a local file or directory, or a Hub repo (safetensors only)."""
    if isinstance(source, dict):
        return dict(source)
    path = Path(source).expanduser()
    if path.is_file():
        file = path
    elif path.is_dir():
        folder = path / subfolder if subfolder else path
        if weight_name:
            file = folder / weight_name
        else:
            candidates = sorted(folder.glob("*.safetensors"))
            if len(candidates) != 1:
                raise ValueError(f"{folder} holds {len(candidates)} .safetensors files; pass weight_name.")
            file = candidates[0]
    else:
        from huggingface_hub import HfApi, hf_hub_download

        if weight_name is None:
            files = [
                f for f in HfApi().list_repo_files(str(source), revision=revision, token=token)
                if f.endswith(".safetensors") and (not subfolder or f.startswith(f"{subfolder}/"))
            ]
            if len(files) != 1:
                raise ValueError(f"{source} holds {len(files)} .safetensors files; pass weight_name.")
            weight_name, subfolder = files[0], None
        file = Path(
            hf_hub_download(
                str(source), weight_name, subfolder=subfolder, revision=revision, cache_dir=cache_dir, token=token,
                local_files_only=bool(local_files_only),
            )
        )
    if file.suffix != ".safetensors":
        raise ValueError(f"Only .safetensors LoRA files are loaded (got {file.name}); pickles can execute code.")
    return load_file(file)


# --------------------------------------------------------------------------------------------- conversion
def _normalise_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        for prefix in ("model.diffusion_model.", "diffusion_model."):
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        out[key] = value
    return out


def _split_diffs(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(LoRA part, full-tensor deltas). A ``.diff_b`` stays with the LoRA part when its layer has a LoRA pair
    (diffusers turns it into the LoRA's bias); otherwise it is a plain bias delta."""
    lora_layers = {k.split(".lora_")[0] for k in state_dict if ".lora_" in k}
    lora, diffs = {}, {}
    for key, value in state_dict.items():
        suffix = next((s for s in _DIFF_SUFFIXES if key.endswith(s)), None)
        if suffix is None or (suffix == ".diff_b" and key[: -len(suffix)] in lora_layers):
            lora[key] = value
        else:
            diffs[key] = value
    return lora, diffs


def _diff_targets(
    diffs: dict[str, torch.Tensor], skipped: list[str]
) -> dict[str, tuple[str, torch.Tensor]]:
    """Wan-named deltas -> {our parameter name: delta}, through the checkpoint loader's renaming."""
    from .loading import convert_released_state_dict

    released = {}
    for key, value in diffs.items():
        suffix = next(s for s in _DIFF_SUFFIXES if key.endswith(s))
        base = key[: -len(suffix)]
        if base.startswith("patch_embedding"):
            skipped.append(f"{key}: Wan's patch embedding has no single counterpart in SteadyDancer")
            continue
        released[f"{base}.{_DIFF_SUFFIXES[suffix]}" if base else _DIFF_SUFFIXES[suffix]] = (key, value)
    converted = convert_released_state_dict({name: i for i, name in enumerate(released)})
    order = list(released.values())
    return {ours: order[index] for ours, index in converted.items()}


def convert_wan_lora(
    state_dict: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, tuple[str, torch.Tensor]], list[str]]:
    """A published Wan LoRA -> (PEFT state dict in our module names, {our param: (file key, delta)}, skipped)."""
    from diffusers.loaders.lora_conversion_utils import (
        _convert_musubi_wan_lora_to_diffusers,
        _convert_non_diffusers_wan_lora_to_diffusers,
    )

    skipped: list[str] = []
    if any(k.startswith("transformer.") for k in state_dict):  # diffusers' own layout
        peft = {k.removeprefix("transformer."): v for k, v in state_dict.items() if k.startswith("transformer.")}
        skipped += [f"{k}: not a transformer key" for k in state_dict if not k.startswith("transformer.")]
        return peft, {}, skipped
    if any(k.startswith("lora_unet_") for k in state_dict):  # musubi-tuner
        converted = _convert_musubi_wan_lora_to_diffusers({k: v.clone() for k, v in state_dict.items()})
        return {k.removeprefix("transformer."): v for k, v in converted.items()}, {}, skipped

    lora_part, diffs = _split_diffs(_normalise_prefix(state_dict))
    peft = {}
    if any(".lora_" in k for k in lora_part):
        lora_part = {k: v for k, v in lora_part.items() if ".lora_" in k or k.endswith((".alpha", ".diff_b"))}
        # Cloned: diffusers' converter folds some alphas into the caller's tensors in place (cross-attention, image
        # attention and FFN `*=`), so converting the same dict twice would scale those layers twice.
        converted = _convert_non_diffusers_wan_lora_to_diffusers(
            {f"diffusion_model.{k}": v.clone() for k, v in lora_part.items()}
        )
        peft = {k.removeprefix("transformer."): v for k, v in converted.items()}
    return peft, _diff_targets(diffs, skipped), skipped


# --------------------------------------------------------------------------------------------- loading
def _resolve_parameter(transformer, name: str) -> torch.nn.Parameter | None:
    try:
        return transformer.get_parameter(name)
    except AttributeError:
        module_name, _, leaf = name.rpartition(".")
        try:  # a layer wrapped by PEFT keeps its weights in `base_layer`
            return transformer.get_parameter(f"{module_name}.base_layer.{leaf}")
        except AttributeError:
            return None


def load_wan_lora(
    pipe,
    source: str | os.PathLike | dict,
    *,
    weight_name: str | None = None,
    adapter_name: str = "default",
    adapter_scale: float = 1.0,
    apply_diffs: bool = True,
    **hub_kwargs,
) -> LoraLoadReport:
    """Loads a Wan2.1 LoRA onto ``pipe.transformer`` (pass a pipeline or the transformer itself).

    The LoRA layers go through diffusers/PEFT (so `pipe.set_adapters`, `pipe.fuse_lora`, `pipe.disable_lora` and
    hot-swapping work as for any diffusers LoRA); `adapter_scale` sets this adapter's scale only, and adapters that
    were active stay active (`pipe.load_lora_weights` would switch them off). With `apply_diffs`, the file's
    full-tensor deltas are added to the weights (see the module docstring); they are always on, whatever
    `set_adapters` / `disable_lora` later say, until `unload_wan_lora`.
    """
    from peft.tuners.lora import LoraLayer

    transformer = getattr(pipe, "transformer", pipe)
    owner = pipe if transformer is not pipe else None
    if adapter_name in getattr(transformer, "peft_config", {}) or adapter_name in getattr(transformer, _BACKUP_ATTR, {}):
        raise ValueError(f"An adapter named {adapter_name!r} is already loaded; unload it or pick another name.")
    peft_state_dict, diffs, skipped = convert_wan_lora(read_lora_file(source, weight_name, **hub_kwargs))
    report = LoraLoadReport(adapter_name=adapter_name, skipped=skipped)

    if peft_state_dict:
        if not hasattr(transformer, _GRAD_ATTR):
            setattr(transformer, _GRAD_ATTR, {n: p.requires_grad for n, p in transformer.named_parameters()})
        active = transformer.active_adapters() if getattr(transformer, "_hf_peft_config_loaded", False) else []
        transformer.load_lora_adapter(peft_state_dict, prefix=None, adapter_name=adapter_name, _pipeline=owner)
        if active:  # PEFT activates only the new adapter; keep the others on, with their scales
            transformer.set_adapter([*active, adapter_name])
        for name, module in transformer.named_modules():
            if isinstance(module, LoraLayer) and adapter_name in module.scaling:
                module.set_scale(adapter_name, adapter_scale)
                report.lora_modules.append(name)
                report.ranks.append(module.r[adapter_name])

    backups = {}
    for ours, (key, delta) in diffs.items():
        if not apply_diffs:
            report.skipped.append(f"{key}: full-tensor delta (apply_diffs=False)")
            continue
        param = _resolve_parameter(transformer, ours)
        if param is None and ours.endswith(".weight"):  # a delta of a bare parameter, e.g. head.modulation.diff
            ours = ours.removesuffix(".weight")
            param = _resolve_parameter(transformer, ours)
        if param is None:
            report.skipped.append(f"{key}: no parameter {ours} in this model")
            continue
        if param.shape != delta.shape:
            report.skipped.append(f"{key}: shape {tuple(delta.shape)} != {ours} {tuple(param.shape)}")
            continue
        with torch.no_grad():
            backups[ours] = param.detach().clone()
            param.add_(delta.to(device=param.device, dtype=torch.float32).mul(adapter_scale).to(param.dtype))
        report.diff_params.append(ours)
    if backups:
        getattr(transformer, _BACKUP_ATTR, None) or setattr(transformer, _BACKUP_ATTR, {})
        getattr(transformer, _BACKUP_ATTR)[adapter_name] = backups
    for line in report.skipped:
        logger.info("LoRA %s: skipped %s", adapter_name, line)
    if not report.lora_modules and not report.diff_params:
        raise ValueError("The LoRA file holds nothing that applies to this transformer: " + "; ".join(skipped[:5]))
    return report


def unload_wan_lora(pipe, adapter_name: str | None = None) -> None:
    """Removes one adapter (or all, with None) and restores the weights its deltas changed, exactly."""
    transformer = getattr(pipe, "transformer", pipe)
    backups = getattr(transformer, _BACKUP_ATTR, {})
    names = [adapter_name] if adapter_name is not None else sorted(set(getattr(transformer, "peft_config", {})) | set(backups))
    loaded = set(getattr(transformer, "peft_config", {}))
    for name in names:
        if name in loaded:
            transformer.delete_adapters(name)
        getattr(transformer, _APPLIED_ATTR, {}).pop(name, None)
        for param_name, original in backups.pop(name, {}).items():
            with torch.no_grad():
                _resolve_parameter(transformer, param_name).copy_(original)
    if not getattr(transformer, "peft_config", None) and _has_peft_layers(transformer):
        transformer.unload_lora()  # no adapter left: strip the PEFT wrappers so the modules are the plain ones
    if not getattr(transformer, "peft_config", None) and hasattr(transformer, _GRAD_ATTR):
        # PEFT froze every base weight; some CPU kernels take another path for frozen weights (outputs move by
        # ~1e-6), so the flags are part of "restored exactly".
        for name, flag in getattr(transformer, _GRAD_ATTR).items():
            transformer.get_parameter(name).requires_grad_(flag)
        delattr(transformer, _GRAD_ATTR)


def _loaded_adapters(transformer) -> set[str]:
    return set(getattr(transformer, "peft_config", {})) | set(getattr(transformer, _BACKUP_ATTR, {}))


def wan_lora_enabled(pipe, adapter_name: str) -> bool:
    """Whether a loaded adapter is on (its LoRA layers active and its deltas applied)."""
    transformer = getattr(pipe, "transformer", pipe)
    if adapter_name not in _loaded_adapters(transformer):
        raise ValueError(f"No adapter named {adapter_name!r} is loaded.")
    return adapter_name not in getattr(transformer, _APPLIED_ATTR, {}) and (
        adapter_name not in getattr(transformer, "peft_config", {}) or adapter_name in transformer.active_adapters()
    )


def set_wan_lora_enabled(pipe, adapter_name: str, enabled: bool) -> None:
    """Switches one loaded adapter off or back on, its LoRA layers and its full-tensor deltas together.

    Off: the adapter leaves PEFT's active set (other active adapters stay on) and every weight its deltas changed gets
    its original back, the version with the delta being kept aside; on: the reverse. Tensors are swapped, not
    recomputed, so off -> on gives bit-identical weights, and the outputs equal those of a fresh load with or without
    the adapter. Costs no file reading; the weights may be on any device (swap between calls, not during one).
    """
    transformer = getattr(pipe, "transformer", pipe)
    if adapter_name not in _loaded_adapters(transformer):
        raise ValueError(f"No adapter named {adapter_name!r} is loaded.")
    if adapter_name in getattr(transformer, "peft_config", {}):
        others = [name for name in transformer.active_adapters() if name != adapter_name]
        transformer.set_adapter([*others, adapter_name] if enabled else others)
        flags = getattr(transformer, _GRAD_ATTR, None)
        if flags is not None and not others:
            # As a fresh load: PEFT freezes the base weights, the plain model keeps its flags (some CPU kernels take
            # another path for frozen weights, ~1e-6 apart).
            for name, flag in flags.items():
                param = _resolve_parameter(transformer, name)
                if param is not None:
                    param.requires_grad_(flag and not enabled)

    backups = getattr(transformer, _BACKUP_ATTR, {}).get(adapter_name)
    if not backups:
        return
    applied = getattr(transformer, _APPLIED_ATTR, None)
    if applied is None:
        applied = {}
        setattr(transformer, _APPLIED_ATTR, applied)
    with torch.no_grad():
        if not enabled and adapter_name not in applied:
            params = {name: _resolve_parameter(transformer, name) for name in backups}
            applied[adapter_name] = {name: param.detach().clone() for name, param in params.items()}
            for name, param in params.items():
                _copy_whole(param, backups[name])
        elif enabled and adapter_name in applied:
            for name, value in applied.pop(adapter_name).items():
                _resolve_parameter(transformer, name).copy_(value)


def _copy_whole(param: torch.Tensor, value: torch.Tensor) -> None:
    """`param.copy_(value)` for a whole `value`, where `param` may be this rank's shard of a weight sharded with FSDP2
    (a DTensor: every rank holds the same whole value, so each keeps its slice, with no communication)."""
    if hasattr(param, "device_mesh") and not hasattr(value, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        value = distribute_tensor(value.to(param.device), param.device_mesh, param.placements, src_data_rank=None)
    param.copy_(value)


def fuse_wan_lora(pipe, adapter_name: str) -> None:
    """Merges the only loaded adapter into the weights for good, for deployments that always run it.

    The LoRA matrices are folded into the base weights (PEFT merge, at the adapter's scale) and the PEFT layers
    removed, so each pass skips the low-rank matmuls and the transformer exports as plain modules; the deltas stay
    applied and their backups are freed. Irreversible: reload the transformer to get the base model back.
    """
    transformer = getattr(pipe, "transformer", pipe)
    loaded = _loaded_adapters(transformer)
    if loaded != {adapter_name}:
        raise ValueError(f"fuse_wan_lora needs {adapter_name!r} to be the only adapter loaded; loaded: {sorted(loaded)}.")
    if not wan_lora_enabled(transformer, adapter_name):
        raise ValueError(f"Adapter {adapter_name!r} is switched off; switch it on before fusing it.")
    if adapter_name in getattr(transformer, "peft_config", {}):
        transformer.fuse_lora(adapter_names=[adapter_name])
        transformer.unload_lora()  # drops the PEFT layers; the merged base weights stay
    getattr(transformer, _BACKUP_ATTR, {}).pop(adapter_name, None)
    if hasattr(transformer, _GRAD_ATTR):
        for name, flag in getattr(transformer, _GRAD_ATTR).items():
            transformer.get_parameter(name).requires_grad_(flag)
        delattr(transformer, _GRAD_ATTR)


def _has_peft_layers(module: torch.nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in module.modules())
