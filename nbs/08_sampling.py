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
# # 08 · Sampling: from logits to text, fast
#
# Our pretrained GPT does one thing: given some characters, it outputs a score (a *logit*)
# for every character of the vocabulary that could come next. Turning those scores into
# text is a separate decision, made by a *sampler* (采样器): always take the most likely
# character (greedy), or draw at random from a reshaped distribution (temperature, top-k,
# top-p). The same model can sound dull, lively or incoherent depending on this choice alone.
# Generation is also where speed starts to matter: producing 256 characters naively means
# running the model 256 times over an ever longer input. A *KV cache* (键值缓存) removes
# most of that work. The chatbot of chapter 11 and the server of chapter 12 are built on
# exactly the `generate` function this chapter explains.
#
# **Learning goals**
#
# - turn logits into a next-token distribution and reshape it with temperature, top-k and
#   top-p, each written as an operation on *logits* followed by one softmax;
# - compare greedy decoding, sampling and beam search on the same prompts;
# - build a KV cache by hand, check that it gives the same tokens as recomputation, and
#   measure its speed-up;
# - recognise (and fix) the sampler mistakes of the source material.

# %%
from course_utils import config, plots, timing

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
config.seed_everything(0)

# %% [markdown]
# We need the model pretrained in chapter 05. `artifacts.pretrained_lm` loads it from the
# cache, or trains it (with a progress bar) if this is the first notebook you run.

# %%
import math
import re
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import HTML, display
from tqdm.auto import tqdm

from course_utils import artifacts, sampling, widgets
from course_utils.attention import attention, causal_mask

model, vocab, info = artifacts.pretrained_lm(profile)
device = next(model.parameters()).device
block_size = model.config.block_size
print(f"{model.num_parameters():,} parameters, block_size={block_size}, vocabulary {len(vocab):,}")
print(f"validation loss {info['val_loss']:.3f} nats/char "
      f"(unigram baseline {info['unigram_loss']:.3f})")

# %% [markdown]
# ## 1. From logits to a next-token distribution
#
# For a prompt $x_{1..t}$ the model returns logits $z \in \mathbb{R}^{V}$ at the last
# position, and the softmax turns them into probabilities:
#
# $$p_i = \frac{e^{z_i}}{\sum_{j=1}^{V} e^{z_j}}.$$
#
# Let us look at what the model expects after 中国人民 ("the Chinese people").

# %%
prompt = "中国人民"
idx = torch.tensor([vocab.encode(prompt)], device=device)
with torch.no_grad():
    logits = model(idx)[0][0, -1].float().cpu()   # the last position's logits, shape (V,)
probs = torch.softmax(logits, dim=-1)


def entropy(p: torch.Tensor) -> float:
    """Shannon entropy in nats (0 log 0 = 0)."""
    p = p[p > 0]
    return float(-(p * p.log()).sum()) + 0.0   # + 0.0 turns -0.0 into 0.0


print("logits:", tuple(logits.shape), "| probabilities sum to", round(float(probs.sum()), 6))
print(f"entropy {entropy(probs):.2f} nats (uniform over {len(vocab)} characters: "
      f"{math.log(len(vocab)):.2f}); top-5 hold {float(probs.topk(5).values.sum()):.1%} of the mass")
assert abs(float(probs.sum()) - 1) < 1e-5

# %%
fig, ax = plt.subplots(figsize=(9, 3))
widgets.plot_token_bars(ax, {"p(next | 中国人民)": probs}, vocab, n=20,
                        title=f"The model's next-character distribution after 「{prompt}」 (top 20)")
plt.show()

# %% [markdown]
# ## 2. Greedy decoding and temperature
#
# *Greedy* decoding takes $\arg\max_i z_i$ every time: deterministic, and prone to loops.
# *Sampling* draws from $p$. Temperature $T$ reshapes $p$ before drawing, by dividing the
# logits:
#
# $$p_i(T) = \frac{e^{z_i/T}}{\sum_j e^{z_j/T}}.$$
#
# $T<1$ sharpens the distribution (toward greedy as $T\to 0$), $T>1$ flattens it (toward
# uniform as $T\to\infty$). Temperature never changes the *order* of the tokens.

# %%
def softmax_with_temperature(logits, T):
    return torch.softmax(logits / T, dim=-1)


for T in (0.5, 1.0, 1.5):
    p = softmax_with_temperature(logits, T)
    assert torch.allclose(p, sampling.next_token_probs(logits, temperature=T), atol=1e-6)
    print(f"T={T}: entropy {entropy(p):.2f} nats, most likely token has p={float(p.max()):.3f}")

greedy_id = int(logits.argmax())
assert int(sampling.sample_next(logits[None], temperature=0)) == greedy_id  # T = 0 is greedy
print("greedy choice:", vocab.decode([greedy_id]), "| same as course_utils.sampling ✓")

