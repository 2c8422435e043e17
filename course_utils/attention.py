"""Scaled dot-product attention, its masks, and multi-head self-attention with a KV cache.

`attention` is the readable reference; `MultiHeadAttention` uses PyTorch's fused
`F.scaled_dot_product_attention` unless asked for the explicit ("math") path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def causal_mask(t_q: int, t_k: int | None = None, device=None) -> torch.Tensor:
    """Boolean (t_q, t_k) mask, True where a query may look: key position <= query position.

    With a cache the queries are the *last* t_q of t_k positions, so the diagonal is
    shifted by t_k - t_q (PyTorch's `is_causal=True` aligns top-left, which is wrong there).
    """
    t_k = t_q if t_k is None else t_k
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(diagonal=t_k - t_q)


def padding_mask(idx: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Boolean (B, 1, 1, T) mask from token ids: True at real tokens, False at padding keys."""
    return (idx != pad_id)[:, None, None, :]


def attention(q, k, v, mask: torch.Tensor | None = None, dropout_p: float = 0.0):
    """softmax(q k^T / sqrt(d_k)) v, written out. Returns (output, weights).

    `mask` is boolean and broadcastable to (..., T_q, T_k): True keeps a score, False
    sets it to -inf before the softmax (PyTorch's convention for boolean masks). A query
    that may see no key at all (a fully masked row) gets zero weights, not NaN, as in
    `F.scaled_dot_product_attention`.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be boolean (True = may attend), got dtype {mask.dtype}")
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        empty = ~mask.any(dim=-1, keepdim=True)  # queries that may see no key: 0/0 = NaN rows
        if empty.any():
            weights = weights.masked_fill(empty, 0.0)
    if dropout_p > 0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights


@dataclass
class KVCache:
    """The keys and values one attention layer has seen so far, shape (B, H, T, head_dim)."""

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.size(-2)

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's keys and values; return everything cached so far."""
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k = torch.cat([self.k, k], dim=-2)
            self.v = torch.cat([self.v, v], dim=-2)
        return self.k, self.v

    def crop(self, length: int) -> None:
        """Keep only the first `length` positions (e.g. to roll back a speculative step)."""
        if self.k is not None:
            self.k, self.v = self.k[..., :length, :], self.v[..., :length, :]


class StaticKVCache:
    """A KV cache preallocated for `capacity` positions and written in place: no new tensor
    per step, unlike `KVCache`'s concatenation. Buffers (B, H, capacity, head_dim) are made
    at the first `update`; `k` and `v` are views of the positions filled so far."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity, self.length = capacity, 0
        self.k_buf: torch.Tensor | None = None
        self.v_buf: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.length

    @property
    def k(self) -> torch.Tensor | None:
        return None if self.k_buf is None else self.k_buf[..., : self.length, :]

    @property
    def v(self) -> torch.Tensor | None:
        return None if self.v_buf is None else self.v_buf[..., : self.length, :]

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's keys and values after the cached ones; return everything so far."""
        if self.k_buf is None or self.k_buf.shape[:2] != k.shape[:2] or self.k_buf.dtype != k.dtype:
            shape = (*k.shape[:2], self.capacity, k.size(-1))
            self.k_buf = torch.zeros(shape, dtype=k.dtype, device=k.device)
            self.v_buf = torch.zeros(shape, dtype=v.dtype, device=v.device)
            self.length = 0
        end = self.length + k.size(-2)
        if end > self.capacity:
            raise ValueError(f"the cache holds {self.capacity} positions; {end} were asked for")
        self.k_buf[..., self.length: end, :] = k
        self.v_buf[..., self.length: end, :] = v
        self.length = end
        return self.k, self.v

    def crop(self, length: int) -> None:
        """Keep only the first `length` positions (the buffers stay allocated)."""
        self.length = min(self.length, max(0, length))

    @classmethod
    def wrap(cls, k_buf: torch.Tensor, v_buf: torch.Tensor) -> StaticKVCache:
        """A cache over buffers allocated elsewhere (B, H, capacity, head_dim), e.g. some rows
        of a serving engine's cache: `write_at` writes into them in place."""
        cache = cls(k_buf.size(-2))
        cache.k_buf, cache.v_buf = k_buf, v_buf
        return cache

    def write_at(self, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """The fixed-shape step's update: this step's keys and values (B, H, 1, head_dim) written
        in place at position `pos` (a 0-d tensor, or (B,): one position per row); returns the
        whole buffers. `length` is not touched: the caller counts the positions."""
        if pos.dim() == 1:                          # row b at pos[b]
            rows = torch.arange(k.size(0), device=k.device)
            self.k_buf[rows, :, pos] = k[:, :, 0]
            self.v_buf[rows, :, pos] = v[:, :, 0]
        else:
            self.k_buf.index_copy_(2, pos.view(1), k)
            self.v_buf.index_copy_(2, pos.view(1), v)
        return self.k_buf, self.v_buf

    def visible(self, pos: torch.Tensor) -> torch.Tensor:
        """(B or 1, 1, 1, capacity) bool, the attention mask of a token at `pos`: the slots at or
        before its position. A fixed-shape step reads all `capacity` slots whatever the position,
        so the shapes never change (what `torch.compile` needs to build one graph for every
        step); slots after a row's position (left by an earlier occupant of a serving slot) are
        masked out."""
        slots = torch.arange(self.capacity, device=pos.device)
        return (slots <= pos.view(-1, 1)).view(-1, 1, 1, self.capacity)


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention (注意力): one projection for q, k, v, one for the output."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True,
                 fused: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.head_dim, self.dropout, self.fused = n_heads, d_model // n_heads, dropout, fused
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                cache: KVCache | StaticKVCache | None = None, return_weights: bool = False,
                pos: torch.Tensor | None = None, visible: torch.Tensor | None = None):
        """x: (B, T, d_model). key_padding_mask: (B, T_k) bool, True at real tokens.

        `cache`: the keys and values of earlier positions, extended by this call. `pos`: the
        fixed-shape decode step (`course_utils.decoding`): one token per row (T = 1) at
        position `pos` of a `StaticKVCache` (`StaticKVCache.write_at`), attending to the slots
        `visible` marks (`StaticKVCache.visible`)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, H, T, head_dim)
        q, k, v = (t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        if pos is not None:     # every slot of the cache is a key, `visible` says which to read
            k, v = cache.write_at(pos, k, v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=visible, dropout_p=p)
            return self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))
        past = 0 if cache is None else len(cache)
        if cache is not None:
            k, v = cache.update(k, v)
        t_k = k.size(-2)

        mask = None
        if key_padding_mask is not None or past > 0 or return_weights or not self.fused:
            if T == 1 and past > 0:
                mask = None  # one new query may look at everything before it
            else:
                mask = causal_mask(T, t_k, device=x.device)
            if key_padding_mask is not None:
                keep = key_padding_mask[:, None, None, :].to(torch.bool)
                mask = keep if mask is None else (mask & keep)
        if return_weights or not self.fused:
            y, weights = attention(q, k, v, mask, dropout_p=p)
        else:
            causal_fast = mask is None and past == 0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                               is_causal=causal_fast)
            weights = None
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        y = self.resid_drop(self.proj(y))
        return (y, weights) if return_weights else y
