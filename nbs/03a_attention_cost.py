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
# # 03a · Going further: what attention costs
#
# Chapter 03 stated attention's price in one paragraph: per head, two products of $T^2 d_k$
# multiply-adds each and a $T\times T$ matrix of weights, so doubling the context
# quadruples both. This deep dive puts numbers on that sentence. It assumes chapter 03:
# `course_utils.attention.attention` (the explicit formula, which writes the weights out),
# `causal_mask`, and PyTorch's fused `F.scaled_dot_product_attention`, which computes the
# same result without ever holding the whole matrix. Nothing later in the book depends on
# it; it is for the reader who wants to know where the time and the memory go.
#
# **Learning goals**
#
# - count the multiply-adds of a GPT layer, check the count with PyTorch's FLOP counter,
#   and find the length where attention's two products overtake the rest of the layer;
# - time the explicit and the fused attention against $T$, interleaved, and read the spread;
# - explain why the explicit version slows down faster than its work grows, and what the
#   fused kernel saves and what it does not;
# - compute the memory of the score matrix for a batch.

# %%
from course_utils import config, plots, timing

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
print(timing.machine_line())   # this notebook times things
config.seed_everything(0)

# %% [markdown]
# ## 1. Counting the work
#
# For one head, $Q$ and $K$ are $T\times d_k$. The scores $QK^\top$ are $T^2$ dot products of
# length $d_k$: $T^2 d_k$ multiply-adds. The output, weights ($T\times T$) times $V$
# ($T\times d_k$), is $T d_k$ sums over $T$ keys: another $T^2 d_k$. Over $H$ heads with
# $H d_k = d$ that is $2T^2 d$ per layer. Everything else in a layer is linear in $T$: the
# $Q, K, V$ projection ($3Td^2$), the output projection ($Td^2$) and the MLP
# ($2Td\,d_\text{ff}$), $12\,Td^2$ together when $d_\text{ff} = 4d$. The ratio of the two is
# $2T^2d / 12Td^2 = T/6d$: attention's products are the smaller part below $T = 6d$.
#
# PyTorch's `FlopCounterMode` counts the floating-point operations (2 per multiply-add) of
# every matrix product a forward pass runs. We count one explicit block
# (`course_utils.model.Block` with `fused_attention=False`) of the course's width (the `gpu`
# profile: $d$ = 256, 8 heads, $d_\text{ff}$ = 1024) on one sequence of $T$ tokens:

# %%
# NBVAL_CHECK_OUTPUT
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from course_utils.model import Block, GPTConfig