# %%
fig, ax = plt.subplots(figsize=(10, 3))
widgets.plot_token_bars(ax, {"T=1 (the model)": probs,
                             "T=0.5": softmax_with_temperature(logits, 0.5),
                             "T=1.5": softmax_with_temperature(logits, 1.5)}, vocab, n=20,
                        title="Temperature: T<1 sharpens, T>1 flattens (same 20 tokens, same order)")
plt.show()

# %% [markdown]
# How is one token *drawn* from $p$? With one uniform number $u \in [0, 1)$: walk through the
# vocabulary adding up probabilities, and take the first token where the running sum exceeds
# $u$. Token $i$ is picked when $u$ falls in its slice of $[0, 1)$, whose width is $p_i$, so
# it is picked with probability $p_i$ (*inverse transform sampling*). `sampling.draw` does
# this for every row at once with `cumsum` and `searchsorted`; a seeded `torch.Generator`
# makes the draws repeatable. We check the frequencies over many draws:

# %%
def draw_one(p, u):
    """The first token whose cumulative probability exceeds u (times the total, which
    rounding leaves a hair away from 1)."""
    cumulative = torch.cumsum(p, -1)
    return int((cumulative > u * cumulative[-1]).nonzero()[0])


p = softmax_with_temperature(logits, 1.0)
g = torch.Generator().manual_seed(0)
n_draws = 20_000
ours = [draw_one(p, float(u)) for u in torch.rand(200, generator=g)]
many = sampling.draw(p[None].expand(n_draws, -1), torch.Generator().manual_seed(0)).flatten()
assert ours == many[:200].tolist()                       # the same rule, row by row
top = p.argsort(descending=True)[:3]
freq = torch.bincount(many, minlength=len(p)).float() / n_draws
for i in top.tolist():
    print(f"{vocab.decode([i])!r}: p = {float(p[i]):.3f}, drawn {float(freq[i]):.3f} of {n_draws:,} times")
assert (freq[top] - p[top]).abs().max() < 0.02

# %% [markdown]
# ## 3. Top-k: keep the k most likely tokens
#
# Even at a sensible temperature, thousands of unlikely characters together hold real mass,
# and one unlucky draw derails a sentence. Top-k sets every logit outside the $k$ largest to
# $-\infty$, so after the softmax they have probability exactly 0 and the survivors are
# renormalised.

# %%
def top_k_logits(logits, k):
    kth_largest = torch.topk(logits, k).values[-1]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


p_top4 = torch.softmax(top_k_logits(logits, 4), dim=-1)
print("non-zero probabilities after top-4:", int((p_top4 > 0).sum()))
print("kept:", [(vocab.decode([i]), round(float(p_top4[i]), 3)) for i in p_top4.topk(4).indices.tolist()])
assert torch.allclose(p_top4, sampling.next_token_probs(logits, top_k=4), atol=1e-6)

# %% [markdown]
# With *ties* at the k-th value, `logits < kth_largest` keeps more than $k$ tokens.
# `course_utils.sampling.top_k_filter` keeps exactly $k$ (ties broken by index); the tests
# check this with deliberately tied logits.
#
# ## 4. Top-p (nucleus): keep the smallest set that holds mass p
#
# A fixed $k$ is too many where the model is sure (inside a common word one or two
# characters make sense) and too few where it is not. After 中国人民 this small model is
# *not* sure (section 1 printed its entropy: several nats), so the nucleus there is large;
# the histogram below shows how much its size varies from position to position. Top-p sorts the
# tokens by probability and keeps the smallest prefix whose cumulative mass reaches $p$: a
# token is dropped when the mass *before* it already reaches $p$.

# %%
def top_p_logits(logits, p):
    sorted_logits, order = torch.sort(logits, descending=True)
    sorted_probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    drop = torch.zeros_like(logits, dtype=torch.bool)
    drop[order] = mass_before >= p          # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


p_nucleus = torch.softmax(top_p_logits(logits, 0.9), dim=-1)
kept = int((p_nucleus > 0).sum())
print(f"top-p 0.9 keeps {kept} tokens holding {float(probs[p_nucleus > 0].sum()):.3f} of the mass")
assert torch.equal(top_p_logits(logits, 0.9), sampling.top_p_filter(logits, 0.9))

# %%
fig, ax = plt.subplots(figsize=(10, 3))
widgets.plot_token_bars(ax, {"the model (T=1)": probs, "top-k, k=4": p_top4,
                             "top-p, p=0.9": p_nucleus}, vocab, n=20,
                        title="Filtered distributions: zeroed tokens, survivors renormalised")
plt.show()

# %% [markdown]
# How many tokens does the nucleus hold at different positions of real text? We run the
# model over validation windows and count, at every position, the tokens top-p 0.9 keeps.

# %%
val_tokens = artifacts.news_tokens("val")
windows = torch.from_numpy(np.stack([val_tokens[i * 997: i * 997 + block_size].astype(np.int64)
                                     for i in range(8)])).to(device)
with torch.no_grad():
    all_logits = model(windows)[0].float().cpu().reshape(-1, len(vocab))
