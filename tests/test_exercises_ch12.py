"""Chapter 12's checkers accept right answers and reject wrong ones."""

from __future__ import annotations

import numpy as np

from course_utils.exercises import ch12


def test_percentile_checker(capsys):
    assert ch12.check_percentile(lambda v, q: float(np.percentile(v, q))) is True
    assert ch12.check_percentile(lambda v, q: sorted(v)[len(v) // 2]) is False  # median only
    assert "✗" in capsys.readouterr().out


def test_validate_maxlength_checker(capsys):
    def good(body):
        v = body.get("maxlength")
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 512:
            raise ValueError(f"maxlength must be in 1..512, got {v!r}")
        return v

    def lets_bools_through(body):
        v = body.get("maxlength")
        if not isinstance(v, int) or not 1 <= v <= 512:
            raise ValueError("maxlength is bad")
        return v

    assert ch12.check_validate_maxlength(good) is True
    assert ch12.check_validate_maxlength(lets_bools_through) is False
    out = capsys.readouterr().out
    assert "✓" in out and "True" in out
