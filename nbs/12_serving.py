# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 12 · Serving the model over HTTP
#
# A model in a notebook helps one person; a model behind an HTTP endpoint helps every
# program that can send a request. The course wrapped its GPT in a small asynchronous web
# service (异步服务): a client posts a context, the server answers with a few candidate
# continuations. In this chapter we build that service twice, first as a ten-line sketch,
# then with `course_utils.serve`, which adds what a real service needs: validation with
# clear 400 errors, limits on input size, one model loaded once, and generation moved off
# the event loop so the server keeps answering while it computes. Then we make it hold
# under load the way inference servers such as vLLM and TGI do: requests that arrive
# together are decoded together (**dynamic batching**, 动态批处理), tokens are streamed to
# the client as they are generated, and a full queue, a slow request, a vanished client or
# a shutdown each get a clear, measured answer.
#
# **Learning goals**
#
# - the course's interface: `POST /generate` with `{"context", "maxlength", "samples"}`;
# - why a CPU-bound handler must not run on the event loop, measured;
# - validating requests so that bad input gets a 400 with a message, never a stack trace;
# - why one matrix multiply over many rows beats many multiplies over one, and how to batch
#   requests that arrive at different times without changing a single token of any answer;
# - measuring latency (p50/p95), throughput and time to first token with concurrent clients,
#   one request at a time against batched, and reading the numbers.

# %%
from course_utils import config, plots, timing

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
config.seed_everything(0)

# %% [markdown]
# ## 1. The model we serve
#
# The pretrained news GPT of chapter 05, from the cache (or trained now if it is missing).

# %%
import torch

from course_utils import artifacts, sampling

model, vocab, info = artifacts.pretrained_lm(profile)
print(f"{model.num_parameters():,} parameters, block_size {model.config.block_size}, "
      f"validation loss {info['val_loss']:.3f}")
print(sampling.complete(model, vocab, "中国", max_new_tokens=30, temperature=0.8, top_k=40, seed=0))

# %% [markdown]
# ## 2. A first sketch, and what is wrong with it
#
# aiohttp runs every handler on one event loop (事件循环): a single thread that switches
# between requests whenever a handler `await`s. The shortest possible service calls the
# model directly inside the handler:

# %%
from aiohttp import web


async def naive_generate(request):
    body = await request.json()
    return web.json_response(sampling.complete(
        model, vocab, body["context"], max_new_tokens=body["maxlength"],
        num_samples=body.get("samples", 1), temperature=0.8, top_k=40, top_p=0.9))


async def naive_health(request):
    return web.json_response({"status": "ok"})


naive_app = web.Application()
naive_app.router.add_post("/generate", naive_generate)
naive_app.router.add_get("/health", naive_health)
for route in naive_app.router.routes():   # add_get also registers HEAD for the same path
    print(f"{route.method:6s} {route.resource.canonical}")

# %% [markdown]
# It works for one polite client. Two problems show up at once with more:
#
# 1. `sampling.complete` computes for a long time **without awaiting**, so the loop is
#    blocked: no other request, not even `/health`, is answered until it finishes.
# 2. Nothing is validated: a missing field is a `KeyError` (a 500 with a stack trace), and a
#    `maxlength` of ten million keeps the server busy for hours.
#
# Let us measure the first problem. `serve.run_in_thread` serves an app on a free local
# port from its own event loop in a background thread, so this notebook's loop is free to
# play the clients: we fire one long generation and, meanwhile, time a `/health` call.

# %%
import asyncio
import time

from aiohttp import ClientSession

from course_utils import serve, serve_tools

LONG = {"context": "中国", "maxlength": 4 * model.config.block_size, "samples": 8,
        "temperature": 0.8, "top_k": 40, "seed": 0}


async def health_latency_during_generation(app):
    """Seconds /health takes to answer while a long /generate is being computed."""
    with serve_tools.run_in_thread(app) as server:
        async with ClientSession() as session:
            slow = asyncio.create_task(session.post(server.url + "/generate", json=LONG))
            await asyncio.sleep(0.2)                      # the generation is under way
            t0 = time.perf_counter()
            async with session.get(server.url + "/health") as resp:
                assert resp.status == 200
            health = time.perf_counter() - t0
            t0 = time.perf_counter()
            (await slow).release()
            return health, time.perf_counter() - t0 + health


naive_health_s, naive_total_s = await health_latency_during_generation(naive_app)
print(timing.machine_line())
print(f"naive service: /health answered after {naive_health_s * 1000:.0f} ms "
      f"(the generation finished {naive_total_s * 1000:.0f} ms after the health call began)")

# %% [markdown]
# ## 3. `course_utils.serve`
#
# The canonical service fixes both problems. Its handler parses and validates the body
# (`parse_request`) on the event loop, then puts the request in a queue served by **one
# worker thread** that owns the model, and `await`s the answer: the loop is free while
# PyTorch computes (PyTorch releases Python's GIL inside its kernels), and only that one
# thread ever touches the model. Same measurement:

# %%
app = serve.make_app(model, vocab)
served_health_s, served_total_s = await health_latency_during_generation(app)
print(timing.machine_line())
print(f"course_utils.serve: /health answered after {served_health_s * 1000:.0f} ms "
      f"(naive: {naive_health_s * 1000:.0f} ms)")
if profile.name != "ci":   # the ci model finishes LONG before /health is even asked
    assert served_health_s < naive_health_s

# %% [markdown]
# Both services must still agree on *what* they generate: with greedy decoding
# (temperature 0) the sketch's core call and the service give the same text.

# %%
async def post(app, body):
    with serve_tools.run_in_thread(app) as server:
        async with ClientSession() as session:
            async with session.post(server.url + "/generate", json=body) as resp:
                return resp.status, await resp.json()


# an aiohttp Application is bound to the loop that first ran it: serve a fresh one
status, served = await post(serve.make_app(model, vocab),
                            {"context": "今天", "maxlength": 20, "samples": 1, "temperature": 0})
inline = sampling.complete(model, vocab, "今天", max_new_tokens=20, temperature=0)
print(status, served, inline)
assert status == 200 and served == inline

# %% [markdown]
# ## 4. A real server process
#
# In production the service is its own process: `python -m course_utils.serve --port 8080`.
# We start it in the background, wait until `/health` answers, and talk to it over HTTP
# like any client would.

