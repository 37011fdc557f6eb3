#!/usr/bin/env python3
"""Random-weight GGUF models with real models' shapes, for speed benchmarks.

Speed depends on the shapes and the storage types of the weights, not on their values, so these
files stand in for the real checkpoints (which are tens of GB to download) when comparing
`frugal bench` with llama.cpp's `llama-bench` (tools/bench_vs_llamacpp.sh). They are written
here, never committed (GBs), and are the same bytes on every run (seeded).

    /work/venv/bin/python tools/make_bench_models.py --out DIR [--plan] [MODEL ...]

MODELs (default: deepseek-scaled-Q4_K_M qwen2-1.5b-Q4_K_M):

* `deepseek-v2-lite-Q4_K_M`, `deepseek-v2-lite-Q8_0`: exactly DeepSeek-V2-Lite's shape (15.7B
  parameters, 2.4B active; deepseek-ai/DeepSeek-V2-Lite config.json): ~10 GB and ~17 GB.
* `deepseek-scaled-Q4_K_M`: the same architecture scaled down: hidden 1024, 27 layers, 8 heads,
  MLA with kv_lora_rank 512, 64 routed experts (6 active) of FFN 512, 2 shared, vocab 102400:
  ~3.0B parameters, ~0.57B active; ~1.8 GB.
* `qwen2-1.5b-Q4_K_M`: exactly DeepSeek-R1-Distill-Qwen-1.5B's shape (dense Qwen2, 1.78B
  parameters with its untied lm_head): ~1.1 GB.

Storage follows llama.cpp's Q4_K_M recipe (src/llama-quant.cpp, `llama_tensor_get_type`):
Q4_K for most matrices; Q6_K for `output` and for `ffn_down` / `attn_v` in the layers of
`use_more_bits` (the first and last eighth, every third in between); F32 norms, biases and
router (`ffn_gate_inp`); a K-type on rows whose length is not a multiple of 256 falls back as
llama.cpp does (Q4_K -> Q5_0, Q6_K -> Q8_0). MLA's per-head `attn_k_b` (rows of qk_nope = 128)
is Q8_0. Q8_0 files store every matrix as Q8_0.

Blocks are written directly: random codes with small valid f16 scales (|w| below ~1.3, mean about zero, so no
infinities or f32 subnormals slow down either engine). Tensors are generated and written one at a
time, so memory stays at the size of the largest tensor.

Names and metadata are llama.cpp's (`deepseek2` in the absorbed-MLA form its converter writes,
`qwen2`), so both llama.cpp and frugal load the files. The tokenizer metadata (needed by llama.cpp)
is copied from the committed fixture GGUF of the same family and padded with unused tokens up to
the model's vocabulary size.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as Q
except ImportError:  # pragma: no cover - message for a wrong interpreter
    sys.exit("needs gguf-py: run with the project venv (/work/venv/bin/python) or pip install gguf")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
FIXTURE_GGUF = os.path.join(ROOT, "fixtures", "gguf")

# DeepSeek-V2-Lite (deepseek-ai/DeepSeek-V2-Lite config.json).
V2_LITE = dict(
    hidden=2048, layers=27, heads=16, kv_lora=512, qk_nope=128, qk_rope=64, v_head=128,
    experts=64, active=6, shared=2, moe_ffn=1408, dense_ffn=10944, dense_layers=1, vocab=102400,
)
# The same architecture at ~3B parameters (~0.57B active).
SCALED = dict(
    hidden=1024, layers=27, heads=8, kv_lora=512, qk_nope=128, qk_rope=64, v_head=128,
    experts=64, active=6, shared=2, moe_ffn=512, dense_ffn=5632, dense_layers=1, vocab=102400,
)
# DeepSeek-R1-Distill-Qwen-1.5B (Qwen2): untied lm_head, q/k/v biases.
QWEN2_1P5B = dict(
    hidden=1536, layers=28, heads=12, kv_heads=2, head_dim=128, ffn=8960, vocab=151936,
    rope_theta=10000.0, context=131072,
)

MODELS = {
    "deepseek-v2-lite-Q4_K_M": ("deepseek2", V2_LITE, "Q4_K_M", "DeepSeek-V2-Lite (random)"),
    "deepseek-v2-lite-Q8_0": ("deepseek2", V2_LITE, "Q8_0", "DeepSeek-V2-Lite (random)"),
    "deepseek-scaled-Q4_K_M": ("deepseek2", SCALED, "Q4_K_M", "DeepSeek-V2 scaled 3B (random)"),
    "qwen2-1.5b-Q4_K_M": ("qwen2", QWEN2_1P5B, "Q4_K_M", "R1-Distill-Qwen-1.5B shape (random)"),
}
DEFAULT = ["deepseek-scaled-Q4_K_M", "qwen2-1.5b-Q4_K_M"]

# general.file_type (llama_ftype) values.
FILE_TYPE = {"Q4_K_M": 15, "Q8_0": 7}

# Block geometry (elements per block, bytes per block) of the types written.
BLOCK = {Q.Q4_K: (256, 144), Q.Q6_K: (256, 210), Q.Q8_0: (32, 34), Q.Q5_0: (32, 22)}
# llama.cpp's fallback when a row cannot be split into 256-element super-blocks.
FALLBACK = {Q.Q4_K: Q.Q5_0, Q.Q6_K: Q.Q8_0}


def use_more_bits(i_layer: int, n_layer: int) -> bool:
    """llama.cpp's choice of the layers that get more bits in Q4_K_M."""
    return i_layer < n_layer // 8 or i_layer >= 7 * n_layer // 8 or (i_layer - n_layer // 8) % 3 == 2


