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
# for every character of the vocabulary that could come next. Turning those scores into text
# is a separate decision, made by a *sampler* (采样器): always take the most likely character
# (greedy), or draw at random from a reshaped distribution (temperature, top-k, top-p). The
# same model can sound dull, lively or incoherent depending on this choice alone. Generation
# is also where speed starts to matter: producing 256 characters naively means running the
# model 256 times over an ever longer input; a *KV cache* (键值缓存) removes most of that work.
# The chatbot of chapter 11 and the server of chapter 12 are built on this `generate`.
#
# **Learning goals**
#
# - turn logits into a next-token distribution and reshape it with temperature, top-k and
#   top-p, each written as an operation on *logits* followed by one softmax;
# - compare greedy decoding, sampling and beam search on the same prompts;
# - build a KV cache by hand and check that it gives the same tokens as recomputation (its
#   speed is measured, and compiled, in the chapter's Going further notebook);
# - recognise (and fix) the sampler mistakes of the source material.

# %%
from course_utils import config, plots

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
config.seed_everything(0)

# %%
import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from tqdm.auto import tqdm

from course_utils import artifacts, export, sampling, widgets
from course_utils.attention import attention, causal_mask

# the model pretrained in chapter 05: from the cache, or trained (with a progress bar) on first use
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
fig, ax = plt.subplots(figsize=(10, 3))
widgets.plot_token_bars(ax, {"T=1 (the model)": probs,
                             "T=0.5": softmax_with_temperature(logits, 0.5),
                             "T=1.5": softmax_with_temperature(logits, 1.5)}, vocab, n=20,
                        title="Temperature: T<1 sharpens, T>1 flattens (same 20 tokens, same order)")
plt.show()

# %% [markdown]
# How is one token *drawn* from $p$? With one uniform number $u \in [0, 1)$: walk through the
# vocabulary adding up probabilities, and take the first token where the running sum exceeds
# $u$. Token $i$ is picked when $u$ falls in its slice of $[0, 1)$, of width $p_i$ (*inverse
# transform sampling*). `sampling.draw` does this for every row at once with `cumsum` and
# `searchsorted`, from a seeded `torch.Generator`. We check the frequencies over many draws:

# %%
n_draws = 20_000
many = sampling.draw(probs[None].expand(n_draws, -1), torch.Generator().manual_seed(0)).flatten()
freq = torch.bincount(many, minlength=len(probs)).float() / n_draws
for i in probs.argsort(descending=True)[:3].tolist():
    print(f"{vocab.decode([i])!r}: p = {float(probs[i]):.3f}, drawn {float(freq[i]):.3f} of {n_draws:,} times")
assert (freq - probs).abs().max() < 0.02

# %% [markdown]
# ## 3. Top-k: keep the k most likely tokens
#
# Even at a sensible temperature, thousands of unlikely characters together hold real mass,
# and one unlucky draw derails a sentence. Top-k sets every logit outside the $k$ largest to
# $-\infty$: after the softmax they have probability exactly 0, and the survivors are renormalised.

# %%
def top_k_logits(logits, k):
    kth_largest = torch.topk(logits, k).values[-1]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


p_top4 = torch.softmax(top_k_logits(logits, 4), dim=-1)
print(f"top-4 keeps {int((p_top4 > 0).sum())} tokens:",
      [(vocab.decode([i]), round(float(p_top4[i]), 3)) for i in p_top4.topk(4).indices.tolist()])
assert torch.allclose(p_top4, sampling.next_token_probs(logits, top_k=4), atol=1e-6)

# %% [markdown]
# With *ties* at the k-th value, `logits < kth_largest` keeps more than $k$ tokens;
# `course_utils.sampling.top_k_filter` keeps exactly $k$ (ties broken by index).
#
# ## 4. Top-p (nucleus): keep the smallest set that holds mass p
#
# A fixed $k$ is too many where the model is sure (inside a common word one or two
# characters make sense) and too few where it is not (after 中国人民 this small model is *not*
# sure: section 1 printed an entropy of several nats, and its five likeliest characters held a
# minority of the mass). Top-p sorts the tokens by probability and keeps the smallest prefix
# whose cumulative mass reaches $p$: a token is dropped when the mass *before* it reaches $p$.