nucleus_sizes = (sampling.top_p_filter(all_logits, 0.9) > float("-inf")).sum(-1)
print(f"{len(nucleus_sizes)} positions: nucleus size median {int(nucleus_sizes.median())}, "
      f"min {int(nucleus_sizes.min())}, max {int(nucleus_sizes.max())}")

fig, ax = plt.subplots(figsize=(7, 3))
ax.hist(nucleus_sizes.numpy(), bins=np.logspace(0, np.log10(len(vocab)), 30))
ax.set_xscale("log")
ax.set_xlabel("tokens kept by top-p 0.9 (log scale)")
ax.set_ylabel("positions")
ax.set_title("The nucleus adapts: tiny where the model is sure, large where it is not")
plt.show()

# %% [markdown]
# The filters compose in a fixed order in `sampling.filter_logits`: temperature, then top-k,
# then top-p over what top-k kept. Sorting the whole vocabulary (4,690 characters) for top-p
# is the slowest part of the sampler, so when top-k came first the library sorts only the
# $k$ survivors, which `topk` returns already in order. The kept tokens are the same (the
# tests compare both ways), except that two exactly equal logits at the edge of the nucleus
# may be kept the other way round: neither sort promises an order for ties.
#
# ## 5. The course's four settings, side by side
#
# `sampling.generate(model, idx, max_new_tokens, temperature, top_k, top_p)` runs the loop:
# filter the last logits, draw one token, append it, repeat. `sampling.complete` wraps it
# for text in and text out, stopping at 。？！ or `<sep>`. Here are the four settings the
# course compares, on the same prompts with the same seed.

# %%
SETTINGS = {
    "greedy": dict(temperature=0),
    "temperature 0.8": dict(temperature=0.8),
    "top-k 4": dict(temperature=1.0, top_k=4),
    "top-p 0.95": dict(temperature=1.0, top_p=0.95),
}
prompts = ["中国人民", "今天上午", "经济发展"]
table = pd.DataFrame({name: [sampling.complete(model, vocab, p, max_new_tokens=40, seed=0, **s)[0]
                             for p in prompts] for name, s in SETTINGS.items()}, index=prompts)
with pd.option_context("display.max_colwidth", None):
    display(table)

# %% [markdown]
# One sample per cell proves little. We draw 16 continuations per setting and measure two
# things: how *likely* the model itself finds them (mean log-probability per character,
# under the untouched $T=1$ distribution; higher is "safer"), and how *diverse* they are
# (distinct-2: the share of character pairs that are unique across the 16 samples).

# %%
def distinct_2(texts):
    pairs = [t[i: i + 2] for t in texts for i in range(len(t) - 1)]
    return len(set(pairs)) / max(1, len(pairs))


prompt_ids = vocab.encode(prompts[0])
n_new = block_size - len(prompt_ids)      # the whole sample fits in one context window
rows = {}
for name, s in tqdm(SETTINGS.items(), desc="settings"):
    out = sampling.generate(model, torch.tensor([prompt_ids] * 16), n_new, seed=0, **s)
    with torch.no_grad():                 # log p of each generated character under the model
        logp = model(out[:, :-1])[0].float().log_softmax(-1).gather(-1, out[:, 1:, None])[..., 0]
    texts = sampling.decode_batch(vocab, out[:, len(prompt_ids):])
    rows[name] = {"log p per char": float(logp[:, len(prompt_ids) - 1:].mean()),
                  "distinct-2": distinct_2(texts), "unique samples": len(set(texts))}
table = pd.DataFrame(rows).T
logp = table["log p per char"]
print(f"most likely per character: {logp.idxmax()}; top-k 4 is {logp['greedy'] - logp['top-k 4']:+.3f} "
      f"nats/char below greedy, temperature 0.8 {logp['greedy'] - logp['temperature 0.8']:+.3f}")
if profile.name != "ci":          # what the next paragraph says (the ci model is too small)
    assert set(logp.nsmallest(2).index) == {"temperature 0.8", "top-p 0.95"}
    assert set(table["distinct-2"].nlargest(2).index) == {"temperature 0.8", "top-p 0.95"}
    assert table.loc["greedy", "unique samples"] == 1 < table.loc["top-k 4", "unique samples"]
table.round(3)

# %% [markdown]
# Read the table as a trade-off. Greedy has no diversity at all (its 16 samples are one
# sample). Whether it is also the most likely per character depends on the model and the
# prompt (the line above the table says which setting won here): taking the best next token
# every time can follow a safe groove, or lead into loops where the model is unsure. Top-k 4
# stays among the model's favourites, so it scores close to greedy, yet varies. Temperature
# 0.8 and top-p 0.95 sample from the long tail too: the most diverse, and the least likely
# under the model (the asserts check both).
#
# ## 6. Repetition
#
# Greedy decoding of a small model often falls into a loop. CTRL's *repetition penalty*
# divides the positive logits (multiplies the negative ones) of tokens already generated by
# a factor $\theta > 1$. We count repeated 4-grams with and without it.

