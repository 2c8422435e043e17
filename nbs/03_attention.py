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
# # 03 · Attention (注意力)
#
# The meaning of a character depends on its neighbours: predicting what follows 我国大部 needs
# the whole phrase, not just 部. Attention lets every position gather information from the
# other positions of its sequence, with weights computed from the content itself; it is the
# one piece of a GPT that mixes information *across* positions. We build it from dot products,
# add the causal and padding masks, split it into heads, check it against `course_utils` and
# PyTorch, look at its weights (in a trained GPT too, for your own text), and count its price,
# which grows with the square of the sequence length.
#
# **Learning goals**
#
# - write scaled dot-product attention, $\mathrm{softmax}(QK^\top/\sqrt{d_k})V$, and explain
#   the $1/\sqrt{d_k}$ with a measurement;
# - build the causal mask and the padding mask, and show what goes wrong without each;
# - split attention into heads, and match `F.scaled_dot_product_attention` to $10^{-5}$;
# - read attention heatmaps, knowing what a random layer can and cannot tell you;
# - count the quadratic work and memory of the score matrix.

# %%
from course_utils import config, plots

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
config.seed_everything(0)

# %% [markdown]
# ## 1. From dot products to attention
#
# Every position $t$ of a sequence emits three vectors, computed from its embedding by three
# learned linear maps: a **query** $q_t$ ("what am I looking for?"), a **key** $k_t$ ("what
# do I contain?") and a **value** $v_t$ ("what do I pass on?"). Position $t$ scores every
# position $s$ by a dot product $q_t \cdot k_s$, turns the scores into weights with a softmax,
# and outputs the weighted average of the values:
#
# $$\alpha_{ts} = \frac{\exp(q_t\cdot k_s/\sqrt{d_k})}{\sum_{s'} \exp(q_t\cdot k_{s'}/\sqrt{d_k})},
# \qquad o_t = \sum_s \alpha_{ts}\, v_s .$$
#
# ![Q times K transposed over the square root of d_k gives a score grid; the causal mask sets future keys to minus infinity; a row-wise softmax gives weights that multiply V. Below, the causal mask (T_q, T_k) and the padding mask (B, 1, 1, T_k) broadcast together](../book/images/attention.png)
#
# *Scaled dot-product attention on a worked example computed by `course_utils.attention.attention`: future keys are masked to $-\infty$ before the softmax, and the boolean causal and padding masks combine by broadcasting.*
#
# Stacking the vectors as rows of matrices $Q, K \in \mathbb{R}^{T\times d_k}$ and
# $V \in \mathbb{R}^{T\times d_v}$, all positions at once:
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}} + M\right)V,$$
#
# where the mask $M$ holds $0$ where a query may look and $-\infty$ where it may not (sections
# 3 and 4). Each row of weights is a probability distribution, so each output is a convex
# combination of the values. First with a handful of random vectors:

# %%
import math

import torch

T, d_k = 5, 8
q, k, v = torch.randn(T, d_k), torch.randn(T, d_k), torch.randn(T, d_k)

scores = q @ k.T / math.sqrt(d_k)      # (T, T): query t against key s
weights = scores.softmax(dim=-1)       # each row sums to 1
out = weights @ v                      # (T, d_k): weighted averages of the values

print(weights.round(decimals=2))
assert torch.allclose(weights.sum(-1), torch.ones(T))
# a convex combination stays inside the range of the values, dimension by dimension
assert (out <= v.max(0).values + 1e-6).all() and (out >= v.min(0).values - 1e-6).all()
print("output shape:", tuple(out.shape))

# %% [markdown]
# The same three lines work on any leading dimensions (batch, heads), because `@` and
# `softmax(dim=-1)` act on the last two. Our inline version takes an optional boolean mask
# (True = may attend, PyTorch's convention) and returns the weights too:

# %%
def my_attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d_k)) v over the last two dimensions; mask: bool, True = keep."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


