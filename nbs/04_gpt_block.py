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
# # 04 · The GPT block and the whole model
#
# Attention mixes information across positions, but it is a weighted average: it cannot transform
# what it gathers. The transformer block adds a LayerNorm before each sub-layer (a steady scale), a
# position-wise MLP (the per-token computation) and residual connections (every block *adds* to a
# shared stream). Stack blocks between an embedding and a read-out and you have the GPT the rest of
# the book trains. We build each piece inline and check it against `course_utils.model`, measure why
# the norm goes *before* the sub-layer, count every parameter, check a loss of about $\ln V$ and
# causality, and watch a trained GPT's prediction form block by block.
#
# **Learning goals**
#
# - write LayerNorm, the MLP and a pre-norm block, and match `course_utils.model.Block`;
# - compare pre-norm and post-norm by measuring activations and gradients across depth;
# - assemble the GPT (embeddings, blocks, final norm, tied head) and count its parameters in
#   closed form, per component, with and without weight tying;
# - predict the loss at initialisation ($\approx \ln V$) and check it on real news batches;
# - test causality: changing a later token must leave earlier logits unchanged;
# - read the prediction after every block with a next-token lens.

# %%
from course_utils import config, plots

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
config.seed_everything(0)

# %% [markdown]
# ## 1. The shape of a GPT
#
# ![The GPT from token ids through token and position embeddings, N pre-LayerNorm blocks, the final LayerNorm and the head tied to the token embedding; one block zoomed: the residual stream with an attention branch and an MLP branch added back](../book/images/gpt_block.png)
#
# *The GPT of `course_utils.model`: pre-LayerNorm blocks only add to the residual stream, and the output head reuses the token-embedding matrix.*
#
# Token ids $t_1..t_T$ become $x^{(0)} \in \mathbb{R}^{T\times d}$ ($d = d_\text{model}$; row
# $i$: the token's embedding plus position $i$'s), and $L$ identical blocks each read the
# **residual stream** (残差流) $x$ and add their updates to it:
#
# $$h = x + \mathrm{MHA}\big(\mathrm{LN}_1(x)\big), \qquad
# x' = h + \mathrm{MLP}\big(\mathrm{LN}_2(h)\big).$$
#
# A final LayerNorm and a linear layer map each row to $V$ logits: the guess for the next
# token at every position. The sizes here (the profile's model, the news vocabulary):

# %%
from course_utils import artifacts

vocab = artifacts.news_vocab()
V = len(vocab)
d_model, n_heads, n_layers, d_ff = profile.d_model, profile.n_heads, profile.n_layers, profile.d_ff
block_size = profile.block_size
print(f"V={V}  d_model={d_model}  n_heads={n_heads}  n_layers={n_layers}  d_ff={d_ff}  "
      f"block_size={block_size}")

# %% [markdown]
# ## 2. LayerNorm (层归一化)
#
# LayerNorm normalises each token's vector on its own (over the $d$ features, not over the
# batch), then rescales it with learned per-feature parameters $\gamma$ and $\beta$:
#
# $$\mathrm{LN}(x) = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta,
# \qquad \mu = \frac1d\sum_j x_j,\quad \sigma^2 = \frac1d\sum_j (x_j-\mu)^2 .$$
#
# Whatever the stream's scale, a sub-layer sees mean 0 and variance 1 per token (before $\gamma, \beta$).

# %%
import torch
from torch import nn


def my_layer_norm(x, gamma, beta, eps=1e-5):
    mu = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, unbiased=False, keepdim=True)   # divide by d, not d - 1
    return gamma * (x - mu) / torch.sqrt(var + eps) + beta