# %%
def repeated_4grams(text):
    grams = [text[i: i + 4] for i in range(len(text) - 3)]
    return 1 - len(set(grams)) / max(1, len(grams))


for penalty in (1.0, 1.3):
    out = sampling.generate(model, torch.tensor([prompt_ids]), 80, temperature=0,
                            repetition_penalty=penalty)
    text = vocab.decode(out[0, len(prompt_ids):].tolist(), skip_special=True)
    print(f"penalty {penalty}: {repeated_4grams(text):.0%} repeated 4-grams | {prompt}{text[:60]}")

# %% [markdown]
# ## 7. Beam search
#
# Greedy picks the best *next* token; the best *sequence* may start with a less likely
# one. Beam search keeps the `beam_width` highest-scoring partial sequences (scored by their
# summed log-probability), extends each by every token, and keeps the best `beam_width`
# again. Width 1 is greedy decoding.

# %%
n_beam = min(30, block_size - len(prompt_ids))
greedy = sampling.generate(model, torch.tensor([prompt_ids]), n_beam, temperature=0)
beam_rows = []
for width in (1, 2, 4, 8):
    out = sampling.beam_search(model, torch.tensor([prompt_ids]), n_beam, beam_width=width)
    if width == 1:
        assert torch.equal(out.cpu(), greedy.cpu()), "beam width 1 must equal greedy decoding"
    beam_rows.append({"beam width": width,
                      "log p (sum)": sampling.sequence_logprob(model, out, len(prompt_ids)),
                      "text": prompt + vocab.decode(out[0, len(prompt_ids):].tolist())})
with pd.option_context("display.max_colwidth", None):
    display(pd.DataFrame(beam_rows).set_index("beam width").round(2))
beam_logp = [row["log p (sum)"] for row in beam_rows]
if profile.name != "ci":  # the next paragraph: here each wider beam scored higher
    assert all(a < b for a, b in zip(beam_logp, beam_logp[1:], strict=False))

# %% [markdown]
# Here each wider beam found a continuation the model rates as more likely (the
# log-probability rises with the width; beam search does not guarantee that in general,
# since a wider beam can prune differently), but "most likely" is not "most interesting":
# beam search is the tool for tasks
# with one right answer (translation, the classifier's label), sampling for open-ended text.
#
# ## 8. The KV cache, built step by step
#
# ![With a KV cache each step feeds one token whose key and value are appended to the cache and whose query attends over all cached keys; without it every step recomputes all positions; when the window is full it slides by half a block and a prefill rebuilds the cache](../book/images/kv_cache.png)
#
# *With a KV cache each step feeds one token and reuses the keys and values of earlier positions; when the context is full, `generate` keeps the last `block_size // 2` tokens and refills the cache (rows traced from a real `sampling.generate` run).*
#
# In a causal transformer the keys and values of position $i$ depend only on tokens
# $\le i$. When we append token $t+1$, the keys and values of positions $1..t$ do not
# change, in any layer. Recomputing them at every step is pure waste: a *KV cache* stores
# them, and each step feeds only the newest token, whose query attends over the cached keys.
#
# We write the cached forward pass inline, reusing the model's own layers and
# `attention`/`causal_mask` from chapter 03. The cache is one `(k, v)` pair per layer,
# each of shape `(batch, heads, positions so far, head_dim)`.

# %%
def attention_with_cache(attn, x, past):
    """One attention layer on the new positions x (B, T, C), given the past (k, v) or None."""
    B, T, C = x.shape
    q, k, v = attn.qkv(x).split(C, dim=2)
    q, k, v = (t.view(B, T, attn.n_heads, attn.head_dim).transpose(1, 2) for t in (q, k, v))
    if past is not None:                                  # prepend what earlier steps computed
        k = torch.cat([past[0], k], dim=2)
        v = torch.cat([past[1], v], dim=2)
    mask = causal_mask(T, k.size(2), device=x.device)     # new queries are the last T positions
    y, _ = attention(q, k, v, mask)
    return attn.proj(y.transpose(1, 2).reshape(B, T, C)), (k, v)


def forward_with_cache(model, idx_new, cache):
    """Logits for the new tokens; `cache` (a list, one entry per block) is updated in place."""
    past = 0 if cache[0] is None else cache[0][0].size(2)
    pos = torch.arange(past, past + idx_new.size(1), device=idx_new.device)
    x = model.tok_emb(idx_new) + model.pos_emb(pos)
    for i, block in enumerate(model.blocks):
        a, cache[i] = attention_with_cache(block.attn, block.ln1(x), cache[i])
        x = x + a
        x = x + block.mlp(block.ln2(x))
    return model.lm_head(model.ln_f(x))


# %% [markdown]
# Greedy decoding with it: the prompt goes in once (the *prefill*), then one token per step.
# At every step we also run the full model on the whole sequence and compare the logits.