o, w = my_attention(q, k, v)
assert torch.allclose(o, out) and torch.allclose(w, weights)
print("my_attention reproduces the three lines above")

# %% [markdown]
# ## 2. Why divide by $\sqrt{d_k}$?
#
# If the components of $q$ and $k$ are independent with mean 0 and variance 1, the dot
# product $q\cdot k = \sum_{i=1}^{d_k} q_i k_i$ is a sum of $d_k$ terms of variance 1, so its
# variance is $d_k$. Large scores push the softmax into saturation: one weight near 1, the
# rest near 0, and a softmax Jacobian $\partial\alpha/\partial s = \mathrm{diag}(\alpha) -
# \alpha\alpha^\top$ near zero, so gradients stop flowing. Dividing by $\sqrt{d_k}$ brings the
# variance back to 1. We measure it: 256 random queries against 64 random keys, head sizes
# 4 to 1024, with and without the scale, back-propagating a random upstream gradient
# through the softmax to see the norm that reaches the scores.

# %%
import numpy as np
import pandas as pd


def softmax_stats(d_k, scale, n_queries=256, n_keys=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n_queries, d_k, generator=g)
    k = torch.randn(n_keys, d_k, generator=g)
    s = (q @ k.T * scale).requires_grad_()
    p = s.softmax(dim=-1)
    p.backward(torch.randn(p.shape, generator=g))
    return dict(score_var=s.var().item(), max_weight=p.max(-1).values.mean().item(),
                grad_norm=s.grad.norm(dim=-1).mean().item())


scale_df = pd.DataFrame([dict(d_k=d, scaled=name, **softmax_stats(d, scale))
                         for d in [4, 16, 64, 256, 1024]
                         for name, scale in [("no", 1.0), ("yes", 1 / math.sqrt(d))]])
scale_df.pivot(index="d_k", columns="scaled").round(3)

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
for name, style in [("no", "o-"), ("yes", "s--")]:
    part = scale_df[scale_df.scaled == name]
    label = "q·k / √d_k" if name == "yes" else "q·k (unscaled)"
    axes[0].loglog(part.d_k, part.score_var, style, label=label)
    axes[1].semilogx(part.d_k, part.max_weight, style, label=label)
    axes[2].loglog(part.d_k, part.grad_norm, style, label=label)
axes[1].axhline(1 / 64, color="gray", lw=0.8, ls=":", label="uniform (1/64)")
titles = ["variance of the scores", "mean largest softmax weight", "gradient norm reaching the scores"]
ylabels = ["variance", "weight (64 keys)", "‖∂L/∂scores‖ per query"]
for ax, title, ylabel in zip(axes, titles, ylabels, strict=True):
    ax.set(title=title, xlabel="head size d_k", ylabel=ylabel)
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
unscaled = scale_df[scale_df.scaled == "no"].set_index("d_k")
scaled = scale_df[scale_df.scaled == "yes"].set_index("d_k")
print("variance / d_k without scaling:", (unscaled.score_var / unscaled.index).round(2).tolist())
assert (unscaled.score_var / unscaled.index).between(0.8, 1.25).all()
assert scaled.score_var.between(0.8, 1.25).all()
# what the next paragraph says (seeded, the same in every profile)
assert unscaled.max_weight[64] > 0.5 and unscaled.grad_norm.loc[16:].is_monotonic_decreasing
assert 0.25 < unscaled.grad_norm[1024] / scaled.grad_norm[1024] < 0.45
assert all(scaled[c].max() / scaled[c].min() < 1.25 for c in ["score_var", "max_weight", "grad_norm"])

# %% [markdown]
# The unscaled score variance tracks $d_k$ (the ratio printed above), the scaled one stays near
# 1. Without the scale, by $d_k = 64$ (a typical head size) the softmax puts most of its weight
# on one key, and from $d_k = 16$ on the gradient reaching the scores falls (at $d_k = 1024$ to
# about a third of its scaled value). With the scale, all three curves are flat.
#
# ## 3. The causal mask
#
# A GPT predicts token $t+1$ from tokens $1..t$ at every position at once; if position $t$
# could attend to $t+1$ it would read the answer. The **causal mask** (因果掩码) lets query $t$
# see keys $s \le t$ only (a lower-triangular `True` matrix); masked scores become $-\infty$
# before the softmax. The check that matters: change the *last* key and value, and no earlier
# output may move.