# %%
def top_p_logits(logits, p):
    sorted_logits, order = torch.sort(logits, descending=True)
    sorted_probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    drop = torch.zeros_like(logits, dtype=torch.bool)
    drop[order] = mass_before >= p          # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


p_nucleus = torch.softmax(top_p_logits(logits, 0.9), dim=-1)
print(f"top-p 0.9 keeps {int((p_nucleus > 0).sum())} tokens holding {float(probs[p_nucleus > 0].sum()):.3f} of the mass")
assert torch.equal(top_p_logits(logits, 0.9), sampling.top_p_filter(logits, 0.9))
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
ax.set(xscale="log", xlabel="tokens kept by top-p 0.9 (log scale)", ylabel="positions",
       title="The nucleus adapts: tiny where the model is sure, large where it is not")
plt.show()

# %% [markdown]
# `sampling.filter_logits` composes the filters in a fixed order: temperature, then top-k,
# then top-p over what top-k kept (so it sorts only the $k$ survivors, not the vocabulary).
#
# ## 5. The course's four settings, side by side
#
# `sampling.generate(model, idx, max_new_tokens, temperature, top_k, top_p)` runs the loop:
# filter the last logits, draw one token, append it, repeat (`sampling.complete` wraps it for
# text in and text out). We draw 16 continuations of 中国人民 with each of the four settings
# the course compares, same seed, and measure two things: how *likely* the model itself finds
# them (mean log-probability per character under the untouched $T=1$ distribution; higher is
# "safer"), and how *diverse* they are (distinct-2: the share of character pairs that are
# unique across the 16 samples).

# %%
def distinct_2(texts):
    pairs = [t[i: i + 2] for t in texts for i in range(len(t) - 1)]
    return len(set(pairs)) / max(1, len(pairs))


SETTINGS = {"greedy": dict(temperature=0), "temperature 0.8": dict(temperature=0.8),
            "top-k 4": dict(temperature=1.0, top_k=4), "top-p 0.95": dict(temperature=1.0, top_p=0.95)}
prompt_ids = vocab.encode(prompt)
n_new = block_size - len(prompt_ids)      # the whole sample fits in one context window
rows = {}
for name, s in tqdm(SETTINGS.items(), desc="settings"):
    out = sampling.generate(model, torch.tensor([prompt_ids] * 16), n_new, seed=0, **s)
    with torch.no_grad():                 # log p of each generated character under the model
        logp = model(out[:, :-1])[0].float().log_softmax(-1).gather(-1, out[:, 1:, None])[..., 0]
    texts = sampling.decode_batch(vocab, out[:, len(prompt_ids):])
    rows[name] = {"log p per char": float(logp[:, len(prompt_ids) - 1:].mean()),
                  "distinct-2": distinct_2(texts), "unique samples": len(set(texts)),
                  "first sample": prompt + texts[0][:24]}
table = pd.DataFrame.from_dict(rows, orient="index")
logp, d2, unique = table["log p per char"], table["distinct-2"], table["unique samples"]
assert unique["greedy"] == 1              # greedy has no randomness: 16 copies of one sample
config.claim(f"greedy is the most likely setting per character ({logp['greedy']:.2f} nats/char; top-k 4 "
             f"{logp['greedy'] - logp['top-k 4']:.2f} below it)", logp.idxmax() == "greedy")
tail = {"temperature 0.8", "top-p 0.95"}
config.claim(f"temperature 0.8 and top-p 0.95 are the two least likely settings per character "
             f"({logp['temperature 0.8']:.2f} and {logp['top-p 0.95']:.2f} nats/char) and the two most "
             f"diverse (distinct-2 {d2['temperature 0.8']:.2f} and {d2['top-p 0.95']:.2f})",
             set(logp.nsmallest(2).index) == tail and set(d2.nlargest(2).index) == tail)