# %%
n_steps = block_size - len(prompt_ids)          # stay inside one context window
cache = [None] * len(model.blocks)
ids = list(prompt_ids)
max_diff = 0.0
with torch.no_grad():
    step_logits = forward_with_cache(model, torch.tensor([ids], device=device), cache)
    for step in range(n_steps):
        next_id = int(step_logits[0, -1].argmax())
        full = model(torch.tensor([ids], device=device))[0][0, -1]   # recompute everything
        max_diff = max(max_diff, float((full - step_logits[0, -1]).abs().max()))
        ids.append(next_id)
        if step < 3 or step == n_steps - 1:
            k, v = cache[0]
            print(f"step {step:2d}: fed {1 if step else len(prompt_ids)} token(s); "
                  f"layer-0 cache k {tuple(k.shape)}, v {tuple(v.shape)}")
        if step < n_steps - 1:
            step_logits = forward_with_cache(model, torch.tensor([[next_id]], device=device), cache)

reference = sampling.generate(model, torch.tensor([prompt_ids]), n_steps, temperature=0,
                              use_cache=False)
print(f"largest logit difference, cache vs recomputation: {max_diff:.1e}")
assert ids == reference[0].tolist(), "the cached loop must give the same tokens"
print("identical tokens ✓ |", vocab.decode(ids))

# %% [markdown]
# `course_utils` keeps the same idea inside the model, with one refinement: our inline version
# grows each cache with `torch.cat`, which allocates a new, larger tensor at every step.
# `model.new_cache()` gives one `StaticKVCache` per block instead: buffers for `block_size`
# positions, allocated once and written in place; `model(idx, cache=cache)` fills the next
# positions, and `cache[i].k` is a view of what is filled so far.

# %%
cache = model.new_cache()
with torch.no_grad():
    model(torch.tensor([prompt_ids], device=device), cache=cache)
    model(torch.tensor([[greedy_id]], device=device), cache=cache)
print(f"{len(cache)} layers; layer 0 holds k {tuple(cache[0].k.shape)} and v {tuple(cache[0].v.shape)}")
assert len(cache[0]) == len(prompt_ids) + 1

# %% [markdown]
# **When the context is full.** The model has learned positions $0..$`block_size`$-1$ only.
# Once the text is longer, `generate` slides the window: it keeps the last
# `block_size // 2` tokens and refills the cache from them (one prefill), then continues one
# token at a time. The recomputing path uses the very same windows, so both paths give the
# same tokens however long the text. We check it on a text three context windows long.

# %%
long_n = 3 * block_size
cached = sampling.generate(model, torch.tensor([prompt_ids]), long_n, temperature=0, use_cache=True)
recomputed = sampling.generate(model, torch.tensor([prompt_ids]), long_n, temperature=0, use_cache=False)
assert torch.equal(cached, recomputed)
print(f"{long_n} greedy tokens, window sliding past block_size={block_size}: identical ✓")

# %% [markdown]
# ### How much faster?
#
# Without a cache, step $t$ runs the model over up to `block_size` positions; with it, over
# one. We time greedy generation (batch 1, best of 3 runs) at growing lengths. The timing
# runs on one CPU thread (`threads=1`): at batch 1 this model's matrices are small, and one
# thread gives steadier numbers when other programs share the machine.

# %%
lengths = [16, 32, 64, 128, 256]
speed = []
for n in tqdm(lengths, desc="lengths"):
    row = {"new tokens": n}
    for use_cache in (True, False):
        rate = timing.tokens_per_second(model, torch.tensor([prompt_ids]), n, repeats=3,
                                          threads=1, use_cache=use_cache)
        row["KV cache" if use_cache else "recompute"] = rate
    row["speed-up"] = row["KV cache"] / row["recompute"]
    speed.append(row)
speed = pd.DataFrame(speed).set_index("new tokens")
print(timing.machine_line())
if profile.name != "ci":          # what the text below says (the ci model is too small)
    assert (speed["speed-up"] > 1).all(), "the cache should win at every length"
print(f"tokens per second (1 CPU thread); the cache is faster at "
      f"{int((speed['speed-up'] > 1).sum())} of {len(lengths)} lengths, by "
      f"x{speed['speed-up'].min():.1f} to x{speed['speed-up'].max():.1f} "
      f"(x{speed['speed-up'].iloc[-1]:.1f} at {lengths[-1]} new tokens)")