x = 5 * torch.randn(2, 4, d_model) + 3                   # any scale and offset
ln = nn.LayerNorm(d_model)
nn.init.normal_(ln.weight)
nn.init.normal_(ln.bias)                                 # non-trivial gamma and beta
ours = my_layer_norm(x, ln.weight, ln.bias)
print("max |ours − nn.LayerNorm|:", (ours - ln(x)).abs().max().item())
plain = my_layer_norm(x, torch.ones(d_model), torch.zeros(d_model))
print("per-token mean (max |.|):", plain.mean(-1).abs().max().item(),
      "| per-token std:", plain.std(-1, unbiased=False).min().item(), "to",
      plain.std(-1, unbiased=False).max().item())
assert torch.allclose(ours, ln(x), atol=1e-5)

# %% [markdown]
# ## 3. The MLP
#
# The position-wise feed-forward network (前馈网络) widens each token's vector to $d_\text{ff}$
# (4·$d$ in the course), applies a GELU, a smooth ReLU that damps negative inputs rather
# than cutting them to zero ($\Phi$ is the standard normal CDF), and projects back:
#
# $$\mathrm{MLP}(x) = W_2\,\mathrm{GELU}(W_1 x + b_1) + b_2,\qquad
# \mathrm{GELU}(u) = u\,\Phi(u).$$

# %%
import matplotlib.pyplot as plt
import torch.nn.functional as F

u = torch.linspace(-4, 4, 200)
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(u, F.gelu(u), label="GELU")
ax.plot(u, F.relu(u), "--", label="ReLU")
ax.set(title="GELU against ReLU", xlabel="input u", ylabel="output")
ax.legend()
plt.show()


# %%
class MyMLP(nn.Module):
    def __init__(self, d_model, d_ff):
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff)      # W_1, b_1
        self.proj = nn.Linear(d_ff, d_model)    # W_2, b_2

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


mlp = MyMLP(d_model, d_ff)
x = torch.randn(2, 7, d_model)
y = mlp(x)
# position-wise: each token is transformed on its own, so one position alone gives the same
assert torch.allclose(mlp(x[:, 3:4]), y[:, 3:4], atol=1e-6)
print("MLP:", tuple(x.shape), "->", tuple(y.shape), "| hidden width", d_ff)


# %% [markdown]
# ## 4. The block, inline, and `course_utils.model.Block`
#
# The block wires the pieces with two residual connections. We reuse chapter 03's
# `MultiHeadAttention` from `course_utils` (causal, fused), and name our sub-modules as
# `course_utils.model.Block` does, so the same `state_dict` fits both. The `norm` argument
# builds the post-norm variant too; section 5 compares them.

# %%
from course_utils.attention import MultiHeadAttention


class MyBlock(nn.Module):
    def __init__(self, d_model, n_heads, d_ff, norm="pre"):
        super().__init__()
        self.norm = norm
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = MyMLP(d_model, d_ff)

    def forward(self, x):
        if self.norm == "pre":                   # GPT-2 and later: normalise the input
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))
        x = self.ln1(x + self.attn(x))           # the 2017 Transformer: normalise the sum
        return self.ln2(x + self.mlp(x))


from course_utils.model import GPT, Block, GPTConfig

cfg = GPTConfig(vocab_size=V, block_size=block_size, d_model=d_model, n_heads=n_heads,
                n_layers=n_layers, d_ff=d_ff, dropout=0.0)
ours = MyBlock(d_model, n_heads, d_ff).eval()
lib = Block(cfg).eval()
print(lib.load_state_dict(ours.state_dict()))  # strict: every name and shape must match
x = torch.randn(2, 16, d_model)
with torch.no_grad():
    diff = (ours(x) - lib(x)).abs().max().item()
print("max |MyBlock − course_utils Block|:", diff)
assert diff < 1e-5