config.claim(f"top-k 4 varies: {int(unique['top-k 4'])} different samples of 16", unique["top-k 4"] > 1)
table.round(3)

# %% [markdown]
# Read the table as a trade-off. Greedy has no diversity at all (its 16 samples are one), and
# it is the most likely per character (the first claim): taking the best next token every time
# keeps to the model's safest groove, even when that groove is a loop (section 6 counts its
# repeats). Top-k 4 draws only among the model's four favourites: second in likelihood (the
# first two claims), yet it varies (the third). Temperature 0.8 and top-p 0.95 sample from the
# long tail: the most diverse, and the least likely under the model (the second claim).
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
    out = sampling.generate(model, torch.tensor([prompt_ids]), 80, temperature=0, repetition_penalty=penalty)
    text = vocab.decode(out[0, len(prompt_ids):].tolist(), skip_special=True)
    print(f"penalty {penalty}: {repeated_4grams(text):.0%} repeated 4-grams | {prompt}{text[:60]}")

# %% [markdown]
# ## 7. Beam search
#
# Greedy picks the best *next* token; the best *sequence* may start with a less likely one.
# Beam search keeps the `beam_width` partial sequences with the highest summed log-probability,
# extends each by every token, and keeps the best `beam_width` again. Width 1 is greedy.

# %%
n_beam = min(30, block_size - len(prompt_ids))
greedy = sampling.generate(model, torch.tensor([prompt_ids]), n_beam, temperature=0)
beam_rows = []
for width in (1, 2, 4, 8):
    out = sampling.beam_search(model, torch.tensor([prompt_ids]), n_beam, beam_width=width)
    assert width > 1 or torch.equal(out.cpu(), greedy.cpu()), "beam width 1 must equal greedy decoding"
    beam_rows.append({"beam width": width,
                      "log p (sum)": sampling.sequence_logprob(model, out, len(prompt_ids)),
                      "text": prompt + vocab.decode(out[0, len(prompt_ids):].tolist())})
with pd.option_context("display.max_colwidth", None):
    display(pd.DataFrame(beam_rows).set_index("beam width").round(2))
beam_logp = [row["log p (sum)"] for row in beam_rows]
config.claim(f"each wider beam found a likelier continuation (log p {' < '.join(f'{x:.1f}' for x in beam_logp)})",
             all(a < b for a, b in zip(beam_logp, beam_logp[1:], strict=False)))

# %% [markdown]
# Here each wider beam found a continuation the model rates as more likely (the claim above;
# beam search does not guarantee it in general, since a wider beam can prune differently),
# but "most likely" is not "most interesting": beam search is the tool for tasks with one
# right answer (translation, the classifier's label), sampling for open-ended text.
#
# ## 8. The KV cache, built step by step
#
# ![With a KV cache each step feeds one token whose key and value are appended to the cache and whose query attends over all cached keys; without it every step recomputes all positions; when the window is full it slides by half a block and a prefill rebuilds the cache](../book/images/kv_cache.png)
#
# *With a KV cache each step feeds one token and reuses the keys and values of earlier positions; when the context is full, `generate` keeps the last `block_size // 2` tokens and refills the cache (rows traced from a real `sampling.generate` run).*
#
# In a causal transformer the keys and values of position $i$ depend only on tokens $\le i$.
# When we append token $t+1$, those of positions $1..t$ do not change, in any layer.
# Recomputing them at every step is pure waste: a *KV cache* stores them, and each step feeds
# only the newest token, whose query attends over the cached keys. We write the cached forward
# pass inline, reusing the model's own layers and `attention`/`causal_mask` from chapter 03. The
# cache is one `(k, v)` pair per layer, each `(batch, heads, positions so far, head_dim)`.

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

