"""course_utils.attention against PyTorch's reference, masks, and the KV cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_utils.attention import KVCache, MultiHeadAttention, attention, causal_mask, padding_mask

TOL = dict(atol=1e-5, rtol=1e-5)
B, H, T, D = 3, 4, 7, 8


@pytest.fixture
def qkv():
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(B, H, T, D, generator=g) for _ in range(3))


def right_padded_ids(lengths=(7, 4, 1), vocab=20, seed=0) -> torch.Tensor:
    """(B, T) token ids >= 3, then <pad> (0) after each row's length."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (len(lengths), T), generator=g)
    for row, n in enumerate(lengths):
        ids[row, n:] = 0
    return ids


def masks():
    pad = padding_mask(right_padded_ids())
    causal = causal_mask(T)
    return {"none": None, "causal": causal, "padding": pad, "both": causal & pad}


# ------------------------------------------------------------------ masks


def test_causal_mask_is_lower_triangular():
    m = causal_mask(4)
    assert m.dtype == torch.bool and m.shape == (4, 4)
    assert torch.equal(m, torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]).bool())


def test_causal_mask_with_offset_aligns_bottom_right():
    # 2 new queries after 3 cached keys: they are positions 3 and 4 of 5
    m = causal_mask(2, 5)
    assert torch.equal(m, torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]).bool())
    assert torch.equal(causal_mask(5, 5), causal_mask(5))
    assert torch.equal(causal_mask(2, 5), causal_mask(5)[-2:])


def test_padding_mask_shape_and_polarity():
    ids = torch.tensor([[5, 6, 0], [7, 0, 0]])
    m = padding_mask(ids)
    assert m.shape == (2, 1, 1, 3)
    assert m[:, 0, 0].tolist() == [[True, True, False], [True, False, False]]


# ------------------------------------------------------------------ attention()


@pytest.mark.parametrize("kind", ["none", "causal", "padding", "both"])
def test_attention_matches_sdpa(qkv, kind):
    q, k, v = qkv
    mask = masks()[kind]
    out, w = attention(q, k, v, mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, ref, **TOL)
    assert w.shape == (B, H, T, T)
    torch.testing.assert_close(w.sum(-1), torch.ones(B, H, T), **TOL)
    if mask is not None:
        assert (w.masked_select(~mask.expand_as(w)) == 0).all()


def test_attention_matches_is_causal(qkv):
    q, k, v = qkv
    out, _ = attention(q, k, v, causal_mask(T))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), **TOL)


def test_fully_masked_rows_give_zeros_like_pytorch(qkv):
    # left padding + causal: the first query sees only a padding key -> no key at all
    q, k, v = qkv
    keep = torch.ones(B, 1, 1, T, dtype=torch.bool)
    keep[0, ..., :2] = False
    mask = causal_mask(T) & keep
    q.requires_grad_(True)
    out, w = attention(q, k, v, mask)
    assert torch.isfinite(out).all() and torch.isfinite(w).all()
    assert (out[0, :, :2] == 0).all()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **TOL)
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_attention_rejects_float_masks(qkv):
    q, k, v = qkv
    with pytest.raises(ValueError, match="boolean"):
        attention(q, k, v, causal_mask(T).float())


def test_scaling_uses_head_dim():
    q = torch.ones(1, 1, 2, 16)
    k = torch.tensor([[[[1.0] * 16, [0.0] * 16]]])
    v = torch.eye(2)[None, None]
    _, w = attention(q, k, v)
    # scores 16/sqrt(16) = 4 and 0
    expected = torch.softmax(torch.tensor([4.0, 0.0]), 0)
    torch.testing.assert_close(w[0, 0, 0], expected)


# ------------------------------------------------------------------ MultiHeadAttention


