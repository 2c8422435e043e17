"""course_utils.timing: the machine line, the one interleaved timing loop, and what is timed with it
(generation speed, forward passes, the side-by-side table of chapter 09, per-layer timings, the
operator table)."""

import pytest
import torch
from conftest import tiny_gpt
from torch import nn

from course_utils import quantize, timing
from course_utils.batches import WindowBatches

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gpt():
    return tiny_gpt(vocab_size=60, block_size=16)


def test_op_table_lists_the_operators_and_the_rest():
    a = torch.randn(64, 64)
    table = timing.op_table(lambda: (a @ a).relu().sum(), repeats=3, top=2, per=1)
    assert list(table.columns) == ["calls", "self ms", "share of wall time"]
    assert len(table) == 4  # 2 operators, the others, and the time outside any operator
    assert table.index[-1] == "(outside the operators)"
    assert any("mm" in name for name in table.index[:2])  # the matrix product is among the top
    assert (table["self ms"] >= 0).all()
    # the rows add up to the wall time (more, where threads ran operators side by side)
    assert table["share of wall time"].sum() >= 1 - 1e-9


def test_op_table_divides_by_per():
    a = torch.randn(32, 32)
    table = timing.op_table(lambda: [a @ a for _ in range(4)], repeats=2, top=1, per=4)
    assert table.loc[table.index[0], "calls"] == pytest.approx(1.0)  # 4 products per run, per 4


def test_op_table_refuses_bad_arguments():
    with pytest.raises(ValueError, match="callable"):
        timing.op_table(None)
    with pytest.raises(ValueError, match="repeats"):
        timing.op_table(lambda: None, repeats=0)


def test_machine_line_names_cpu_threads_load_and_flags():
    line = timing.machine_line()
    assert timing.cpu_model() in line and "torch threads" in line and "load average" in line
    flags = timing.cpu_flags()
    assert set(flags) == set(timing.CPU_FLAGS) and all(isinstance(v, bool) for v in flags.values())
    for name in timing.CPU_FLAGS:
        assert name in line
    load = timing.load_average()
    assert load is None or (len(load) == 3 and all(x >= 0 for x in load))

def test_time_interleaved_alternates_the_order_and_warms_up():
    calls = []
    seconds = timing.time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                      3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]    # warm-ups, then a b, b a, a b
    assert {k: len(v) for k, v in seconds.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for v in seconds.values() for t in v)
    with pytest.raises(ValueError, match="repeats"):
        timing.time_interleaved({"a": lambda: None}, 0)


def test_time_interleaved_sets_and_restores_the_threads():
    before, seen = torch.get_num_threads(), []
    timing.time_interleaved({"a": lambda: seen.append(torch.get_num_threads())}, 1, warmup=0, threads=1)
    assert seen == [1] and torch.get_num_threads() == before


def test_paired_ratio_is_the_median_of_per_repeat_ratios():
    assert timing.paired_ratio([2.0, 3.0, 8.0], [1.0, 1.0, 2.0]) == "3.00x (per repeat 2.00-4.00)"


def test_tokens_per_second_and_forward_ms_run(gpt):
    assert timing.tokens_per_second(gpt, torch.tensor([[1, 2]]), 8, repeats=1) > 0
    assert timing.forward_ms(gpt, torch.randint(0, 60, (2, 16)), repeats=1) > 0


def test_linear_timings_cover_every_shape_once(gpt):
    rows = timing.linear_timings(gpt, rows=1, repeats=2, rounds=1)
    names = [n for r in rows for n in r["names"]]
    linears = [n for n, m in gpt.named_modules() if isinstance(m, nn.Linear)]
    assert sorted(names) == sorted(linears)
    assert len({r["shape"] for r in rows}) == len(rows)
    assert all(r["fp32_us"] > 0 and r["int8_us"] > 0 for r in rows)


def test_compare_interleaves_and_tabulates(gpt):
    tokens = torch.randint(3, 60, (500,)).numpy().astype("uint16")
    source = WindowBatches(tokens, 4, 16, seed=1)
    models = {"fp32": gpt, "int8": quantize.quantize_model(gpt)}
    table = timing.compare(models, val_source=source, eval_iters=2, prompt=torch.tensor([[1, 2]]),
                             new_tokens=4, batch=source.get(0)[0], rounds=2, threads=1)
    assert list(table.index) == ["fp32", "int8"]
    assert set(table.columns) == {"size_MB", "ms_per_token", "ms_per_batch", "val_loss"}
    assert table.loc["int8", "size_MB"] < table.loc["fp32", "size_MB"]
    with pytest.raises(ValueError, match="rounds"):
        timing.compare(models, rounds=0)
    skipped = timing.compare(models, val_source=source, eval_iters=2, skip_loss=["int8"], rounds=1)
    assert skipped.loc["int8", "val_loss"] != skipped.loc["int8", "val_loss"]       # NaN: not evaluated
    assert skipped.loc["fp32", "val_loss"] == pytest.approx(table.loc["fp32", "val_loss"])
    with pytest.raises(ValueError, match="skip_loss names no model: \\['int9'\\]"):
        timing.compare(models, skip_loss=["int9"])
