"""Checkers for chapter 10's deep dive 10a (pooling, probes and features).

Each checker runs the learner's function on small cases whose answers come from
`course_utils.finetune` and prints ✓ or ✗ with a hint.
"""

from __future__ import annotations

import torch

from ..finetune import pool, wilson_interval
from ..vocab import PAD
from . import checker


@checker("Exercise 10a.1 (pool the last real token)")
def check_last_token_pool(last_token_pool) -> None:
    """`last_token_pool(hidden (B, T, d), idx (B, T)) -> (B, d)`: the state of each row's
    last non-`<pad>` token."""

    torch.manual_seed(0)
    for lengths in ([5, 5, 5], [5, 3, 1], [2, 7, 4, 7]):
        T = max(lengths)
        idx = torch.randint(3, 30, (len(lengths), T))
        for row, n in enumerate(lengths):
            idx[row, n:] = PAD
        hidden = torch.randn(len(lengths), T, 6)
        got = last_token_pool(hidden, idx)
        assert isinstance(got, torch.Tensor), f"return a tensor, got {type(got).__name__}"
        assert tuple(got.shape) == (len(lengths), 6), (
            f"for hidden of shape {tuple(hidden.shape)} the result should be "
            f"({len(lengths)}, 6), got {tuple(got.shape)}"
        )
        want = pool(hidden, idx, "last")
        assert torch.allclose(got, want), (
            f"rows of lengths {lengths}: the last real token of a row of length n sits at "
            f"position n - 1, where n = (idx != PAD).sum(1); position T - 1 is padding for "
            f"shorter rows"
        )


@checker("Exercise 10a.2 (Wilson interval)")
def check_wilson(wilson) -> None:
    """`wilson(correct, n) -> (low, high)`: the 95% Wilson score interval."""

    for correct, n in [(85, 100), (1418, 1736), (0, 20), (20, 20), (3, 7)]:
        got, want = tuple(map(float, wilson(correct, n))), wilson_interval(correct, n)
        assert all(abs(g - w) < 1e-4 for g, w in zip(got, want, strict=True)), (
            f"wilson({correct}, {n}) = ({got[0]:.4f}, {got[1]:.4f}), expected "
            f"({want[0]:.4f}, {want[1]:.4f}) (z = 1.96)")