# %%
# NBVAL_CHECK_OUTPUT
T = 6
causal = torch.ones(T, T, dtype=torch.bool).tril()
print(causal.int())

# %%
q, k, v = torch.randn(3, T, 4).unbind(0)
o, w = my_attention(q, k, v, causal)
print(w.round(decimals=2))
assert (w.triu(diagonal=1) == 0).all() and torch.allclose(w.sum(-1), torch.ones(T))

k2, v2 = k.clone(), v.clone()
k2[-1], v2[-1] = torch.randn(4), torch.randn(4)
o2, _ = my_attention(q, k2, v2, causal)
print("max change at positions 0..4:", (o2[:-1] - o[:-1]).abs().max().item())
print("change at the last position: ", (o2[-1] - o[-1]).abs().max().item())
assert torch.equal(o2[:-1], o[:-1]) and not torch.allclose(o2[-1], o[-1])

# %% [markdown]
# ## 4. The padding mask
#
# To batch sentences of different lengths we pad them with `<pad>` (id 0) to a common length
# (chapter 02); no real token should attend to a pad. The **padding mask** (填充掩码), `True` at
# real tokens, shaped `(B, 1, 1, T)`, broadcasts over heads and queries, hides *keys*, and
# combines with the causal mask by a logical and. Does it matter? Two real headlines through a
# random embedding and attention layer (mechanics, not meaning), the short one alone and padded:
#
# - **right padding** (pads after the text, as in training): causality already hides them;
# - **left padding** (pads first, common for prompts): without the mask every token reads them.

# %%
# NBVAL_CHECK_OUTPUT
from torch import nn

from course_utils import artifacts, data
from course_utils.attention import MultiHeadAttention
from course_utils.vocab import PAD

vocab = artifacts.news_vocab()
news = data.load_news()
short, long = "香港各界举行活动喜庆元旦", "党中央国务院关心西藏雪灾救灾工作"
assert short in news and long in news  # two real headlines of the corpus
n_pad = len(long) - len(short)

ids_short = torch.tensor([vocab.encode(short)])
right = torch.tensor([vocab.encode(short) + [PAD] * n_pad, vocab.encode(long)])
left = torch.tensor([[PAD] * n_pad + vocab.encode(short), vocab.encode(long)])
print("right-padded batch:\n", right, "\nleft-padded batch:\n", left)

# %%
embed = nn.Embedding(len(vocab), profile.d_model)
layer = MultiHeadAttention(profile.d_model, profile.n_heads).eval()
with torch.no_grad():
    alone = layer(embed(ids_short))[0]
    outputs = {
        "right padding, no mask": layer(embed(right))[0, : len(short)],
        "right padding, padding mask": layer(embed(right), key_padding_mask=right != PAD)[0, : len(short)],
        "left padding, no mask": layer(embed(left))[0, n_pad:],
        "left padding, padding mask": layer(embed(left), key_padding_mask=left != PAD)[0, n_pad:],
    }
pad_df = pd.DataFrame(
    [(name, (o - alone).abs().max().item(), ((o - alone).norm() / alone.norm()).item())
     for name, o in outputs.items()],
    columns=["batch", "max |Δ| on real tokens", "relative change"],
)
assert pad_df.iloc[[0, 1, 3], 1].max() < 1e-5 and pad_df.iloc[2, 2] > 0.01
config.claim(f"without the mask, left padding moves the real tokens' outputs by "
             f"{pad_df.iloc[2, 2]:.0%} of their own size (more than half)", pad_df.iloc[2, 2] > 0.5)
pad_df