speed.round(2)

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
ax1.plot(speed.index, speed["KV cache"], "o-", label="KV cache")
ax1.plot(speed.index, speed["recompute"], "s-", label="recompute")
ax1.set_xscale("log", base=2)
ax1.set_xlabel("new tokens")
ax1.set_ylabel("tokens per second")
ax1.set_title("Generation speed")
ax1.legend()
ax2.plot(speed.index, speed["speed-up"], "o-", color="C2")
ax2.axvline(block_size, color="grey", ls="--", label=f"block_size = {block_size}")
ax2.set_xscale("log", base=2)
ax2.set_xlabel("new tokens")
ax2.set_ylabel("KV cache / recompute")
ax2.set_title("Speed-up of the KV cache")
ax2.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The cache wins at every length (the assert checks it), but by less than the arithmetic
# suggests. Recomputing step $t$ costs about $t$ times as much arithmetic as a cached step,
# yet a step of this 1.4M-parameter model is mostly fixed cost: Python, dispatching a few
# dozen small operations, allocating tensors. Past `block_size` the recomputing path never
# reads more than `block_size` positions per step, while the cache pays for a prefill each
# time the window slides, so past `block_size` the ratio cannot keep growing with the length.
# Timings on a shared machine also jitter from run to run, so the ratio need not rise
# smoothly with the length even below `block_size`; the load average in the machine line
# above tells how busy the machine was.
#
# Since a cached step is mostly overhead, removing overhead is what speeds it up:
# `generate(..., compiled=True)` compiles the one-token step (`decoding.decode_step`, written
# with fixed shapes so that `torch.compile` builds one graph for every step) into fused C++
# kernels, launched from C++ too (Inductor's `cpp_wrapper`) rather than from Python. It also
# compiles the prefill that refills the cache at each slide, always `block_size // 2` tokens,
# so one more graph. Compiling takes seconds, so it pays for long generations and services.
#
# `compiled="frozen"` goes one step further, for a model that is done training. Inductor's
# *freezing* turns the weights into constants of the compiled code, so it can lay each matrix
# out ahead of time, and its autotuner times, for each matrix, a micro-GEMM it generates for
# exactly that shape against MKL's prepacked one, and keeps the faster. The price: a longer
# compilation, and a compiled copy that is stale the moment the weights change. `generate`
# watches for that (an optimizer step or `load_state_dict` bumps every tensor's version
# counter) and compiles again; it also keeps one copy per model, because the compiled code's
# checks look at shapes, not values, and another model of the same shape would pass them.
# `bench/generation.py` measures eager, compiled, frozen and recomputing decoding side by side
# for the [benchmarks appendix](../book/benchmarks.md).
#
# ## 9. Try it: the sampling sliders
#
# Move the sliders to see the next-token distribution and the sample change together. Grey
# bars are the model's own distribution, blue the one the sampler draws from after
# temperature, top-k and top-p. In JupyterLab the demo is an ipywidget run by the kernel:

# %% tags=["remove-output"]
demo = widgets.SamplingDemo(model, vocab, prompt=prompt, temperature=0.8, top_k=0, top_p=0.95,
                            length=60, seed=0)
demo

# %% [markdown]
# The widget can also be driven from code, which is how its tests move the sliders:

# %%
before = demo.text.value
demo.temperature.value = 1.2                  # what moving the slider does
assert demo.text.value != before, "a new temperature gives a new sample"
print(re.sub("<[^>]+>", "", demo.status.value))
print(prompt + re.sub("<[^>]+>", "", demo.text.value)[len(prompt):])

# %% [markdown]
# **On the book's website** the box below is the same explorer with no kernel at all: this
# very model, exported by `course_utils.export` with int8 weights, runs in your browser in
# plain JavaScript ([the GPT in your browser](../book/browser.md) sets that code beside
# `model.py`). The file the site ships is checked against the model of this chapter:

# %%
from course_utils import export

site_file = config.REPO / "book" / "_static" / "models" / "news.js"   # `make browser-models`
web_model, _, web_meta = export.load_browser(site_file)
print(f"{site_file.name}: {site_file.stat().st_size / 1e6:.2f} MB, {web_meta['precision']} "
      f"weights, exported from the {web_meta['profile']} model")
if web_meta["profile"] == profile.name:      # under another profile this chapter has another model
    ours = sampling.generate(model, torch.tensor([prompt_ids], device=device), 60, temperature=0)
    web = sampling.generate(web_model, torch.tensor([prompt_ids]), 60, temperature=0)
    assert torch.equal(ours.cpu(), web), "the site's model is not this chapter's: make browser-models"
    print(f"60 greedy tokens after {prompt}: the same from the site's model as from ours ✓")

# %% [markdown]
# The chart and the greedy text on the page are the ones PyTorch computes; the sampled text
# uses the browser's own random numbers, so it differs from the kernel's for the same seed.
#
# <div class="gpt-explorer" data-model="news" data-prompt="中国人民" data-temperature="0.8" data-top-k="0" data-top-p="0.95" data-length="60" data-seed="0"><p><em>(In JupyterLab this box stays empty: use the widget above. On the book's website it is a live explorer.)</em></p></div>
# <script src="../_static/gpt.js"></script>
# <script src="../_static/gpt-demo.js"></script>

# %% [markdown]
# ## 10. The source material's sampler, and what was wrong with it
#
# The course this book follows sampled like this (simplified): softmax the logits, apply
# the temperature as `softmax(log(p) / T)`, then run top-k and top-p **on the
# probabilities** and apply `softmax` again after each filter. It also had no KV cache and
# fed the whole, ever-growing sequence to the model without cropping it to the context.
#
# **Softmax of probabilities.** Probabilities lie in $[0, 1]$, so $e^{p_i}$ lies in
# $[1, e]$: a second softmax makes the survivors almost equally likely, whatever the model
# said. Here is that sampler next to the correct one, at the course's own settings
# ($T=0.2$, top-k 40, top-p 0.9), on the distribution after 中国人民.

