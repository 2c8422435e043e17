"""Checkers for chapter 12 (serving)."""

from __future__ import annotations

import numpy as np

from . import checker


@checker("Exercise 12.1 (percentile)")
def check_percentile(percentile) -> None:
    rng = np.random.default_rng(0)
    for values in ([5.0], [1.0, 2.0], list(rng.exponential(size=37))):
        for q in (0, 50, 90, 95, 100):
            got, want = percentile(list(values), q), float(np.percentile(values, q))
            assert abs(got - want) < 1e-9, f"percentile({q}) of {len(values)} values: got {got}, expected {want}"


@checker("Exercise 12.2 (validate maxlength)")
def check_validate_maxlength(validate) -> None:
    assert validate({"maxlength": 1}) == 1 and validate({"maxlength": 512}) == 512, \
        "valid values 1 and 512 must be returned unchanged"
    for bad in ({}, {"maxlength": 0}, {"maxlength": 513}, {"maxlength": "10"}, {"maxlength": True},
                {"maxlength": 2.5}):
        try:
            validate(bad)
        except ValueError as err:
            assert "maxlength" in str(err), f"the message for {bad} should name the field: {err}"
        else:
            raise AssertionError(f"{bad} should raise ValueError")