# %% [markdown]
# With left padding and no mask, the real tokens' outputs move by about their own size (the
# claim above prints the share): each spends part of its attention on `<pad>` embeddings,
# which carry no text. With the mask they equal the unpadded run's, up to float32 rounding.
#
# There is a trap in the masked left-padded case: a query at a left pad may see only pads
# (causality), and the padding mask hides those too. Its row of scores is all $-\infty$,
# and our inline softmax returns $0/0$:

# %%
import torch.nn.functional as F

from course_utils.attention import attention

keep = (left != PAD)[:, None, None, :]        # (B, 1, 1, T) key-padding mask
mask = torch.ones(left.size(1), left.size(1), dtype=torch.bool).tril() & keep
x = embed(left).detach()[:, None]             # one head: (B, 1, T, d_model)
_, w_inline = my_attention(x, x, x, mask)
_, w_lib = attention(x, x, x, mask)
out_sdpa = F.scaled_dot_product_attention(x, x, x, attn_mask=mask)
print(f"rows of NaN weights: inline {w_inline.isnan().any(-1).sum().item()} | course_utils.attention "
      f"{w_lib.isnan().any(-1).sum().item()} (its fully masked rows sum to {w_lib[0, 0, :n_pad].sum(-1).tolist()})")
print(f"F.scaled_dot_product_attention (torch {torch.__version__}), fully masked queries:",
      "NaN" if out_sdpa[0, 0, :n_pad].isnan().any() else "zeros"
      if (out_sdpa[0, 0, :n_pad] == 0).all() else "other values")
assert w_inline.isnan().any(-1).sum() == n_pad and (w_lib[0, 0, :n_pad] == 0).all()
if torch.__version__ >= "2.5":  # the next paragraph: zeros since PyTorch 2.5
    assert (out_sdpa[0, 0, :n_pad] == 0).all()

# %% [markdown]
# A NaN there is not harmless: in the next layer the pad is a key, and a zero weight times
# a NaN value is NaN, so it spreads to every real token. Since PyTorch 2.5,
# `F.scaled_dot_product_attention` returns zeros for such rows (a "safe" softmax,
# [pytorch/pytorch#133882](https://github.com/pytorch/pytorch/pull/133882); before, NaN),
# and so does `course_utils.attention.attention`. Only pads get such rows.
#
# ## 5. Multi-head attention
#
# A position may need several notions of "relevant" at once (the previous character, the
# subject, the last punctuation mark). **Multi-head attention** (多头注意力) runs $h$ attentions
# in parallel on $d_\text{model}/h$-dimensional slices, concatenates and projects them:
#
# $$\mathrm{head}_i = \mathrm{Attention}(XW_i^Q, XW_i^K, XW_i^V),\qquad
# \mathrm{MHA}(X) = [\mathrm{head}_1; \dots; \mathrm{head}_h]\,W^O .$$
#
# In code one $d_\text{model}\times d_\text{model}$ projection computes all heads' queries, and
# a reshape `(B, T, C) → (B, T, h, C/h) → (B, h, T, C/h)` puts the heads beside the batch
# dimension, where `my_attention` treats them as a batch: head 0 is plain attention on the
# first $d_\text{model}/h$ columns of the projections (checked below).