# %%
def buggy_next_probs(logits, temperature, top_k, top_p):
    """The source material's sampler: filters on probabilities, softmax re-applied."""
    probs = torch.softmax(logits, dim=-1)
    probs = torch.softmax(torch.log(probs) / temperature, dim=-1)
    kth = torch.topk(probs, top_k).values[-1]
    probs = torch.softmax(probs.masked_fill(probs < kth, float("-inf")), dim=-1)   # softmax #3
    sorted_p, order = torch.sort(probs, descending=True)
    drop = torch.zeros_like(probs, dtype=torch.bool)
    drop[order] = torch.cumsum(sorted_p, dim=-1) - sorted_p >= top_p
    return torch.softmax(probs.masked_fill(drop, float("-inf")), dim=-1)            # softmax #4


course = dict(temperature=0.2, top_k=40, top_p=0.9)
buggy = buggy_next_probs(logits, **course)
fixed = sampling.next_token_probs(logits, **course)
n_buggy = int((buggy > 0).sum())
if profile.name != "ci":  # the next paragraph: a handful of tokens vs near-uniform over dozens
    assert int((fixed > 0).sum()) <= 5 and n_buggy >= 20 and entropy(buggy) > 0.95 * math.log(n_buggy)
pd.DataFrame({
    "entropy (nats)": [entropy(fixed), entropy(buggy)],
    "p of the top token": [float(fixed.max()), float(buggy.max())],
    "tokens that can be drawn": [int((fixed > 0).sum()), int((buggy > 0).sum())],
}, index=["correct: filter logits, one softmax", "source: softmax of probabilities"]).round(3)

# %% [markdown]
# The correct sampler at $T=0.2$ keeps at most a handful of the most likely tokens (here the
# table's count; nearly greedy, as the course intended); the buggy one is nearly uniform over
# dozens of tokens (its entropy is close to the log of their number), so the low
# temperature had almost no effect. What does that do to text? We sample with both (same
# seed, same window rule).

