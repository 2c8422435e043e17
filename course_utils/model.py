"""The GPT: token + position embeddings, pre-LayerNorm blocks, a tied language-model head.

Read it top to bottom like nanoGPT's model.py: a config, an MLP, a Block, the GPT.
`model(idx, targets)` returns `(logits, loss)`; `<pad>` targets are ignored.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import KVCache, MultiHeadAttention, StaticKVCache
from .vocab import PAD


@dataclass
class GPTConfig:
    """The shape of a GPT. Every size must be a positive whole number.

    - `vocab_size`: tokens the model reads and predicts (the vocabulary's length, specials included).
    - `block_size`: the context: the most tokens the model sees at once (its position table's rows).
    - `d_model`: the width of the residual stream: every token is a vector of this many numbers.
    - `n_heads`: attention heads per block; `d_model` must be divisible by it (head size
      `d_model // n_heads`).
    - `n_layers`: transformer blocks, one after the other.
    - `d_ff`: the hidden width of each block's MLP (GPT-2: 4 * d_model).
    - `dropout`: the probability of zeroing an activation while training, in [0, 1).
    - `bias`: whether Linear layers and LayerNorms have biases (GPT-2: yes).
    - `fused_attention`: PyTorch's fused `scaled_dot_product_attention`; False runs the explicit
      softmax(QK^T / sqrt(d_k))V of chapter 03 (slower, the same math).
    """

    vocab_size: int
    block_size: int = 128
    d_model: int = 256
    n_heads: int = 8
    n_layers: int = 6
    d_ff: int = 1024
    dropout: float = 0.1
    bias: bool = True
    fused_attention: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "d_model", "n_heads", "n_layers", "d_ff"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"GPTConfig.{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


class MLP(nn.Module):
    """Position-wise feed-forward network: d_model -> d_ff -> d_model with a GELU."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.proj = nn.Linear(config.d_ff, config.d_model, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.attn = MultiHeadAttention(config.d_model, config.n_heads, config.dropout,
                                       bias=config.bias, fused=config.fused_attention)
        self.ln2 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, key_padding_mask=None, cache: KVCache | StaticKVCache | None = None,
                pos: torch.Tensor | None = None, visible: torch.Tensor | None = None):
        x = x + self.attn(self.ln1(x), key_padding_mask=key_padding_mask, cache=cache, pos=pos,
                          visible=visible)
        return x + self.mlp(self.ln2(x))


class _LinearCrossEntropy(torch.autograd.Function):
    """Cross-entropy of `h @ weight.T` whose gradients are computed in the forward pass, a chunk
    of rows at a time; see `linear_cross_entropy`."""

    @staticmethod
    def forward(ctx, h, weight, targets, ignore_index: int, chunk: int):
        valid = targets != ignore_index
        n_valid = valid.sum().clamp(min=1).to(h.dtype)
        safe = targets.masked_fill(~valid, 0)
        total = h.new_zeros(())
        grad_h, grad_w = torch.empty_like(h), torch.zeros_like(weight)
        for s in range(0, h.size(0), chunk):
            hc, tc = h[s:s + chunk], safe[s:s + chunk, None]
            w = valid[s:s + chunk, None].to(h.dtype) / n_valid          # each row's share of the mean
            logits = hc @ weight.t()                                     # (chunk, V): the only copy
            lse = torch.logsumexp(logits, dim=1, keepdim=True)
            total = total + ((lse - logits.gather(1, tc)) * w).sum()     # -log softmax at the target
            g = logits.sub_(lse).exp_()                                  # softmax, in place
            g.scatter_add_(1, tc, -torch.ones_like(lse))                 # minus the one-hot target
            g.mul_(w)                                                    # d loss / d logits
            grad_h[s:s + chunk] = g @ weight
            grad_w.addmm_(g.t(), hc)
        ctx.save_for_backward(grad_h, grad_w)
        return total

    @staticmethod
    def backward(ctx, grad):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad, grad_w * grad, None, None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         ignore_index: int = PAD, chunk: int = 256) -> torch.Tensor:
    """`F.cross_entropy(h @ weight.T, targets, ignore_index=...)` (mean over the targets that
    are not ignored; 0 if all are), without ever holding the (N, V) logits.

    The head and the loss are the largest part of a small GPT's training step: for N = 2,048
    tokens and V = 4,690 characters the logits take 38 MB, written by the product, read and
    written by log-softmax, zeroed and written again by the backward pass. Here each chunk of
    rows computes its logits, its loss and the gradient `softmax - onehot` while they are in
    the CPU's cache, and the two gradient products at once; the backward pass only scales
    them. Same arithmetic, up to float rounding (tested against `F.cross_entropy`)."""
    if h.dim() != 2 or targets.shape != h.shape[:1] or weight.dim() != 2 or weight.size(1) != h.size(1):
        raise ValueError(f"linear_cross_entropy wants h (N, d), weight (V, d), targets (N,); got "
                         f"{tuple(h.shape)}, {tuple(weight.shape)}, {tuple(targets.shape)}")
    return _LinearCrossEntropy.apply(h, weight, targets, ignore_index, chunk)