# %%
class MyMultiHeadAttention(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.W_q = nn.Linear(d_model, d_model)
        self.W_k = nn.Linear(d_model, d_model)
        self.W_v = nn.Linear(d_model, d_model)
        self.W_o = nn.Linear(d_model, d_model)

    def forward(self, x, key_padding_mask=None):
        B, T, C = x.shape
        split = lambda t: t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        q, k, v = split(self.W_q(x)), split(self.W_k(x)), split(self.W_v(x))
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        if key_padding_mask is not None:
            mask = mask & key_padding_mask[:, None, None, :]
        y, w = my_attention(q, k, v, mask)           # (B, h, T, C/h)
        y = y.transpose(1, 2).reshape(B, T, C)       # concatenate the heads
        return self.W_o(y), w


d_model, n_heads = profile.d_model, profile.n_heads
mha = MyMultiHeadAttention(d_model, n_heads)
x = torch.randn(2, 10, d_model)
y, w = mha(x)
print("out:", tuple(y.shape), "| weights:", tuple(w.shape), "(batch, heads, queries, keys)")
assert y.shape == x.shape and w.shape == (2, n_heads, 10, 10)

hd = d_model // n_heads                      # head 0 = attention on the first hd columns
with torch.no_grad():
    q0, k0, v0 = (lin(x)[..., :hd] for lin in (mha.W_q, mha.W_k, mha.W_v))
    _, w0 = my_attention(q0, k0, v0, torch.ones(10, 10, dtype=torch.bool).tril())
print("max |head-0 weights − attention on the first slice|:", (w[:, 0] - w0).abs().max().item())
assert torch.allclose(w[:, 0], w0, atol=1e-6)

# %% [markdown]
# ## 6. Checking against `course_utils` and PyTorch
#
# `course_utils.attention` holds the canonical versions: `attention` (the explicit formula)
# and `MultiHeadAttention`, which by default calls PyTorch's fused
# `F.scaled_dot_product_attention`. First the bare function, on random `(B, H, T, d)`
# tensors, with each mask:

# %%
from course_utils.attention import causal_mask, padding_mask

B, H, T, D = 2, n_heads, 12, 16
q, k, v = torch.randn(3, B, H, T, D).unbind(0)
ids = torch.randint(3, len(vocab), (B, T))
ids[1, 8:] = PAD                                  # the second sequence is right-padded
masks = {"none": None, "causal": causal_mask(T), "padding": padding_mask(ids),
         "causal & padding": causal_mask(T) & padding_mask(ids)}
rows = []
for name, m in masks.items():
    ours, _ = my_attention(q, k, v, m)
    lib, _ = attention(q, k, v, m)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
    rows.append((name, (ours - lib).abs().max().item(), (ours - ref).abs().max().item()))
check_df = pd.DataFrame(rows, columns=["mask", "vs course_utils", "vs F.sdpa"])
assert (check_df.iloc[:, 1:] < 1e-5).all().all()
check_df

# %% [markdown]
# Now the layer. `course_utils`'s `MultiHeadAttention` keeps $W^Q, W^K, W^V$ stacked as one
# `(3·d_model, d_model)` matrix `qkv` (one multiply instead of three) and $W^O$ as `proj`,
# so we copy our weights over and compare, for its fused and explicit paths:

# %%
def copy_into(ours: MyMultiHeadAttention, fused: bool) -> MultiHeadAttention:
    lib = MultiHeadAttention(d_model, n_heads, fused=fused).eval()
    qkv = [ours.W_q, ours.W_k, ours.W_v]                 # stacked: the layout of lib.qkv
    lib.load_state_dict({"qkv.weight": torch.cat([m.weight for m in qkv]),
                         "qkv.bias": torch.cat([m.bias for m in qkv]),
                         "proj.weight": ours.W_o.weight, "proj.bias": ours.W_o.bias})
    return lib


x = torch.randn(B, T, d_model)
kpm = ids != PAD
rows = []
with torch.no_grad():
    for fused in (True, False):
        lib = copy_into(mha, fused)
        for name, pm in [("causal", None), ("causal & padding", kpm)]:
            diff = (mha(x, pm)[0] - lib(x, key_padding_mask=pm)).abs().max().item()
            rows.append(("fused (F.sdpa)" if fused else "explicit", name, diff))
mha_df = pd.DataFrame(rows, columns=["course_utils path", "mask", "max |Δ|"])
assert (mha_df["max |Δ|"] < 1e-5).all()
mha_df

# %% [markdown]
# All differences are float32 rounding: from here on we use `course_utils`'s version.
#
# ## 7. Looking at attention weights on a real sentence
#
# `MultiHeadAttention(..., return_weights=True)` also returns the weights. We feed it a real
# headline. **The layer and the embeddings (standard deviation 1) are random**, so the
# pattern shows only the mechanics: the causal triangle, rows that sum to 1, and weights
# spread over the visible prefix for no linguistic reason.

# %%
sentence = "较强冷空气将影响我国大部地区"
assert sentence in news
chars = list(sentence)
idx = torch.tensor([vocab.encode(sentence)])
torch.manual_seed(0)
random_embed = nn.Embedding(len(vocab), d_model)
random_layer = MultiHeadAttention(d_model, n_heads).eval()
with torch.no_grad():
    _, w_random = random_layer(random_embed(idx), return_weights=True)
print("weights:", tuple(w_random.shape), "| row sums:", w_random.sum(-1).min().item(), "to",
      w_random.sum(-1).max().item())


def show_heads(weights, chars, title):
    n = weights.size(0)
    fig, axes = plt.subplots(1, n, figsize=(3.1 * n + 0.8, 3.5), layout="constrained", squeeze=False)
    for h, ax in enumerate(axes[0]):
        image = ax.imshow(weights[h], cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(chars)), chars, fontsize=7)
        ax.set_yticks(range(len(chars)), chars, fontsize=7)
        ax.set(title=f"head {h}", xlabel="key (attended to)", ylabel="query")
        ax.grid(False)
    fig.colorbar(image, ax=axes[0], shrink=0.8, label="attention weight")
    fig.suptitle(title)
    plt.show()


