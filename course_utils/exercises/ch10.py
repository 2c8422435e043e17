"""Checkers for chapter 10 (fine-tuning for classification).

Each checker runs the learner's function on small cases whose answers come from
`course_utils.finetune` and prints ✓ or ✗ with a hint.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..finetune import GPTClassifier, LoRALinear, freeze, mcnemar
from ..model import GPT, GPTConfig
from . import checker


def _tiny_gpt(seed: int = 0, **changes):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=30, block_size=12, d_model=16, n_heads=2, n_layers=2, d_ff=24, dropout=0.0)
    cfg.update(changes)
    return GPT(GPTConfig(**cfg))


@checker("Exercise 10.1 (trainable parameters of `last_block`)")
def check_last_block_count(last_block_count) -> None:
    """`last_block_count(config, num_classes) -> int`: what freeze(model, "last_block") trains."""

    cases = [dict(), dict(d_model=32, n_heads=4, d_ff=64), dict(n_layers=5, d_ff=40),
             dict(bias=False)]
    for changes in cases:
        for num_classes in (2, 3):
            model = GPTClassifier(_tiny_gpt(**changes), num_classes)
            want = freeze(model, "last_block")
            config = GPTConfig(**model.config.to_dict())
            got = last_block_count(config, num_classes)
            assert got == want, (
                f"for d_model={config.d_model}, d_ff={config.d_ff}, n_layers={config.n_layers}, "
                f"bias={config.bias}, {num_classes} classes: got {got}, expected {want}. Count one "
                f"block (2 LayerNorms, qkv and proj of the attention, fc and proj of the MLP, with "
                f"their biases), plus the final LayerNorm ln_f, plus the head (d_model x "
                f"num_classes + num_classes). n_layers does not matter"
            )


@checker("Exercise 10.2 (merge a LoRA layer)")
def check_lora_merge(lora_merge) -> None:
    """`lora_merge(layer: LoRALinear) -> Tensor`: the weight W + (alpha / r) B A of one
    nn.Linear that computes what the LoRA layer computes (the layer is left unchanged)."""

    torch.manual_seed(1)
    for d_in, d_out, rank, alpha in ((8, 12, 2, 4.0), (16, 16, 4, 16.0), (5, 3, 1, 1.0)):
        layer = LoRALinear(nn.Linear(d_in, d_out), rank=rank, alpha=alpha)
        with torch.no_grad():
            layer.lora_b.normal_()
        before = layer.base.weight.clone()
        weight = lora_merge(layer)
        assert torch.equal(layer.base.weight, before) and not layer.merged, (
            "lora_merge changed the layer: compute a new tensor instead of updating base.weight"
        )
        assert isinstance(weight, torch.Tensor) and tuple(weight.shape) == (d_out, d_in), (
            f"the merged weight of a {d_in} -> {d_out} layer has shape ({d_out}, {d_in})"
        )
        x = torch.randn(4, d_in)
        with torch.no_grad():
            want = layer(x)
            got = x @ weight.T + layer.base.bias
        assert torch.allclose(got, want, atol=1e-5), (
            f"rank {rank}, alpha {alpha}: x @ W_merged.T + b differs from the LoRA layer by "
            f"{(got - want).abs().max():.3g}. W_merged = W + (alpha / rank) * B @ A, with "
            f"A = layer.lora_a (rank x in) and B = layer.lora_b (out x rank)"
        )


@checker("Exercise 10.3 (McNemar's test)")
def check_mcnemar_p(mcnemar_p) -> None:
    """`mcnemar_p(pred_a, pred_b, true) -> float`: the exact two-sided p-value."""

    rng = np.random.default_rng(0)
    true = rng.integers(0, 2, 300)
    for flip_a, flip_b in [(0.1, 0.2), (0.15, 0.15), (0.3, 0.05)]:
        a = true ^ (rng.random(300) < flip_a)
        b = true ^ (rng.random(300) < flip_b)
        want, got = mcnemar(a, b, true)["p_value"], float(mcnemar_p(a, b, true))
        assert abs(got - want) < 1e-9, (
            f"got p = {got:.6f}, expected {want:.6f}: count only the items where exactly one "
            f"classifier is right, and double the binomial tail at the smaller count")
    assert float(mcnemar_p(true, true, true)) == 1.0, "two identical classifiers: p must be 1"
