"""Checkers for chapter 08 (sampling and the KV cache)."""

from __future__ import annotations

import math

import torch

from ..model import GPT, GPTConfig
from ..sampling import generate
from ..timing import num_threads
from . import checker


def _tiny_model(block_size: int = 24, vocab_size: int = 30):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, d_model=32, n_heads=4,
                          n_layers=2, d_ff=64, dropout=0.0))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(20)  # peaked distributions, so greedy has no near-ties
    return model.double().eval()


@checker("Exercise 08.1 (min-p filter)")
def check_min_p_filter(min_p_filter) -> None:
    """`min_p_filter(logits, min_p)`: -inf where p < min_p * (largest p), logits unchanged elsewhere."""
    g = torch.Generator().manual_seed(0)
    for shape, min_p in [((10,), 0.1), ((3, 50), 0.05), ((2, 7), 0.5), ((4, 20), 1.0)]:
        logits = torch.randn(shape, generator=g) * 2
        probs = logits.softmax(-1)
        keep = probs >= min_p * probs.max(-1, keepdim=True).values
        expected = logits.masked_fill(~keep, float("-inf"))
        got = min_p_filter(logits.clone(), min_p)
        assert isinstance(got, torch.Tensor) and got.shape == logits.shape, (
            f"return a tensor of logits with the input's shape {tuple(shape)}")
        assert torch.equal(torch.isinf(got), torch.isinf(expected)), (
            f"with min_p={min_p} you kept {int((~torch.isinf(got)).sum())} tokens, expected "
            f"{int(keep.sum())}: keep p >= min_p * max(p), row by row (dim=-1)")
        assert torch.allclose(got[keep], logits[keep]), "keep the surviving logits unchanged"


@checker("Exercise 08.2 (greedy decoding with a KV cache)")
def check_greedy_with_cache(greedy_with_cache) -> None:
    """`greedy_with_cache(model, idx, n)`: the same tokens as recomputation, one new token per step."""

    model = _tiny_model()
    fed = []
    original = model.forward

    def counting_forward(idx, *args, **kwargs):
        fed.append(idx.size(1))
        return original(idx, *args, **kwargs)

    for prompt, n in [([3, 4, 5], 12), ([7], 20), ([1, 2, 3, 4, 5, 6], 18)]:
        idx = torch.tensor([prompt])
        fed.clear()
        with num_threads(1):   # tiny models run fastest on one thread
            expected = generate(model, idx, n, temperature=0, use_cache=False)
            model.forward = counting_forward
            try:
                got = greedy_with_cache(model, idx, n)
            finally:
                model.forward = original
        assert isinstance(got, torch.Tensor) and got.shape == expected.shape, (
            f"return the (1, T + n) ids, prompt included: expected shape {tuple(expected.shape)}, "
            f"got {getattr(got, 'shape', type(got).__name__)}")
        assert torch.equal(got, expected), (
            f"prompt {prompt}, {n} tokens: your tokens differ from greedy decoding by "
            f"recomputation at position {int((got != expected).nonzero()[0, 1])}")
        assert sum(fed) <= len(prompt) + n, (
            f"the model read {sum(fed)} positions for a prompt of {len(prompt)} and {n} new tokens: "
            f"feed the prompt once, then only the newest token, with cache=model.new_cache()")


@checker("Exercise 08.3 (the temperature for a target entropy)")
def check_temperature_for_entropy(temperature_for_entropy) -> None:
    """`temperature_for_entropy(logits, target)`: T with entropy(softmax(logits / T)) = target nats."""
    g = torch.Generator().manual_seed(1)
    for V, target in [(50, 1.0), (50, 2.5), (200, 0.3), (200, 4.0), (10, 2.0)]:
        logits = torch.randn(V, generator=g, dtype=torch.float64) * 3
        T = float(temperature_for_entropy(logits.clone(), target))
        assert T > 0, f"a temperature must be positive, got {T}"
        p = (logits / T).softmax(-1)
        h = float(-(p * p.clamp_min(1e-300).log()).sum())
        assert abs(h - target) < 1e-3, (
            f"vocabulary of {V}, target {target} nats: T={T:.4g} gives an entropy of {h:.4f} "
            f"(the maximum is log V = {math.log(V):.3f}); entropy grows with T, so bisect")