show_heads(w_random[0], chars, "a randomly initialised layer: mechanics only")

# %% [markdown]
# A pattern with a meaning needs a trained layer. One attention layer learns a simple task
# in seconds: **output the previous character**. At position $t$ the target is $x_{t-1}$;
# the only way to solve it is to attend from $t$ to $t-1$ and copy that token. The model:
# token plus learned position embeddings (without positions a query cannot tell "one step
# back" from any other key), one attention layer with a residual connection, and a linear
# read-out, trained on random windows of the news text.

# %%
from tqdm.auto import tqdm

from course_utils.batches import random_batch


class PreviousToken(nn.Module):
    def __init__(self, vocab_size, d_model, n_heads, block_size):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(block_size, d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.out = nn.Linear(d_model, vocab_size)

    def forward(self, idx, return_weights=False):
        x = self.tok(idx) + self.pos(torch.arange(idx.size(1)))
        y, w = self.attn(x, return_weights=True)
        logits = self.out(x + y)
        return (logits, w) if return_weights else logits


torch.manual_seed(0)
tokens = artifacts.news_tokens("train")
window, steps = 24, min(100, profile.max_steps)     # 100 steps; fewer under ci
toy = PreviousToken(len(vocab), 64, n_heads, window)
opt = torch.optim.Adam(toy.parameters(), lr=1e-2)
gen = torch.Generator().manual_seed(0)
for _ in tqdm(range(steps), desc="previous-token task"):
    xb, _ = random_batch(tokens, 16, window, generator=gen)
    target = xb.roll(1, dims=1)
    target[:, 0] = -100                            # position 0 has no previous token
    loss = F.cross_entropy(toy(xb).flatten(0, 1), target.flatten(), ignore_index=-100)
    opt.zero_grad()
    loss.backward()
    opt.step()

xb, _ = random_batch(tokens, 64, window, generator=gen)
with torch.no_grad():
    accuracy = (toy(xb).argmax(-1)[:, 1:] == xb[:, :-1]).float().mean().item()
print(f"after {steps} steps: loss {loss.item():.3f}, accuracy on fresh windows {accuracy:.1%}")

# %%
with torch.no_grad():
    _, w_toy = toy(idx, return_weights=True)
prev_weight = w_toy[0].diagonal(offset=-1, dim1=-2, dim2=-1)   # weight of query t on key t-1
print("mean weight on the previous character, per head:", prev_weight.mean(-1).round(decimals=2).tolist())
show_heads(w_toy[0], chars, f"one layer trained {steps} steps to output the previous character")
config.claim(f"every head puts most of its weight on the previous character (mean "
             f"{prev_weight.mean(-1).min():.2f} or more)", bool((prev_weight.mean(-1) > 0.8).all()))
looks_back = all(bool((w_toy[0, :, chars.index(a)].argmax(-1) == chars.index(b)).all())
                 for a, b in [("国", "我"), ("大", "国")])
config.claim("in every head, query 国 looks at 我 most and query 大 at 国", looks_back)

# %% [markdown]
# Every trained head puts most of its weight on the sub-diagonal (the claims above), the
# "previous token" pattern the task needs, not yet perfectly (the accuracy above). Language
# models learn such heads early, with many less legible ones: read *meaning* into heatmaps with care.
#
# **Your own text, in a trained GPT.** Below, every head of chapter 05's news GPT for the
# text you type, from the site's own model file (what the page's explorer computes in your
# browser). Look for heads that read the previous character, punctuation, or an earlier copy.

# %%
from course_utils import export, interpret
from course_utils.widgets import AttentionExplorer

site_gpt, site_vocab, site_meta = export.load_browser(config.REPO / "book" / "_static" / "models" / "news.js")
maps = interpret.attention_maps(site_gpt, site_vocab.encode("中国人民的生活水平不断提高"))
print(f"the site's news GPT ({site_meta['profile']} profile): maps {tuple(maps.shape)} "
      f"(layer, head, query, key); rows sum to 1: {bool(torch.allclose(maps.sum(-1), torch.ones(1)))}")
AttentionExplorer(site_gpt, site_vocab)

# %% [markdown]
# <div class="gpt-attention" data-model="news" data-text="中国人民的生活水平不断提高" data-layer="0" data-head="all"><p><em>(In JupyterLab this box stays empty: use the explorer above. On the book's website it is a live attention explorer.)</em></p></div>
# <script src="../_static/gpt.js"></script>
# <script src="../_static/gpt-demo.js"></script>
#
# ## 8. The price: quadratic in the sequence length
#
# Per head, $QK^\top$ takes $T^2 d_k$ multiply-adds and multiplying the weights by $V$
# another $T^2 d_k$ ($2T^2 d_\text{model}$ for all heads); the explicit version also stores
# the $T\times T$ weights, $4T^2$ bytes per head in float32 (kept for the backward pass).
# Doubling the context quadruples both, while the projections and the MLP
# ($12\,T d_\text{model}^2$ multiply-adds with $d_\text{ff} = 4d_\text{model}$) only double:
# the two products are the smaller part while $T < 6\,d_\text{model}$, as in this book, and
# dominate long contexts. A fused kernel never writes the weights out, but still computes every
# allowed score. [Going further: what attention costs](03a_attention_cost.ipynb) counts,
# times and measures all this against $T$.
#
# > **Pitfalls.**
# > - *Forgetting the $1/\sqrt{d_k}$.* Nothing crashes, but the softmax saturates and passes
# >   less gradient as $d_k$ grows (section 2): slower, less stable training.
# > - *Masking after the softmax.* Multiplying the weights by a 0/1 mask leaves rows that no
# >   longer sum to 1. Put $-\infty$ in the *scores* before the softmax.
# > - *Mask polarity.* For `F.scaled_dot_product_attention` and `course_utils`, a boolean
# >   mask is `True` where a query *may* attend; `torch.nn.MultiheadAttention`'s
# >   `key_padding_mask` is `True` = ignore. A float mask is *added* (0 or $-\infty$).
# > - *Fully masked rows.* A query that may see no key gives $0/0$ = NaN in a hand-written
# >   softmax, and the NaN spreads through the next layer (section 4).
# > - *`is_causal=True` with a KV cache.* PyTorch aligns that mask to the top-left corner;
# >   new queries after cached keys need the diagonal shifted (exercise 03.2).
# > - *Left padding shifts positions.* In a GPT with position embeddings a left-padded
# >   sentence also starts at a later position. This book trains with right padding.
# > - *`view` after `transpose`.* `(B, h, T, d) → (B, T, C)` needs `transpose(1, 2)`, then
# >   `reshape`; reshaping straight across mixes positions and heads silently (exercise 03.3).

# %% [markdown]
# ## Exercises
#
# **Exercise 03.1.** Write `masked_attention(q, k, v, mask=None)` returning `(out, weights)`,
# with a boolean mask (`True` = may attend) broadcastable to `(..., T_q, T_k)`. The checker
# compares it with `F.scaled_dot_product_attention` under four masks and names your mistake.

# %%
from course_utils.exercises import ch03


def masked_attention(q, k, v, mask=None):
    raise NotImplementedError


_ = ch03.check_masked_attention(masked_attention)


# %% tags=["hide-cell"]
def masked_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


_ = ch03.check_masked_attention(masked_attention)


# %% [markdown]
# **Exercise 03.2.** With a KV cache (chapter 08) the model feeds only the $t_q$ *new*
# tokens, while the keys cover all $t_k$ positions so far. Write `cache_causal_mask(t_q, t_k)`,
# a boolean `(t_q, t_k)` mask that lets each new query see every key up to its own position.

# %%
def cache_causal_mask(t_q, t_k):
    raise NotImplementedError


_ = ch03.check_cache_causal_mask(cache_causal_mask)


# %% tags=["hide-cell"]
def cache_causal_mask(t_q, t_k):
    # query i is position t_k - t_q + i: it may see keys 0 .. t_k - t_q + i
    return torch.ones(t_q, t_k, dtype=torch.bool).tril(diagonal=t_k - t_q)


_ = ch03.check_cache_causal_mask(cache_causal_mask)
print(cache_causal_mask(2, 5).int())


# %% [markdown]
# **Exercise 03.3.** Write `split_heads(x, n_heads)`, `(B, T, C) → (B, n_heads, T, C/n_heads)`
# with head $h$ holding channels $h\cdot C/n_\text{heads}$ to $(h+1)\cdot C/n_\text{heads}-1$
# (the layout of `MultiHeadAttention`), and `merge_heads(x)`, its inverse.

# %%
def split_heads(x, n_heads):
    raise NotImplementedError


def merge_heads(x):
    raise NotImplementedError


_ = ch03.check_split_merge_heads(split_heads, merge_heads)


# %% tags=["hide-cell"]
def split_heads(x, n_heads):
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)