# %% [markdown]
# ## 5. Pre-norm or post-norm?
#
# The original Transformer (2017) normalised *after* each residual addition,
# $x' = \mathrm{LN}(x + f(x))$ ("post-norm"); GPT-2 moved the norm to the *input* of each
# sub-layer, $x' = x + f(\mathrm{LN}(x))$ ("pre-norm"), plus a final LayerNorm. In pre-norm
# the stream is a plain sum, $x^{(L)} = x^{(0)} + \sum_\ell f_\ell(\cdot)$, so the loss reaches
# every block through an untouched identity; in post-norm the gradient to block $\ell$ crosses
# the LayerNorms of every later block.
#
# We measure both at initialisation with *the same weights*: a 24-block stack of the profile's
# width, its blocks copied into pre-norm and post-norm `MyBlock`s, on real news text: the
# residual stream's root-mean-square after each block, and each block's gradient norm.

# %%
import math

import pandas as pd

from course_utils.batches import random_batch

val_tokens = artifacts.news_tokens("val")
gen = torch.Generator().manual_seed(0)
xb, yb = random_batch(val_tokens, 8, 64, generator=gen)
depth = 24
torch.manual_seed(0)
deep = GPT(GPTConfig(vocab_size=V, block_size=64, d_model=d_model, n_heads=n_heads,
                     n_layers=depth, d_ff=d_ff, dropout=0.0))


def depth_profile(norm):
    deep.zero_grad()
    blocks = []
    for b in deep.blocks:
        mine = MyBlock(d_model, n_heads, d_ff, norm=norm)
        mine.load_state_dict(b.state_dict())
        blocks.append(mine)
    x = deep.tok_emb(xb) + deep.pos_emb(torch.arange(xb.size(1)))
    rms = []
    for b in blocks:
        x = b(x)
        rms.append(x.pow(2).mean().sqrt().item())
    logits = deep.lm_head(deep.ln_f(x))
    loss = F.cross_entropy(logits.flatten(0, 1), yb.flatten())
    loss.backward()
    grads = [math.sqrt(sum(p.grad.pow(2).sum().item() for p in b.parameters())) for b in blocks]
    return pd.DataFrame({"block": range(1, depth + 1), "stream_rms": rms, "grad_norm": grads}), loss.item()


# %%
pre, loss_pre = depth_profile("pre")
post, loss_post = depth_profile("post")
print(f"initial loss: pre-norm {loss_pre:.3f}, post-norm {loss_post:.3f} (ln V = {math.log(V):.3f})")
summary = pd.DataFrame({
    "stream rms, block 1": [pre.stream_rms.iloc[0], post.stream_rms.iloc[0]],
    f"stream rms, block {depth}": [pre.stream_rms.iloc[-1], post.stream_rms.iloc[-1]],
    "grad norm, block 1": [pre.grad_norm.iloc[0], post.grad_norm.iloc[0]],
    "grad norm, block 2": [pre.grad_norm.iloc[1], post.grad_norm.iloc[1]],
    f"grad norm, block {depth}": [pre.grad_norm.iloc[-1], post.grad_norm.iloc[-1]],
}, index=["pre-norm", "post-norm"])
summary.round(4)

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
for df, name, style in [(pre, "pre-norm", "o-"), (post, "post-norm", "s-")]:
    ax1.plot(df.block, df.stream_rms, style, ms=3, label=name)
    ax2.semilogy(df.block, df.grad_norm, style, ms=3, label=name)
ax1.set(title="residual stream after each block (init)", xlabel="block", ylabel="rms")
ax1.set_yscale("log")
ax2.set(title="gradient norm of each block's parameters", xlabel="block", ylabel="‖∂L/∂θ_block‖")
for ax in (ax1, ax2):
    ax.legend()
fig.tight_layout()
plt.show()
assert (post.stream_rms - 1).abs().max() < 1e-3          # post-norm: rms pinned at 1
rms, g, later = pre.stream_rms, pre.grad_norm, post.grad_norm.iloc[1:]   # later: blocks 2..24
config.claim(f"pre-norm: the stream's rms grows at every block, from {rms.iloc[0]:.3f} to "
             f"{rms.iloc[-1]:.3f}", rms.is_monotonic_increasing and rms.iloc[0] < 0.05)
