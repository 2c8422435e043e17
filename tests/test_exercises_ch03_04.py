"""The exercise checkers of chapters 03-04 and of 03a, chapter 03's deep dive: ✓ for a right
answer, ✗ with a hint for a wrong one, "not attempted" for a stub, and never an exception."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_utils.exercises import ch03, ch03a, ch04


def _stub(*args, **kwargs):
    raise NotImplementedError


def _verdict(check, *answers, capsys) -> tuple[bool, str]:
    ok = check(*answers)
    return ok, capsys.readouterr().out


# ------------------------------------------------------------ right answers


def masked_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


def cache_causal_mask(t_q, t_k):
    return torch.ones(t_q, t_k, dtype=torch.bool).tril(diagonal=t_k - t_q)


def split_heads(x, n_heads):
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)


def merge_heads(x):
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)


def score_bytes(batch, n_heads, T, dtype):
    return batch * n_heads * T * T * torch.empty((), dtype=dtype).element_size()


def layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def gpt_parameters(vocab_size, block_size, d_model, n_layers, d_ff, bias=True):
    d, b = d_model, int(bias)
    ln = d + b * d
    block = 2 * ln + (4 * d * d + 4 * b * d) + (2 * d * d_ff + b * (d_ff + d))
    return vocab_size * d + block_size * d + n_layers * block + ln


def block_forward(block, x):
    h = x + block.attn(block.ln1(x))
    return h + block.mlp(block.ln2(h))


RIGHT = [
    (ch03.check_masked_attention, (masked_attention,)),
    (ch03.check_cache_causal_mask, (cache_causal_mask,)),
    (ch03.check_split_merge_heads, (split_heads, merge_heads)),
    (ch03a.check_score_bytes, (score_bytes,)),
    (ch04.check_layer_norm, (layer_norm,)),
    (ch04.check_gpt_parameters, (gpt_parameters,)),
    (ch04.check_block_forward, (block_forward,)),
]


@pytest.mark.parametrize("check, answers", RIGHT, ids=lambda x: getattr(x, "__name__", ""))
def test_right_answers_pass(check, answers, capsys):
    ok, out = _verdict(check, *answers, capsys=capsys)
    assert ok and out.startswith("✓"), out


@pytest.mark.parametrize("check, answers", RIGHT, ids=lambda x: getattr(x, "__name__", ""))
def test_stubs_are_not_attempted(check, answers, capsys):
    ok, out = _verdict(check, *[_stub] * len(answers), capsys=capsys)
    assert not ok and out.startswith("…") and "not attempted" in out


# ------------------------------------------------------------ wrong answers get a useful hint


def unscaled(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    w = scores.softmax(-1)
    return w @ v, w


def zero_after_softmax(q, k, v, mask=None):
    w = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).softmax(-1)
    if mask is not None:
        w = w * mask
    return w @ v, w


def flipped_mask(q, k, v, mask=None):
    return masked_attention(q, k, v, None if mask is None else ~mask)


WRONG = [
    (ch03.check_masked_attention, (unscaled,), "sqrt(d_k)"),
    (ch03.check_masked_attention, (zero_after_softmax,), "sum to 1"),
    (ch03.check_masked_attention, (flipped_mask,), "may attend"),
    (ch03.check_masked_attention, (lambda q, k, v, mask=None: masked_attention(q, k, v, mask)[0],),
     "pair"),
    (ch03.check_cache_causal_mask, (lambda t_q, t_k: torch.ones(t_q, t_k, dtype=torch.bool).tril(),),
     "top-left"),
    (ch03.check_cache_causal_mask, (lambda t_q, t_k: torch.ones(t_q, t_k).tril(t_k - t_q),), "boolean"),
    (ch03.check_split_merge_heads,
     (lambda x, h: x.reshape(x.size(0), h, x.size(1), -1), merge_heads), "mixes positions"),
    (ch03.check_split_merge_heads,
     (split_heads, lambda x: x.reshape(x.size(0), x.size(2), -1)), "merge_heads(split_heads(x))"),
    (ch03a.check_score_bytes, (lambda B, H, T, dtype: B * H * T * 4,), "T enters squared"),
    (ch03a.check_score_bytes, (lambda B, H, T, dtype: B * H * T * T * 4,), "bytes each"),
    (ch04.check_layer_norm,
     (lambda x, w, b, eps=1e-5: (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps) * w + b,),
     "unbiased"),
    (ch04.check_layer_norm, (lambda x, w, b, eps=1e-5: F.layer_norm(x, x.shape[-1:], eps=eps),),
     "weight and add bias"),
    (ch04.check_layer_norm,
     (lambda x, w, b, eps=1e-5: (x - x.mean(-1, keepdim=True)) / x.std(-1, unbiased=False, keepdim=True) * w + b,),
     "eps"),
    (ch04.check_gpt_parameters,
     (lambda vocab_size, block_size, d_model, n_layers, d_ff, bias=True:
      gpt_parameters(vocab_size, block_size, d_model, n_layers, d_ff, bias) + vocab_size * d_model,),
     "tied"),
    (ch04.check_gpt_parameters,
     (lambda vocab_size, block_size, d_model, n_layers, d_ff, bias=True:
      gpt_parameters(vocab_size, block_size, d_model, n_layers, d_ff, bias) - block_size * d_model,),
     "position embedding"),
    (ch04.check_block_forward,
     (lambda blk, x: blk.ln2((h := blk.ln1(x + blk.attn(x))) + blk.mlp(h)),), "post-norm"),
    (ch04.check_block_forward, (lambda blk, x: blk.mlp(blk.ln2(blk.attn(blk.ln1(x)))),), "residual"),
]


@pytest.mark.parametrize("check, answers, hint", WRONG,
                         ids=lambda x: x if isinstance(x, str) else getattr(x, "__name__", ""))
def test_wrong_answers_fail_with_a_hint(check, answers, hint, capsys):
    ok, out = _verdict(check, *answers, capsys=capsys)
    assert not ok and out.startswith("✗"), out
    assert hint in out, out


def test_a_crashing_answer_does_not_raise(capsys):
    ok, out = _verdict(ch03.check_masked_attention, lambda *a: 1 / 0, capsys=capsys)
    assert not ok and "ZeroDivisionError" in out