reference = sampling.generate(model, torch.tensor([prompt_ids]), n_steps, temperature=0, use_cache=False)
print(f"largest logit difference, cache vs recomputation: {max_diff:.1e}")
assert ids == reference[0].tolist(), "the cached loop must give the same tokens"
print("identical tokens ✓ |", vocab.decode(ids))

# %% [markdown]
# `course_utils` keeps the same idea inside the model. Instead of growing each cache with
# `torch.cat` (a new, larger tensor at every step), `model.new_cache()` gives one `StaticKVCache`
# per block, buffers for `block_size` positions allocated once and written in place, and
# `model(idx, cache=cache)` fills the next positions (exercise 08.2 uses them).
#
# **When the context is full.** The model has learned positions $0..$`block_size`$-1$ only.
# Once the text is longer, `generate` slides the window: it keeps the last `block_size // 2`
# tokens and refills the cache from them (one prefill), then continues one token at a time.
# The recomputing path uses the very same windows, so both give the same tokens however long
# the text. We check it on a text three context windows long.

# %%
long_n = 3 * block_size
cached = sampling.generate(model, torch.tensor([prompt_ids]), long_n, temperature=0, use_cache=True)
recomputed = sampling.generate(model, torch.tensor([prompt_ids]), long_n, temperature=0, use_cache=False)
assert torch.equal(cached, recomputed)
print(f"{long_n} greedy tokens, window sliding past block_size={block_size}: identical ✓")

# %% [markdown]
# How much faster is it? A recomputing step over $t$ positions does about $t$ times the
# arithmetic of a cached step, but a step of a model this small is mostly fixed cost (Python,
# dispatching small operations), which a cache does not remove. [Going further: compiled and
# frozen decoding](08a_fast_decoding.ipynb) measures both, then removes much of that overhead:
# it compiles the step (`generate(..., compiled=True)`) and freezes the weights into it
# (`compiled="frozen"`).
#
# ## 9. Try it: the sampling sliders
#
# Move the sliders to see the next-token distribution and the sample change together: grey bars
# are the model's distribution, blue the one the sampler draws from. In JupyterLab the demo is
# an ipywidget run by the kernel:

# %% tags=["remove-output"]
demo = widgets.SamplingDemo(model, vocab, prompt=prompt, temperature=0.8, top_k=0, top_p=0.95,
                            length=60, seed=0)
demo

# %% [markdown]
# The widget can also be driven from code, which is how its tests move the sliders. **On the
# book's website** the box below is the same explorer with no kernel at all: this very model,
# exported by `course_utils.export` with int8 weights, runs in your browser in plain JavaScript
# ([the GPT in your browser](../book/browser.md) sets that code beside `model.py`). The cell
# also checks that the file the site ships is this chapter's model.

# %%
before = demo.text.value
demo.temperature.value = 1.2                  # what moving the slider does
assert demo.text.value != before, "a new temperature gives a new sample"
print(re.sub("<[^>]+>", "", demo.status.value))
print(prompt + re.sub("<[^>]+>", "", demo.text.value)[len(prompt):])
web_model, _, web_meta = export.load_browser(config.REPO / "book" / "_static" / "models" / "news.js")
greedy_60 = [sampling.generate(m, torch.tensor([prompt_ids]), 60, temperature=0).cpu() for m in (model, web_model)]
print(f"the site's news.js: {web_meta['precision']} weights from the {web_meta['profile']} model; "
      f"60 greedy tokens after {prompt}: {'the same as ours ✓' if torch.equal(*greedy_60) else 'not this profile'}")