config.claim(f"pre-norm: all block gradients lie within ×{g.max() / g.min():.1f} of each other "
             f"(under ×10), block 1's above block {depth}'s", g.max() / g.min() < 10 and g.iloc[0] > g.iloc[-1])
config.claim(f"post-norm: blocks 2-{depth} get nearly equal gradients (within ×{later.max() / later.min():.2f}), "
             f"over 10× below every pre-norm block's; block 1 gets ×{post.grad_norm.iloc[0] / later.max():.0f} "
             f"the largest of them", later.max() / later.min() < 1.5 and g.min() > 10 * later.max()
             and post.grad_norm.iloc[0] > 5 * later.max())

# %% [markdown]
# What the measurement shows (the claims above, the numbers in the table):
#
# - **Activation scale.** Post-norm pins the stream's rms at 1. In pre-norm nothing normalises
#   the stream itself: it starts at the embeddings' scale (both drawn with standard deviation
#   0.02, so an rms near $0.02\sqrt2 \approx 0.028$; GPT-2 drew positions with 0.01) and grows
#   as each block adds to it. Hence the final LayerNorm, and sub-layers that read a normalised *copy*.
# - **Gradients.** In pre-norm every block gets a gradient of the same order, the first more
#   than the last. In post-norm the blocks above the first get nearly equal gradients, over an
#   order of magnitude smaller; the first (reading the raw, tiny embeddings) stands apart.
#
# At initialisation neither wiring's gradient vanishes down the 24 blocks. The difference shows
# in training: post-norm transformers need a learning-rate warm-up to train stably, pre-norm
# ones much less (Xiong et al., 2020); chapter 05 uses pre-norm *and* a warm-up.
#
# ## 6. The whole GPT, inline, and `course_utils.model.GPT`
#
# The model adds three things around the blocks: the token and position embeddings, the
# final LayerNorm, and the head. The head reuses the token embedding matrix $E$
# (**weight tying**, 权重共享): the logit of token $j$ is the dot product of the final hidden
# vector with $E_j$, the same vector that represents $j$ at the input.

# %%
class MyGPT(nn.Module):
    def __init__(self, V, block_size, d_model, n_heads, n_layers, d_ff):
        super().__init__()
        self.tok_emb = nn.Embedding(V, d_model)
        self.pos_emb = nn.Embedding(block_size, d_model)
        self.blocks = nn.ModuleList(MyBlock(d_model, n_heads, d_ff) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, V, bias=False)
        self.lm_head.weight = self.tok_emb.weight          # tied

    def forward(self, idx, targets=None):
        pos = torch.arange(idx.size(1), device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None if targets is None else F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=0)   # 0 is <pad>
        return logits, loss


torch.manual_seed(0)
model = GPT(cfg).eval()                     # the canonical model and its initialisation
mine = MyGPT(V, block_size, d_model, n_heads, n_layers, d_ff).eval()
print(mine.load_state_dict(model.state_dict()))
xb, yb = random_batch(val_tokens, 4, block_size, generator=gen)
with torch.no_grad():
    logits_mine, loss_mine = mine(xb, yb)
    logits_lib, loss_lib = model(xb, yb)
print("logits:", tuple(logits_lib.shape), "| max |Δ logits|:",
      (logits_mine - logits_lib).abs().max().item(), "| losses:", loss_mine.item(), loss_lib.item())
assert torch.allclose(logits_mine, logits_lib, atol=1e-5) and abs(loss_mine - loss_lib) < 1e-5

