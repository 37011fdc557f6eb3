#!/usr/bin/env python3
"""Train frugal's embedded default model: a tiny DeepSeek-V3 that adds and subtracts.

Usage (CPU only, one thread; deterministic for a given torch build):

    nice -n 10 .venv/bin/python tools/train_default_model.py                 # train, write, fixture
    .venv/bin/python tools/train_default_model.py --resume DIR --phase K       # phases K.. from K-1's folder
    .venv/bin/python tools/train_default_model.py --fixture-only               # only eval/greedy.json

Training is 5,500 steps of 32 problems in two phases (see PHASES). On the shared two-core machine
it was made on, busy with other builds, phase 0 took 35 minutes and phase 1 27 minutes (a step
took 0.4 to 1.3 s on one thread, depending on the load); the committed model was made that way,
phase 1 with --resume from phase 0's folder. The transformers fixture takes a few more minutes.

Pinned versions: fixtures/requirements.txt (torch, transformers 5.x, tokenizers, safetensors).
Writes assets/default-model/ (config.json, generation_config.json, model.safetensors,
tokenizer.json, tokenizer_config.json; each earlier phase's model goes to
$FRUGAL_PHASE_OUT/phase{k}, default in the temp folder, for --resume) and assets/default-model/eval/greedy.json (1,000 held-out problems
with transformers' greedy output, what frugal's tests compare against). Never edit those files
by hand. This script is not part of fixtures/regenerate.sh: it trains for about 25 minutes on a
quiet two-core machine (0.26 s per step; a rerun reproduced the original log step for step
through step 600) and over an hour on a busy one.

The task. "What is 4821 + 377?" or "What is 377 - 4821?": operands 0..9999 (1 to 4 digits, each
length equally likely), + or -, results may be negative. A few other phrasings ("Compute a + b.",
"a + b = ?", ...) and a preceding turn (as R1's template renders history) are mixed in. The
model answers after an R1-style reasoning block that works one column at a time, right to left
(column: digit, digit, carry in = digit, carry out | the result so far, right-aligned):

    <think>
    1: 1+7+0=8 c0 |    8
    2: 2+7+0=9 c0 |   98
    3: 8+3+0=1 c1 |  198
    4: 4+0+1=5 c0 | 5198
    </think>

    The answer is 5198.

Every line has the same length, so "the same column one line up" is a fixed distance back, which
a rotary-position attention head finds easily; the running result on the right is right-aligned,
so each line copies the one above and adds one digit, and the answer copies the last line; the
column number tells which digit of each operand the line reads. Subtraction writes `b` (borrow);
when the first operand is smaller the block starts with `a<b: swap, negate` and works on the
swapped operands. Loss is on the completion only.

The model. DeepSeek-V3 architecture (transformers' DeepseekV3ForCausalLM), hidden 64: MLA with
q_lora_rank 32 and kv_lora_rank 32, 3 layers (the first dense, then MoE with 1 shared + 8 routed
experts, top-2, sigmoid scores, 4 groups / top-2 groups, noaux_tc routing). The routing bias
`e_score_correction_bias` is trained with DeepSeek-V3's auxiliary-loss-free balancing rule: after
every optimizer step each MoE layer's bias moves by `BIAS_RATE * sign(mean_load - load_i)` (load
= tokens routed to expert i in the batch), so it ends non-zero and the experts stay used.

The tokenizer is byte-level BPE with no merges (every byte one token, so digits are single
tokens and any input encodes), plus DeepSeek's special tokens and `<think>`/`</think>`. The chat
template is DeepSeek-R1's (shared/reference/configs/deepseek-ai__DeepSeek-R1): the generation
prompt ends `<｜Assistant｜><think>\\n`, and earlier assistant turns lose their reasoning.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(ROOT, "assets", "default-model")
# Where each phase but the last writes its model, as phase{k}/ (checkpoints to resume from; not
# committed).
PHASE_OUT = os.environ.get("FRUGAL_PHASE_OUT", os.path.join(tempfile.gettempdir(), "frugal-default-model"))

SEED = 20260101
THREADS = 1  # one thread: reproducible, and far faster than two on a busy machine
BATCH = 32
# (steps, peak learning rate, warmup steps, data seed) of each phase. Every phase starts a fresh
# AdamW and a cosine schedule down to 5% of its peak (warm restarts): held-out greedy accuracy
# was 36.1% after phase 0 and 96.8% after phase 1.
PHASES = [(2500, 3e-3, 100, SEED), (3000, 2e-3, 100, SEED + 3)]
BIAS_RATE = 1e-3
N_EVAL = 1000
N_SAMPLE = 50  # problems the Rust test runs (the first N_SAMPLE of the fixture)
MAX_NEW = 200  # generation limit; the longest completion is about 130 tokens

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
USER, ASSISTANT = "<｜User｜>", "<｜Assistant｜>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ADDED = [(BOS, True), (EOS, True), (PAD, True), (USER, False), (ASSISTANT, False),
         (THINK_OPEN, False), (THINK_CLOSE, False)]
WIDTH = 5  # right-aligned running result: up to 5 digits (9999 + 9999)


# ---------------------------------------------------------------------------------------------
# Task text


def question(rng: random.Random, a: int, b: int, op: str) -> str:
    """The user's question; mostly the canonical form, sometimes a variant."""
    r = rng.random()
    if r < 0.6:
        return f"What is {a} {op} {b}?"
    if r < 0.7:
        return f"What is {a}{op}{b}?"
    if r < 0.8:
        return f"what is {a} {op} {b}"
    if r < 0.9:
        return f"Compute {a} {op} {b}."
    return f"{a} {op} {b} = ?"


