#!/usr/bin/env python3
"""A GGUF with a real model's shape and random weights, to time an engine without its weights.

    python scripts/make_shaped_gguf.py --like qwen2.5-7b \
        --vocab-from models/test/SmolLM2-135M-Instruct.Q4_1.gguf --out /tmp/qwen7b-shaped.gguf

Why: a GPU box that cannot download the `gpu` profile's Qwen2.5-7B can still measure what its
size costs the LLM engine (a decode step reads every weight once, whatever they hold). Layers,
widths, heads and the Q4_K weight format follow the named model; the weights are random 4-bit
blocks with small scales, so the text it writes is noise. The tokenizer (and so the vocabulary
size, which sets the output layer's width) and the chat template come from ``--vocab-from``,
so the engine's prompt path runs as in the product. Differences from the real file, which the
figures must state: every matrix is Q4_K (Q4_K_M keeps some in Q6_K, ~5 % more bytes), and
the vocabulary is the donor's (SmolLM2's 49 152 tokens vs Qwen's 152 064: an output layer a
third as wide, ~4 % of Qwen2.5-7B's weights).

Needs numpy and the ``gguf`` package (llama.cpp's gguf-py).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Shape:
    arch: str
    layers: int
    width: int  # embedding length
    ffn: int
    heads: int
    kv_heads: int
    rope_base: float
    qkv_bias: bool


SHAPES = {
    # From each model's config.json (Hugging Face): the gpu and cpu profiles' LLMs.
    "qwen2.5-7b": Shape("qwen2", 28, 3584, 18944, 28, 4, 1_000_000.0, True),
    "qwen2.5-1.5b": Shape("qwen2", 28, 1536, 8960, 12, 2, 1_000_000.0, True),
    # For checking this script and the engine on a CPU in seconds.
    "tiny": Shape("qwen2", 2, 256, 512, 4, 2, 1_000_000.0, True),
}

BLOCK = 256  # weights per Q4_K block
BLOCK_BYTES = 144  # d (f16), dmin (f16), 12 bytes of 6-bit scales and mins, 128 bytes of nibbles


def q4k_random(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """``rows`` × ``cols`` weights as random Q4_K blocks. Each block's two f16 scales are
    fixed small numbers (random bytes there would be NaN or huge), chosen so a weight lies
    within about ±0.05 around a mean near zero and activations stay finite through the layers."""
    if cols % BLOCK:
        raise ValueError(f"Q4_K needs rows of a multiple of {BLOCK} weights, not {cols}")
    blocks = rng.integers(0, 256, size=(rows, cols // BLOCK, BLOCK_BYTES), dtype=np.uint8)
    scales = np.array([5e-5, 3.75e-4], dtype=np.float16).view(np.uint8)
    blocks[:, :, :4] = scales
    return blocks.reshape(rows, -1)


def make(shape: Shape, vocab_from: Path, out: Path, seed: int = 0) -> None:
    import gguf

    donor = gguf.GGUFReader(vocab_from)
    n_vocab = len(donor.fields["tokenizer.ggml.tokens"].data)
    rng = np.random.default_rng(seed)
    head_dim = shape.width // shape.heads
    kv_width = head_dim * shape.kv_heads

    writer = gguf.GGUFWriter(out, shape.arch)
    writer.add_name(f"random weights shaped like {out.stem}")
    writer.add_context_length(32768)
    writer.add_embedding_length(shape.width)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_freq_base(shape.rope_base)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_S)
    for name, field in donor.fields.items():
        if name.startswith("tokenizer."):
            sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(name, field.contents(), field.types[0], sub)

    q4k = gguf.GGMLQuantizationType.Q4_K

    def matrix(name: str, rows: int, cols: int) -> None:
        writer.add_tensor(name, q4k_random(rows, cols, rng), raw_dtype=q4k)

    def vector(name: str, n: int, value: float) -> None:
        writer.add_tensor(name, np.full(n, value, dtype=np.float32))

    matrix("token_embd.weight", n_vocab, shape.width)
    for i in range(shape.layers):
        blk = f"blk.{i}"
        vector(f"{blk}.attn_norm.weight", shape.width, 1.0)
        matrix(f"{blk}.attn_q.weight", shape.width, shape.width)
        matrix(f"{blk}.attn_k.weight", kv_width, shape.width)
        matrix(f"{blk}.attn_v.weight", kv_width, shape.width)
        if shape.qkv_bias:
            vector(f"{blk}.attn_q.bias", shape.width, 0.0)
            vector(f"{blk}.attn_k.bias", kv_width, 0.0)
            vector(f"{blk}.attn_v.bias", kv_width, 0.0)
        matrix(f"{blk}.attn_output.weight", shape.width, shape.width)
        vector(f"{blk}.ffn_norm.weight", shape.width, 1.0)
        matrix(f"{blk}.ffn_gate.weight", shape.ffn, shape.width)
        matrix(f"{blk}.ffn_up.weight", shape.ffn, shape.width)
        matrix(f"{blk}.ffn_down.weight", shape.width, shape.ffn)
    vector("output_norm.weight", shape.width, 1.0)
    matrix("output.weight", n_vocab, shape.width)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--like", choices=sorted(SHAPES), required=True)
    ap.add_argument("--vocab-from", type=Path, required=True,
                    help="a GGUF chat model whose tokenizer and chat template to use")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    make(SHAPES[args.like], args.vocab_from, args.out, args.seed)
    print(f"{args.out}: {args.out.stat().st_size / 1e9:.2f} GB, shaped like {args.like}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