# %% [markdown]
# Same weights, same logits. From chapter 05 on the book uses `course_utils.model.GPT`, which
# adds dropout, attention masks, a KV cache (chapter 08) and clear errors for bad input.
#
# ## 7. Counting parameters
#
# Per block: two LayerNorms ($2\cdot 2d$), attention ($W^{QKV}$: $3d^2 + 3d$, $W^O$: $d^2 + d$)
# and the MLP ($2 d\, d_\text{ff} + d_\text{ff} + d$). Around them: the embeddings ($Vd$,
# $T_\text{block}\, d$) and the final LayerNorm ($2d$); the tied head adds nothing.
#
# $$N = Vd + T_\text{block}\,d + L\,\big(4d^2 + 2d\,d_\text{ff} + 9d + d_\text{ff}\big) + 2d .$$
#
# `course_utils.model.count_parameters` is this formula; both against the real count, for the
# course configuration (`gpu`) and the `cpu` and `ci` profiles.

# %%
# NBVAL_CHECK_OUTPUT
from course_utils.model import count_parameters


def formula(V, T, d, L, f):
    return V * d + T * d + L * (4 * d * d + 2 * d * f + 9 * d + f) + 2 * d


rows = []
for name in ["gpu", "cpu", "ci"]:
    p = config.get_profile(name)
    c = GPTConfig(vocab_size=V, **p.model_kwargs())
    rows.append(dict(profile=name, d_model=p.d_model, n_heads=p.n_heads, n_layers=p.n_layers,
                     d_ff=p.d_ff, block_size=p.block_size,
                     formula=formula(V, p.block_size, p.d_model, p.n_layers, p.d_ff),
                     count_parameters=count_parameters(c), actual=GPT(c).num_parameters()))
counts = pd.DataFrame(rows).set_index("profile")
assert (counts.formula == counts.actual).all() and (counts.count_parameters == counts.actual).all()
print(counts.to_string())

# %% [markdown]
# The three columns agree. Where do the course model's 6 million parameters sit? By name:

# %%
# NBVAL_CHECK_OUTPUT
course = GPT(GPTConfig(vocab_size=V, **config.get_profile("gpu").model_kwargs()))


def component(name):
    if name.startswith("tok_emb"):
        return "token embedding (= tied head)"
    if name.startswith("pos_emb"):
        return "position embedding"
    if ".attn." in name:
        return "attention (all blocks)"
    if ".mlp." in name:
        return "MLP (all blocks)"
    return "LayerNorms (blocks + final)"


parts = pd.Series({n: p.numel() for n, p in course.named_parameters()})  # tied head counted once
breakdown = parts.groupby(component).sum().sort_values(ascending=False).to_frame("parameters")
breakdown["share"] = (breakdown.parameters / breakdown.parameters.sum()).map("{:.1%}".format)
d, f, L = 256, 1024, 6
expected = {"token embedding (= tied head)": V * d, "position embedding": 128 * d,
            "attention (all blocks)": L * (4 * d * d + 4 * d), "MLP (all blocks)": L * (2 * d * f + f + d),
            "LayerNorms (blocks + final)": (2 * L + 1) * 2 * d}
assert breakdown.parameters.to_dict() == expected
print(breakdown.to_string())
print(f"total {breakdown.parameters.sum():,}")
mlp, attn = expected["MLP (all blocks)"], expected["attention (all blocks)"]
assert round(3 * mlp / (mlp + attn)) == 2  # the next paragraph: two thirds, and a fifth
assert round(5 * expected["token embedding (= tied head)"] / breakdown.parameters.sum()) == 1

# %% [markdown]
# The MLPs hold two thirds of the block parameters ($2 d\,d_\text{ff} = 8d^2$ against
# attention's $4d^2$), and with a character vocabulary of a few thousand entries the
# embedding is a fifth of the model.
#
# ## 8. What weight tying saves
#
# An untied head would be a second $V\times d$ matrix. `nn.Module.parameters()` yields a
# shared tensor once, so `num_parameters()` counts the tied matrix once; the `state_dict`,
# however, lists it under both names, a classic way to over-count.

