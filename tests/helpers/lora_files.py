"""Synthetic Wan LoRA state dicts in each published layout, shaped for the tiny transformer."""

import torch

DIM, FFN, LAYERS, OUT = 24, 48, 2, 64  # the tiny transformer: inner dim, FFN, blocks, proj_out features
RANK = 4

# Wan name -> (our module, in features, out features)
ATTN = {"q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0"}
IMG = {"k_img": "add_k_proj", "v_img": "add_v_proj"}


def wan_layers():
    """Every LoRA-able Wan layer of the tiny transformer: (Wan name, our module name, in, out)."""
    layers = []
    for i in range(LAYERS):
        for o, ours in ATTN.items():
            layers.append((f"blocks.{i}.self_attn.{o}", f"blocks.{i}.attn1.{ours}", DIM, DIM))
            layers.append((f"blocks.{i}.cross_attn.{o}", f"blocks.{i}.attn2.{ours}", DIM, DIM))
        for o, ours in IMG.items():
            layers.append((f"blocks.{i}.cross_attn.{o}", f"blocks.{i}.attn2.{ours}", DIM, DIM))
        layers.append((f"blocks.{i}.ffn.0", f"blocks.{i}.ffn.net.0.proj", DIM, FFN))
        layers.append((f"blocks.{i}.ffn.2", f"blocks.{i}.ffn.net.2", FFN, DIM))
    layers.append(("head.head", "proj_out", DIM, OUT))
    return layers


def kohya_lora(alpha=2.0, seed=0):
    """ComfyUI/kohya layout: diffusion_model.<wan>.lora_down.weight / lora_up.weight / alpha."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for wan, _, fan_in, fan_out in wan_layers():
        sd[f"diffusion_model.{wan}.lora_down.weight"] = torch.randn(RANK, fan_in, generator=g) * 0.3
        sd[f"diffusion_model.{wan}.lora_up.weight"] = torch.randn(fan_out, RANK, generator=g) * 0.3
        if alpha is not None and not wan.startswith("head"):
            sd[f"diffusion_model.{wan}.alpha"] = torch.tensor(alpha)
    return sd


def lora_ab(seed=1):
    """lora_A / lora_B layout with the diffusion_model. prefix (no alpha: scale 1)."""
    sd = kohya_lora(alpha=None, seed=seed)
    return {k.replace("lora_down", "lora_A").replace("lora_up", "lora_B"): v for k, v in sd.items()}


def lightx2v_lora(seed=2):
    """lightx2v's extras on top of a LoRA: weight/bias/modulation deltas of layers without a LoRA pair."""
    g = torch.Generator().manual_seed(seed)
    sd = kohya_lora(seed=seed)
    for i in range(LAYERS):
        sd[f"diffusion_model.blocks.{i}.ffn.2.diff_b"] = torch.randn(DIM, generator=g)  # bias of a LoRA'd layer
        sd[f"diffusion_model.blocks.{i}.norm3.diff"] = torch.randn(DIM, generator=g) * 0.1
        sd[f"diffusion_model.blocks.{i}.norm3.diff_b"] = torch.randn(DIM, generator=g) * 0.1
        sd[f"diffusion_model.blocks.{i}.self_attn.norm_q.diff"] = torch.randn(DIM, generator=g) * 0.1
        sd[f"diffusion_model.blocks.{i}.cross_attn.norm_k_img.diff"] = torch.randn(DIM, generator=g) * 0.1
        sd[f"diffusion_model.blocks.{i}.diff_m"] = torch.randn(1, 6, DIM, generator=g) * 0.1
    sd["diffusion_model.head.diff_m"] = torch.randn(1, 2, DIM, generator=g) * 0.1
    sd["diffusion_model.text_embedding.0.diff_b"] = torch.randn(DIM, generator=g) * 0.1
    sd["diffusion_model.patch_embedding.diff"] = torch.randn(DIM, 36, 1, 2, 2, generator=g)
    sd["diffusion_model.patch_embedding.diff_b"] = torch.randn(DIM, generator=g)
    return sd
