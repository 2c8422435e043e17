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
# # 08a · Going further: compiled and frozen decoding
#
# Chapter 08 built a KV cache and checked that it gives the tokens of recomputation, window
# slide included. This notebook assumes that chapter (its section 8: the cache, `generate(...,
# use_cache=...)`, the window that slides by `block_size // 2`) and asks how fast decoding is,
# and why. A cached step of our small model turns out to be mostly fixed cost, not arithmetic;
# so the next gains come from a compiler, not from doing less arithmetic. `course_utils.decoding`
# holds the machinery: a one-token step written in fixed shapes, `generate(..., compiled=True)`
# which compiles it with `torch.compile`, and `compiled="frozen"`, which also freezes the weights
# into the compiled code. Nothing here is needed for the rest of the book; chapter 12's server
# and chapter 13's export call the same step.
#
# **Learning goals**
#
# - time the KV cache against recomputation at growing lengths, in interleaved repeats;
# - see that a cached step of a small model is mostly fixed cost;
# - write a decode step in fixed shapes, so that `torch.compile` builds one graph for every step;
# - compile it, freeze the weights into it, and check that both give the tokens of recomputation;
# - know what freezing costs: compilation time, and a compiled copy that goes stale when the
#   weights change (and how `generate` notices).

# %%
from course_utils import config, plots, timing

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
print(timing.machine_line())   # this notebook times decoding
config.seed_everything(0)

# %%
import copy
import statistics
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch
from tqdm.auto import tqdm

from course_utils import artifacts, decoding, sampling

model, vocab, info = artifacts.pretrained_lm(profile, device="cpu")   # compiled here for the CPU
block_size = model.config.block_size
prompt = torch.tensor([vocab.encode("中国人民")])
print(f"{model.num_parameters():,} parameters, block_size={block_size}; prompt {prompt.tolist()}")


def greedy(m, n, **settings):
    """n greedy tokens after the prompt (chapter 08's `generate`)."""
    return sampling.generate(m, prompt, n, temperature=0, **settings)


# %% [markdown]
# ## 1. The cache against recomputation, length by length
#
# Without a cache, step $t$ runs the model over up to `block_size` positions; with it, over
# one. We time greedy generation (batch 1) at growing lengths, both ways, on one CPU thread (at
# batch 1 this model's matrices are small, and one thread gives steadier numbers when other
# programs share the machine). The two are timed in interleaved repeats: the order alternates
# every repeat, so a busy moment hits both, and each speed-up is the ratio of one pair of runs,
# given with its range over the repeats.

# %%
lengths = [16, 32, 64, 128, 256]
rows = []
for n in tqdm(lengths, desc="lengths"):
    s = timing.time_interleaved({"KV cache": lambda n=n: greedy(model, n),
                                 "recompute": lambda n=n: greedy(model, n, use_cache=False)},
                                repeats=3, threads=1)
    ratios = sorted(r / c for r, c in zip(s["recompute"], s["KV cache"], strict=True))
    rows.append({"new tokens": n, "KV cache (tokens/s)": n / min(s["KV cache"]),
                 "recompute (tokens/s)": n / min(s["recompute"]), "speed-up (median)": statistics.median(ratios),
                 "lowest": ratios[0], "highest": ratios[-1]})
speed = pd.DataFrame(rows).set_index("new tokens")
print("tokens per second: the best of 3 repeats, on 1 CPU thread")
medians = speed["speed-up (median)"]
config.claim(f"the cache was faster at every length, by x{medians.min():.2f} to x{medians.max():.2f} "
             f"(medians of the repeats)", bool((medians > 1).all()))