def digits_rev(n: int) -> list[int]:
    return [int(c) for c in reversed(str(n))]


def reasoning(a: int, b: int, op: str) -> tuple[str, str]:
    """(text inside the think block after its opening newline, answer sentence)."""
    lines = []
    x, y = a, b
    negative = False
    if op == "-" and a < b:
        lines.append("a<b: swap, negate")
        x, y, negative = b, a, True
    dx, dy = digits_rev(x), digits_rev(y)
    cols = max(len(dx), len(dy))
    result = ""
    carry = 0
    j = 0
    while j < cols or (op == "+" and carry):
        p = dx[j] if j < len(dx) else 0
        q = dy[j] if j < len(dy) else 0
        if op == "+":
            s = p + q + carry
            d, nxt = s % 10, s // 10
            tail = f"c{nxt}"
        else:
            s = p - q - carry
            d, nxt = s % 10, 1 if s < 0 else 0
            tail = f"b{nxt}"
        result = str(d) + result
        lines.append(f"{j + 1}: {p}{op}{q}{op}{carry}={d} {tail} |{result:>{WIDTH}}")
        carry = nxt
        j += 1
    value = a + b if op == "+" else a - b
    assert int(result) == abs(value) and (value < 0) == negative
    answer = f"The answer is {value}."
    return "\n".join(lines) + "\n", answer


def sample_problem(rng: random.Random) -> tuple[int, int, str]:
    def operand() -> int:
        n = rng.randint(1, 4)
        return rng.randint(0 if n == 1 else 10 ** (n - 1), 10**n - 1)

    return operand(), operand(), rng.choice("+-")


def held_out() -> list[tuple[int, int, str, str]]:
    """The evaluation problems: a fixed seed, canonical wording, never used for training."""
    rng = random.Random(SEED + 1)
    seen, out = set(), []
    while len(out) < N_EVAL:
        a, b, op = sample_problem(rng)
        if (a, b, op) in seen:
            continue
        seen.add((a, b, op))
        out.append((a, b, op, f"What is {a} {op} {b}?"))
    return out


# ---------------------------------------------------------------------------------------------
# Tokenizer and chat template


def build_tokenizer() -> tokenizers.Tokenizer:
    byte_chars = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet(), key=lambda c: (ord(c)))
    # Order the byte tokens by the byte they stand for (GPT-2's table), after the added tokens.
    table = {}
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    for b, c in zip(bs, cs):
        table[b] = chr(c)
    assert sorted(table.values()) == sorted(byte_chars)
    vocab = {content: i for i, (content, _) in enumerate(ADDED)}
    for b in range(256):
        vocab[table[b]] = len(vocab)
    model = tokenizers.models.BPE(vocab=vocab, merges=[], fuse_unk=False, byte_fallback=False)
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.add_tokens([tokenizers.AddedToken(c, special=s, normalized=False) for c, s in ADDED if not s])
    tok.add_special_tokens([tokenizers.AddedToken(c, special=s, normalized=False) for c, s in ADDED if s])
    for i, (content, _) in enumerate(ADDED):
        assert tok.token_to_id(content) == i
    return tok


