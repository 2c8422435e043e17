"""The exercise checkers of chapters 06-07: ✓ for a right answer, ✗ for a wrong one,
"not attempted" for a stub, and never an exception."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_utils.exercises import ch06, ch07


def _stub(*args, **kwargs):
    raise NotImplementedError


# ------------------------------------------------------------ right answers


def global_mean_loss(rank_means, rank_counts):
    return float(sum(m * n for m, n in zip(rank_means, rank_counts, strict=True)) / sum(rank_counts))


def sampler_indices(n, rank, world_size, epoch, seed=0):
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    order = torch.randperm(n, generator=g).tolist()
    total = math.ceil(n / world_size) * world_size
    order += (order * math.ceil(total / n))[: total - n]
    return order[rank:total:world_size]


def unwrap(model):
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def max_exact_integer(dtype):
    return int(2 / torch.finfo(dtype).eps)


def largest_safe_scale(grads):
    peak = float(grads.abs().max())
    return 2.0 ** math.floor(math.log2(torch.finfo(torch.float16).max / peak))


def update_scale(scale, found_inf, good_steps, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000):
    if found_inf:
        return scale * backoff_factor, 0
    good_steps += 1
    if good_steps == growth_interval:
        return scale * growth_factor, 0
    return scale, good_steps


# ------------------------------------------------------------ wrong answers


def plain_average(rank_means, rank_counts):
    return float(np.mean(rank_means))


def no_epoch(n, rank, world_size, epoch, seed=0):
    return sampler_indices(n, rank, world_size, 0, seed)


def shallow_unwrap(model):
    return getattr(model, "module", model)


def from_max(dtype):
    return int(torch.finfo(dtype).max)


def not_a_power_of_two(grads):
    return float(torch.finfo(torch.float16).max / grads.abs().max())


def never_grows(scale, found_inf, good_steps, growth_factor=2.0, backoff_factor=0.5,
                growth_interval=2000):
    return (scale * backoff_factor, 0) if found_inf else (scale, good_steps + 1)


CASES = [
    (ch06.check_global_mean_loss, global_mean_loss, plain_average, "weight each by its token count"),
    (ch06.check_sampler_indices, sampler_indices, no_epoch, "seed + epoch"),
    (ch06.check_unwrap, unwrap, shallow_unwrap, "_orig_mod"),
    (ch07.check_max_exact_integer, max_exact_integer, from_max, "mantissa"),
    (ch07.check_largest_safe_scale, largest_safe_scale, not_a_power_of_two, "power of two"),
    (ch07.check_update_scale, update_scale, never_grows, "growth_interval"),
]


@pytest.mark.parametrize("check,right,wrong,hint", CASES, ids=lambda x: getattr(x, "__name__", ""))
def test_checkers(check, right, wrong, hint, capsys):
    assert check(_stub) is False
    assert "not attempted" in capsys.readouterr().out
    assert check(right) is True, capsys.readouterr().out
    assert "✓" in capsys.readouterr().out
    assert check(wrong) is False
    out = capsys.readouterr().out
    assert "✗" in out and hint in out, out


def test_crashing_answer_is_reported_not_raised(capsys):
    assert ch07.check_update_scale(lambda *a, **k: 1 / 0) is False
    assert "ZeroDivisionError" in capsys.readouterr().out