def pack_k4_scales(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K's 12 scale bytes from 8 six-bit scales and mins per block (ggml's layout:
    bytes 0..4 and 4..8 hold sub-blocks 0..3's scale and min plus the top two bits of
    sub-blocks 4..7's; bytes 8..12 hold sub-blocks 4..7's low nibbles)."""
    out = np.zeros((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = m[:, 0:4] | ((m[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 0xF) | ((m[:, 4:8] & 0xF) << 4)
    return out


def random_blocks(rng: np.random.Generator, ty: Q, n_blocks: int) -> np.ndarray:
    """`n_blocks` blocks of type `ty`: random codes, f16 scales in [1e-4, 3e-4], weights of
    mean about zero."""
    _, size = BLOCK[ty]
    b = np.frombuffer(rng.bytes(n_blocks * size), dtype=np.uint8).reshape(n_blocks, size).copy()

    def f16(col: int) -> None:
        v = rng.uniform(1e-4, 3e-4, n_blocks).astype("<f2").view(np.uint8).reshape(n_blocks, 2)
        b[:, col:col + 2] = v

    if ty == Q.Q4_K:  # d, dmin, scales[12], qs[128]
        # w = d·sc·q − dmin·m with q uniform in 0..15 (mean 7.5). Random 6-bit `m` would give
        # every row a mean far from zero, so every hidden state would share one large common
        # direction and the router would pick the same experts for every token. Centre the
        # codes instead: dmin = d and m = round(7.5·sc), sc in 1..8 (so m ≤ 60 fits 6 bits).
        f16(0)
        b[:, 2:4] = b[:, 0:2]
        sc = rng.integers(1, 9, (n_blocks, 8)).astype(np.uint8)
        m = np.rint(7.5 * sc).astype(np.uint8)
        b[:, 4:16] = pack_k4_scales(sc, m)
    elif ty == Q.Q6_K:  # ql[128], qh[64], scales[16] (int8), d
        f16(208)
    elif ty in (Q.Q8_0, Q.Q5_0):  # d first, then codes
        f16(0)
    else:
        raise ValueError(ty)
    return b


class Writer:
    """Declares tensors first (GGUF's header lists them all), then writes them in order."""

    def __init__(self, path: str, arch: str):
        self.w = gguf.GGUFWriter(path, arch)
        self.plan: list[tuple[str, tuple[int, ...], Q]] = []

    def add(self, name: str, shape: tuple[int, ...], ty: Q) -> None:
        """`shape` in numpy order (rows last-but-one, row length last), as llama.cpp's ne reversed."""
        if ty in FALLBACK and shape[-1] % 256 != 0:
            ty = FALLBACK[ty]
        self.plan.append((name, shape, ty))
        if ty == Q.F32:
            n = int(np.prod(shape))
            self.w.add_tensor_info(name, shape, np.dtype(np.float32), n * 4)
        else:
            per, size = BLOCK[ty]
            assert shape[-1] % per == 0, (name, shape, ty)
            byte_shape = (*shape[:-1], shape[-1] // per * size)
            self.w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=ty)

    def summary(self) -> str:
        """Tensor count, bytes and parameters by storage type (what `--plan` prints)."""
        by: dict[str, list[int]] = {}
        for _, shape, ty in self.plan:
            n = int(np.prod(shape))
            per, size = BLOCK.get(ty, (1, 4))
            e = by.setdefault(ty.name, [0, 0, 0])
            e[0] += 1
            e[1] += n // per * size
            e[2] += n
        total = sum(e[1] for e in by.values())
        params = sum(e[2] for e in by.values())
        lines = [f"  {len(self.plan)} tensors, {params / 1e9:.2f} B parameters, {total / 1e9:.2f} GB of data"]
        lines += [f"  {k:6} {e[0]:5} tensors {e[1] / 1e9:8.3f} GB" for k, e in sorted(by.items())]
        return "\n".join(lines)

    def write(self, seed: int, plan_only: bool = False) -> None:
        if plan_only:
            print(self.summary())
            return
        self.w.write_header_to_file()
        self.w.write_kv_data_to_file()
        self.w.write_ti_data_to_file()
        t0 = time.time()
        for i, (name, shape, ty) in enumerate(self.plan):
            rng = np.random.default_rng([seed, i])
            if ty == Q.F32:
                if name.endswith("norm.weight"):
                    data = np.ones(shape, dtype=np.float32)
                else:  # router, biases
                    data = rng.normal(0.0, 0.02, shape).astype(np.float32)
            else:
                per, size = BLOCK[ty]
                n_blocks = int(np.prod(shape)) // per
                data = random_blocks(rng, ty, n_blocks).reshape(*shape[:-1], shape[-1] // per * size)
            self.w.write_tensor_data(data)
            if (i + 1) % 50 == 0:
                print(f"  {i + 1}/{len(self.plan)} tensors, {time.time() - t0:.0f} s", flush=True)
        self.w.close()


def copy_tokenizer(w: gguf.GGUFWriter, fixture: str, vocab: int) -> None:
    """Tokenizer metadata of a committed fixture GGUF, its token list padded to `vocab`."""
    r = gguf.GGUFReader(fixture)
    for key, field in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        value = field.contents()
        if key == "tokenizer.ggml.tokens":
            pad = [f"<|bench_unused_{i}|>" for i in range(len(value), vocab)]
            w.add_token_list(list(value) + pad)
        elif key == "tokenizer.ggml.token_type":
            w.add_token_types(list(value) + [gguf.TokenType.UNUSED] * (vocab - len(value)))
        elif key == "tokenizer.ggml.merges":
            w.add_token_merges(list(value))
        else:
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(key, value, vtype, sub)


def deepseek2(path: str, c: dict, quant: str, title: str, seed: int, plan_only: bool) -> None:
    wr = Writer(path, "deepseek2")
    w = wr.w
    w.add_name(title)
    w.add_block_count(c["layers"])
    w.add_context_length(163840)
    w.add_embedding_length(c["hidden"])
    w.add_feed_forward_length(c["dense_ffn"])
    w.add_head_count(c["heads"])
    # Absorbed MLA as llama.cpp's converter writes it: one shared latent "KV head" of
    # kv_lora_rank + rope dims; the per-head dims in the *_mla keys.
    w.add_head_count_kv(1)
    w.add_key_length(c["kv_lora"] + c["qk_rope"])
    w.add_value_length(c["kv_lora"])
    w.add_key_length_mla(c["qk_nope"] + c["qk_rope"])
    w.add_value_length_mla(c["v_head"])
    w.add_rope_dimension_count(c["qk_rope"])
    w.add_rope_freq_base(10000.0)
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    w.add_rope_scaling_factor(40.0)
    w.add_rope_scaling_orig_ctx_len(4096)
    w.add_rope_scaling_yarn_log_mul(0.1 * 0.707)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_expert_count(c["experts"])
    w.add_expert_used_count(c["active"])
    w.add_expert_shared_count(c["shared"])
    w.add_expert_feed_forward_length(c["moe_ffn"])
    w.add_expert_weights_scale(1.0)
    w.add_expert_gating_func(gguf.ExpertGatingFuncType.SOFTMAX)
    w.add_leading_dense_block_count(c["dense_layers"])
    w.add_kv_lora_rank(c["kv_lora"])
    w.add_vocab_size(c["vocab"])
    w.add_file_type(FILE_TYPE[quant])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    copy_tokenizer(w, os.path.join(FIXTURE_GGUF, "deepseek-v2-lite", "deepseek-v2-lite-F32.gguf"), c["vocab"])

    h, n, L = c["hidden"], c["heads"], c["layers"]
    q8 = quant == "Q8_0"

    def ty(default: Q, more: bool = False) -> Q:
        if q8:
            return Q.Q8_0
        return Q.Q6_K if more else default

    wr.add("token_embd.weight", (c["vocab"], h), ty(Q.Q4_K))
    wr.add("output_norm.weight", (h,), Q.F32)
    wr.add("output.weight", (c["vocab"], h), ty(Q.Q6_K, True))
    for i in range(L):
        p = f"blk.{i}."
        more = use_more_bits(i, L)
        wr.add(p + "attn_norm.weight", (h,), Q.F32)
        wr.add(p + "attn_q.weight", (n * (c["qk_nope"] + c["qk_rope"]), h), ty(Q.Q4_K))
        wr.add(p + "attn_kv_a_mqa.weight", (c["kv_lora"] + c["qk_rope"], h), ty(Q.Q4_K))
        wr.add(p + "attn_kv_a_norm.weight", (c["kv_lora"],), Q.F32)
        wr.add(p + "attn_k_b.weight", (n, c["kv_lora"], c["qk_nope"]), Q.Q8_0)
        wr.add(p + "attn_v_b.weight", (n, c["v_head"], c["kv_lora"]), ty(Q.Q4_K, more))
        wr.add(p + "attn_output.weight", (h, n * c["v_head"]), ty(Q.Q4_K))
        wr.add(p + "ffn_norm.weight", (h,), Q.F32)
        if i < c["dense_layers"]:
            f = c["dense_ffn"]
            wr.add(p + "ffn_gate.weight", (f, h), ty(Q.Q4_K))
            wr.add(p + "ffn_up.weight", (f, h), ty(Q.Q4_K))
            wr.add(p + "ffn_down.weight", (h, f), ty(Q.Q4_K, more))
        else:
            e, f, fs = c["experts"], c["moe_ffn"], c["moe_ffn"] * c["shared"]
            wr.add(p + "ffn_gate_inp.weight", (e, h), Q.F32)
            wr.add(p + "ffn_gate_exps.weight", (e, f, h), ty(Q.Q4_K))
            wr.add(p + "ffn_up_exps.weight", (e, f, h), ty(Q.Q4_K))
            wr.add(p + "ffn_down_exps.weight", (e, h, f), ty(Q.Q4_K, more))
            wr.add(p + "ffn_gate_shexp.weight", (fs, h), ty(Q.Q4_K))
            wr.add(p + "ffn_up_shexp.weight", (fs, h), ty(Q.Q4_K))
            wr.add(p + "ffn_down_shexp.weight", (h, fs), ty(Q.Q4_K, more))
    wr.write(seed, plan_only)


def qwen2(path: str, c: dict, quant: str, title: str, seed: int, plan_only: bool) -> None:
    wr = Writer(path, "qwen2")
    w = wr.w
    w.add_name(title)
    w.add_block_count(c["layers"])
    w.add_context_length(c["context"])
    w.add_embedding_length(c["hidden"])
    w.add_feed_forward_length(c["ffn"])
    w.add_head_count(c["heads"])
    w.add_head_count_kv(c["kv_heads"])
    w.add_rope_freq_base(c["rope_theta"])
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(FILE_TYPE[quant])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    copy_tokenizer(w, os.path.join(FIXTURE_GGUF, "qwen2", "qwen2-F32.gguf"), c["vocab"])

    h, L, d = c["hidden"], c["layers"], c["head_dim"]
    q8 = quant == "Q8_0"

    def ty(default: Q, more: bool = False) -> Q:
        if q8:
            return Q.Q8_0
        return Q.Q6_K if more else default

    wr.add("token_embd.weight", (c["vocab"], h), ty(Q.Q4_K))
    wr.add("output_norm.weight", (h,), Q.F32)
    wr.add("output.weight", (c["vocab"], h), ty(Q.Q6_K, True))
    kv = c["kv_heads"] * d
    for i in range(L):
        p = f"blk.{i}."
        more = use_more_bits(i, L)
        wr.add(p + "attn_norm.weight", (h,), Q.F32)
        wr.add(p + "attn_q.weight", (c["heads"] * d, h), ty(Q.Q4_K))
        wr.add(p + "attn_q.bias", (c["heads"] * d,), Q.F32)
        wr.add(p + "attn_k.weight", (kv, h), ty(Q.Q4_K))
        wr.add(p + "attn_k.bias", (kv,), Q.F32)
        wr.add(p + "attn_v.weight", (kv, h), ty(Q.Q4_K, more))
        wr.add(p + "attn_v.bias", (kv,), Q.F32)
        wr.add(p + "attn_output.weight", (h, c["heads"] * d), ty(Q.Q4_K))
        wr.add(p + "ffn_norm.weight", (h,), Q.F32)
        wr.add(p + "ffn_gate.weight", (c["ffn"], h), ty(Q.Q4_K))
        wr.add(p + "ffn_up.weight", (c["ffn"], h), ty(Q.Q4_K))
        wr.add(p + "ffn_down.weight", (h, c["ffn"]), ty(Q.Q4_K, more))
    wr.write(seed, plan_only)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the .gguf files")
    ap.add_argument("--seed", type=int, default=20261129)
    ap.add_argument("--force", action="store_true", help="rewrite files that exist")
    ap.add_argument("--plan", action="store_true",
                    help="print each model's tensor types and sizes; write nothing")
    ap.add_argument("models", nargs="*", metavar="MODEL",
                    help=f"any of {', '.join(MODELS)} (default: {' '.join(DEFAULT)})")
    args = ap.parse_args()
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    if not args.plan:
        os.makedirs(args.out, exist_ok=True)
    for name in args.models or DEFAULT:
        arch, cfg, quant, title = MODELS[name]
        path = os.path.join(args.out, f"{name}.gguf")
        if args.plan:
            print(name)
            (deepseek2 if arch == "deepseek2" else qwen2)(path, cfg, quant, title, args.seed, True)
            continue
        if os.path.exists(path) and not args.force:
            print(f"{path}: exists (--force rewrites it)")
            continue
        print(f"writing {path}", flush=True)
        t0 = time.time()
        tmp = path + ".part"
        (deepseek2 if arch == "deepseek2" else qwen2)(tmp, cfg, quant, title, args.seed, False)
        os.replace(tmp, path)
        print(f"{path}: {os.path.getsize(path) / 1e9:.2f} GB in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
