"""Checkers for chapter 03's deep dive 03a (what attention costs).

Each checker runs the learner's function on small cases whose answers follow from the
tensor sizes, and prints ✓ or ✗ with a hint that names the likely mistake.
"""

from __future__ import annotations

import math

import torch

from . import checker


@checker("Exercise 03a.1 (the memory of the score matrix)")
def check_score_bytes(score_bytes) -> None:
    """`score_bytes(batch, n_heads, T, dtype) -> int`: bytes of one layer's (B, H, T, T) scores."""

    cases = [(1, 1, 4, torch.float32), (32, 8, 128, torch.float32), (4, 12, 1024, torch.float16),
             (2, 3, 5, torch.bfloat16), (1, 2, 7, torch.float64)]
    for B, H, T, dtype in cases:
        expected = B * H * T * T * torch.empty((), dtype=dtype).element_size()
        got = score_bytes(B, H, T, dtype)
        assert int(got) == expected, (
            f"score_bytes({B}, {H}, {T}, {dtype}) returned {got}, expected {expected:,}: "
            f"B * H * T * T entries of {torch.empty((), dtype=dtype).element_size()} bytes each"
            + (" (T enters squared)" if math.isclose(float(got) * T, expected) else "")
        )
