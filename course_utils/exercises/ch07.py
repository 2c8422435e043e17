"""Checkers for chapter 07 (mixed precision)."""

from __future__ import annotations

import torch

from . import checker


@checker("Exercise 07.1 (the largest exact integer)")
def check_max_exact_integer(max_exact_integer) -> None:
    """`max_exact_integer(dtype) -> int`: the largest N such that every integer 0..N is exact."""
    for dtype, expected in [(torch.float16, 2048), (torch.bfloat16, 256), (torch.float32, 2**24),
                            (torch.float64, 2**53)]:
        got = max_exact_integer(dtype)
        assert isinstance(got, int), f"return an int, got {type(got).__name__}"
        assert got == expected, (
            f"max_exact_integer({dtype}) returned {got}, expected {expected}: with m mantissa "
            f"bits, 2**(m+1) is exact but 2**(m+1) + 1 is not (torch.finfo(dtype).eps = 2**-m)")
    # the answer really is the boundary: N is exact, N + 1 is not
    for dtype in (torch.float16, torch.bfloat16):
        n = max_exact_integer(dtype)
        assert int(torch.tensor(float(n), dtype=dtype)) == n
        assert int(torch.tensor(float(n + 1), dtype=dtype)) != n + 1


@checker("Exercise 07.2 (the largest safe loss scale)")
def check_largest_safe_scale(largest_safe_scale) -> None:
    """`largest_safe_scale(grads) -> float`: the largest power of two 2**k (k integer) such
    that `grads * 2**k` has no value above fp16's maximum (65504) in absolute value."""
    fp16_max = torch.finfo(torch.float16).max
    cases = [torch.tensor([1e-3, -2e-3]), torch.tensor([1.0]), torch.tensor([3e-7, 5.0, -0.25]),
             torch.tensor([65504.0]), torch.tensor([-1e-6])]
    for grads in cases:
        got = largest_safe_scale(grads.clone())
        peak = float(grads.abs().max())
        k = 0
        while peak * 2.0 ** (k + 1) <= fp16_max:
            k += 1
        while peak * 2.0 ** k > fp16_max:
            k -= 1
        expected = 2.0 ** k
        assert isinstance(got, float), f"return a float, got {type(got).__name__}"
        assert got == expected, (
            f"for gradients {grads.tolist()} you returned {got}, expected {expected} = 2**{k} "
            f"(the largest power of two with max|g| * scale <= {fp16_max:.0f})")
        assert torch.isfinite((grads * got).half()).all()


def _reference_update(scale, found_inf, good_steps, growth_factor, backoff_factor, growth_interval):
    if found_inf:
        return scale * backoff_factor, 0
    good_steps += 1
    if good_steps == growth_interval:
        return scale * growth_factor, 0
    return scale, good_steps


@checker("Exercise 07.3 (GradScaler's update rule)")
def check_update_scale(update_scale) -> None:
    """`update_scale(scale, found_inf, good_steps, growth_factor=2.0, backoff_factor=0.5,
    growth_interval=2000) -> (new_scale, new_good_steps)`, as `torch.amp.GradScaler.update`."""
    kw = dict(growth_factor=2.0, backoff_factor=0.5, growth_interval=3)
    # a sequence of steps: the scale must follow the reference rule at every step
    scale, good = 1024.0, 0
    for found_inf in [False, False, False, True, False, True, True, False, False, False, False]:
        want = _reference_update(scale, found_inf, good, **kw)
        got = update_scale(scale, found_inf, good, **kw)
        assert tuple(got) == want, (
            f"from scale={scale}, good_steps={good}, found_inf={found_inf}: got {tuple(got)}, "
            f"expected {want} (an overflow halves the scale and resets the count; "
            f"growth_interval clean steps in a row double it)")
        scale, good = want
    # and the same as PyTorch's own kernel behind GradScaler.update
    scale_t, good_t = torch.tensor([1024.0]), torch.tensor([0], dtype=torch.int32)
    scale, good = 1024.0, 0
    for found_inf in [False, False, True, False, False, False]:
        torch._amp_update_scale_(scale_t, good_t, torch.tensor([float(found_inf)]), 2.0, 0.5, 3)
        scale, good = update_scale(scale, found_inf, good, **kw)
        assert (scale, good) == (float(scale_t), int(good_t)), (
            f"after found_inf={found_inf} PyTorch has scale={float(scale_t)}, "
            f"good_steps={int(good_t)}; you have {scale}, {good}")