def chat_template() -> str:
    """DeepSeek-R1's template, from $FRUGAL_REFERENCE_DIR (else <repo>/../shared/reference)."""
    ref = os.environ.get("FRUGAL_REFERENCE_DIR", os.path.join(ROOT, "..", "shared", "reference"))
    path = os.path.join(ref, "configs", "deepseek-ai__DeepSeek-R1", "chat_template.jinja")
    if not os.path.isfile(path):
        raise SystemExit(f"{path} not found; set FRUGAL_REFERENCE_DIR")
    with open(path, encoding="utf-8") as f:
        return f.read()


def render_prompt(turns: list[tuple[str, str]], q: str) -> str:
    """What R1's template renders for earlier (question, answer) turns plus question q, with the
    generation prompt; checked against transformers' apply_chat_template in main()."""
    s = BOS
    for uq, ua in turns:
        s += USER + uq + ASSISTANT + ua + EOS
    return s + USER + q + ASSISTANT + THINK_OPEN + "\n"


def completion(a: int, b: int, op: str) -> str:
    think, answer = reasoning(a, b, op)
    return think + THINK_CLOSE + "\n\n" + answer + EOS


# ---------------------------------------------------------------------------------------------
# Model


def hub_config(vocab: int) -> dict:
    bos, eos = 0, 1
    return {
        "architectures": ["DeepseekV3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "ep_size": 1,
        "first_k_dense_replace": 1,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 192,
        "kv_lora_rank": 32,
        "max_position_embeddings": 512,
        "model_type": "deepseek_v3",
        "moe_intermediate_size": 64,
        "moe_layer_freq": 1,
        "n_group": 4,
        "n_routed_experts": 8,
        "n_shared_experts": 1,
        "norm_topk_prob": True,
        "num_attention_heads": 4,
        "num_experts_per_tok": 2,
        "num_hidden_layers": 3,
        "num_key_value_heads": 4,
        "num_nextn_predict_layers": 0,
        "q_lora_rank": 32,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 16,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 10000,
        "routed_scaling_factor": 2.5,
        "scoring_func": "sigmoid",
        "tie_word_embeddings": False,
        "topk_group": 2,
        "topk_method": "noaux_tc",
        "torch_dtype": "float32",
        "transformers_version": transformers.__version__,
        "use_cache": True,
        "v_head_dim": 16,
        "vocab_size": vocab,
    }


def write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def make_model(cfg: dict):
    with tempfile.TemporaryDirectory() as tmp:
        write_json(os.path.join(tmp, "config.json"), cfg)
        conf = transformers.AutoConfig.from_pretrained(tmp)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(conf, dtype=torch.float32, attn_implementation="eager")
    # Router weights start at zero in transformers' init: give them a small random start so the
    # experts differ from the first step.
    with torch.no_grad():
        for layer in model.model.layers:
            gate = getattr(layer.mlp, "gate", None)
            if gate is not None:
                gate.weight.normal_(0.0, 0.02)
    return model


class Router:
    """Collects each MoE layer's top-k choices on a forward pass (for the bias update)."""

    def __init__(self, model):
        self.gates = [layer.mlp.gate for layer in model.model.layers if hasattr(layer.mlp, "gate")]
        self.chosen: list[torch.Tensor] = [None] * len(self.gates)
        for i, g in enumerate(self.gates):
            g.register_forward_hook(self._hook(i))

    def _hook(self, i):
        def fn(mod, inputs, output):
            self.chosen[i] = output[2].detach()

        return fn

    def update_bias(self, mask: torch.Tensor) -> list[list[int]]:
        """DeepSeek-V3's aux-loss-free rule: b_i += rate * sign(mean load - load_i)."""
        loads = []
        keep = mask.reshape(-1)
        for g, idx in zip(self.gates, self.chosen):
            n = g.e_score_correction_bias.numel()
            load = torch.bincount(idx[keep].reshape(-1), minlength=n).float()
            with torch.no_grad():
                g.e_score_correction_bias += BIAS_RATE * torch.sign(load.mean() - load)
            loads.append([int(v) for v in load])
        return loads


# ---------------------------------------------------------------------------------------------
# Training


def encode_example(tok, rng: random.Random) -> tuple[list[int], int, tuple[int, int, str]]:
    """(ids, index of the first completion token, the problem). 15% carry an earlier turn."""
    turns = []
    if rng.random() < 0.15:
        a0, b0, op0 = sample_problem(rng)
        turns.append((question(rng, a0, b0, op0), reasoning(a0, b0, op0)[1]))
    a, b, op = sample_problem(rng)
    prompt = render_prompt(turns, question(rng, a, b, op))
    p_ids = tok.encode(prompt, add_special_tokens=False).ids
    c_ids = tok.encode(completion(a, b, op), add_special_tokens=False).ids
    return p_ids + c_ids, len(p_ids), (a, b, op)


def examples(tok, rng, n, exclude):
    seqs = []
    while len(seqs) < n:
        ids, start, prob = encode_example(tok, rng)
        if prob in exclude:
            continue
        seqs.append((ids, start))
    return seqs


def batches(tok, rng, exclude):
    """Endless batches; each draws 8 batches' worth of examples and groups similar lengths, so
    little compute goes to padding."""
    while True:
        pool = sorted(examples(tok, rng, 8 * BATCH, exclude), key=lambda e: len(e[0]))
        chunks = [pool[i : i + BATCH] for i in range(0, len(pool), BATCH)]
        rng.shuffle(chunks)
        for c in chunks:
            yield collate(c)


def batch(tok, rng, n, exclude):
    return collate(examples(tok, rng, n, exclude))


def collate(seqs):
    n = len(seqs)
    T = max(len(s) for s, _ in seqs)
    inp = torch.full((n, T), 2, dtype=torch.long)
    lab = torch.full((n, T), -100, dtype=torch.long)
    mask = torch.zeros((n, T), dtype=torch.bool)
    for i, (ids, start) in enumerate(seqs):
        t = torch.tensor(ids)
        inp[i, : len(ids)] = t
        mask[i, : len(ids)] = True
        lab[i, start : len(ids)] = t[start:]
    return inp, lab, mask


def seq_accuracy(model, inp, lab) -> float:
    """Share of sequences whose every completion token is the argmax: then greedy decoding
    reproduces the whole completion, so this is the greedy exact-match rate."""
    with torch.no_grad():
        logits = model(input_ids=inp, use_cache=False).logits
    pred = logits[:, :-1].argmax(-1)
    tgt = lab[:, 1:]
    ok = ((pred == tgt) | (tgt == -100)).all(-1)
    return float(ok.float().mean())


def train_phase(model, router, tok, exclude, phase: int, val) -> None:
    steps, lr, warmup, seed = PHASES[phase]
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))) * 0.95 + 0.05))
    rng = random.Random(seed)
    t0 = time.time()
    model.train()
    stream = batches(tok, rng, exclude)
    for step in range(steps):
        inp, lab, mask = next(stream)
        out = model(input_ids=inp, attention_mask=mask.long(), labels=lab, use_cache=False)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        loads = router.update_bias(mask)
        if step % 50 == 0 or step == steps - 1:
            msg = (f"phase {phase} step {step} loss {out.loss.item():.4f} lr {sched.get_last_lr()[0]:.2e} "
                   f"{time.time() - t0:.0f}s")
            if step % 200 == 0 or step == steps - 1:
                model.eval()
                msg += f" val_seq_acc {seq_accuracy(model, val[0], val[1]):.3f} loads {loads}"
                model.train()
            print(msg, flush=True)
    model.eval()
    print(f"phase {phase}: {steps} steps in {time.time() - t0:.0f}s", flush=True)