class GPT(nn.Module):
    """A decoder-only transformer language model (GPT-2's architecture, at any size).

    Token ids (B, T) -> token embeddings + learned position embeddings -> `n_layers`
    pre-LayerNorm blocks (causal self-attention, then an MLP, each added to the residual
    stream) -> a final LayerNorm -> the head, which shares its matrix with the token embedding
    (weight tying) and gives the logits of the next token at every position, (B, T, vocab).
    `model(idx, targets)` returns `(logits, loss)`: the cross-entropy over the targets that
    are not `<pad>`, or None without targets. `hidden_states` stops before the head (the
    features chapter 10 classifies); `new_cache` starts a KV cache for generation (chapter 08).
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.block_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model, bias=config.bias)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # weight tying: one matrix reads and writes tokens
        self.apply(self._init_weights)
        # GPT-2: scale the projections that write into the residual stream by 1/sqrt(2 n_layers)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ------------------------------------------------------------------ checks

    def _check_input(self, idx: torch.Tensor, past: int, values: bool = True) -> None:
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
            shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise ValueError(f"idx must be a (batch, time) tensor of token ids, got {shape}")
        if idx.dtype not in (torch.long, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"idx must hold integer token ids, got dtype {idx.dtype}")
        T, limit = idx.size(1), self.config.block_size
        if T == 0:
            raise ValueError("idx is empty: give at least one token")
        if past + T > limit:
            raise ValueError(
                f"sequence of {past + T} tokens exceeds block_size={limit}"
                + (f" ({past} cached + {T} new)" if past else "")
                + f": crop it to the last {limit} tokens, e.g. idx[:, -{limit}:]"
            )
        if not values or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
            return  # reading values breaks a compiled or exported graph: those checks run in eager only
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= self.config.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"token id {bad} is outside the vocabulary (0..{self.config.vocab_size - 1}): "
                f"encode text with the vocabulary this model was built with"
            )

    # ------------------------------------------------------------------ forward

    def new_cache(self, static: bool = True) -> list[KVCache] | list[StaticKVCache]:
        """An empty KV cache, one per block, for `forward(..., cache=...)`: preallocated for
        `block_size` positions and written in place (`static`), or grown by concatenation."""
        if static:
            return [StaticKVCache(self.config.block_size) for _ in self.blocks]
        return [KVCache() for _ in self.blocks]

    def hidden_states(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      cache: list[KVCache] | None = None, pos: torch.Tensor | None = None) -> torch.Tensor:
        """The final-LayerNorm outputs (B, T, d_model): the features fine-tuning builds on.

        attention_mask: optional (B, T) bool/0-1 tensor, 1 at real tokens, 0 at padding keys
        (with a cache: (B, cached + T), covering every key position).
        pos: the fixed-shape decode step (`course_utils.decoding.decode_step`): one token per
        row at position `pos` (0-d, or (B,) one per row) of static caches holding the window;
        it reads every slot of the caches, those after `pos` masked out.
        """
        if cache is not None and len(cache) != len(self.blocks):
            raise ValueError(f"cache has {len(cache)} layers, the model {len(self.blocks)}: use model.new_cache()")
        if pos is not None:
            if attention_mask is not None:
                raise ValueError("the fixed-shape step (pos) takes no attention_mask")
            self._check_input(idx, 0, values=False)       # its tokens come from the sampler
            positions, kpm, visible = pos.view(-1, 1), None, cache[0].visible(pos)
        else:
            past = len(cache[0]) if cache else 0
            self._check_input(idx, past)
            positions, kpm, visible = torch.arange(past, past + idx.size(1), device=idx.device), None, None
            if attention_mask is not None:
                if tuple(attention_mask.shape) != (idx.size(0), past + idx.size(1)):
                    raise ValueError(
                        f"attention_mask has shape {tuple(attention_mask.shape)}, expected "
                        f"(batch, cached + new tokens) = {(idx.size(0), past + idx.size(1))}"
                    )
                kpm = attention_mask.to(torch.bool)
        x = self.drop(self.tok_emb(idx.long()) + self.pos_emb(positions))
        for i, block in enumerate(self.blocks):
            x = block(x, key_padding_mask=kpm, cache=None if cache is None else cache[i], pos=pos,
                      visible=visible)
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                attention_mask: torch.Tensor | None = None, cache: list[KVCache] | None = None,
                fused_loss: bool = False):
        """Logits (B, T, vocab) and the cross-entropy loss over non-`<pad>` targets (or None).

        `fused_loss` (training with targets, fp32): the loss and its gradients by
        `linear_cross_entropy`, chunk by chunk, without the (B, T, vocab) logits, which are
        returned as None."""
        if targets is not None and targets.shape != idx.shape:
            raise ValueError(f"targets {tuple(targets.shape)} must have the shape of idx {tuple(idx.shape)}")
        if fused_loss and targets is not None and torch.is_grad_enabled():
            h = self.hidden_states(idx, attention_mask, cache)
            return None, linear_cross_entropy(h.reshape(-1, h.size(-1)), self.lm_head.weight,
                                              targets.reshape(-1).long())
        logits = self.lm_head(self.hidden_states(idx, attention_mask, cache))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1).long(),
                               ignore_index=PAD)
        return logits, loss

    # ------------------------------------------------------------------ sizes

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameters counted once (the tied head shares the embedding's)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def count_parameters(config: GPTConfig) -> int:
    """The closed form of `GPT(config).num_parameters()` (biases and LayerNorms included)."""
    d, f, V, T, L = config.d_model, config.d_ff, config.vocab_size, config.block_size, config.n_layers
    b = 1 if config.bias else 0
    ln = d * (1 + b)                       # LayerNorm: weight (+ bias)
    attn = 3 * d * d + 3 * d * b + d * d + d * b
    mlp = d * f + f * b + f * d + d * b
    block = 2 * ln + attn + mlp
    return V * d + T * d + L * block + ln  # tied head: no extra V * d
