"""Checkers for chapter 04 (the GPT block).

Each checker compares the learner's function with PyTorch (`F.layer_norm`) or
`course_utils.model` on small cases and prints ✓ or ✗ with a hint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model import Block, GPTConfig, count_parameters
from . import checker


@checker("Exercise 04.1 (LayerNorm by hand)")
def check_layer_norm(layer_norm) -> None:
    """`layer_norm(x, weight, bias, eps=1e-5)`: normalise the last dimension, then scale and shift."""

    g = torch.Generator().manual_seed(0)
    for shape in [(4, 8), (2, 3, 16)]:
        x = torch.randn(*shape, generator=g) * 3 + 1
        w = torch.randn(shape[-1], generator=g)
        b = torch.randn(shape[-1], generator=g)
        got = layer_norm(x.clone(), w, b, 1e-5)
        assert tuple(got.shape) == shape, f"the output has shape {tuple(got.shape)}, expected {shape}"
        expected = F.layer_norm(x, (shape[-1],), w, b, 1e-5)
        if torch.allclose(got, expected, atol=1e-4):
            continue
        unbiased = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + 1e-5) * w + b
        assert not torch.allclose(got, unbiased, atol=1e-4), (
            "you used the unbiased variance (divides by n - 1): LayerNorm divides by n, "
            "x.var(-1, unbiased=False, keepdim=True)"
        )
        no_affine = F.layer_norm(x, (shape[-1],), None, None, 1e-5)
        assert not torch.allclose(got, no_affine, atol=1e-4), "multiply by weight and add bias at the end"
        raise AssertionError(
            f"on a {shape} input the result differs from F.layer_norm by "
            f"{(got - expected).abs().max().item():.2e}: subtract the mean of the last "
            f"dimension, divide by sqrt(variance + eps), then * weight + bias"
        )
    # a tiny eps must not be dropped: a constant row has zero variance
    x = torch.full((1, 4), 2.0)
    got = layer_norm(x, torch.ones(4), torch.zeros(4), 1e-5)
    assert torch.isfinite(got).all(), "a constant row gave inf/NaN: add eps to the variance inside the sqrt"


@checker("Exercise 04.2 (the parameter count in closed form)")
def check_gpt_parameters(gpt_parameters) -> None:
    """`gpt_parameters(vocab_size, block_size, d_model, n_layers, d_ff, bias=True) -> int`."""

    cases = [
        dict(vocab_size=4690, block_size=128, d_model=256, n_layers=6, d_ff=1024, bias=True),
        dict(vocab_size=4690, block_size=128, d_model=128, n_layers=4, d_ff=512, bias=True),
        dict(vocab_size=100, block_size=16, d_model=32, n_layers=2, d_ff=64, bias=False),
        dict(vocab_size=7, block_size=3, d_model=6, n_layers=1, d_ff=5, bias=True),
    ]
    for case in cases:
        expected = count_parameters(GPTConfig(n_heads=1, **case))
        got = int(gpt_parameters(**case))
        if got == expected:
            continue
        V, T, d, L = case["vocab_size"], case["block_size"], case["d_model"], case["n_layers"]
        diff = got - expected
        hints = {
            V * d: "the head is tied to the token embedding: do not count it twice",
            -T * d: "the position embedding (block_size x d_model) is missing",
            -2 * d: "the final LayerNorm (weight and bias) is missing",
            -(2 * L + 1) * d: "a LayerNorm has a weight *and* a bias when bias=True",
        }
        raise AssertionError(
            f"for {case} you return {got:,}, expected {expected:,} (off by {diff:+,})"
            + (f": {hints[diff]}" if diff in hints else
               ": per block count two LayerNorms, W_qkv (d x 3d) and W_o (d x d), and the MLP "
               "(d x d_ff, d_ff x d), each Linear with its bias when bias=True")
        )


@checker("Exercise 04.3 (a pre-norm block by hand)")
def check_block_forward(block_forward) -> None:
    """`block_forward(block, x)`: the output of a `course_utils.model.Block` from its parts."""

    torch.manual_seed(0)
    block = Block(GPTConfig(vocab_size=10, block_size=8, d_model=16, n_heads=2, d_ff=32,
                            dropout=0.0)).eval()
    for p in block.parameters():  # move LayerNorm off its identity init so mistakes show
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 8, 16)
    with torch.no_grad():
        got = block_forward(block, x.clone())
        expected = block(x)
        if torch.allclose(got, expected, atol=1e-5):
            return
        h = block.ln1(x + block.attn(x))
        post = block.ln2(h + block.mlp(h))
        assert not torch.allclose(got, post, atol=1e-5), (
            "that is post-norm, ln(x + f(x)): the GPT normalises the *input* of each "
            "sub-layer, x + f(ln(x))"
        )
        no_res = block.mlp(block.ln2(block.attn(block.ln1(x))))
        assert not torch.allclose(got, no_res, atol=1e-5), "add the residual: x + attn(...), then h + mlp(...)"
    raise AssertionError(
        "compute h = x + block.attn(block.ln1(x)), then return h + block.mlp(block.ln2(h))"
    )
