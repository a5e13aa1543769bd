"""The SteadyDancer DiT: a Wan2.1 I2V transformer with pose modulation and two reference frames."""

import math
from typing import Any

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput
from diffusers.models.attention import AttentionMixin
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import (
    WanRotaryPosEmbed,
    WanTimeTextImageEmbedding,
    WanTransformerBlock,
)
from diffusers.utils import apply_lora_scale
from diffusers.utils.accelerate_utils import apply_forward_hook

from .pose_modulation import PoseFeatures, PoseModulation

# diffusers' Wan attention separates image tokens from text tokens by assuming exactly this many text tokens.
WAN_TEXT_LEN = 512


class Float64Timesteps(nn.Module):
    """Wan's sinusoidal timestep embedding, computed in float64 as the released model does (cos first)."""

    def __init__(self, num_channels: int):
        super().__init__()
        self.num_channels = num_channels

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        half = self.num_channels // 2
        exponent = -torch.arange(half, dtype=torch.float64, device=timesteps.device) / half
        angles = torch.outer(timesteps.to(torch.float64), torch.pow(10000.0, exponent))
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class SteadyDancerTransformer3DModel(ModelMixin, ConfigMixin, PeftAdapterMixin, CacheMixin, AttentionMixin):
    r"""
    SteadyDancer's diffusion transformer (Wan2.1 I2V 14B plus pose modulation).

    Video tokens come from ``patch_embedding`` over 68 channels ``[x (16), y (20), z_p* (16), z_p+ (16)]``. The
    reference image and the first pose frame are appended along time as two extra latent frames (RoPE positions F
    and F+1) through ``reference_patch_embedding`` and ``pose_reference_patch_embedding``. The image context is the
    *sum* of the projected CLIP tokens of the reference and of the first pose frame.

    Args:
        patch_size: 3-D patch (t, h, w).
        num_attention_heads, attention_head_dim: heads and channels per head (inner dim = product).
        in_channels: channels of the noisy latent (16).
        image_condition_channels: channels of the Wan I2V condition ``y`` (4 mask + 16 image latent).
        pose_channels: channels of the pose latent.
        out_channels: channels predicted.
        text_dim, freq_dim, ffn_dim, num_layers, cross_attn_norm, qk_norm, eps: as in `WanTransformer3DModel`.
        image_dim: width of the CLIP image tokens (1280).
        text_len: text tokens the context is zero-padded to (512, as trained).
        rope_max_seq_len: longest RoPE axis.
        pose_spatial_rank, pose_align_dim, pose_align_heads: sizes of the pose modulation modules.
    """

    _supports_gradient_checkpointing = True
    _skip_layerwise_casting_patterns = ["patch_embedding", "condition_embedder", "norm", "pose_modulation"]
    _no_split_modules = ["WanTransformerBlock"]
    _keep_in_fp32_modules = ["rope", "time_embedder", "scale_shift_table", "norm1", "norm2", "norm3"]
    _repeated_blocks = ["WanTransformerBlock"]
    # The pipeline runs the pose branch through `encode_pose`, outside `forward`, so group offloading gives it a group
    # of its own, loaded by its own forward hook (as diffusers does for the VAE's encoder and decoder).
    _group_offload_block_modules = ["pose_modulation"]
    # Context parallelism (`enable_parallelism`): the token sequence, (F' + 2) h' w' long, and the RoPE tables are
    # split at the first block and gathered after `proj_out`; the head runs per token, so the reference frames are
    # dropped after the gather. Cross-attention needs no split: every rank's queries see the whole 257 + 512 context.
    _cp_plan = {
        "rope": {
            0: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
            1: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
        },
        "blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False)},
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        num_attention_heads: int = 40,
        attention_head_dim: int = 128,
        in_channels: int = 16,
        image_condition_channels: int = 20,
        pose_channels: int = 16,
        out_channels: int = 16,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 13824,
        num_layers: int = 40,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int = 1280,
        text_len: int = WAN_TEXT_LEN,
        rope_max_seq_len: int = 1024,
        pose_spatial_rank: int = 4,
        pose_align_dim: int = 128,
        pose_align_heads: int = 8,
    ) -> None:
        super().__init__()
        if text_len != WAN_TEXT_LEN:
            raise ValueError(f"text_len must be {WAN_TEXT_LEN} (diffusers' Wan attention assumes it), got {text_len}")
        inner_dim = num_attention_heads * attention_head_dim
        patch_size = tuple(patch_size)

        # 1. Pose modulation and patch embeddings
        self.pose_modulation = PoseModulation(pose_channels, pose_spatial_rank, pose_align_dim, pose_align_heads)
        video_channels = in_channels + image_condition_channels + 2 * pose_channels
        self.patch_embedding = nn.Conv3d(video_channels, inner_dim, kernel_size=patch_size, stride=patch_size)
        self.reference_patch_embedding = nn.Conv3d(
            in_channels + image_condition_channels, inner_dim, kernel_size=patch_size, stride=patch_size
        )
        self.pose_reference_patch_embedding = nn.Conv3d(
            pose_channels, inner_dim, kernel_size=patch_size, stride=patch_size
        )
        self.rope = WanRotaryPosEmbed(attention_head_dim, patch_size, rope_max_seq_len)

        # 2. Time, text and image embeddings
        self.condition_embedder = WanTimeTextImageEmbedding(
            dim=inner_dim,
            time_freq_dim=freq_dim,
            time_proj_dim=inner_dim * 6,
            text_embed_dim=text_dim,
            image_embed_dim=image_dim,
        )
        self.condition_embedder.timesteps_proj = Float64Timesteps(freq_dim)

        # 3. Transformer blocks (unchanged Wan2.1 I2V blocks)
        self.blocks = nn.ModuleList(
            [
                WanTransformerBlock(inner_dim, ffn_dim, num_attention_heads, qk_norm, cross_attn_norm, eps, inner_dim)
                for _ in range(num_layers)
            ]
        )

        # 4. Output norm & projection
        self.norm_out = FP32LayerNorm(inner_dim, eps, elementwise_affine=False)
        self.proj_out = nn.Linear(inner_dim, out_channels * math.prod(patch_size))
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, inner_dim) / inner_dim**0.5)

        self.gradient_checkpointing = False

    @apply_forward_hook  # model CPU offload (accelerate) moves the transformer here too, not only in `forward`
    def encode_pose(self, hidden_states: torch.Tensor, pose_latents: torch.Tensor) -> PoseFeatures:
        """Runs the pose branch. It depends on the noisy latent and the pose only, so passes that differ only in
        their text (the cond and negative-text passes) can share one result."""
        # hidden_states, pose_latents: (B, 16, F, h, w)
        return self.pose_modulation(pose_latents.to(hidden_states.dtype), hidden_states)

    def pad_text(self, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """Zero-pads text embeddings (B, L, text_dim) to (B, text_len, text_dim), as the released model does."""
        length = encoder_hidden_states.shape[1]
        text_len = self.config.text_len
        if length > text_len:
            raise ValueError(f"The text embedding has {length} tokens; at most {text_len} are supported.")
        if length == text_len:
            return encoder_hidden_states
        return nn.functional.pad(encoder_hidden_states, (0, 0, 0, text_len - length))

    @apply_lora_scale("attention_kwargs")
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor,
        encoder_hidden_states_pose_image: torch.Tensor | None,
        image_condition: torch.Tensor,
        reference_latents: torch.Tensor,
        pose_reference_latents: torch.Tensor,
        pose_latents: torch.Tensor | None = None,
        pose_features: PoseFeatures | None = None,
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor | Transformer2DModelOutput:
        r"""
        Args:
            hidden_states (`torch.Tensor` of shape `(B, 16, F, h, w)`): noisy latent x.
            timestep (`torch.Tensor` of shape `(B,)`): diffusion timesteps (0..1000).
            encoder_hidden_states (`torch.Tensor` of shape `(B, L <= 512, text_dim)`): text embeddings, padded here.
            encoder_hidden_states_image (`torch.Tensor` of shape `(B, 257, 1280)`): CLIP tokens of the reference.
            encoder_hidden_states_pose_image (`torch.Tensor` of shape `(B, 257, 1280)`, *optional*): CLIP tokens of
                the first pose frame, summed with the reference's after projection.
            image_condition (`torch.Tensor` of shape `(B, 20, F, h, w)`): Wan I2V condition y (mask + image latent).
            reference_latents (`torch.Tensor` of shape `(B, 36, 1, h, w)`): [latent, ones 4, latent] of the reference.
            pose_reference_latents (`torch.Tensor` of shape `(B, 16 or 36, 1, h, w)`): first pose frame; only the first
                16 channels are used.
            pose_latents (`torch.Tensor` of shape `(B, 16, F, h, w)`): pose latent z_p. Ignored if `pose_features`.
            pose_features (`PoseFeatures`, *optional*): the output of `encode_pose` for these inputs, to share it.
        """
        batch_size, _, num_frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        grid = (num_frames // p_t, height // p_h, width // p_w)

        if pose_features is None:
            if pose_latents is None:
                raise ValueError("Pass either `pose_latents` or precomputed `pose_features`.")
            pose_features = self.encode_pose(hidden_states, pose_latents)

        # 1. Tokens: video frames, then the reference and pose-reference frames along time
        video = torch.cat(
            [hidden_states, image_condition.to(hidden_states.dtype), pose_features.fused, pose_features.aligned], dim=1
        )
        tokens = torch.cat(
            [
                self.patch_embedding(video),  # (B, D, F', h', w')
                self.reference_patch_embedding(reference_latents.to(hidden_states.dtype)),  # (B, D, 1, h', w')
                self.pose_reference_patch_embedding(
                    pose_reference_latents[:, : self.config.pose_channels].to(hidden_states.dtype)
                ),
            ],
            dim=2,
        )
        # RoPE over the (F' + 2) x h' x w' grid; the rope module reads only the shape of its input.
        rotary_emb = self.rope(torch.empty(batch_size, 0, num_frames + 2 * p_t, height, width, device="meta"))
        hidden_states = tokens.flatten(2).transpose(1, 2).contiguous()  # (B, (F'+2) h' w', D)
        del video, tokens  # copied into hidden_states; not held through the blocks (~0.5 GB a sample at 576p)

        # 2. Time, text and summed image context
        image_tokens = encoder_hidden_states_image
        if encoder_hidden_states_pose_image is not None:
            image_tokens = torch.cat([encoder_hidden_states_image, encoder_hidden_states_pose_image], dim=0)
        temb, timestep_proj, text_context, image_context = self.condition_embedder(
            timestep, self.pad_text(encoder_hidden_states), image_tokens
        )
        if encoder_hidden_states_pose_image is not None:
            image_context = image_context[:batch_size] + image_context[batch_size:]
        timestep_proj = timestep_proj.unflatten(1, (6, -1))  # (B, 6, D)
        encoder_hidden_states = torch.cat([image_context, text_context], dim=1)  # (B, 257 + 512, D)

        # 3. Transformer blocks
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(
                    block, hidden_states, encoder_hidden_states, timestep_proj, rotary_emb
                )
            else:
                hidden_states = block(hidden_states, encoder_hidden_states, timestep_proj, rotary_emb)

        # 4. Output head, per token (so a context-parallel run gathers its small output, not the blocks' D channels)
        shift, scale = (self.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        hidden_states = (self.norm_out(hidden_states.float()) * (1 + scale) + shift).type_as(hidden_states)
        hidden_states = self.proj_out(hidden_states)  # (B, (F'+2) h' w', p_t p_h p_w C)

        # 5. Drop the two reference frames and unpatchify: (B, F' h' w', p_t p_h p_w C) -> (B, C, F, h, w)
        hidden_states = hidden_states[:, : math.prod(grid)]
        hidden_states = hidden_states.reshape(batch_size, *grid, p_t, p_h, p_w, -1)
        output = hidden_states.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)

        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)