def merge_heads(x):
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)


_ = ch03.check_split_merge_heads(split_heads, merge_heads)


# %% [markdown]
# ## Summary
#
# - Attention averages the values with softmax weights computed from query-key dot products:
#   $\mathrm{softmax}(QK^\top/\sqrt{d_k} + M)V$. Dividing by $\sqrt{d_k}$ keeps the score
#   variance near 1 whatever the head size; without it the softmax saturates and passes
#   less gradient the larger $d_k$ (a third as much at $d_k = 1024$), as we measured.
# - The causal mask keeps position $t$ from seeing the future; the padding mask keeps real
#   tokens from attending to `<pad>` (with right padding causality already does; with left
#   padding the mask is essential, and fully masked rows must not produce NaN).
# - Multi-head attention runs several attentions on slices of $d_\text{model}$ as one batched
#   computation; ours matches `course_utils.attention` and `F.scaled_dot_product_attention`
#   to float32 rounding, with every mask.
# - A random layer's heatmap shows mechanics only; after a hundred training steps, every
#   head of one layer puts most of its weight on the previous character.
# - Each of the two products costs $T^2 d_k$ multiply-adds per head, and the weights take
#   $T^2$ numbers per head: quadratic in the context ([Going further](03a_attention_cost.ipynb)).
#
# **Next**, chapter 04 wraps `MultiHeadAttention` with LayerNorm, an MLP and residual
# connections into a transformer block, and stacks the blocks into the GPT.