course = config.get_profile("gpu")
d, d_ff = course.d_model, course.d_ff
settings = course.model_kwargs() | dict(dropout=0.0, fused_attention=False)
block = Block(GPTConfig(vocab_size=1, **settings)).eval()
lengths = [128, 256, 512, 1024, 2048]
rows = []
for T in lengths:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        block(torch.randn(1, T, d))
    macs = {str(op): n // 2 for op, n in counter.get_flop_counts()["Global"].items()}
    rows.append(dict(T=T, linear_layers=macs["aten.addmm"], attention_products=macs["aten.bmm"]))
work = pd.DataFrame(rows).set_index("T")
assert (work.linear_layers == [(4 * d * d + 2 * d * d_ff) * T for T in lengths]).all()
assert (work.attention_products == [2 * T * T * d for T in lengths]).all()
work["products / linear"] = (work.attention_products / work.linear_layers).round(3)
print("multiply-adds of one block, one sequence (d = 256, d_ff = 1024):")
print(work.to_string())

# %% [markdown]
# The counter agrees with the formulas to the last multiply-add (the asserts above). At the
# `gpu` profile's context, $T = 128$ (the book's choice: the source material fixes none), the two products are $T/6d = 1/12$ of the block's matrix
# work; they equal the rest at $T = 6d = 1536$ and pass it beyond. Two details the count
# makes plain. First, the causal mask does not halve the explicit version's work: it
# computes all $T^2$ scores and then throws the upper half away. Second, a FLOP counter
# counts only the operators it knows. Here is what it sees in PyTorch's fused kernel, which
# does the same products:

# %%
import torch.nn.functional as F

q, k, v = torch.randn(3, 1, course.n_heads, 512, d // course.n_heads).unbind(0)
with FlopCounterMode(display=False) as counter, torch.no_grad():
    F.scaled_dot_product_attention(q, k, v, is_causal=True)
seen = counter.get_total_flops()
print(f"FLOPs counted in F.scaled_dot_product_attention at T = 512 on the CPU: {seen:,} "
      f"(the explicit products: {4 * 512 * 512 * d:,})")
config.claim(f"the FLOP counter sees none of the fused kernel's work ({seen} FLOPs counted)", seen == 0)

# %% [markdown]
# The counter has no formula for the kernel PyTorch runs on the CPU (a flash-attention
# kernel for CPUs), so it counts nothing; the work is done all the same. Count work with
# the explicit version, or with formulas like the ones above.
#
# ## 2. Timing against the sequence length
#
# Work is not time. We time the explicit `attention` (with `causal_mask(T)`) and the fused
# kernel (`is_causal=True`) on one sequence with the profile's heads, on one CPU thread.
# `timing.time_interleaved` times the two in rounds, alternating their order, so a slow
# moment of the machine hits both; each timed run repeats the call enough times to last
# tens of milliseconds, and we report the median per call and the per-round ratios (their
# median and range). We also read the size of the `(B, H, T, T)` weight tensor the
# explicit version returns.

# %%
import numpy as np
from tqdm.auto import tqdm

from course_utils.attention import attention, causal_mask

n_heads, hd, rounds = profile.n_heads, profile.d_model // profile.n_heads, 9


def runs_for(T):
    """The two versions at length T, each repeated `calls` times per timed run."""
    q, k, v = torch.randn(3, 1, n_heads, T, hd).unbind(0)
    mask, calls = causal_mask(T), max(1, 2**22 // T**2)

    def explicit():
        for _ in range(calls):
            attention(q, k, v, mask)

    def fused():
        for _ in range(calls):
            F.scaled_dot_product_attention(q, k, v, is_causal=True)

    weights = attention(q, k, v, mask)[1]
    return calls, weights.numel() * weights.element_size() / 2**20, {"explicit": explicit, "fused": fused}


rows, ratios = [], {}
with torch.no_grad():
    for T in tqdm(lengths, desc="timing"):
        calls, score_mib, runs = runs_for(T)
        sec = timing.time_interleaved(runs, rounds, threads=1)
        ratios[T] = [e / f for e, f in zip(sec["explicit"], sec["fused"], strict=True)]
        rows.append(dict(T=T, score_MiB=score_mib, explicit_ms=1e3 * np.median(sec["explicit"]) / calls,
                         fused_ms=1e3 * np.median(sec["fused"]) / calls,
                         fused_faster_by=timing.paired_ratio(sec["explicit"], sec["fused"])))
cost_df = pd.DataFrame(rows).set_index("T")
print(f"{n_heads} heads of {hd}, 1 torch thread, {rounds} interleaved rounds, median ms per call:")
cost_df.round(2)

# %% [markdown]
# How fast does each column grow? A straight line on log-log axes has the growth exponent
# as its slope ($T^2$ gives 2); we fit it from $T = 256$ on, where fixed per-call costs
# matter less, and print the factor from one length to the next (doubling $T$ multiplies a
# $T^2$ cost by 4):

# %%
cols = ["score_MiB", "explicit_ms", "fused_ms"]
big = cost_df[cost_df.index >= 256]
slope = {c: float(np.polyfit(np.log(big.index), np.log(big[c]), 1)[0]) for c in cols}
factor = (cost_df[cols] / cost_df[cols].shift(1)).iloc[1:]
median_ratio = {T: float(np.median(r)) for T, r in ratios.items()}
print("log-log slopes (T >= 256):", {c: round(s, 2) for c, s in slope.items()})
print("factor per doubling of T:\n", factor.round(1).to_string())
assert (factor.score_MiB == 4).all()
longest, least = max(lengths), min(median_ratio.values())
config.claim(f"the fused kernel was faster at every length (median per-round ratio ×{least:.2f} "
             f"or more)", least > 1)
config.claim(f"its advantage is largest at the longest sequence, and over ×4 there (median "
             f"×{median_ratio[longest]:.1f} at T = {longest})",
             max(median_ratio, key=median_ratio.get) == longest and median_ratio[longest] > 4)
config.claim(f"the explicit version's time per doubling is larger at the longest sequences than "
             f"at the shortest (×{factor.explicit_ms.iloc[-1]:.1f} against ×{factor.explicit_ms.iloc[0]:.1f})",
             factor.explicit_ms.iloc[-1] > factor.explicit_ms.iloc[0])
config.claim(f"the fused kernel's fitted slope is the lower one ({slope['fused_ms']:.2f} against "
             f"{slope['explicit_ms']:.2f})", slope["fused_ms"] < slope["explicit_ms"])

# %%
import matplotlib.pyplot as plt

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
ax1.loglog(cost_df.index, cost_df.explicit_ms, "o-", label="explicit attention")
ax1.loglog(cost_df.index, cost_df.fused_ms, "s-", label="F.scaled_dot_product_attention")
ref = cost_df.explicit_ms.iloc[-1] * (cost_df.index / longest) ** 2
ax1.loglog(cost_df.index, ref, "k:", label="∝ T² (reference)")
ax1.set(title=f"time of one attention call ({n_heads} heads, 1 thread)",
        ylabel="median time per call (ms)")
ax1.legend(fontsize=8)
ax2.loglog(cost_df.index, cost_df.score_MiB, "o-", color="C3")
ax2.set(title="memory of one (B, H, T, T) float32 weight tensor", ylabel="MiB")
for ax in (ax1, ax2):
    ax.set_xticks(lengths, [str(T) for T in lengths])
    ax.minorticks_off()
    ax.set_xlabel("sequence length T")
fig.tight_layout()
plt.show()

# %% [markdown]
# The memory grows by exactly 4× per doubling: the weights are $B\cdot H\cdot T^2 \cdot 4$
# bytes, and the explicit version creates four tensors of that size per call (the product
# $QK^\top$, its scaled copy, the masked scores and the weights). Its time per doubling is
# larger at the longest sequences than at the shortest (the claim above), although its
# multiply-adds grow by exactly 4 at every doubling (section 1): what changes with $T$ is
# memory, not arithmetic. Each of those tensors, many MiB at the longest lengths (the
# `score_MiB` column), is allocated, written and read back: far more than a core's private
# caches (a few MiB) hold. The fused kernel works on tiles that stay in cache and never
# writes the matrix out. It can also skip the tiles that lie wholly above the causal
# diagonal, at most half of the products, so that accounts for a factor of 2 at most: its
# lead at the longest sequence is over 4 (the claims above, with the spread of the rounds
# in the table), and the rest is the memory traffic it avoids. Its fitted slope is the
# lower one (the claim above), but a slope fitted over four lengths describes those
# lengths, not the limit: the fused kernel does not escape the quadratic, since it still
# computes every allowed score, at least $T(T+1)/2$ per head. Read the trend, not the last
# digit: the table and the machine line at the top say what these numbers were measured on.
#
# ## 3. The memory of the score matrix
#
# On a GPU the fused kernel's memory saving matters even more than its speed: it is why
# long contexts fit at all. For the explicit version, one layer's weights take
# $4\,B H T^2$ bytes in float32, kept for the backward pass when training. The contexts in
# this book are short:

# %%
# NBVAL_CHECK_OUTPUT
longest_context = max(p.block_size for p in config.PROFILES.values())
per_head = longest_context**2 * 4
print(f"longest context of any profile: {longest_context} tokens -> "
      f"{per_head / 2**10:.0f} KiB of float32 weights per head and sequence")
assert per_head == 64 * 2**10

# %% [markdown]
# At this size the quadratic term is cheap, as section 1 counted. The exercise scales it up
# to a whole training batch and to a long context.
#
# > **Pitfalls.**
# > - *Reading work as time.* At long sequences the explicit version's time grows faster
# >   than its work: how much memory it allocates and moves decides as much as the
# >   multiply-adds do (section 2).
# > - *Trusting a FLOP counter blindly.* It counts only the operators it has formulas for; a
# >   fused kernel can count as 0 (section 1).
# > - *Expecting the causal mask to save work.* The explicit version computes every score
# >   and masks half of them; only a kernel that skips the masked tiles saves that half.
# > - *Timing one short call.* A call at $T$ = 128 takes well under a millisecond: repeat it
# >   within each timed run, interleave the variants, and look at the spread of the rounds.

# %% [markdown]
# ## Exercises
#
# **Exercise 03a.1 (the memory of the score matrix).** Write `score_bytes(batch, n_heads, T,
# dtype)`: the bytes of one layer's `(batch, n_heads, T, T)` score tensor
# (`torch.empty((), dtype=dtype).element_size()` gives the bytes per entry). Then use it: how
# much does one layer's score matrix take for the course's batches (32 sequences, 8 heads,
# $T$ = 128, float32), and for the same batch with a context of 4,096 tokens?

# %%
from course_utils.exercises import ch03a


def score_bytes(batch, n_heads, T, dtype):
    raise NotImplementedError


_ = ch03a.check_score_bytes(score_bytes)


# %% tags=["hide-cell"]
def score_bytes(batch, n_heads, T, dtype):
    return batch * n_heads * T * T * torch.empty((), dtype=dtype).element_size()


_ = ch03a.check_score_bytes(score_bytes)
for T in (128, 4096):
    print(f"T = {T:>5}: {score_bytes(32, 8, T, torch.float32) / 2**20:,.0f} MiB per layer")

# %% [markdown]
# ## Summary
#
# - Per head, $QK^\top$ and the weights times $V$ cost $T^2 d_k$ multiply-adds each; the rest
#   of a layer costs $12\,Td^2$. PyTorch's FLOP counter confirms both to the last
#   multiply-add, and the products overtake the rest at $T = 6d$.
# - At the longest sequences the explicit version's time grows faster than its work: it
#   allocates, writes and reads four $T\times T$ tensors per call, and memory, not
#   arithmetic, sets the pace. The fused kernel was faster at every length we timed, most
#   of all at the longest, and is still quadratic in its work.
# - The weights take $4\,BHT^2$ bytes per layer in float32: small at this book's contexts,
#   gigabytes at thousands of tokens, which is why long-context models need fused kernels
#   and other tricks.
#
# **Back to the book:** chapter 04 builds the transformer block around
# `course_utils.attention.MultiHeadAttention`, which uses the fused kernel by default.