# %%
def sample_text(next_probs, prompt, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = vocab.encode(prompt)
    with torch.no_grad():
        for _ in range(n):
            ctx = torch.tensor([ids[-block_size:]], device=device)   # crop to the context
            p = next_probs(model(ctx)[0][0, -1].float().cpu())
            ids.append(int(sampling.draw(p[None], g)))
    return vocab.decode(ids, skip_special=True)


for name, fn in [("correct", lambda z: sampling.next_token_probs(z, **course)),
                 ("source ", lambda z: buggy_next_probs(z, **course))]:
    print(f"{name}: {sample_text(fn, prompt, 50)}")

# %% [markdown]
# **Temperature as `softmax(log(p) / T)`.** Since $\log p_i = z_i - \log\sum_j e^{z_j}$ and
# the softmax ignores constant shifts, this is *mathematically* the same as
# $\mathrm{softmax}(z/T)$. Numerically it goes through probabilities that can underflow to
# exactly 0 in float32, and a token whose probability is 0 stays at 0 for every $T$. We
# measure both effects on the real distribution, at a higher temperature where it matters.

# %%
via_log = torch.softmax(torch.log(torch.softmax(logits, -1)) / 2.0, -1)
direct = torch.softmax(logits / 2.0, -1)
print(f"max |difference| at T=2 on the model's logits: {float((via_log - direct).abs().max()):.1e}")
print(f"tokens whose float32 probability is exactly 0 at T=1: {int((probs == 0).sum())} "
      f"(logit range {float(logits.max() - logits.min()):.1f})")
extreme = torch.tensor([0.0, -50.0, -120.0])           # a confident model: gaps of 50 and 120
print("extreme logits at T=2 -> correct:", torch.softmax(extreme / 2, -1).tolist(),
      "| via log(p):", torch.softmax(torch.log(torch.softmax(extreme, -1)) / 2, -1).tolist())

# %% [markdown]
# On our small model the detour through $\log p$ is harmless (no probability underflows);
# with a confident model's logit gaps above about 103 (where $e^{-gap}$ underflows in
# float32) the third token above is lost for good. The damage in the source came from the
# re-applied softmax. Filtering logits with $-\infty$ and applying **one** softmax at the end
# avoids both.
#
# **No cropping.** Without cropping, the sequence outgrows the position table; our model
# refuses with a clear message (the source's model failed with an index error once a sample
# grew past its context):

# %%
too_long = torch.randint(3, len(vocab), (1, block_size + 1), device=device)
try:
    model(too_long)
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# > **Pitfalls.**
# > - *Filtering probabilities, then softmax again* (the source material): the result is
# >   almost uniform over the survivors. Filter **logits** with $-\infty$; softmax once.
# > - *Top-k with a threshold* (`logits < kth`) keeps more than k tokens on ties; use the
# >   indices of `topk` when exactly k matters.
# > - *Temperature 0* is not a division by zero: it means greedy (`argmax`). `generate`
# >   treats it so; `apply_temperature(logits, 0)` raises and says why.
# > - *No KV cache, no cropping* (the source material): generation is quadratic in the
# >   length, and it crashes once the text outgrows `block_size`. Crop the context, cache the
# >   keys and values, and keep both paths on the same window rule so they agree token for token.
# > - *A cache from another sequence.* A KV cache belongs to one sequence and one window;
# >   when the window slides, the positions change and the cache must be rebuilt.
# > - *Reproducibility.* Sampling is random: pass `seed=` (or a `torch.Generator`) when you
# >   compare settings, as we did above.

# %% [markdown]
# ## Exercises
#
# Each exercise has a stub that raises `NotImplementedError` and a checker from
# `course_utils.exercises.ch08`. Replace the `raise` with your code and re-run the checker: it
# prints ✓ when your answer is right and ✗ with a hint when it is not. A solution follows,
# collapsed.
#
# **Exercise 08.1 (min-p).** A newer filter keeps every token whose probability is at least
# `min_p` times that of the most likely token, so it adapts like top-p but is cheaper (no
# sort). Write `min_p_filter(logits, min_p)` returning logits with $-\infty$ for dropped
# tokens (work along the last dimension, for any batch shape).

# %%
from course_utils.exercises import ch08


def min_p_filter(logits, min_p):
    raise NotImplementedError


_ = ch08.check_min_p_filter(min_p_filter)


# %% tags=["hide-cell"]
def min_p_filter(logits, min_p):
    probs = torch.softmax(logits, dim=-1)
    threshold = min_p * probs.max(dim=-1, keepdim=True).values
    return logits.masked_fill(probs < threshold, float("-inf"))


_ = ch08.check_min_p_filter(min_p_filter)


# %% [markdown]
# **Exercise 08.2 (greedy decoding with a KV cache).** Write
# `greedy_with_cache(model, idx, n)` that returns `idx` (shape `(1, T)`) extended by `n`
# greedy tokens, using `cache = model.new_cache()` and `model(ids, cache=cache)`: the prompt
# once, then only the newest token at each step. (Assume `T + n <= block_size`.) The checker
# counts how many positions your loop feeds to the model.

# %%
def greedy_with_cache(model, idx, n):
    raise NotImplementedError


_ = ch08.check_greedy_with_cache(greedy_with_cache)


# %% tags=["hide-cell"]
@torch.no_grad()
def greedy_with_cache(model, idx, n):
    cache = model.new_cache()
    logits, _ = model(idx, cache=cache)
    out = idx
    for step in range(n):
        next_id = logits[:, -1].argmax(dim=-1, keepdim=True)
        out = torch.cat([out, next_id], dim=1)
        if step < n - 1:
            logits, _ = model(next_id, cache=cache)
    return out


_ = ch08.check_greedy_with_cache(greedy_with_cache)


# %% [markdown]
# **Exercise 08.3 (a temperature for a target entropy).** The entropy of
# $\mathrm{softmax}(z/T)$ grows with $T$. Write `temperature_for_entropy(logits, target)`
# returning the $T$ at which the entropy equals `target` nats (within $10^{-3}$). Bisection
# on $\log T$ works well. What temperature gives the distribution after 中国人民 an entropy
# of 1 nat?

# %%
def temperature_for_entropy(logits, target):
    raise NotImplementedError


_ = ch08.check_temperature_for_entropy(temperature_for_entropy)


# %% tags=["hide-cell"]
def temperature_for_entropy(logits, target, iters=100):
    lo, hi = 1e-3, 1e3
    for _ in range(iters):
        mid = math.sqrt(lo * hi)
        if entropy(torch.softmax(logits.double() / mid, dim=-1)) < target:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


_ = ch08.check_temperature_for_entropy(temperature_for_entropy)
print(f"T for 1 nat after 「{prompt}」: {temperature_for_entropy(logits, 1.0):.3f}")

# %% [markdown]
# ## Summary
#
# - A sampler is a function from logits to a next-token distribution. Temperature divides
#   the logits; top-k and top-p set logits to $-\infty$; one softmax comes last. Greedy is
#   temperature 0.
# - On the same prompts greedy is the least diverse (one sample, sixteen times) and top-k
#   stays close to its likelihood; sampling from the tail trades likelihood for diversity;
#   beam search finds higher-likelihood (often blander) continuations.
# - The KV cache stores each layer's keys and values, so each step feeds one token. It gives
#   the same tokens as recomputation (checked over three context windows), and it was faster
#   at every length we timed; on a model this small, per-step overhead limits the gain.
# - The source material's sampler re-applied softmax to probabilities, which flattened the
#   distribution at every setting; it also had no cache and no cropping.
#
# **Next**, chapter 09 makes the same model smaller by storing its weights as 8-bit
# integers, and measures what that changes in speed (not always for the better) and costs in
# validation loss.
