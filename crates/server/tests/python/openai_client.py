"""Drives `frugal serve` with the official `openai` Python client.

Usage: openai_client.py BASE_URL FIXTURE_DIR [KEYED_BASE_URL]

BASE_URL serves the `deepseek-v3` fixture (random weights, DeepSeek-R1's chat template, which
opens a `<think>` block in the prompt) with --max-body 65536 --ctx-size 256;
KEYED_BASE_URL is the same model behind --api-key sk-test. Expected outputs come from
transformers (FIXTURE_DIR/reference.json: the greedy continuation of a chat prompt), not from
frugal. Prints one line per check; exits non-zero on the first failure.
"""

import json
import sys

import openai

base, fixture = sys.argv[1], sys.argv[2]
keyed = sys.argv[3] if len(sys.argv) > 3 else None
ref = json.load(open(f"{fixture}/reference.json"))
client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=60)
MESSAGES = ref["messages"]
N_NEW = len(ref["greedy_new_ids"])
# The prompt opens <think> and 16 tokens never close it: all output is reasoning, whose
# surrounding whitespace the DeepSeek presentation trims.
WANT_REASONING = ref["greedy_new_text"].strip()


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok   {name}", flush=True)


# Models.
models = client.models.list().data
check("models.list", len(models) == 1 and models[0].object == "model", models)
model = models[0].id
check("models.retrieve", client.models.retrieve(model).id == model)

# Chat, not streamed: transformers' greedy continuation as reasoning_content.
r = client.chat.completions.create(model=model, messages=MESSAGES, temperature=0, max_tokens=N_NEW)
msg = r.choices[0].message
reasoning = getattr(msg, "reasoning_content", None)
if reasoning is None:
    reasoning = (msg.model_extra or {}).get("reasoning_content")
check("chat reasoning_content = transformers greedy", reasoning == WANT_REASONING, repr(reasoning))
check("chat content empty (think block still open)", msg.content == "", repr(msg.content))
check("chat finish_reason length", r.choices[0].finish_reason == "length", r.choices[0].finish_reason)
check(
    "chat usage",
    r.usage.prompt_tokens == len(ref["prompt_ids"]) and r.usage.completion_tokens == N_NEW
    and r.usage.total_tokens == len(ref["prompt_ids"]) + N_NEW,
    r.usage,
)

# Chat, streamed, with usage: the deltas add up to the same split.
stream = client.chat.completions.create(
    model=model, messages=MESSAGES, temperature=0, max_tokens=N_NEW, stream=True,
    stream_options={"include_usage": True},
)
parts, content, finish, usage, roles = [], "", None, None, []
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        d = c.delta
        if d.role:
            roles.append(d.role)
        extra = d.model_extra or {}
        if extra.get("reasoning_content"):
            parts.append(extra["reasoning_content"])
        if d.content:
            content += d.content
        if c.finish_reason:
            finish = c.finish_reason
check("stream role first", roles == ["assistant"], roles)
check("stream reasoning deltas = transformers greedy", "".join(parts) == WANT_REASONING, parts)
check("stream has several reasoning deltas", len(parts) > 1, parts)
check("stream content empty", content == "", repr(content))
check("stream finish_reason", finish == "length", finish)
check("stream usage", usage is not None and usage.completion_tokens == N_NEW, usage)

# Stop strings end the output before the match.
stop_at = "INST"
assert stop_at in WANT_REASONING
r = client.chat.completions.create(model=model, messages=MESSAGES, temperature=0, max_tokens=N_NEW, stop=[stop_at])
got = (r.choices[0].message.model_extra or {}).get("reasoning_content")
check("stop string", got == WANT_REASONING.split(stop_at)[0].strip() and r.choices[0].finish_reason == "stop", repr(got))

# n, seed: choices sample independently; the same seed gives the same choices again.
def sampled():
    r = client.chat.completions.create(
        model=model, messages=MESSAGES, temperature=1.0, top_p=0.9, seed=1234, n=3, max_tokens=8
    )
    return [(c.message.model_extra or {}).get("reasoning_content") for c in r.choices], r
a, r = sampled()
b, _ = sampled()
check("n=3 choices", len(a) == 3 and [c.index for c in r.choices] == [0, 1, 2], a)
check("seed reproducible", a == b, (a, b))
check("choices differ", len(set(a)) > 1, a)

