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
# # 12a · Going further: the batching engine
#
# Chapter 12 measured why batching helps (a decode step for 16 rows costs far less than 16
# steps for one row) and served many clients with it: its batched server answered more requests
# per second than the one-at-a-time server, and every request got exactly the text it gets
# alone. This notebook opens the engine that does it, `course_utils.batching`. It assumes
# chapter 12's sections 1 to 6: the pretrained news GPT we serve, the service's one worker
# thread that owns the model, and `decoding.decode_step`, chapter 08's one-token step given a
# position per row, whose cost per row falls as rows are added.
#
# **What you will see**
#
# - what choosing the next token costs per request, alone and for many requests in one call,
#   timed side by side with the shared decode step;
# - the shared step checked against recomputing each window, then five requests arriving at
#   different steps, each getting exactly the tokens `sampling.generate` gives it alone, and
#   which cache slot each one occupied, step by step;
# - why "exactly" means the same tokens but logits equal only up to rounding;
# - a client that walks away in the middle of a stream, and its rows freed at the next step.

# %%
from course_utils import config, plots, timing

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
print(timing.machine_line())   # section 2 times the engine's pieces
config.seed_everything(0)

# %% [markdown]
# ## 1. The model
#
# The pretrained news GPT of chapter 05, from the cache (or trained now if it is missing), as in
# chapter 12.

# %%
import statistics

import pandas as pd
import torch

from course_utils import artifacts, batching, sampling
from course_utils.attention import StaticKVCache
from course_utils.decoding import decode_step

model, vocab, info = artifacts.pretrained_lm(profile)
print(f"{model.num_parameters():,} parameters, block_size {model.config.block_size}, "
      f"{model.config.n_layers} layers")

# %% [markdown]
# ## 2. Choosing the next token, for many requests at once
#
# Not everything can be shared. A request that *samples* draws its next token from its own
# filtered distribution with its own random generator (chapter 08's `sample_next`: top-k and
# top-p, a softmax, then `sampling.draw`: one uniform number per row, compared with the
# cumulative probabilities). The filtering works row by row, so the rows of all requests with
# the same settings can be filtered in one call and each row still gets exactly the
# probabilities it gets alone. Only the uniform numbers must come from each request's own
# generator, or its text would depend on who else was in the batch; the cumulative sums and
# the search then run for all rows at once (`draw(probs, u=...)`). Here is what choosing one
# token costs for 16 requests, each alone and together, timed side by side (interleaved
# rounds, on one thread like the service) with the shared decode step for the same 16 rows:

# %%
ROWS, REPEATS = 16, 50
cfg = model.config
shape = (ROWS, cfg.n_heads, cfg.block_size, cfg.d_model // cfg.n_heads)
cache16 = [StaticKVCache.wrap(torch.zeros(shape), torch.zeros(shape)) for _ in model.blocks]
token16, pos16 = torch.randint(3, len(vocab), (ROWS, 1)), torch.randint(0, cfg.block_size, (ROWS,))
logits16 = torch.randn(ROWS, len(vocab))
generators = [torch.Generator().manual_seed(i) for i in range(ROWS)]
DEFAULT = dict(temperature=0.8, top_k=40, top_p=0.9)           # the service's default sampler


def each_alone(**settings):      # chapter 08's sample_next, request by request
    for i, g in enumerate(generators):
        sampling.sample_next(logits16[i:i + 1], generator=g, **settings)


def together():                  # filter and draw all rows at once; the uniforms per request
    probs = sampling.next_token_probs(logits16, **DEFAULT)
    sampling.draw(probs, u=torch.cat([sampling.uniforms(1, g) for g in generators]))


runs = {"decode step (per row)": lambda: decode_step(model, token16, pos16, cache16),
        "sampled, each alone": lambda: each_alone(**DEFAULT), "sampled, together": together,
        "greedy (argmax), each alone": lambda: each_alone(temperature=0)}
with torch.inference_mode():
    seconds = timing.time_interleaved({name: (lambda fn=fn: [fn() for _ in range(REPEATS)])
                                       for name, fn in runs.items()}, repeats=7, threads=1)
ms = {name: [1000 * s / REPEATS / ROWS for s in secs] for name, secs in seconds.items()}  # per request
row_ms = statistics.median(ms["decode step (per row)"])
choose = pd.DataFrame({"ms per request": {n: statistics.median(v) for n, v in ms.items()},
                       "fastest-slowest round": {n: f"{min(v):.3f}-{max(v):.3f}" for n, v in ms.items()},
                       "of a row's decode step": {n: f"{statistics.median(v) / row_ms:.0%}" for n, v in ms.items()}})
print("torch threads: 1 (as each server process of chapter 12)")
choose.round(3)

# %%
alone, shared = seconds["sampled, each alone"], seconds["sampled, together"]
ratios = [a / t for a, t in zip(alone, shared, strict=True)]
print(f"sampled together vs each alone: {timing.paired_ratio(alone, shared)} less time per request")
config.claim(f"choosing sampled tokens together costs less per request than each alone, in every "
             f"one of {len(ratios)} rounds (x{min(ratios):.1f} at least)", min(ratios) > 1)
config.claim("a greedy choice costs less than a sampled one made together (medians "
             f"{choose.loc['greedy (argmax), each alone', 'ms per request']:.3f} and "
             f"{choose.loc['sampled, together', 'ms per request']:.3f} ms)",
             choose.loc["greedy (argmax), each alone", "ms per request"]
             < choose.loc["sampled, together", "ms per request"])

# %% [markdown]
# Choosing a sampled token request by request costs the share of a row's decode step printed in
# the table's last column; together it costs less per request, in every round (the first claim),
# and a greedy choice (an `argmax`) is cheaper still (the second). So the engine filters and
# draws the rows of all requests that share their settings together. (Two choices in chapter
# 08's sampler keep this cost down: top-p after top-k sorts only the $k$ kept logits instead of
# the whole vocabulary, and `draw` takes one uniform number per row where `torch.multinomial`
# would draw one random number per vocabulary entry.) `bench/serve.py` (benchmarks appendix)
# measures greedy and sampled requests through the whole service.

# %% [markdown]
# ## 3. Dynamic batching, piece by piece
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
# ## 4. "Exactly" means the same tokens
#
# A caveat about "exactly". The tokens above are identical, but the logits are identical only up
# to rounding: the matrix-multiply kernel sums in an order that depends on how many rows it is
# given, so a row's logits in a batch of 16 differ from its logits alone in the last digits that
# float32 keeps (the claim below prints by how much). A token changes only if two candidates are
# that close, or a random draw falls that close to a boundary; `sampling.generate` itself has
# the same property (its `samples` rows are a batch too). Measured:

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
config.claim(f"a row's logits in a batch of 16 differ from its logits alone by rounding only "
             f"({rel:.1e} of the largest logit)", rel < 1e-5)

# %% [markdown]
# ## 5. A client that leaves frees its rows
#
# Chapter 12's service checks every quarter of a second whether a waiting client is still
# connected; when it is not, the handler cancels its job and the worker takes the job's group
# out of the engine before the next step (`BatchEngine.remove`), so its slots serve the next
# request. A batching server, a request for 16 samples of 512 characters at a high temperature
# (far more work than it can finish quickly), and a client that reads the first event and
# hangs up:

# %%
import asyncio

from aiohttp import ClientSession

from course_utils import serve_tools

server = serve_tools.ServerProcess(profile.name, threads=1)
long = {"context": "中国", "maxlength": 512, "samples": 16, "temperature": 2.0, "top_k": None,
        "top_p": None, "seed": 0}
async with ClientSession() as session:
    resp = await session.post(server.url + "/generate", json={**long, "stream": True})
    await resp.content.readline()                      # the first event: generation is under way
    during = await (await session.get(server.url + "/health")).json()
    resp.close()                                       # the client goes away
    for _ in range(400):
        after = await (await session.get(server.url + "/health")).json()
        if after["rows_in_use"] == 0:
            break
        await asyncio.sleep(0.05)
print(f"rows in use while it streamed: {during['rows_in_use']}; after the client left: "
      f"{after['rows_in_use']} (requests cancelled: {after['cancelled']})")
assert during["rows_in_use"] == long["samples"] and after["rows_in_use"] == 0
assert server.stop() == 0

# %% [markdown]
# > **Pitfalls.**
# > - **Batching that changes the answers.** Sampling the whole batch with one generator,
# >   applying the repetition penalty across requests, or splitting a request's samples
# >   between batches gives each request a different text than it gets alone, and breaks the
# >   `seed` contract silently. Keep a request's rows together, with their own generator.
# > - **"Identical" means up to rounding** (section 4): a batched matrix multiply sums in a
# >   different order, so logits differ in their last digits; compare tokens, and do not
# >   promise bit-identical logits across batch sizes.
# > - **Stale cache rows.** A slot keeps whatever its last request wrote beyond the new
# >   request's position; the per-row mask (positions $0..p_b$ only) is what makes reusing it
# >   safe. A mask with one length for the whole batch would let a shorter row attend to the
# >   stale keys an earlier request left in its slot.
# > - **Abandoned work.** A request whose client has gone still costs a share of every step
# >   until its rows are freed: check the connection while waiting, and free the rows (section 5).
#
# ## Summary
#
# - The engine (`course_utils.batching.BatchEngine`) keeps one preallocated KV cache with a
#   slot per sample; each step prefills the requests that are new (or whose window slid)
#   together, runs ONE shared `decode_step` for all the others, each row at its own position,
#   and draws the tokens of all requests with the same sampler settings in one call, each with
#   its own generator's uniform numbers.
# - A request (`Group`) keeps its rows in lockstep and is decoded exactly as
#   `sampling.generate` decodes it alone: requests joining and leaving at different steps
#   got the same tokens as alone, and the same logits up to rounding.
# - Choosing tokens together cost less per request than one request at a time, in every
#   timed round; a client that leaves frees its rows at the next step.
#
# Back to [chapter 12](12_serving.ipynb), section 7: the service under load, where these pieces
# turn more clients into bigger batches.
