"""A FLOP model of one SteadyDancer transformer pass (what the achieved TFLOP/s of the benchmark divide by).

Counted: the matrix multiplications, at 2 FLOP per multiply-add, which is what a GPU's dense-matmul peak is quoted
in. Not counted: softmax, norms, RoPE, modulation, activations and other elementwise work (a few % of the time on a
GPU, none of the FLOP peak). With L video+reference tokens, C = 257 image + 512 text context tokens, D the model
width, F_ff the FFN width, per block:

    self-attention projections q, k, v, o     4 * 2 L D^2
    self-attention scores QK^T and values PV   2 * 2 L^2 D
    cross-attention q and o                    2 * 2 L D^2
    cross-attention k, v of the context        2 * 2 C D^2      (text k/v and image add_k/add_v)
    cross-attention scores and values          2 * 2 L C D
    FFN                                        2 * 2 L D F_ff

plus, once per pass, the patch embeddings, the text/time/image embedders, the output head and the pose branch
(TMCM, SSAR, FAAU: all small). L = (F + 2) * (H / 16) * (W / 16) with F = (frames - 1) / 4 + 1 latent frames: the
two extra frames are the reference and pose-reference tokens. At 81 x 576 x 1024 that is 23 * 36 * 64 = 52,992
tokens and, for the 14B config, 3.60e15 FLOP per pass: self-attention scores+values 64 %, FFN 17 %,
self-attention projections 12 %, cross-attention 7 %, everything outside the blocks < 0.01 %.
"""

from __future__ import annotations

from .sizing import token_grid

TEXT_TOKENS = 512
IMAGE_TOKENS = 257
IMAGE_DIM = 1280


def transformer_pass_flops(config: dict, frames: int, height: int, width: int, batch: int = 1) -> dict[str, float]:
    """FLOP of one transformer forward pass by component, and their ``total``, for `batch` samples.

    `config` holds the `SteadyDancerTransformer3DModel` fields (num_attention_heads, attention_head_dim, ffn_dim,
    num_layers, text_dim; image_dim optional).
    """
    lat_f, grid_h, grid_w = token_grid(frames, height, width)
    video_tokens = lat_f * grid_h * grid_w
    frame_tokens = grid_h * grid_w
    tokens = video_tokens + 2 * frame_tokens
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    ffn = config["ffn_dim"]
    layers = config["num_layers"]
    text_dim = config.get("text_dim", 4096)
    image_dim = config.get("image_dim", IMAGE_DIM)
    context = TEXT_TOKENS + IMAGE_TOKENS
    patch = 2 * 2  # 1 x 2 x 2 patch volume

    per_block = {
        "self_attn_proj": 4 * 2 * tokens * dim * dim,
        "self_attn_sdpa": 2 * 2 * tokens * tokens * dim,
        "cross_attn_proj": 2 * 2 * tokens * dim * dim + 2 * 2 * context * dim * dim,
        "cross_attn_sdpa": 2 * 2 * tokens * context * dim,
        "ffn": 2 * 2 * tokens * dim * ffn,
    }
    flops = {name: layers * value for name, value in per_block.items()}

    # Once per pass.
    lat_h, lat_w = 2 * grid_h, 2 * grid_w
    pixels = lat_f * lat_h * lat_w  # latent voxels
    flops["embeddings"] = (
        2 * video_tokens * (68 * patch) * dim  # video tokens: [x, y, z_p*, z_p+]
        + 2 * frame_tokens * (36 * patch) * dim  # reference frame
        + 2 * frame_tokens * (16 * patch) * dim  # pose-reference frame
        + 2 * TEXT_TOKENS * (text_dim * dim + dim * dim)  # text embedder
        + 2 * 2 * IMAGE_TOKENS * (image_dim * image_dim + image_dim * dim)  # image projection, reference + pose
        + 2 * (256 * dim + dim * dim + dim * 6 * dim)  # time embedder and projection
        + 2 * video_tokens * dim * (16 * patch)  # output head
    )
    align = 128
    flops["pose_branch"] = pixels * (
        3 * 2 * (9 * 16 + 3 * 16 * 16)  # TMCM: 3 x (depthwise 1x3x3 + temporal 3x1x1)
        + 2 * (16 * 16 + 16 * 4 + 4 * 4 + 4 * 16)  # SSAR: residual conv, conv_in, mixing, conv_out
        + 2 * (2 * 16 * align + 4 * align * align + 2 * align * align + align * 16)  # FAAU projections and FFN
        + 2 * 2 * lat_f * align  # FAAU attention across the latent frames of each pixel
    )
    flops = {name: float(batch * value) for name, value in flops.items()}
    flops["total"] = sum(flops.values())
    flops["tokens"] = float(tokens)
    return flops


CONFIG_14B = dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40, text_dim=4096)


if __name__ == "__main__":
    result = transformer_pass_flops(CONFIG_14B, 81, 576, 1024)
    for name, value in result.items():
        share = f"{100 * value / result['total']:5.1f} %" if name not in {"total", "tokens"} else ""
        print(f"{name:16s} {value:12.4e} {share}")