def reference_mha(mha: MultiHeadAttention, x: torch.Tensor, key_padding_mask=None):
    """The same layer computed with F.scaled_dot_product_attention from its weights."""
    Bx, Tx, C = x.shape
    q, k, v = F.linear(x, mha.qkv.weight, mha.qkv.bias).split(C, dim=2)
    q, k, v = (t.reshape(Bx, Tx, mha.n_heads, -1).transpose(1, 2) for t in (q, k, v))
    if key_padding_mask is None:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        mask = causal_mask(Tx) & key_padding_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.linear(y.transpose(1, 2).reshape(Bx, Tx, C), mha.proj.weight, mha.proj.bias)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_mha_matches_reference(fused, padded, bias):
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4, bias=bias, fused=fused).eval()
    x = torch.randn(B, T, 32)
    kpm = (right_padded_ids() != 0) if padded else None
    with torch.no_grad():
        out = mha(x, key_padding_mask=kpm)
        ref = reference_mha(mha, x, kpm)
    torch.testing.assert_close(out, ref, **TOL)


def test_mha_fused_equals_unfused_and_returns_weights():
    torch.manual_seed(0)
    a = MultiHeadAttention(32, 4, fused=True).eval()
    b = MultiHeadAttention(32, 4, fused=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(B, T, 32)
    with torch.no_grad():
        ya, yb = a(x), b(x)
        yw, w = a(x, return_weights=True)
    torch.testing.assert_close(ya, yb, **TOL)
    torch.testing.assert_close(ya, yw, **TOL)
    assert w.shape == (B, 4, T, T)
    assert (w.triu(1) == 0).all(), "weights above the diagonal must be zero (causal)"


def test_mha_is_causal():
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4).eval()
    x = torch.randn(1, T, 32)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(1, T - 4, 32)
    with torch.no_grad():
        y, y2 = mha(x), mha(x2)
    torch.testing.assert_close(y[:, :4], y2[:, :4], atol=0, rtol=0)
    assert not torch.allclose(y[:, 4:], y2[:, 4:])


@pytest.mark.parametrize("fused", [True, False])
def test_right_padding_leaves_real_tokens_unchanged(fused):
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4, fused=fused).eval()
    n = 4
    x = torch.randn(1, n, 32)
    padded = torch.cat([x, torch.randn(1, T - n, 32)], dim=1)  # whatever sits at the pads
    kpm = torch.zeros(1, T, dtype=torch.bool)
    kpm[:, :n] = True
    with torch.no_grad():
        alone = mha(x)
        with_mask = mha(padded, key_padding_mask=kpm)
    torch.testing.assert_close(with_mask[:, :n], alone, **TOL)
    assert torch.isfinite(with_mask).all()


@pytest.mark.parametrize("fused", [True, False])
def test_left_padding_needs_the_mask(fused):
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4, fused=fused).eval()
    n, p = 4, 3
    x = torch.randn(1, n, 32)
    padded = torch.cat([torch.randn(1, p, 32), x], dim=1)
    kpm = torch.tensor([[False] * p + [True] * n])
    with torch.no_grad():
        alone = mha(x)
        masked = mha(padded, key_padding_mask=kpm)
        unmasked = mha(padded)
    torch.testing.assert_close(masked[:, p:], alone, **TOL)
    assert torch.isfinite(masked).all(), "fully masked pad rows must not give NaN"
    assert not torch.allclose(unmasked[:, p:], alone, atol=1e-3)


def test_mha_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(30, 4)


# ------------------------------------------------------------------ KV cache


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("chunks", [(1,) * T, (3, 1, 1, 2), (4, 3)])
def test_kv_cache_incremental_equals_full(fused, chunks):
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4, fused=fused).eval()
    x = torch.randn(2, T, 32)
    cache = KVCache()
    outs, start = [], 0
    with torch.no_grad():
        full = mha(x)
        for n in chunks:
            outs.append(mha(x[:, start:start + n], cache=cache))
            start += n
    assert len(cache) == T
    torch.testing.assert_close(torch.cat(outs, dim=1), full, **TOL)


def test_kv_cache_update_and_crop():
    cache = KVCache()
    assert len(cache) == 0
    k1, v1 = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    k, v = cache.update(k1, v1)
    assert len(cache) == 3 and torch.equal(k, k1)
    k2, v2 = torch.randn(1, 2, 2, 4), torch.randn(1, 2, 2, 4)
    k, v = cache.update(k2, v2)
    assert len(cache) == 5 and torch.equal(k[..., 3:, :], k2) and torch.equal(v[..., :3, :], v1)
    cache.crop(3)
    assert len(cache) == 3 and torch.equal(cache.k, k1) and torch.equal(cache.v, v1)
