"""course_utils.evaluation: the unigram baseline a language model must beat."""

from __future__ import annotations

import math

import numpy as np
import pytest

from course_utils.evaluation import unigram_loss


def test_unigram_baseline_is_entropy_of_frequencies():
    toks = np.array([3, 3, 4, 5] * 100)
    loss = unigram_loss(toks, toks, 6)
    p = np.array([1, 1, 1, 201, 101, 101]) / 406
    assert loss == pytest.approx(-(0.5 * math.log(p[3]) + 0.25 * math.log(p[4]) + 0.25 * math.log(p[5])))
