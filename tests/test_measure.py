"""measure.op_table: where the time of a call goes, by operator (torch.profiler)."""

import pytest
import torch

from course_utils import measure


def test_op_table_lists_the_operators_and_the_rest():
    a = torch.randn(64, 64)
    table = measure.op_table(lambda: (a @ a).relu().sum(), repeats=3, top=2, per=1)
    assert list(table.columns) == ["calls", "self ms", "share of wall time"]
    assert len(table) == 4  # 2 operators, the others, and the time outside any operator
    assert table.index[-1] == "(outside the operators)"
    assert any("mm" in name for name in table.index[:2])  # the matrix product is among the top
    assert (table["self ms"] >= 0).all()
    # the rows add up to the wall time (more, where threads ran operators side by side)
    assert table["share of wall time"].sum() >= 1 - 1e-9


def test_op_table_divides_by_per():
    a = torch.randn(32, 32)
    table = measure.op_table(lambda: [a @ a for _ in range(4)], repeats=2, top=1, per=4)
    assert table.loc[table.index[0], "calls"] == pytest.approx(1.0)  # 4 products per run, per 4


def test_op_table_refuses_bad_arguments():
    with pytest.raises(ValueError, match="callable"):
        measure.op_table(None)
    with pytest.raises(ValueError, match="repeats"):
        measure.op_table(lambda: None, repeats=0)
