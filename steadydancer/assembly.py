"""Assembling `SteadyDancerPipeline` from the Hub (or local directories in the same layouts).

The transformer comes from `MCG-NJU/SteadyDancer-14B` (released Wan layout) or from a directory written by
`save_pretrained` (our own layout); the VAE, encoders, tokenizer and image processor come from the diffusers-format
Wan2.1 I2V repo, loaded by `DiffusionPipeline.from_pretrained`. Only the files each component needs are downloaded
(never the base repo's own 14B Wan transformer), revisions can be pinned, HF_HUB_OFFLINE and the cache are honoured,
and only safetensors weights are read.
"""

import json
import os

import torch

from .defaults import BASE, RELEASED
from .loading import DEFAULT_TRANSFORMER_REPO, load_released_transformer, resolve_checkpoint_dir
from .models import SteadyDancerTransformer3DModel
from .pipeline_steadydancer import CLIPImageProcessor, SteadyDancerPipeline
from .scheduling import make_scheduler

DEFAULT_BASE_REPO = BASE.repo_id


def load_transformer(
    path_or_repo_id: str | os.PathLike = DEFAULT_TRANSFORMER_REPO,
    *,
    revision: str | None = None,
    torch_dtype: torch.dtype = torch.bfloat16,
    cache_dir: str | None = None,
    token: str | bool | None = None,
) -> SteadyDancerTransformer3DModel:
    """The transformer from either layout: our `save_pretrained` output, or the released Wan-named checkpoint."""
    directory = resolve_checkpoint_dir(path_or_repo_id, revision=revision, cache_dir=cache_dir, token=token)
    config = json.loads((directory / "config.json").read_text()) if (directory / "config.json").is_file() else {}
    if config.get("_class_name") == SteadyDancerTransformer3DModel.__name__:
        return SteadyDancerTransformer3DModel.from_pretrained(directory, torch_dtype=torch_dtype, use_safetensors=True)
    return load_released_transformer(directory, torch_dtype=torch_dtype)


def load_pipeline(
    transformer: str | os.PathLike = DEFAULT_TRANSFORMER_REPO,
    base: str | os.PathLike = DEFAULT_BASE_REPO,
    *,
    transformer_revision: str | None = None,
    base_revision: str | None = None,
    torch_dtype: torch.dtype = torch.bfloat16,
    vae_dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    enable_model_cpu_offload: bool = False,
    cache_dir: str | None = None,
    token: str | bool | None = None,
    shift: float = RELEASED.shift,
) -> SteadyDancerPipeline:
    """Builds the full pipeline.

    Args:
        transformer: Hub repo id or local directory of the SteadyDancer DiT.
        base: Hub repo id or local directory of a diffusers-format Wan2.1 I2V repo (model_index.json and the vae/,
            text_encoder/, tokenizer/, image_encoder/, image_processor/ subfolders; its transformer/ is not read).
        transformer_revision, base_revision: branch, tag or commit to pin.
        torch_dtype: dtype of the transformer and encoders (bf16 on GPUs); the VAE uses `vae_dtype` (fp32 advised).
        device: where to put the pipeline; ignored with `enable_model_cpu_offload`.
        enable_model_cpu_offload: keep each model on the CPU until it runs (for GPUs with less memory).
    """
    hub = dict(revision=base_revision, cache_dir=cache_dir, token=token)
    pipe = SteadyDancerPipeline.from_pretrained(
        base,
        # Components passed in are neither downloaded nor read from `base`.
        transformer=load_transformer(
            transformer, revision=transformer_revision, torch_dtype=torch_dtype, cache_dir=cache_dir, token=token
        ),
        scheduler=make_scheduler(shift),
        # The PIL processor the pipeline is written for (transformers 5 maps the repo's class to a torchvision one).
        image_processor=CLIPImageProcessor.from_pretrained(base, subfolder="image_processor", **hub),
        dtype={"default": torch_dtype, "vae": vae_dtype},
        use_safetensors=True,
        **hub,
    )
    if enable_model_cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    elif device is not None:
        pipe.to(device)
    return pipe