# %%
# NBVAL_CHECK_OUTPUT
assert course.lm_head.weight is course.tok_emb.weight
tied = course.num_parameters()
untied = tied + V * 256
state_dict_sum = sum(t.numel() for t in course.state_dict().values())
print(f"tied:   {tied:>10,} parameters")
print(f"untied: {untied:>10,} parameters (+{V * 256:,})")
print(f"tying saves {V * 256:,} parameters = {V * 256 / untied:.1%} of the untied model")
print(f"summing the state_dict gives {state_dict_sum:,}: the tied matrix counted twice")
assert state_dict_sum == untied

# %% [markdown]
# Besides the saving (printed above), tying makes every logit a similarity to an input
# embedding, which helps rare characters, whose input rows would learn from few examples.
#
# ## 9. The loss at initialisation
#
# A freshly initialised GPT should know nothing, so it should spread its probability evenly
# over the $V$ tokens: the cross-entropy of a uniform guess is $-\ln(1/V) = \ln V$. The
# logits are small: the final LayerNorm gives each hidden vector variance 1 across its $d$
# features and the head's rows (the token embeddings) have standard deviation 0.02, so a
# logit's standard deviation is about $0.02\sqrt{d}$, and the softmax is close to uniform.
# We check it on real validation batches, in the profile's model, with three kinds of
# targets: the real next characters, random characters, and the *inputs themselves*.

# %%
torch.manual_seed(0)
model = GPT(cfg).eval()
xb, yb = random_batch(val_tokens, 16, block_size, generator=gen)
random_targets = torch.randint(3, V, yb.shape, generator=gen)
with torch.no_grad():
    logits, loss_real = model(xb, yb)
    _, loss_random = model(xb, random_targets)
    _, loss_copy = model(xb, xb)
init_df = pd.DataFrame({"targets": ["next character (real text)", "random characters",
                                    "the input itself"],
                        "loss": [loss_real.item(), loss_random.item(), loss_copy.item()]})
init_df["loss − ln V"] = init_df.loss - math.log(V)
self_top = (logits.argmax(-1) == xb).float().mean().item()  # the input's own logit is the largest
print(f"ln V = ln {V} = {math.log(V):.4f} | logits: std {logits.std().item():.3f}, "
      f"0.02·√d = {0.02 * math.sqrt(d_model):.3f}")
assert abs(loss_random.item() - math.log(V)) < 0.1 and abs(loss_real.item() - math.log(V)) < 0.1
config.claim(f"targets = inputs gives {loss_copy:.3f}, over 0.5 below the real targets' "
             f"{loss_real:.3f}: the input token has the largest logit at {self_top:.0%} of the "
             f"positions", loss_copy < loss_real - 0.5 and self_top > 0.5)
init_df.round(4)

# %% [markdown]
# Real and random targets both give a loss close to $\ln V$, and the logits' standard deviation
# matches $0.02\sqrt{d}$ (printed above): at initialisation the model prefers no character. The
# third row is lower without any learning: with tied weights, the *input* token's logit is the
# dot product of the final hidden state (mostly that token's embedding, normalised) with that
# same embedding, usually the largest (the claim above). So `targets = inputs` reports a
# misleadingly low initial loss; a loss far above $\ln V$ at step 0 means a bad initialisation.
#
# ## 10. Causality
#
# Position $t$ must never see tokens after $t$. The check: change one token of a real
# sentence and compare the logits position by position. Everything before the change must
# be bit-for-bit identical; everything from the change on may differ.

# %%
idx = xb[:1].clone()                          # one real window of block_size characters
t = idx.size(1) * 2 // 3                      # the position we change
changed = idx.clone()
changed[0, t] = vocab.encode("龙")[0] if vocab.decode([int(idx[0, t])]) != "龙" else vocab.encode("凤")[0]
with torch.no_grad():
    a, _ = model(idx)
    b, _ = model(changed)
delta = (a - b).abs().amax(-1)[0]             # max |Δ logit| per position
print(f"changed position {t}: {vocab.decode(idx[0, t:t+1].tolist())!r} -> "
      f"{vocab.decode(changed[0, t:t+1].tolist())!r}")