def train(tok, exclude, resume: str | None, start: int) -> object:
    """All phases; with `resume`, the folder that phase `start - 1` wrote (its weights and
    routing biases are the whole state the next phase starts from), and phases from `start`."""
    cfg = hub_config(tok.get_vocab_size())
    if resume:
        model = AutoModelForCausalLM.from_pretrained(resume, dtype=torch.float32, attn_implementation="eager")
    else:
        model = make_model(cfg)
        start = 0
    router = Router(model)
    val = batch(tok, random.Random(SEED + 2), 256, exclude)
    for phase in range(start, len(PHASES)):
        train_phase(model, router, tok, exclude, phase, val)
        if phase + 1 < len(PHASES):
            write_model(model, cfg, tok, os.path.join(PHASE_OUT, f"phase{phase}"))
    return model, cfg


# ---------------------------------------------------------------------------------------------
# Output


def write_model(model, cfg: dict, tok, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        sd = load_file(os.path.join(tmp, "model.safetensors"))
    save_file({k: v.contiguous() for k, v in sorted(sd.items())}, os.path.join(out, "model.safetensors"),
              metadata={"format": "pt"})
    write_json(os.path.join(out, "config.json"), cfg)
    write_json(os.path.join(out, "generation_config.json"), {
        "_from_model_config": True, "bos_token_id": 0, "eos_token_id": 1, "do_sample": False,
        "transformers_version": cfg["transformers_version"]})
    tok.save(os.path.join(out, "tokenizer.json"))
    write_json(os.path.join(out, "tokenizer_config.json"), {
        "add_bos_token": False,
        "add_eos_token": False,
        "added_tokens_decoder": {
            str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                     "special": s} for i, (c, s) in enumerate(ADDED)},
        "bos_token": BOS,
        "chat_template": chat_template(),
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS,
        "legacy": True,
        "model_max_length": cfg["max_position_embeddings"],
        "pad_token": PAD,
        "tokenizer_class": "LlamaTokenizerFast",
        "unk_token": None,
    })


