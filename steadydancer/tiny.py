"""Tiny random SteadyDancer components of the real classes, written in the Hub layouts.

Used by the tests and by the app's `--tiny` mode to run everything on a CPU without the real weights. The
transformer is saved as the released checkpoint is (Wan naming, two shards + index), the rest as the diffusers Wan
repo is, so loading them exercises exactly the code that loads the real model. Their output is noise.
"""

import json
import os
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from transformers import CLIPVisionConfig, CLIPVisionModel, PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from .loading import save_released_layout
from .models import SteadyDancerTransformer3DModel
from .pipeline_steadydancer import CLIPImageProcessor

TINY_TEXT_DIM = 32
TINY_IMAGE_SIZE = 28  # CLIP input side: (28 / 14)^2 + 1 = 5 image tokens

# The Wan2.1 I2V repo's model_index.json, with the tokenizer class the tiny one is saved as. Its transformer is listed
# but not written: the pipeline never reads it.
TINY_MODEL_INDEX = {
    "_class_name": "WanImageToVideoPipeline",
    "image_encoder": ["transformers", "CLIPVisionModel"],
    "image_processor": ["transformers", "CLIPImageProcessor"],
    "scheduler": ["diffusers", "UniPCMultistepScheduler"],
    "text_encoder": ["transformers", "UMT5EncoderModel"],
    "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
    "transformer": ["diffusers", "WanTransformer3DModel"],
    "vae": ["diffusers", "AutoencoderKLWan"],
}


def _tiny_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = "a person dancing dances in the on of and with walks jumps spins waves arms studio stage street park".split()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


def tiny_transformer(seed: int = 0) -> SteadyDancerTransformer3DModel:
    torch.manual_seed(seed)
    return SteadyDancerTransformer3DModel(
        num_attention_heads=2, attention_head_dim=12, text_dim=TINY_TEXT_DIM, ffn_dim=48, num_layers=2
    )


def build_tiny_checkpoints(root: str | os.PathLike, seed: int = 0) -> tuple[Path, Path]:
    """Writes `root/transformer` (released layout) and `root/base` (diffusers Wan layout); returns both paths."""
    root = Path(root)
    transformer_dir, base_dir = root / "transformer", root / "base"
    save_released_layout(tiny_transformer(seed), transformer_dir)

    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
    vae.save_pretrained(base_dir / "vae")
    text_encoder = UMT5EncoderModel(
        UMT5Config(vocab_size=32, d_model=TINY_TEXT_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=4,
                   relative_attention_num_buckets=8)
    )
    text_encoder.save_pretrained(base_dir / "text_encoder")
    _tiny_tokenizer().save_pretrained(base_dir / "tokenizer")
    image_encoder = CLIPVisionModel(
        CLIPVisionConfig(hidden_size=1280, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                         image_size=TINY_IMAGE_SIZE, patch_size=14)
    )
    image_encoder.save_pretrained(base_dir / "image_encoder")
    CLIPImageProcessor(
        size={"shortest_edge": TINY_IMAGE_SIZE}, crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    ).save_pretrained(base_dir / "image_processor")
    (base_dir / "model_index.json").write_text(json.dumps(TINY_MODEL_INDEX, indent=1))
    return transformer_dir, base_dir


def synthetic_wan_lora(transformer, rank: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random LoRA in the kohya/ComfyUI Wan layout on every block linear and the head (lightx2v's coverage)."""
    g = torch.Generator().manual_seed(seed)
    wan = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o"}
    sd = {}
    for i, block in enumerate(transformer.blocks):
        layers = {f"self_attn.{w}": block.attn1.get_submodule(d) for d, w in wan.items()}
        layers.update({f"cross_attn.{w}": block.attn2.get_submodule(d) for d, w in wan.items()})
        layers.update({"cross_attn.k_img": block.attn2.add_k_proj, "cross_attn.v_img": block.attn2.add_v_proj})
        layers.update({"ffn.0": block.ffn.net[0].proj, "ffn.2": block.ffn.net[2]})
        for name, layer in layers.items():
            sd[f"diffusion_model.blocks.{i}.{name}.lora_down.weight"] = torch.randn(rank, layer.in_features, generator=g) * 0.01
            sd[f"diffusion_model.blocks.{i}.{name}.lora_up.weight"] = torch.randn(layer.out_features, rank, generator=g) * 0.01
            sd[f"diffusion_model.blocks.{i}.{name}.alpha"] = torch.tensor(float(rank))
    head = transformer.proj_out
    sd["diffusion_model.head.head.lora_down.weight"] = torch.randn(rank, head.in_features, generator=g) * 0.01
    sd["diffusion_model.head.head.lora_up.weight"] = torch.randn(head.out_features, rank, generator=g) * 0.01
    # A diff per block norm, as lightx2v's files carry (applied in place by the loader, switched by presets).
    for i, block in enumerate(transformer.blocks):
        sd[f"diffusion_model.blocks.{i}.norm3.diff"] = torch.randn(block.norm2.weight.shape, generator=g) * 0.01
    return {k: v.to(torch.bfloat16) if v.ndim else v for k, v in sd.items()}


def build_tiny_lora(path: str | os.PathLike, transformer: SteadyDancerTransformer3DModel, rank: int = 4,
                    seed: int = 0) -> Path:
    """Writes `synthetic_wan_lora` as a safetensors file (tiny mode's stand-in for the 4-step distillation LoRA)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(synthetic_wan_lora(transformer, rank, seed), str(path))
    return path
