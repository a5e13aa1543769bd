"""The configurations of every model a SteadyDancer job runs, written down as facts (no download needed).

The transformer's are the released ``MCG-NJU/SteadyDancer-14B`` ``config.json`` fields (SPEC.md section 1: Wan names;
fields it omits take the Wan defaults). The other three are the ``config.json`` files of the diffusers-format
``Wan-AI/Wan2.1-I2V-14B-720P-Diffusers`` subfolders the pipeline loads them from: ``text_encoder`` (UMT5-XXL encoder),
``image_encoder`` (open-CLIP ViT-H/14 vision tower) and ``vae`` (the Wan2.1 3-D causal VAE). Fields that only matter
for training or generation (dropout, decoder layers, token ids) are left out. `bench.simulate` builds each model from
these under `torch._subclasses.fake_tensor.FakeTensorMode` to size the job without weights.
"""

from __future__ import annotations

# MCG-NJU/SteadyDancer-14B config.json (Wan layout). 16,396,718,736 parameters.
RELEASED_TRANSFORMER_CONFIG = dict(
    model_type="i2v", in_dim=36, dim=5120, ffn_dim=13824, freq_dim=256, out_dim=16, num_heads=40, num_layers=40,
    text_len=512, eps=1e-6,
)

# Wan-AI/Wan2.1-I2V-14B-720P-Diffusers text_encoder/config.json (`transformers.UMT5EncoderModel`): 24 layers,
# width 4096, 64 heads of 64, gated-GELU FFN 10240, a 256,384-token vocabulary; about 5.7 B parameters.
TEXT_ENCODER_CONFIG = dict(
    model_type="umt5", d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, vocab_size=256384,
    feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True, layer_norm_epsilon=1e-6,
    relative_attention_num_buckets=32, relative_attention_max_distance=128, tie_word_embeddings=False,
    scalable_attention=True,
)

# Wan-AI/Wan2.1-I2V-14B-720P-Diffusers image_encoder/config.json (`transformers.CLIPVisionModelWithProjection`):
# ViT-H/14 at 224 px, 32 layers of width 1280; the pipeline reads the penultimate layer's 257 tokens.
IMAGE_ENCODER_CONFIG = dict(
    hidden_size=1280, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32, patch_size=14,
    image_size=224, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5, num_channels=3,
)

# Wan-AI/Wan2.1-I2V-14B-720P-Diffusers vae/config.json (`diffusers.AutoencoderKLWan`); its latents_mean/std are the
# class defaults.
VAE_CONFIG = dict(
    base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
    temperal_downsample=[False, True, True], dropout=0.0,
)

# The Wan text length the prompt is padded to, and the CLIP input size.
TEXT_TOKENS = RELEASED_TRANSFORMER_CONFIG["text_len"]
IMAGE_SIZE = IMAGE_ENCODER_CONFIG["image_size"]