print("max |Δ| before position", t, ":", delta[:t].max().item(), "| from", t, "on: min",
      delta[t:].min().item())
assert delta[:t].max() == 0 and delta[t:].min() > 0

fig, ax = plt.subplots(figsize=(7, 2.8))
ax.bar(range(idx.size(1)), delta.numpy(), color=["C0" if i < t else "C3" for i in range(idx.size(1))])
ax.axvline(t - 0.5, color="k", ls=":", lw=1)
ax.set(title=f"max |Δ logit| per position after changing the token at position {t}",
       xlabel="position", ylabel="max |Δ logit|")
plt.show()

# %% [markdown]
# Only the changed position and the ones after it move (`tests/test_model.py` checks this
# too). Two mistakes a user can make get a clear error instead of a crash deep inside
# PyTorch: a sequence longer than `block_size` (it has no position embedding) and an id
# outside the vocabulary (text encoded with another vocabulary).

# %%
for bad, what in [(torch.randint(3, V, (1, block_size + 1)), "too long"),
                  (torch.tensor([[5, 6, V]]), "id = V"),
                  (torch.tensor([[5, -1, 7]]), "negative id")]:
    try:
        model(bad)
        print(f"{what}: no error (unexpected!)")
    except ValueError as err:
        print(f"{what}: ValueError: {err}")

# %% [markdown]
# ## 11. Reading the prediction block by block
#
# Only the end of the GPT (the final LayerNorm and the tied head) turns the residual stream into
# a next-token distribution. Apply it after *every* block (a **logit lens**) to watch the prediction
# form, here in the site's news GPT (what the page's lens computes); the last row *is* the prediction.

# %%
from course_utils import export, interpret
from course_utils.widgets import LensWidget

site_gpt, site_vocab, _ = export.load_browser(config.REPO / "book" / "_static" / "models" / "news.js")
text = "中国人民的生活水平不断"
probs, tokens = interpret.next_token_lens(site_gpt, site_vocab.encode(text), k=3)
own = site_gpt(torch.tensor([site_vocab.encode(text)]))[0][0, -1].softmax(-1).topk(3)
assert torch.equal(tokens[-1], own.indices), "the last block's lens is the model's own prediction"
for b in range(len(tokens)):
    print(f"after block {b}:", "  ".join(f"{site_vocab.decode([int(t)])} {p:.2f}" for t, p in zip(tokens[b], probs[b], strict=True)))
guess = [site_vocab.decode([int(t[0])]) for t in tokens]
config.claim(f"the top guess after block 0 ({guess[0]}) is not the model's ({guess[-1]}): later blocks change it",
             guess[0] != guess[-1])
LensWidget(site_gpt, site_vocab, text)

# %% [markdown]
# <div class="gpt-lens" data-model="news" data-text="中国人民的生活水平不断" data-k="5"><p><em>(In JupyterLab this box stays empty: use the lens above. On the book's website it is a live next-token lens.)</em></p></div>
# <script src="../_static/gpt.js"></script>
# <script src="../_static/gpt-demo.js"></script>
#
# > **Pitfalls.**
# > - *Post-norm by accident.* `x = ln(x + attn(x))` and `x = x + attn(ln(x))` differ by one
# >   parenthesis. The GPT is pre-norm, and then it needs the final LayerNorm: the stream
# >   itself is never normalised and its scale grows with depth (section 5).
# > - *Counting tied weights twice.* `sum(t.numel() for t in model.state_dict().values())`
# >   counts the shared embedding/head matrix twice; `model.parameters()` yields it once.
# >   Copying a tied model's `state_dict` into an untied one silently unties it.
# > - *`targets = inputs` as a quick test.* With tied weights it gives a loss well below
# >   $\ln V$ before any training (section 9). Shift the targets by one.
# > - *Dropout in checks.* Comparing logits (causality, another implementation) needs
# >   `model.eval()`: in training mode dropout makes two forward passes differ.
# > - *Longer than `block_size`.* The position table has `block_size` rows: generation must
# >   crop its context to the last `block_size` tokens (the source material did not; 08 does).
# > - *Padding in the loss.* The loss must ignore `<pad>` targets (`ignore_index=0`), as both
# >   versions here do; otherwise the model is rewarded for predicting padding.

