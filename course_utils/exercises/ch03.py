"""Checkers for chapter 03 (attention).

Each checker runs the learner's function on small random cases whose answers come from
PyTorch (`F.scaled_dot_product_attention`) or `course_utils.attention`, and prints ✓ or ✗
with a hint that names the likely mistake.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attention import causal_mask
from . import checker


def _qkv(B=2, H=3, T=5, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, T, D, generator=g) for _ in range(3))


@checker("Exercise 03.1 (masked scaled dot-product attention)")
def check_masked_attention(masked_attention) -> None:
    """`masked_attention(q, k, v, mask=None) -> (out, weights)`, boolean mask True = keep."""

    q, k, v = _qkv()
    T = q.size(-2)
    keep = torch.ones(2, 1, 1, T, dtype=torch.bool)
    keep[1, ..., 3:] = False  # the second sequence has two padding keys at the end
    cases = {"no mask": None, "a causal mask": causal_mask(T), "a padding mask": keep,
             "causal & padding": causal_mask(T) & keep}
    for name, mask in cases.items():
        result = masked_attention(q.clone(), k.clone(), v.clone(), mask)
        assert isinstance(result, tuple) and len(result) == 2, "return a pair (out, weights)"
        out, weights = result
        assert tuple(out.shape) == tuple(q.shape), f"out has shape {tuple(out.shape)}, expected {tuple(q.shape)}"
        assert tuple(weights.shape) == (2, 3, T, T), (
            f"weights have shape {tuple(weights.shape)}, expected (B, H, T_q, T_k) = {(2, 3, T, T)}"
        )
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        sums_to_one = torch.allclose(weights.sum(-1), torch.ones(2, 3, T), atol=1e-5)
        if sums_to_one and torch.allclose(out, expected, atol=1e-5):
            continue
        unscaled = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
        assert not torch.allclose(out, unscaled, atol=1e-5), (
            "your scores are not scaled: divide q @ k^T by sqrt(d_k) = sqrt(q.size(-1))"
        )
        if mask is not None:
            kept = torch.nan_to_num(weights).masked_select(mask.expand_as(weights))
            assert kept.abs().max() > 1e-6, (
                f"with {name} you keep exactly the masked positions: True in the mask means "
                f"'may attend', so fill the scores where the mask is False"
            )
        assert sums_to_one, (
            f"with {name} the weights of a query do not sum to 1: set the masked *scores* to "
            f"-inf, then apply the softmax over the last (key) dimension (zeroing weights "
            f"after the softmax breaks the sum to 1)"
        )
        if mask is not None:
            assert (weights.masked_select(~mask.expand_as(weights)).abs() < 1e-6).all(), (
                f"with {name} some masked positions get weight: set their scores to -inf "
                f"before the softmax"
            )
        raise AssertionError(
            f"with {name} the output differs from F.scaled_dot_product_attention by "
            f"{(out - expected).abs().max().item():.2e}"
        )


@checker("Exercise 03.2 (a causal mask for a KV cache)")
def check_cache_causal_mask(cache_causal_mask) -> None:
    """`cache_causal_mask(t_q, t_k) -> bool (t_q, t_k)`: the queries are the last t_q positions."""

    for t_q, t_k in [(1, 1), (4, 4), (1, 6), (2, 5), (3, 9)]:
        got = cache_causal_mask(t_q, t_k)
        assert isinstance(got, torch.Tensor), f"return a tensor, got {type(got).__name__}"
        assert got.dtype == torch.bool, f"return a boolean mask (True = may attend), got {got.dtype}"
        assert tuple(got.shape) == (t_q, t_k), f"the mask for ({t_q}, {t_k}) has shape {tuple(got.shape)}"
        expected = causal_mask(t_q, t_k)
        if not torch.equal(got, expected):
            top_left = torch.ones(t_q, t_k, dtype=torch.bool).tril()
            assert not torch.equal(got, top_left), (
                f"for t_q={t_q}, t_k={t_k} your mask is aligned top-left (like is_causal=True): "
                f"the {t_q} queries are the *last* positions, so query i may see keys "
                f"0..{t_k - t_q}+i (hint: tril(diagonal=t_k - t_q))"
            )
            raise AssertionError(
                f"cache_causal_mask({t_q}, {t_k}) =\n{got.int()}\nexpected\n{expected.int()}"
            )


@checker("Exercise 03.3 (splitting and merging heads)")
def check_split_merge_heads(split_heads, merge_heads) -> None:
    """`split_heads(x, n_heads)`: (B, T, C) -> (B, H, T, C // H); `merge_heads` undoes it."""

    B, T, H, D = 2, 5, 4, 3
    x = torch.arange(B * T * H * D, dtype=torch.float32).reshape(B, T, H * D)
    heads = split_heads(x.clone(), H)
    assert tuple(heads.shape) == (B, H, T, D), (
        f"split_heads gave shape {tuple(heads.shape)}, expected (B, n_heads, T, C // n_heads) = "
        f"{(B, H, T, D)}"
    )
    expected = x.view(B, T, H, D).transpose(1, 2)
    if not torch.equal(heads, expected):
        assert not torch.equal(heads, x.reshape(B, H, T, D)), (
            "reshaping (B, T, C) straight to (B, H, T, D) mixes positions into heads: view it "
            "as (B, T, H, D) first, then swap T and H with transpose(1, 2)"
        )
        raise AssertionError(
            "head h must hold channels h*D .. (h+1)*D - 1 of every position (the layout of "
            "course_utils.attention.MultiHeadAttention)"
        )
    back = merge_heads(heads.clone())
    assert tuple(back.shape) == (B, T, H * D), (
        f"merge_heads gave shape {tuple(back.shape)}, expected (B, T, C) = {(B, T, H * D)}"
    )
    assert torch.equal(back, x), (
        "merge_heads(split_heads(x)) != x: transpose back to (B, T, H, D) before reshaping to "
        "(B, T, C) (and call .contiguous() or use .reshape)"
    )