speed.round(2)

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
ax1.plot(speed.index, speed["KV cache (tokens/s)"], "o-", label="KV cache")
ax1.plot(speed.index, speed["recompute (tokens/s)"], "s-", label="recompute")
ax1.set(xscale="log", xlabel="new tokens", ylabel="tokens per second", title="Generation speed (1 thread)")
ax1.set_xscale("log", base=2)
ax1.legend()
ax2.plot(speed.index, speed["speed-up (median)"], "o-", color="C2", label="median of the repeats")
ax2.fill_between(speed.index, speed["lowest"], speed["highest"], color="C2", alpha=0.2, label="range")
ax2.axvline(block_size, color="grey", ls="--", label=f"block_size = {block_size}")
ax2.set_xscale("log", base=2)
ax2.set(xlabel="new tokens", ylabel="KV cache / recompute (x)", title="Speed-up of the KV cache")
ax2.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The cache wins at every length (the claim; the table gives the range of each ratio over the
# repeats), but by far less than the arithmetic suggests. Recomputing step $t$ costs about $t$
# times the arithmetic of a cached step: dozens of times more once the text is a few dozen
# tokens long, while the medians the claim prints are a small multiple. Past `block_size` the
# recomputing path never reads more than `block_size` positions per step, while the cache pays
# for a prefill each time the window slides, so there the ratio can only creep towards a
# ceiling, not grow with the length. But why is it so small even where it should be largest?
#
# ## 2. Where a cached step's time goes
#
# A forward pass over 1 position and one over `block_size` positions differ in arithmetic by a
# factor `block_size`. If the time were arithmetic, the times would differ by that factor too:

# %%
one = timing.forward_ms(model, prompt[:, :1], repeats=20, threads=1)
full = timing.forward_ms(model, torch.randint(3, len(vocab), (1, block_size)), repeats=20, threads=1)
print(f"one forward pass, batch 1, 1 thread: {one:.3f} ms over 1 position, {full:.3f} ms over "
      f"{block_size} (x{full / one:.1f} the time for x{block_size} the arithmetic)")
config.claim(f"{block_size} positions cost less than a quarter of {block_size} times one position "
             f"(x{full / one:.1f})", full / one < block_size / 4)

# %% [markdown]
# They do not: most of a one-position forward pass is fixed cost, paid whatever the number of
# positions. That is the Python of each module's `forward`, the dispatch of a few dozen small
# PyTorch operations (each a function call through several layers of C++ before any
# arithmetic), and the allocation of their outputs. A KV cache removes arithmetic, not calls, so
# it cannot remove that cost; a compiler can. (Chapter 09's [Going further](09a_where_the_time_goes.ipynb)
# lists a step's time operator by operator with `torch.profiler`.)
#
# ## 3. A step in fixed shapes, compiled
#
# `torch.compile` traces a function into a graph and has Inductor generate fused C++ kernels
# for it; the compiled code is reused as long as its inputs keep the shapes it was compiled
# for. Chapter 08's inline cache grew with `torch.cat` (a new shape every step), which would
# mean a new compilation per step. `course_utils` preallocates instead: `model.new_cache()`
# gives one `StaticKVCache` per block, buffers for `block_size` positions written in place, and
# `decoding.decode_step(model, token, pos, cache)` runs one token at position `pos` (a 0-d
# tensor) through the model's own blocks, attending over the buffer up to `pos`. Every input
# has the same shape at every step:

# %%
cache = model.new_cache()
with torch.no_grad():
    logits_prefill = decoding.prefill(model, prompt, cache)          # the prompt, once
    token = logits_prefill.argmax(-1, keepdim=True)
    shapes = []
    for _ in range(3):
        pos = torch.tensor(len(cache[0]))
        logits = decoding.decode_step(model, token, pos, cache)
        for c in cache:                  # the step wrote one more position
            c.length += 1
        shapes.append((tuple(token.shape), tuple(pos.shape), tuple(cache[0].k_buf.shape)))
        token = logits.argmax(-1, keepdim=True)
for step, (t, p, k) in enumerate(shapes):
    print(f"step {step}: token {t}, pos {p}, layer-0 key buffer {k}; {len(cache[0]) - 3 + step} filled before")
assert len(set(shapes)) == 1, "the same shapes at every step: one compiled graph serves them all"

# %% [markdown]
# `torch._dynamo.explain` traces the step without running the compiled code, and reports how
# many graphs it got and how many *graph breaks* (places where tracing stops and Python takes
# over) split them. `decoding.explain_decode_step(model)` runs it on one step:

# %%
explained = decoding.explain_decode_step(model)
print(f"decode_step: {explained.graph_count} graph, {explained.graph_break_count} graph breaks, "
      f"{explained.op_count} operations traced")
assert explained.graph_count == 1 and explained.graph_break_count == 0

# %% [markdown]
# `generate(..., compiled=True)` uses that compiled step, with Inductor's `cpp_wrapper`, which
# launches the step's kernels from C++ instead of from Python. A window slide refills the cache
# from the last `block_size // 2` tokens, always the same number, so that prefill is compiled
# too, as one more graph. Compiling takes seconds, once per shape; we time the first call, which
# compiles, then check the tokens over four context windows against recomputation.

# %%
n_long = 4 * block_size
t0 = time.perf_counter()
compiled_out = greedy(model, n_long, compiled=True)
compile_s = time.perf_counter() - t0
recomputed = greedy(model, n_long, use_cache=False)
agree = int((compiled_out == recomputed).sum()) - prompt.size(1)
print(f"first compiled call (compiles the step and the slide's prefill): {compile_s:.1f} s")
print(f"compiled step against recomputation: {agree} of {n_long} new tokens agree")
config.claim(f"the compiled step gives the tokens of recomputation ({agree} of {n_long})",
             torch.equal(compiled_out, recomputed))

# %% [markdown]
# ## 4. Freezing the weights in
#
# A compiled step still reads the weights as inputs, as if they could change between calls.
# For a model that is done training, Inductor's *freezing* turns them into constants of the
# compiled code. Knowing each matrix ahead of time, it can lay it out in advance, and with
# `max_autotune` time, for every matrix product, a micro-GEMM it generates for exactly that
# shape against MKL's prepacked GEMM, and keep the faster. `compiled="frozen"` does this, with
# these Inductor settings (read while Dynamo traces, so `decoding` sets them around each
# compiling call):

# %%
print(decoding.FREEZING_SETTINGS)
t0 = time.perf_counter()
frozen_out = greedy(model, n_long, compiled="frozen")
freeze_s = time.perf_counter() - t0
agree = int((frozen_out == recomputed).sum()) - prompt.size(1)
print(f"first frozen call (freezes, autotunes and compiles): {freeze_s:.1f} s, against {compile_s:.1f} s "
      f"without freezing; {agree} of {n_long} new tokens agree with recomputation")
config.claim(f"the frozen step gives the tokens of recomputation ({agree} of {n_long})",
             torch.equal(frozen_out, recomputed))

# %% [markdown]
# ## 5. When the weights change
#
# A frozen copy is stale the moment the weights change: its constants are the old weights. And
# the checks that decide whether compiled code can be reused (Dynamo's *guards*) look at the
# inputs' shapes, not at the weights' values, so another model of the same shape would pass
# them too. `generate` therefore keeps one frozen copy per model (`decoding.frozen_copy`, each
# compiled from a fresh copy of the step's code), tagged with each weight's address and
# *version counter*: every in-place update of a tensor (an optimizer step, `load_state_dict`,
# `p.add_`) bumps `p._version`. When the tag no longer matches, it compiles again. We watch
# the tag on a copy of the model whose final LayerNorm scales we change:

# %%
twin = copy.deepcopy(model)
w = twin.ln_f.weight                                 # the final LayerNorm's scales
scales = torch.rand(w.shape, generator=torch.Generator().manual_seed(0)) + 0.5
first = decoding.frozen_copy(twin)
print(f"same weights, same frozen copy: {decoding.frozen_copy(twin) is first}; version of w: {w._version}")
with torch.no_grad():
    w.mul_(scales)                                   # an in-place update: the version goes up
second = decoding.frozen_copy(twin)
print(f"after an in-place update: version {w._version}, a new frozen copy: {second is not first}")
w.data.mul_(scales)                                  # through .data: no version bump
print(f"after an update through .data: version {w._version}, "
      f"a new frozen copy: {decoding.frozen_copy(twin) is not second}")
assert second is not first and decoding.frozen_copy(twin) is second

# %% [markdown]
# The last line is a trap: `p.data` is a view of the same storage that autograd, and with it
# the version counter, does not track. An update through it leaves the tag unchanged, so a
# frozen copy compiled between the two updates would still hold the weights of the first.
# Update weights in place under `torch.no_grad()`, or with `load_state_dict`, and the frozen
# path follows (`tests/test_decoding.py` checks that the recompiled copy gives the new weights'
# tokens). The twin and the model, of the same shapes, have frozen copies of their own:

# %%
print(f"the twin's frozen copy is the model's: {decoding.frozen_copy(twin) is decoding.frozen_copy(model)}")
assert decoding.frozen_copy(twin) is not decoding.frozen_copy(model)

# %% [markdown]
# ## 6. Side by side
#
# Eager cache, compiled step, frozen step and recomputation, all now compiled, timed on the
# same `4 * block_size` greedy tokens in 7 interleaved repeats on one thread. Each ratio is
# that of one pair of runs from the same repeat, given with its range.

# %%
runs = {"KV cache, frozen": lambda: greedy(model, n_long, compiled="frozen"),
        "KV cache, compiled": lambda: greedy(model, n_long, compiled=True),
        "KV cache, eager": lambda: greedy(model, n_long),
        "recompute": lambda: greedy(model, n_long, use_cache=False)}
seconds = timing.time_interleaved(runs, repeats=7, threads=1)
table = pd.DataFrame({name: {"ms per token (median)": 1000 * statistics.median(s) / n_long,
                             "tokens/s (median)": n_long / statistics.median(s),
                             "x eager cache (per repeat)": timing.paired_ratio(seconds["KV cache, eager"], s)}
                      for name, s in seconds.items()}).T


def ratios(slow, fast):
    """The per-repeat ratios slow / fast: how many times faster `fast` ran, repeat by repeat."""
    return [a / b for a, b in zip(seconds[slow], seconds[fast], strict=True)]


by_compiling = ratios("KV cache, eager", "KV cache, compiled")
by_freezing = ratios("KV cache, compiled", "KV cache, frozen")
per_token_ms = table["ms per token (median)"].astype(float)
saved_ms = per_token_ms["KV cache, eager"] - per_token_ms["KV cache, compiled"]     # per token, by compiling
print(f"{n_long} greedy tokens, batch 1, 1 thread; compiling took {compile_s:.1f} s, freezing {freeze_s:.1f} s; "
      f"at {saved_ms:.2f} ms saved per token, compiling pays for itself after "
      f"{1000 * compile_s / max(saved_ms, 1e-6):,.0f} tokens")
print(f"frozen against compiled: x{min(by_freezing):.2f} to x{max(by_freezing):.2f} per repeat: "
      + ("faster in every repeat" if min(by_freezing) > 1 else "slower in every repeat" if max(by_freezing) < 1
         else "within the spread of the repeats"))
config.claim(f"the compiled step was faster than the eager one in every repeat (x{min(by_compiling):.2f} to "
             f"x{max(by_compiling):.2f})", min(by_compiling) > 1)
f_med, c_med = statistics.median(by_freezing), statistics.median(by_compiling)
config.claim(f"freezing changed the speed less than compiling did: x{f_med:.2f} over the compiled step, against "
             f"x{c_med:.2f} for compiling over eager (medians)", max(f_med, 1 / f_med) < c_med)
table

# %%
fig, ax = plt.subplots(figsize=(8, 3))
medians = [1000 * statistics.median(s) / n_long for s in seconds.values()]
spread = [[m - 1000 * min(s) / n_long for m, s in zip(medians, seconds.values(), strict=True)],
          [1000 * max(s) / n_long - m for m, s in zip(medians, seconds.values(), strict=True)]]
ax.barh(list(seconds), medians, xerr=spread, color=["C2", "C1", "C0", "C7"], capsize=4)
ax.invert_yaxis()
ax.set(xlabel="milliseconds per generated token (median; bars: fastest to slowest repeat)",
       title=f"Greedy decoding of {n_long} tokens, batch 1, 1 CPU thread")
plt.tight_layout()
plt.show()

# %% [markdown]
# Compiling removes a good part of the per-step fixed cost that section 2 measured: the compiled
# step was faster than the eager one in every repeat (the first claim), by the ratio the table
# gives. Its kernels are fused loops with no Python in between, and `cpp_wrapper` launches them
# from C++. Freezing changes the speed less than compiling does (the second claim), and not
# always for the better. The work it removes (reading the weights as inputs, laying matrices
# out, the choice of GEMM) is a small share of a step, and the autotuner's choice is itself a
# timing taken while compiling, so a busy machine can make it choose worse: from one run to the
# next, the frozen step can come out faster than the compiled one, slower, or level with it. The
# second printed line gives this run's verdict, from the range of the repeats. Both cost
# compilation time, once per model and shape: seconds of compiling against about a millisecond
# or less saved per token, so the compiled step must generate many tokens to earn it back
# (the first line says how many). They pay for a service, or any process that generates for
# long, not for one short reply.
# `bench/generation.py` repeats the comparison for the [benchmarks appendix](../book/benchmarks.md).
#
# > **Pitfalls.**
# > - *Compilation is not free.* The first call compiles (seconds; longer when frozen,
# >   as printed above), and every new shape (another batch size) means another graph; a
# >   prompt's prefill runs eagerly. Time the steady state apart from the first call.
# > - *A frozen copy is stale once the weights change.* `generate` compiles again after any
# >   in-place update or `load_state_dict`; an update through `p.data` escapes the version
# >   counter, and with it that check.
# > - *Guards check shapes, not values*: two models of the same shape must not share compiled
# >   code with frozen weights (`decoding` gives each model its own copy).
# > - *No C++ compiler, no `torch.compile`*: `generate` then says so once and decodes eagerly.
# > - *Timings on a shared machine jitter.* Interleave the variants, repeat, and read the range
# >   of the ratios, not one run.
#
# ## Summary
#
# - The KV cache is faster than recomputation at every length we timed, but a cached step of
#   this small model is mostly fixed cost: Python, dispatch and allocation, not arithmetic.
# - `decoding.decode_step` runs one token in fixed shapes over a preallocated `StaticKVCache`,
#   so `torch.compile` builds one graph without breaks; `generate(..., compiled=True)` uses
#   it, with the slide's prefill compiled too, and gives the tokens of recomputation.
# - `compiled="frozen"` freezes the weights into the compiled code, and autotunes each matrix
#   product: a smaller change than compiling, and not always a gain; `generate` recompiles
#   when a weight's version counter or address changes.
# - Chapter 09's [Going further](09a_where_the_time_goes.ipynb) profiles a step operator by
#   operator, and compiles int8 layers into it; chapter 12's batching engine calls
#   `decode_step` with one position per row.
