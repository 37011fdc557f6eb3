#!/usr/bin/env python3
"""Write a skewed routing trace (frugal-expert-trace v1) for a MoE GGUF's shape.

Random-weight benchmark models route close to uniformly, so an expert cache on them shows
the worst case. Real checkpoints are skewed: a few experts per layer take a large share. This
script writes a trace in which each token's `k` experts in each MoE layer are drawn without
replacement from a Zipf distribution (P(rank r) ~ 1/r^s over a per-layer random order of the
experts), so that `frugal experts --trace` (simulation) and `frugal experts --trace
--replay-model` (the real cache, with reads) show what the policies do with skew.

Deterministic for a given seed. Usage:

    make_skewed_trace.py MODEL.gguf OUT.json [--tokens 256] [--zipf 1.0] [--seed 0]
"""

import argparse
import json
import re

import numpy as np
from gguf import GGUFReader


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent s (0: uniform)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    reader = GGUFReader(args.model)
    arch = reader.fields["general.architecture"].contents()
    k = int(reader.fields[f"{arch}.expert_used_count"].contents())
    # Per MoE layer: bytes of one expert (gate + up + down), from the stacked expert tensors.
    per_layer = {}
    n_expert = None
    for t in reader.tensors:
        m = re.fullmatch(r"blk\.(\d+)\.ffn_(gate|up|down)_exps\.weight", t.name)
        if not m:
            continue
        layer = int(m.group(1))
        n = int(t.shape[-1])  # GGUF shape is innermost first: [.., .., n_expert]
        n_expert = n
        per_layer[layer] = per_layer.get(layer, 0) + int(t.n_bytes) // n
    layers = sorted(per_layer)

    rng = np.random.default_rng(args.seed)
    ranks = np.arange(1, n_expert + 1, dtype=np.float64)
    p = ranks ** -args.zipf
    p /= p.sum()
    orders = [rng.permutation(n_expert) for _ in layers]
    tokens = []
    for _ in range(args.tokens):
        row = []
        for order in orders:
            picks = rng.choice(n_expert, size=k, replace=False, p=p)
            row.append(sorted(int(order[r]) for r in picks))
        tokens.append(row)
    trace = {
        "format": "frugal-expert-trace",
        "version": 1,
        "model": f"{args.model} (Zipf s={args.zipf}, seed {args.seed})",
        "layers": layers,
        "num_experts": n_expert,
        "expert_bytes": [[per_layer[l]] * n_expert for l in layers],
        "sequences": [args.tokens],
        "tokens": tokens,
    }
    with open(args.out, "w") as f:
        json.dump(trace, f)


if __name__ == "__main__":
    main()