def generate(model, rows: list[list[int]]) -> list[list[int]]:
    """transformers' greedy `generate` on prompts of equal length, as one batch (no padding, so
    each row sees exactly what it would alone); returns the new ids up to and including EOS."""
    with torch.no_grad():
        out = model.generate(torch.tensor(rows), attention_mask=torch.ones(len(rows), len(rows[0]), dtype=torch.long),
                             do_sample=False, max_new_tokens=MAX_NEW, eos_token_id=1, pad_token_id=2)
    news = []
    for r in out[:, len(rows[0]):].tolist():
        news.append(r[: r.index(1) + 1] if 1 in r else r)
    return news


def fixture() -> None:
    """Greedy generation with transformers from the written folder, on the held-out problems."""
    tok = tokenizers.Tokenizer.from_file(os.path.join(OUT, "tokenizer.json"))
    hf_tok = transformers.AutoTokenizer.from_pretrained(OUT)
    model = AutoModelForCausalLM.from_pretrained(OUT, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    biases = [layer.mlp.gate.e_score_correction_bias for layer in model.model.layers if hasattr(layer.mlp, "gate")]
    assert all(float(b.abs().max()) > 0 for b in biases), "correction bias should be non-zero after training"
    problems = held_out()
    prompts = []
    for a, b, op, q in problems:
        prompt = hf_tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                            tokenize=False)
        assert prompt == render_prompt([], q), prompt
        ids = tok.encode(prompt, add_special_tokens=False).ids
        assert hf_tok(prompt, add_special_tokens=False)["input_ids"] == ids
        prompts.append(ids)
    t0 = time.time()
    # Batches of equal prompt length (no padding).
    generated: list[list[int]] = [None] * len(prompts)
    by_len: dict[int, list[int]] = {}
    for i, ids in enumerate(prompts):
        by_len.setdefault(len(ids), []).append(i)
    for n, idx in sorted(by_len.items()):
        for k in range(0, len(idx), 128):
            part = idx[k : k + 128]
            for i, new in zip(part, generate(model, [prompts[i] for i in part])):
                generated[i] = new
    # The problems the Rust test samples: one at a time too, which must agree with the batch.
    for i in range(N_SAMPLE):
        assert generate(model, [prompts[i]])[0] == generated[i], f"batched and single generation differ on {i}"
    rows, correct = [], 0
    for (a, b, op, q), ids, new in zip(problems, prompts, generated):
        text = tok.decode(new, skip_special_tokens=True)
        want = a + b if op == "+" else a - b
        ok = text.split(THINK_CLOSE)[-1].strip() == f"The answer is {want}."
        correct += ok
        rows.append({"question": q, "expected": want, "prompt_ids": ids, "generated_ids": new,
                     "generated_text": text, "correct": ok})
    print(f"fixture: {len(rows)} problems generated in {time.time() - t0:.0f}s", flush=True)
    os.makedirs(os.path.join(OUT, "eval"), exist_ok=True)
    write_json(os.path.join(OUT, "eval", "greedy.json"), {
        "about": "transformers' greedy generate on assets/default-model for held-out problems (never "
                 "trained on); made by tools/train_default_model.py, never edited by hand. The first "
                 "`sample` problems were also generated one at a time and agree.",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__},
        "max_new_tokens": MAX_NEW,
        "sample": N_SAMPLE,
        "correct": correct,
        "total": len(rows),
        "problems": rows,
    })
    print(f"transformers greedy accuracy: {correct}/{len(rows)}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixture-only", action="store_true", help="only regenerate eval/greedy.json")
    ap.add_argument("--resume", metavar="DIR", help="start from the folder a phase wrote ...")
    ap.add_argument("--phase", type=int, default=1, help="... and run the phases from this one on")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    exclude = {(a, b, op) for a, b, op, _ in held_out()}
    if not args.fixture_only:
        tok = build_tokenizer()
        model, cfg = train(tok, exclude, args.resume, args.phase)
        write_model(model, cfg, tok, OUT)
    fixture()


if __name__ == "__main__":
    main()