# %% [markdown]
# ## Exercises
#
# **Exercise 04.1.** Write `layer_norm(x, weight, bias, eps=1e-5)` by hand (no `nn.LayerNorm`,
# no `F.layer_norm`): normalise the last dimension, then scale and shift.

# %%
from course_utils.exercises import ch04


def layer_norm(x, weight, bias, eps=1e-5):
    raise NotImplementedError


_ = ch04.check_layer_norm(layer_norm)


# %% tags=["hide-cell"]
def layer_norm(x, weight, bias, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * weight + bias


_ = ch04.check_layer_norm(layer_norm)


# %% [markdown]
# **Exercise 04.2.** Write `gpt_parameters(vocab_size, block_size, d_model, n_layers, d_ff,
# bias=True)`, the parameter count of `course_utils.model.GPT`. With `bias=False` the Linear
# layers have no bias and the LayerNorms have a weight only. (The number of heads does not
# matter: why?)

# %%
def gpt_parameters(vocab_size, block_size, d_model, n_layers, d_ff, bias=True):
    raise NotImplementedError


_ = ch04.check_gpt_parameters(gpt_parameters)


# %% tags=["hide-cell"]
def gpt_parameters(vocab_size, block_size, d_model, n_layers, d_ff, bias=True):
    # the heads only split d_model into slices: they add no parameters
    d, b = d_model, int(bias)
    layer_norm = d + b * d
    attention = 4 * d * d + b * 4 * d                  # qkv (3d x d) and proj (d x d)
    mlp = 2 * d * d_ff + b * (d_ff + d)
    block = 2 * layer_norm + attention + mlp
    return vocab_size * d + block_size * d + n_layers * block + layer_norm   # tied head


_ = ch04.check_gpt_parameters(gpt_parameters)
print("without biases the course model has",
      f"{gpt_parameters(V, 128, 256, 6, 1024, bias=False):,} parameters")


# %% [markdown]
# **Exercise 04.3.** Write `block_forward(block, x)`: the output of a
# `course_utils.model.Block` computed from its parts `block.ln1`, `block.attn`, `block.ln2`,
# `block.mlp`.

# %%
def block_forward(block, x):
    raise NotImplementedError


_ = ch04.check_block_forward(block_forward)


# %% tags=["hide-cell"]
def block_forward(block, x):
    h = x + block.attn(block.ln1(x))
    return h + block.mlp(block.ln2(h))


_ = ch04.check_block_forward(block_forward)

# %% [markdown]
# ## Summary
#
# - A pre-norm block is $h = x + \mathrm{MHA}(\mathrm{LN}_1 x)$, $x' = h +
#   \mathrm{MLP}(\mathrm{LN}_2 h)$: attention mixes positions, the MLP transforms each, and
#   the residual stream carries everything; our inline versions match `course_utils.model`.
# - Measured at initialisation: pre-norm leaves the stream unnormalised (it grows with
#   depth, so a final LayerNorm is needed) and passes gradients of the same order to every
#   block; post-norm pins the stream at unit scale.
# - The course model (d 256, 8 heads, 6 layers, d_ff 1024, block 128, the news vocabulary)
#   has exactly the closed-form parameter count of section 7; two thirds of each block are
#   MLP, and weight tying saves a sixth of the untied model.
# - At initialisation the loss is close to $\ln V$ on real text, and changing a token leaves every
#   earlier logit bit-for-bit unchanged. A lens reads a trained GPT's guess after every block.
#
# **Next**, chapter 05 trains this GPT on the news corpus with `course_utils.train`: AdamW,
# warm-up and cosine decay, evaluation on the validation split, and checkpoints.