assert torch.equal(*greedy_60) or web_meta["profile"] != profile.name, "not this model: make browser-models"

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
# The course this book follows sampled like this (simplified): softmax the logits, apply the
# temperature as `softmax(log(p) / T)`, then run top-k and top-p **on the probabilities**,
# writing a zero for each token a filter drops, and apply `softmax` again after each filter.
# It had no KV cache, and fed the whole, ever-growing sequence to the model without cropping.
#
# **Softmax of probabilities.** A softmax turns each entry $x$ into $e^{x}$, then normalises. A
# dropped token's zero becomes $e^0 = 1$, a kept token's probability (at most 1) at most
# $e \approx 2.7$: every dropped token is drawable again, nearly as likely as the best kept one,
# and there are thousands of them. The source's sampler beside the correct one, at the course's
# own settings ($T=0.2$, top-k 40, top-p 0.9), after 中国人民:

# %%
def buggy_next_probs(logits, temperature, top_k, top_p):
    """The source material's sampler: filters write zeros into probabilities, softmax re-applied."""
    probs = torch.softmax(logits, dim=-1)
    probs = torch.softmax(torch.log(probs) / temperature, dim=-1)
    kth = torch.topk(probs, top_k).values[-1]
    probs = torch.softmax(probs.masked_fill(probs < kth, 0.0), dim=-1)       # softmax #3
    sorted_p, order = torch.sort(probs, descending=True)
    drop = torch.zeros_like(probs, dtype=torch.bool)
    drop[order] = torch.cumsum(sorted_p, dim=-1) - sorted_p >= top_p
    return torch.softmax(probs.masked_fill(drop, 0.0), dim=-1)                # softmax #4


course, V = dict(temperature=0.2, top_k=40, top_p=0.9), len(vocab)
buggy, fixed = buggy_next_probs(logits, **course), sampling.next_token_probs(logits, **course)
meant = fixed > 0                                     # the tokens the filters mean to keep
rows = {"correct: filter logits, one softmax": fixed, "source: zeros, softmax again": buggy}
print(f"uniform over all {V:,} tokens: entropy {math.log(V):.4f} nats, p = {1 / V:.6f} each")
assert int((buggy > 0).sum()) == V and entropy(buggy) > 0.99 * math.log(V)   # e^0 = 1: see above
pd.DataFrame.from_dict({name: {"tokens that can be drawn": int((p > 0).sum()),
                               "mass on the tokens meant to be kept": float(p[meant].sum()),
                               "entropy (nats)": entropy(p), "effective tokens, exp(entropy)": math.exp(entropy(p))}
                        for name, p in rows.items()}, orient="index").round(4)

# %% [markdown]
# The correct sampler at $T=0.2$ keeps only the few likeliest tokens (nearly greedy, as the
# course intended). The source's leaves **every** token drawable, nearly uniformly: its entropy
# is the uniform one's to the four decimals printed, and the tokens the filters meant to keep
# get their share of a uniform draw, a fraction of a percent, not all of it. The filters and the
# temperature had all but no effect (the assert: every token drawable, entropy within 1% of the
# uniform one; $e^0 = 1$ makes it so for any model). The text, same seed and window rule:

# %%
def sample_text(next_probs, prompt, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = vocab.encode(prompt)
    with torch.no_grad():
        for _ in range(n):
            p = next_probs(model(torch.tensor([ids[-block_size:]], device=device))[0][0, -1].float().cpu())
            ids.append(int(sampling.draw(p[None], g)))
    return vocab.decode(ids, skip_special=True)


for name, fn in [("correct", lambda z: sampling.next_token_probs(z, **course)),
                 ("source ", lambda z: buggy_next_probs(z, **course))]:
    print(f"{name}: {sample_text(fn, prompt, 50)}")

# %% [markdown]
# **Temperature as `softmax(log(p) / T)`** is *mathematically* $\mathrm{softmax}(z/T)$, since
# $\log p_i = z_i - \log\sum_j e^{z_j}$ and the softmax ignores constant shifts. Numerically it
# goes through probabilities, which underflow to exactly 0 in float32 once a logit is about 103
# below the largest, and a token whose probability is 0 stays at 0 for every $T$. **No
# cropping** lets the sequence outgrow the position table. Both, measured:

# %%
via_log = torch.softmax(torch.log(probs) / 2.0, -1)
print(f"our model at T=2: max |difference| {float((via_log - torch.softmax(logits / 2, -1)).abs().max()):.1e}; "
      f"probabilities exactly 0: {int((probs == 0).sum())} (logit range {float(logits.max() - logits.min()):.1f})")
extreme = torch.tensor([0.0, -50.0, -120.0])           # a confident model: gaps of 50 and 120
print("extreme logits at T=2 -> correct:", torch.softmax(extreme / 2, -1).tolist(),
      "| via log(p):", torch.softmax(torch.log(torch.softmax(extreme, -1)) / 2, -1).tolist())
try:
    model(torch.randint(3, len(vocab), (1, block_size + 1), device=device))   # one token too many
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# On our small model the detour through $\log p$ is harmless (no probability underflows); with
# a confident model the third token above is lost for good. Our model refuses a sequence longer
# than its context, with a clear message (the source's failed with an index error). Filtering
# logits with $-\infty$, **one** softmax at the end and a cropped context avoid all three mistakes.

# %% [markdown]
# > **Pitfalls.**
# > - *Filtering probabilities, then softmax again* (the source material): every zeroed token
# >   becomes $e^0 = 1$, and the result is close to uniform over the whole vocabulary. Filter
# >   **logits** with $-\infty$; softmax once.
# > - *Top-k with a threshold* (`logits < kth`) keeps more than k tokens on ties; use the
# >   indices of `topk` when exactly k matters.
# > - *Temperature 0* is not a division by zero: it means greedy (`argmax`). `generate`
# >   treats it so; `apply_temperature(logits, 0)` raises and says why.
# > - *No KV cache, no cropping* (the source material): generation is quadratic in the
# >   length, and it crashes once the text outgrows `block_size`. Crop the context, cache the
# >   keys and values, and keep both paths on the same window rule so they agree token for token.
# > - *A cache from another sequence or window*: when the window slides, the positions change
# >   and the cache must be rebuilt. *Sampling is random*: pass `seed=` when you compare settings.

# %% [markdown]
# ## Exercises
#
# Each exercise has a stub that raises `NotImplementedError` and a checker from
# `course_utils.exercises.ch08`: replace the `raise` with your code and re-run the checker
# (✓ when right, ✗ with a hint when not). A solution follows, collapsed.
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
    logits, _ = model(idx, cache=cache)                 # the prompt, once
    for step in range(n):
        idx = torch.cat([idx, logits[:, -1:].argmax(dim=-1)], dim=1)
        if step < n - 1:
            logits, _ = model(idx[:, -1:], cache=cache)  # only the newest token
    return idx


_ = ch08.check_greedy_with_cache(greedy_with_cache)


# %% [markdown]
# **Exercise 08.3 (a temperature for a target entropy).** The entropy of $\mathrm{softmax}(z/T)$
# grows with $T$. Write `temperature_for_entropy(logits, target)` returning the $T$ at which the
# entropy equals `target` nats (within $10^{-3}$); bisection on $\log T$ works well. What
# temperature gives the distribution after 中国人民 an entropy of 1 nat?

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
# - A sampler is a function from logits to a next-token distribution: temperature divides the
#   logits, top-k and top-p set logits to $-\infty$, one softmax comes last; greedy is $T = 0$.
# - Greedy is the least diverse (one sample, sixteen times); sampling from the tail trades
#   likelihood for diversity; beam search finds likelier (often blander) continuations.
# - The KV cache stores each layer's keys and values, so each step feeds one token, and gives
#   the same tokens as recomputation over three context windows; its speed, and what
#   compiling adds, are measured in [Going further](08a_fast_decoding.ipynb).
# - The source material's sampler wrote zeros into probabilities and re-applied softmax, which
#   left every token of the vocabulary drawable, nearly uniformly; it had no cache, no cropping.
#
# **Next**, chapter 09 makes the same model smaller by storing its weights as 8-bit integers,
# and measures what that changes in speed (not always for the better) and costs in loss.