# Logprobs: the greedy token is the most likely one.
r = client.chat.completions.create(
    model=model, messages=MESSAGES, temperature=0, max_tokens=4, logprobs=True, top_logprobs=3
)
lps = r.choices[0].logprobs.content
check("logprobs count", len(lps) == 4 and all(len(t.top_logprobs) == 3 for t in lps), lps)
check(
    "greedy token is top-1",
    all(abs(t.logprob - t.top_logprobs[0].logprob) < 1e-6 and t.logprob <= 0 for t in lps),
    lps,
)
check(
    "top logprobs sorted",
    all(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob for t in lps),
)

# response_format json_object: the output is one JSON object (a reasoning model's answer
# comes after its reasoning; this fixture's template opens <think>, so JSON mode covers the
# whole output, which then is all reasoning). Python's json module parses what ended with "stop".
r = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Reply in JSON."}], max_tokens=200,
    response_format={"type": "json_object"}, temperature=1.0, seed=3, n=4,
)
closed = 0
for c in r.choices:
    text = (c.message.model_extra or {}).get("reasoning_content", "") + (c.message.content or "")
    if c.finish_reason == "stop":
        check("json_object output parses", isinstance(json.loads(text), dict), repr(text))
        closed += 1
    else:
        check("json_object output starts an object", text.startswith("{"), repr(text))
check("json_object: some outputs closed", closed > 0, [c.finish_reason for c in r.choices])

# Completions on the prompt's token ids: the raw text, no reasoning split.
r = client.completions.create(model=model, prompt=ref["prompt_ids"], temperature=0, max_tokens=N_NEW)
check("completions text = transformers greedy", r.choices[0].text == ref["greedy_new_text"], repr(r.choices[0].text))
check("completions usage", r.usage.prompt_tokens == len(ref["prompt_ids"]) and r.usage.completion_tokens == N_NEW, r.usage)
text = "".join(
    c.choices[0].text
    for c in client.completions.create(model=model, prompt=ref["prompt_ids"], temperature=0, max_tokens=N_NEW, stream=True)
    if c.choices
)
check("completions stream = transformers greedy", text == ref["greedy_new_text"], repr(text))
r = client.completions.create(model=model, prompt=["Hello", "world"], max_tokens=3, n=2)
check("completions 2 prompts x n=2", sorted(c.index for c in r.choices) == [0, 1, 2, 3], r.choices)


# Errors: the client raises the matching exception types, with OpenAI's error body.
def expect(name, exc, status, fn, code=None):
    try:
        fn()
    except exc as e:
        ok = e.status_code == status and isinstance(e.body, dict) and "message" in e.body
        if code is not None:
            ok = ok and e.body.get("code") == code
        check(name, ok, (e.status_code, e.body))
        return
    check(name, False, "no error raised")


expect("wrongly typed field -> 400", openai.BadRequestError, 400,
       lambda: client.chat.completions.create(model=model, messages=MESSAGES, temperature="hot"))
expect("messages not a list -> 400", openai.BadRequestError, 400,
       lambda: client.chat.completions.create(model=model, messages="hello"))
expect("empty messages -> 400", openai.BadRequestError, 400,
       lambda: client.chat.completions.create(model=model, messages=[]))
expect("context overflow -> 400", openai.BadRequestError, 400,
       lambda: client.chat.completions.create(model=model, messages=[{"role": "user", "content": "word " * 3000}]),
       code="context_length_exceeded")
expect("too many tokens -> 400", openai.BadRequestError, 400,
       lambda: client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=100000),
       code="context_length_exceeded")
expect("body over the limit -> 413", openai.APIStatusError, 413,
       lambda: client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x" * 100000}]),
       code="request_too_large")
expect("n out of range -> 400", openai.BadRequestError, 400,
       lambda: client.chat.completions.create(model=model, messages=MESSAGES, n=1000))
expect("completions bad token id -> 400", openai.BadRequestError, 400,
       lambda: client.completions.create(model=model, prompt=[1, 2, 10**6]))
if keyed:
    bad = openai.OpenAI(base_url=keyed, api_key="sk-wrong", max_retries=0)
    expect("wrong API key -> 401", openai.AuthenticationError, 401, lambda: bad.models.list(), code="invalid_api_key")
    good = openai.OpenAI(base_url=keyed, api_key="sk-test", max_retries=0)
    check("right API key", good.models.list().data[0].id == model)
# The server is still up after all of that.
check("still serving", client.models.list().data[0].id == model)
print("all ok")