# %%
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = free_port()
BASE = f"http://127.0.0.1:{PORT}"
server = subprocess.Popen(
    [sys.executable, "-m", "course_utils.serve", "--port", str(PORT), "--profile", profile.name],
    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

for _ in range(600):  # up to 60 s for the model to load
    try:
        with urllib.request.urlopen(f"{BASE}/health", timeout=1) as resp:
            health = json.load(resp)
            break
    except (urllib.error.URLError, ConnectionError):
        time.sleep(0.1)
else:
    server.kill()
    raise RuntimeError("the server did not start:\n" + server.stdout.read())
print(json.dumps(health, ensure_ascii=False))


# %%
def call(body: bytes | dict, path: str = "/generate"):
    """POST a body (a dict is sent as JSON); return (status, decoded JSON answer)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


status, texts = call({"context": "新华社北京", "maxlength": 40, "samples": 3})
print(status)
for t in texts:
    print(" 新华社北京" + t)

# %% [markdown]
# Optional fields set the sampler (chapter 08): `temperature`, `top_k`, `top_p`,
# `repetition_penalty` and a `seed` that makes the answer reproducible.

# %%
body = {"context": "今天", "maxlength": 30, "samples": 2, "temperature": 1.0, "top_k": 10, "seed": 42}
first, second = call(body)[1], call(body)[1]
print(first)
assert first == second, "the same seed must give the same samples"

# %% [markdown]
# The same process serves a page at `GET /` to try the service from a browser (run
# `python -m course_utils.serve` and open http://127.0.0.1:8080/): a prompt, the sampler
# settings, and the text as it streams in (section 9). It is one HTML file shipped inside
# the package with its JavaScript inline, so it needs no CDN and nothing leaves the machine.

# %%
import re

with urllib.request.urlopen(BASE + "/") as resp:
    page = resp.read().decode()
    print(resp.status, resp.headers["Content-Type"], f"{len(page):,} characters:",
          re.search(r"<title>(.*)</title>", page).group(1))
assert "http://" not in page and "https://" not in page   # nothing is fetched from elsewhere

# %% [markdown]
# ## 5. Bad requests get a 400 and a message
#
# Every way a client can get a request wrong, with what the service answers:

# %%
import pandas as pd

bad_requests = {
    "not JSON": b"{context: oops",
    "a list, not an object": [1, 2, 3],
    "missing context": {"maxlength": 10},
    "context is a number": {"context": 42, "maxlength": 10},
    "empty context": {"context": "   ", "maxlength": 10},
    "context too long": {"context": "长" * 1000, "maxlength": 10},
    "maxlength as text": {"context": "今天", "maxlength": "10"},
    "maxlength 0": {"context": "今天", "maxlength": 0},
    "maxlength huge": {"context": "今天", "maxlength": 10**7},
    "samples 100": {"context": "今天", "maxlength": 10, "samples": 100},
    "negative temperature": {"context": "今天", "maxlength": 10, "temperature": -1},
    "top_p 1.5": {"context": "今天", "maxlength": 10, "top_p": 1.5},
    "unknown field": {"context": "今天", "maxlength": 10, "beam": 4},
    "stream as text": {"context": "今天", "maxlength": 10, "stream": "yes"},
    "no known character": {"context": "🙂🙂", "maxlength": 10},
}
rows = []
for name, body in bad_requests.items():
    status, answer = call(body if isinstance(body, bytes) else body)
    rows.append({"request": name, "status": status, "error": answer.get("error") if isinstance(answer, dict) else answer})
errors = pd.DataFrame(rows)
assert (errors.status == 400).all()
pd.set_option("display.max_colwidth", 90)
errors

# %% [markdown]
# ## 6. Why batching helps: one matrix multiply for many rows
#
# Decoding one token runs the token's activation, a row of `d_model` numbers, through every
# layer: a handful of matrix multiplies by the layer's weights, then attention over the
# cached keys and values. With one row, each multiply reads a whole weight matrix to do one
# row of arithmetic, and PyTorch's fixed cost per operation (dispatch, Python) is paid for
# that single row. Stack 16 rows (16 sequences, each at its own position) into a (16, d_model)
# matrix and the same weights, the same operations and nearly the same time serve all 16.
# `decoding.decode_step`, given one position per row, is that decode step (section 7); we
# time it for batches of 1 to 64 rows on one thread:

# %%
from course_utils import batching
from course_utils.attention import StaticKVCache
from course_utils.decoding import decode_step


def step_ms(rows: int, repeats: int = 30) -> float:
    """Milliseconds of one decode step for `rows` rows (best of a few timed runs)."""
    cfg = model.config
    shape = (rows, cfg.n_heads, cfg.block_size, cfg.d_model // cfg.n_heads)
    cache = [StaticKVCache.wrap(torch.zeros(shape), torch.zeros(shape)) for _ in model.blocks]
    token = torch.randint(3, len(vocab), (rows, 1))
    pos = torch.randint(0, cfg.block_size, (rows,))
    best = float("inf")
    with timing.num_threads(1), torch.inference_mode():
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(repeats):
                decode_step(model, token, pos, cache)
            best = min(best, (time.perf_counter() - t0) / repeats)
    return 1000 * best


steps = pd.DataFrame({"rows": [1, 2, 4, 8, 16, 32, 64]})
steps["ms per step"] = [step_ms(b) for b in steps.rows]
steps["ms per row"] = steps["ms per step"] / steps.rows
print(timing.machine_line())
one, sixteen = steps.set_index("rows").loc[1], steps.set_index("rows").loc[16]
print(f"a step for 16 rows takes {sixteen['ms per step'] / one['ms per step']:.1f}x the time of a "
      f"step for one row: {one['ms per row'] / sixteen['ms per row']:.1f}x less time per row")
if profile.name != "ci":  # the prose below: per-row cost falls as rows are added
    assert sixteen["ms per row"] < one["ms per row"] / 2 and sixteen["ms per step"] < 8 * one["ms per step"]
steps.round(3)

# %% [markdown]
# The time per row falls steeply as rows are added: a step for 16 rows costs far less than 16
# steps for one row (the line above), because the fixed costs are paid once and the weights
# are read once for all the rows, until the arithmetic itself becomes the cost. That is the whole
# case for batching on a CPU, and even more on a GPU, which is mostly idle at one row.
#
# Not everything can be shared. A request that *samples* draws its next token from its own
# filtered distribution with its own random generator (chapter 08's `sample_next`: top-k and
# top-p, a softmax, then `sampling.draw`: one uniform number per row, compared with the
# cumulative probabilities). The filtering works row by row, so the rows of all requests with
# the same settings can be filtered in one call and each row still gets exactly the
# probabilities it gets alone. Only the uniform numbers must come from each request's own
# generator, or its text would depend on who else was in the batch; the cumulative sums and
# the search then run for all rows at once (`draw(probs, u=...)`). Here is what choosing one
# token costs for 16 requests, each alone and together:

# %%
logits16 = torch.randn(16, len(vocab))
generators = [torch.Generator().manual_seed(i) for i in range(16)]


def choose_ms(together: bool, repeats: int = 200, **settings) -> float:
    """ms per request to choose one token for 16 one-row requests."""
    with timing.num_threads(1):
        t0 = time.perf_counter()
        for _ in range(repeats):
            if together:   # filter and draw all 16 rows at once; uniforms per request
                probs = sampling.next_token_probs(logits16, **settings)
                u = torch.cat([sampling.uniforms(1, g) for g in generators])
                sampling.draw(probs, u=u)
            else:          # chapter 08's sample_next, request by request
                for i, g in enumerate(generators):
                    sampling.sample_next(logits16[i:i + 1], generator=g, **settings)
    return 1000 * (time.perf_counter() - t0) / repeats / 16


DEFAULT = dict(temperature=0.8, top_k=40, top_p=0.9)
choose = {"sampled, each alone": choose_ms(False, **DEFAULT),
          "sampled, together": choose_ms(True, **DEFAULT),
          "greedy (argmax)": choose_ms(False, temperature=0)}
print(timing.machine_line())
for how, ms in choose.items():
    print(f"{how:27s} {ms:.3f} ms per request = {ms / sixteen['ms per row']:4.0%} of a row's share "
          f"of the decode step at 16 rows ({sixteen['ms per row']:.3f} ms)")
if profile.name != "ci":  # the prose below
    assert choose["sampled, together"] < choose["sampled, each alone"]
    assert choose["greedy (argmax)"] < choose["sampled, together"]

# %% [markdown]
# Choosing a sampled token request by request costs a sizeable fraction of the row's share
# of the forward pass in a batch of 16 (the first line above). Together it costs less per
# request (the second line); a greedy choice (an `argmax`) is cheaper still. So the engine
# filters and draws the rows of all requests that share their settings together. (Two
# changes in chapter 08's sampler made it several times cheaper: top-p after top-k sorts only
# the $k$ kept logits instead of the whole vocabulary, and `draw` takes one uniform number
# per row where `torch.multinomial` draws one random number per vocabulary entry.) `bench/serve.py` (benchmarks appendix) measures
# greedy and sampled requests.

# %% [markdown]
# ## 7. Dynamic batching, piece by piece
#
# Requests do not arrive together: one comes while another is half-way through its answer.
# *Dynamic* (or continuous) batching lets every request join the running batch at the next
# step and leave it when it is done. `course_utils.batching` builds it from three pieces:
#
# - **`decode_step`**, the decode step of chapter 08 (`course_utils.decoding`) given a
#   position per row. The KV cache is preallocated with one row per *slot* and `block_size`
#   positions; row $b$ writes its new key and value at its own position $p_b$ and attends to
#   positions $0..p_b$ only (a mask of shape (rows, 1, 1, block_size)). Whatever an earlier
#   request left beyond $p_b$ in that slot is masked out.
# - **`Group`**: the rows of one request (its `samples`), kept in lockstep, decoded exactly as
#   `sampling.generate` decodes them alone: one `torch.Generator` (seeded by `seed`) draws
#   the tokens of all its rows; a row that stopped keeps being fed
#   `<pad>` (and keeps drawing randomness) until every row has stopped; the repetition
#   penalty looks at the group's own rows; when the window is full it slides by half a block,
#   which needs a fresh prefill of that group's rows.
# - **`BatchEngine`**: the slots and the groups in flight. Each `step()` prefills the groups
#   that are new or whose window slid, together in ONE forward pass over their windows
#   right-padded to the longest (causal attention keeps the padding out of every real
#   position; each row's logits are read at its own last token); runs ONE shared
#   `decode_step` for all the others; filters and draws the tokens of all the groups
#   that share sampler settings in one call, each group's uniform numbers coming from its
#   own generator; and frees the slots of the groups that finished, for the next request
#   in the queue.
#
# First the shared step. Three rows at different positions take one step together; each must
# get the logits that recomputing its whole window gives:

# %%
windows = [vocab.encode("中国"), vocab.encode("新华社北京１月"), vocab.encode("今天天气很好，我们")]
with torch.inference_mode():
    caches = [model.new_cache() for _ in windows]
    for w, cache in zip(windows, caches, strict=True):   # prefill each row alone
        model(torch.tensor([w]), cache=cache)
    rows = [StaticKVCache.wrap(torch.cat([c[layer].k_buf for c in caches]),   # the 3 rows stacked
                               torch.cat([c[layer].v_buf for c in caches])) for layer in range(len(model.blocks))]
    nxt = torch.tensor([[vocab.encode("的")[0]]] * 3)
    pos = torch.tensor([len(w) for w in windows])
    together = decode_step(model, nxt, pos, rows)
    alone = torch.stack([model(torch.tensor([w + nxt[0].tolist()]))[0][0, -1] for w in windows])
gap = (together - alone).abs().max().item()
print(f"positions {pos.tolist()}: max |logits together - each window recomputed| = {gap:.1e}")
assert gap < 1e-4

# %% [markdown]
# Now whole requests. Five requests with prompts of different lengths and their own sampler
# settings, one of them with a prompt that fills the window (so its window slides, more than
# once), arrive at different steps at an engine of 8 slots; together they need 12 rows, so a
# request may have to wait for free slots. Each must get exactly the tokens
# `sampling.generate` gives it alone:

# %%
stops = sampling.stop_ids(vocab)
specs = [("中国", 1, 30, dict(temperature=0)),
         ("新华社北京", 3, 40, dict(temperature=0.8, top_k=40, top_p=0.9, seed=1)),
         ("人民日报" * 16, 2, model.config.block_size + 10, dict(temperature=1.0, seed=2)),
         ("今天", 4, 25, dict(temperature=1.2, repetition_penalty=1.3, seed=3)),
         ("经济", 2, 20, dict(temperature=0.7, top_k=10, seed=4))]


def groups():
    return [batching.Group(vocab.encode(p)[-model.config.block_size:], n, steps, stop_tokens=stops, **kw)
            for p, n, steps, kw in specs]


together = batching.generate_together(model, groups(), max_rows=8, arrivals=[0, 0, 3, 5, 9])
for (prompt, n, steps_, kw), got in zip(specs, together, strict=True):
    ids = torch.tensor([vocab.encode(prompt)[-model.config.block_size:]] * n)
    assert torch.equal(got, sampling.generate(model, ids, steps_, stop_tokens=stops, **kw)), prompt
print(f"{len(specs)} requests decoded together: each got the tokens it gets alone")
print("for example:", sampling.decode_batch(vocab, together[1][:, len(vocab.encode("新华社北京")):]))

# %% [markdown]
# What the engine did, step by step: which request occupied which slot. Requests join as
# slots free up and leave when they finish; the long-prompt request is prefilled again when
# its window slides.

# %%
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

gs, arrivals = groups(), [0, 0, 3, 5, 9]
engine, waiting = batching.BatchEngine(model, max_rows=8), list(range(len(gs)))
columns, refills = [], []                   # per step: the request in each slot; prefills
while waiting or engine.groups:
    while waiting and arrivals[waiting[0]] <= len(columns) and engine.fits(gs[waiting[0]]):
        engine.add(gs[waiting.pop(0)])
    column, before = np.full(engine.max_rows, np.nan), [g.cached_from for g in gs]
    rows = [list(g.rows) for g in gs]
    for k, r in enumerate(rows):
        column[r] = k
    engine.step()
    refills += [(len(columns), r) for k, g in enumerate(gs) if g.cached_from != before[k] for r in rows[k]]
    columns.append(column)

fig, ax = plt.subplots(figsize=(10, 3.2))
image = ax.imshow(np.ma.masked_invalid(np.array(columns).T), aspect="auto", origin="lower",
                  cmap=ListedColormap([f"C{k}" for k in range(len(gs))]), vmin=-0.5, vmax=len(gs) - 0.5,
                  interpolation="nearest")
refills = np.array(refills)
ax.scatter(refills[:, 0], refills[:, 1], marker="x", color="black", s=14)
bar = fig.colorbar(image, ticks=range(len(gs)))
bar.ax.set_yticklabels([f"{p[:4]}{'…' if len(p) > 4 else ''} ×{n}" for p, n, _, _ in specs])
ax.set(xlabel="engine step (one token for every row in flight; × = prefill: a new request, "
              "or its window slid)", ylabel="cache slot",
       title="Requests join free slots and leave when done; one decode step serves them all")
plt.show()
joined = [next(i for i, c in enumerate(columns) if k in c) for k in range(len(gs))]
print(f"{len(columns)} steps for {len(specs)} requests; most requests in one step: "
      f"{max(len(set(c[~np.isnan(c)])) for c in columns)}; arrived at steps {arrivals}, joined at {joined}")

# %% [markdown]
# A caveat about "exactly". The tokens above are identical, but the logits are identical only
# up to rounding: the matrix-multiply kernel sums in an order that depends on how many rows it
# is given, so a row's logits in a batch of 16 differ from its logits alone in about the
# seventh significant digit. A token changes only if two candidates are that close, or a
# random draw falls that close to a boundary; `sampling.generate` itself has the same
# property (its `samples` rows are a batch too). Measured:

# %%
with torch.inference_mode():
    cfg = model.config
    shape = (16, cfg.n_heads, cfg.block_size, cfg.d_model // cfg.n_heads)
    keys = [torch.randn(shape) for _ in model.blocks]
    values = [torch.randn(shape) for _ in model.blocks]
    token, pos = torch.randint(3, len(vocab), (16, 1)), torch.arange(16)

    def rows(b: slice) -> list[StaticKVCache]:
        return [StaticKVCache.wrap(k[b].clone(), v[b].clone()) for k, v in zip(keys, values, strict=True)]

    batch16 = decode_step(model, token, pos, rows(slice(0, 16)))
    one_by_one = torch.cat([decode_step(model, token[b:b + 1], pos[b:b + 1], rows(slice(b, b + 1)))
                            for b in range(16)])
rel = ((batch16 - one_by_one).abs().max() / one_by_one.abs().max()).item()
print(f"16 rows together vs one at a time: largest difference {rel:.1e} of the largest logit")

# %% [markdown]
# ## 8. Latency and throughput under concurrent clients: one at a time against batched
#
# Now the service under load. Two servers run as processes with the same model:
# `python -m course_utils.serve --serial`, which decodes one request at a time (the service
# as it was before batching: a request waits for every request ahead of it), and the
# batching one. `serve.ServerProcess` starts each on a free port and waits for `/health`.
# Each of `c` concurrent clients sends requests back to back; `serve.load_test` records every
# request's latency and the requests per second. Every request asks for 40 characters after
# 中国 with the service's default sampler; each client sends seeds 0, 1, 2, 3 in turn, so every
# level asks for the same mix of answers (answers stop early at 。, so seeds change the work)
# and both servers do exactly the same work and must return the same texts.
#
# The machine has two cores. Each server gets one torch thread (`OMP_NUM_THREADS=1`) and the
# clients run in this notebook's process; we measure how much CPU each side really used
# (CPU seconds divided by wall seconds, from `psutil`).

# %%
import psutil
from tqdm.auto import tqdm


def body(k: int) -> dict:
    """Request k of the load test (client k // per_client sends seeds 0..per_client-1)."""
    return {"context": "中国", "maxlength": 40, "samples": 1, "seed": k % per_client}


async def measure_load(server, clients: int, per_client: int, stream: bool = False) -> dict:
    """serve.load_test, plus the cores each side used (CPU seconds / wall seconds)."""
    srv, me = psutil.Process(server.proc.pid), psutil.Process()
    cpu = lambda p: sum(p.cpu_times()[:2])           # user + system seconds
    s0, c0 = cpu(srv), cpu(me)
    result = await serve_tools.load_test(server.url, body, clients, per_client, stream=stream)
    result["server cores"] = (cpu(srv) - s0) / result["seconds"]
    result["client cores"] = (cpu(me) - c0) / result["seconds"]
    return result


serial_server = serve_tools.ServerProcess(profile.name, "--serial", threads=1)
batched_server = serve_tools.ServerProcess(profile.name, threads=1)
levels = [1, 2, 4, 8, 16, 32] if profile.name != "ci" else [1, 4]
per_client = 4 if profile.name != "ci" else 1
runs = []
for clients in tqdm(levels, desc="load test"):
    for name, server_ in (("serial", serial_server), ("batched", batched_server)):
        runs.append({"server": name, **await measure_load(server_, clients, per_client)})
load = pd.DataFrame(runs)
load.drop(columns="texts").round(2)

# %%
from matplotlib.ticker import NullLocator, ScalarFormatter

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
for name, colour in (("serial", "C0"), ("batched", "C1")):
    part = load[load.server == name]
    ax1.plot(part.clients, part["req/s"], "o-", color=colour, label=name)
    ax2.plot(part.clients, part["p50 ms"], "o-", color=colour, label=f"{name} p50")
    ax2.plot(part.clients, part["p95 ms"], "s--", color=colour, alpha=0.6, label=f"{name} p95")
ax1.set(xlabel="concurrent clients", ylabel="requests per second", title="Throughput", xscale="log",
        ylim=(0, None))
ax2.set(xlabel="concurrent clients", ylabel="latency (ms, log scale)", title="Latency (p50 and p95)",
        xscale="log", yscale="log")
ax2.yaxis.set_major_formatter(ScalarFormatter())
for ax in (ax1, ax2):
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
by = load.set_index(["server", "clients"])
top = levels[-1]
print(timing.machine_line())
for c in sorted({levels[-1], 16} & set(levels)):
    s, b = by.loc[("serial", c)], by.loc[("batched", c)]
    print(f"{c} clients: serial {s['req/s']:.1f} req/s (p95 {s['p95 ms']:.0f} ms), batched "
          f"{b['req/s']:.1f} req/s (p95 {b['p95 ms']:.0f} ms): x{b['req/s'] / s['req/s']:.2f} "
          f"the throughput, x{b['p95 ms'] / s['p95 ms']:.2f} the p95 latency")
print(f"at {top} clients the server used {by.loc[('batched', top), 'server cores']:.2f} cores (batched) "
      f"and {by.loc[('serial', top), 'server cores']:.2f} (serial); the clients "
      f"{by.loc[('batched', top), 'client cores']:.2f} and {by.loc[('serial', top), 'client cores']:.2f}")
same = sum(a == b for a, b in zip(by.loc[("serial", top), "texts"], by.loc[("batched", top), "texts"],
                                  strict=True))
print(f"requests that got the same text from both servers at {top} clients: {same} of "
      f"{len(by.loc[('serial', top), 'texts'])}")
if profile.name != "ci":  # the prose below
    assert by.loc[("batched", 16), "req/s"] > 1.5 * by.loc[("serial", 16), "req/s"]
    assert by.loc[("batched", 16), "p95 ms"] < by.loc[("serial", 16), "p95 ms"]
    assert by.loc[("batched", top), "client cores"] < 0.5
    assert by.loc[("batched", 16), "req/s"] > 2 * by.loc[("batched", 1), "req/s"]

# %% [markdown]
# Read the plots with the lines printed under them. The **serial** server handles one
# generation at a time: more clients cannot make that generation faster (its throughput at
# every level is in the table, its range printed below), and what grows is the *queue*: with
# `c` clients always waiting, a request waits for the `c - 1` ahead of it, so its latency is
# about `c` divided by the throughput (Little's law, printed below). The **batched** server
# turns the same clients into bigger batches: its throughput climbs with the number of
# clients, more than doubling from one client to 16, and its latency grows far more slowly.
# What caps the gain was measured in section 6: the shared step itself costs more as rows
# are added, and choosing a sampled token still costs a share of it per request (each
# request's uniform numbers come from its own generator). The CPU line says how the two
# cores were shared: each server process used about one core, all it can use with one torch
# thread and one Python interpreter for its event loop and model thread, and the clients in
# this notebook needed little of the other. Where the batched line stops climbing, that one
# core is full.
# No request failed in either server (`load_test` insists on 200), and the last line above
# counts the requests that got the same text from both servers (a difference could only come
# from the rounding of section 7).

# %%
serial = load[load.server == "serial"]
print(f"serial server from {levels[1]} to {top} clients: {serial['req/s'].iloc[1:].min():.1f} to "
      f"{serial['req/s'].iloc[1:].max():.1f} req/s")
print("serial server, p50 latency vs clients / throughput (Little's law), ms: " + ", ".join(
    f"c={c}: {p:.0f} vs {1000 * c / r:.0f}" for c, p, r in zip(serial.clients, serial["p50 ms"],
                                                                 serial["req/s"], strict=True)))

# %% [markdown]
# ## 9. Streaming: the first words sooner
#
# A batched request still takes as long as its own tokens take. What a person waiting for the
# answer notices first is the **time to first token**. With `"stream": true` the service
# answers with server-sent events (`text/event-stream`): one `data:` line per step with the new
# piece of text of every sample, then an `event: done` with the full texts (or `event: error`
# with a status and a message). The pieces put together are the non-streamed answer:

# %%
from aiohttp import ClientSession

request = {"context": "新华社北京", "maxlength": 30, "samples": 2, "seed": 7}
async with ClientSession() as session:
    async with session.post(batched_server.url + "/generate", json={**request, "stream": True}) as resp:
        print(resp.status, resp.headers["Content-Type"])
        raw = (await resp.read()).decode()
events = raw.strip().split("\n\n")
print("\n".join(events[:3]), "\n...\n" + events[-1])
pieces = [json.loads(e[6:])["pieces"] for e in events[:-1]]
streamed = ["".join(p) for p in zip(*pieces, strict=True)]
final = json.loads(events[-1].split("data: ")[1])["texts"]
status, plain = call(request)
assert streamed == final == plain, (streamed, final, plain)

# %%
stream_clients = 8 if profile.name != "ci" else 2
streaming = await measure_load(batched_server, stream_clients, per_client, stream=True)
print(timing.machine_line())
print(f"{stream_clients} clients streaming: first piece of text after {streaming['first piece p50 ms']:.0f} ms "
      f"(p50; p95 {streaming['first piece p95 ms']:.0f} ms), the whole answer after "
      f"{streaming['p50 ms']:.0f} ms (p50; p95 {streaming['p95 ms']:.0f} ms)")
if profile.name != "ci":  # the prose below
    assert streaming["first piece p50 ms"] < streaming["p50 ms"] / 3

# %% [markdown]
# With streaming, the first characters appear after a small fraction of the time the whole
# answer takes: the prefill and one shared step, then the rest arrives piece by piece. The
# page at `GET /` reads the same events with `fetch` and a stream reader.
#
# ## 10. Holding under load: a full queue, a slow request, a vanished client, a shutdown
#
# A service must stay predictable when asked for more than it can do:
#
# - **a bounded queue**: at most `--max-queue` requests wait for a slot; one more gets
#   `503 Service Unavailable` with a `Retry-After` header, at once, instead of waiting forever;
# - **a time limit** per request, queueing included (`--time-limit`): past it, `504` with a
#   message saying what to change;
# - **a client that disconnects** (or a time limit that expires) frees its rows at the next step;
# - **`/health` answers throughout**: the event loop never computes;
# - **SIGTERM** (what `docker stop` or systemd send) stops taking requests, finishes the running
#   batch, and exits with status 0.
#
# Two deliberately small servers show the first two. One decodes one request at a time and
# has two places in its queue; eight clients arrive at once. The other has a time limit of
# 0.3 s, and a client asks it for 16 samples of 512 characters at a high temperature: far
# more work than that (each of the 512 steps draws 16 tokens from the whole vocabulary).

# %%
import collections

queue2 = serve_tools.ServerProcess(profile.name, "--serial", "--max-queue", "2", threads=1)
limit = serve_tools.ServerProcess(profile.name, "--time-limit", "0.3", threads=1)


async def answer(session, server, body):
    async with session.post(server.url + "/generate", json=body) as resp:
        return resp.status, resp.headers.get("Retry-After"), (await resp.json())


long = {"context": "中国", "maxlength": 512, "samples": 16, "temperature": 2.0, "top_k": None,
        "top_p": None, "seed": 0}
async with ClientSession() as session:
    crowd = await asyncio.gather(*(answer(session, queue2, body(k)) for k in range(8)))
    slow_status, _, slow_answer = await answer(session, limit, long)
print("8 at once:", dict(collections.Counter(status for status, _, _ in crowd)))
refused = next(a for a in crowd if a[0] == 503)
print(f"503 with Retry-After: {refused[1]} s, {refused[2]}")
print(slow_status, slow_answer)
assert {s for s, _, _ in crowd} <= {200, 503} and all(r for s, r, _ in crowd if s == 503)
assert slow_status == 504

# %% [markdown]
# The server took what its queue could hold (and the request its worker had already picked
# up) and told the others at once to come back later (the counts above); the long request was
# stopped at its time limit with a message saying what to change. Now a client that walks away in the middle of a stream, on the
# batching server:

# %%
async with ClientSession() as session:
    resp = await session.post(batched_server.url + "/generate", json={**long, "stream": True})
    await resp.content.readline()                      # the first event: generation is under way
    during = await (await session.get(batched_server.url + "/health")).json()
    resp.close()                                       # the client goes away
    for _ in range(400):
        after = await (await session.get(batched_server.url + "/health")).json()
        if after["rows_in_use"] == 0:
            break
        await asyncio.sleep(0.05)
print(f"rows in use while it streamed: {during['rows_in_use']}; after the client left: "
      f"{after['rows_in_use']} (requests cancelled: {after['cancelled']})")
assert during["rows_in_use"] == long["samples"] and after["rows_in_use"] == 0

# %% [markdown]
# Finally the shutdown. The server we started by hand in section 4 gets a SIGTERM while it
# streams a long answer: it stops listening, finishes the running request, and exits cleanly.

# %%
async with ClientSession() as session:
    async with session.post(BASE + "/generate", json={**long, "stream": True}) as resp:
        await resp.content.readline()                  # generation is under way
        server.terminate()                             # SIGTERM
        rest = (await resp.read()).decode()
code = server.wait(timeout=120)
print("the request in flight ended with:", rest.strip().split("\n\n")[-1][:60], "…")
print("exit code", code, "| the server said:", server.stdout.read().strip().splitlines()[-2:])
assert "event: done" in rest and code == 0
for process in (serial_server, batched_server, queue2, limit):
    assert process.stop() == 0

# %% [markdown]
# > **Pitfalls.**
# > - **Blocking the event loop.** A handler that computes without awaiting freezes the
# >   whole server (section 2). Move CPU work off the loop, to a worker thread.
# > - **One model, many threads.** A PyTorch module is not made for concurrent forward
# >   passes that share a KV cache or a generator, and on a CPU more threads do not make more
# >   arithmetic: one worker owns the model, and batching is how it serves many requests.
# > - **Batching that changes the answers.** Sampling the whole batch with one generator,
# >   applying the repetition penalty across requests, or splitting a request's samples
# >   between batches gives each request a different text than it gets alone, and breaks the
# >   `seed` contract silently. Keep a request's rows together, with their own generator.
# > - **"Identical" means up to rounding** (section 7): a batched matrix multiply sums in a
# >   different order, so logits differ in the seventh digit; compare tokens, and do not
# >   promise bit-identical logits across batch sizes.
# > - **Unbounded inputs and queues.** Every size a client controls (`context`, `maxlength`,
# >   `samples`) needs a limit, and so does the queue: without one, overload shows up as ever
# >   longer waits instead of a quick 503 the client can act on.
# > - **Stack traces as answers.** A `KeyError` from a missing field becomes a 500 with
# >   internals; validate first and answer 400 with a message the client can act on.
# > - **Binding to 0.0.0.0** exposes the service to the whole network; the default here is
# >   127.0.0.1.
#
# ## Exercises
#
# **Exercise 12.1 (percentile).** Write `percentile(values, q)` returning the q-th percentile (0-100) with
# linear interpolation between closest ranks, like `np.percentile` (without calling it).

# %%
from course_utils.exercises import ch12


def percentile(values, q):
    raise NotImplementedError


_ = ch12.check_percentile(percentile)


# %% tags=["hide-cell"]
# Solution
def percentile(values, q):
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


_ = ch12.check_percentile(percentile)


# %% [markdown]
# **Exercise 12.2 (validate maxlength).** Write `validate_maxlength(body)` that returns `body["maxlength"]` when it is
# an integer between 1 and 512, and otherwise raises `ValueError` with a message naming the
# field (a `bool` is not an integer here, even though Python says `True == 1`).

# %%
def validate_maxlength(body):
    raise NotImplementedError


_ = ch12.check_validate_maxlength(validate_maxlength)


# %% tags=["hide-cell"]
# Solution
def validate_maxlength(body):
    value = body.get("maxlength")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 512:
        raise ValueError(f"field 'maxlength' must be an integer between 1 and 512, got {value!r}")
    return value


_ = ch12.check_validate_maxlength(validate_maxlength)

# %% [markdown]
# ## Summary
#
# - The course's interface, `POST /generate` with `context`, `maxlength` and `samples`,
#   answered by a JSON list of continuations, is served by `course_utils.serve`
#   (`python -m course_utils.serve --port 8080`; `GET /` is a page to try it).
# - The model runs in one worker thread, so the event loop stays responsive: `/health`
#   answered in milliseconds during a long generation instead of waiting for it.
# - Every bad request gets a 400 with a message; sizes are bounded; a full queue gets a 503
#   with `Retry-After`, a request over its time limit a 504; a client that leaves frees its
#   rows; SIGTERM finishes the running batch and exits cleanly.
# - One request at a time, more clients only lengthen the queue. Dynamic batching
#   (`course_utils.batching`) decodes every request in flight with one shared step, each
#   request still getting the tokens it gets alone: throughput grows with the clients and
#   latency much more slowly (section 8; `bench/serve.py` in the benchmarks appendix).
# - Streaming (`"stream": true`) shows the first words after a fraction of the answer's time.
#
# Chapter 13 takes the model out of PyTorch: into Hugging Face `transformers`, where most
# language models are published, and into ONNX, the format that ships a model without Python.
