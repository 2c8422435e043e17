"""Smoke tests of the benchmark scripts: they run with tiny settings and print their table.

No timing is asserted: the numbers depend on the machine, the scripts only report them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_throughput_runs_and_prints_a_table(capsys):
    bench = _load("train_throughput")
    assert bench.main(["--profile", "ci", "--steps", "1", "--repeats", "1", "--warmup", "0",
                       "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "| attention | tokens/s (median)" in out
    assert "fused" in out and "softmax" in out and "ratio fused / naive:" in out
    assert "torch threads:" in out and "cpu count:" in out
    # the two variants are the same function of the same weights
    diff = float(out.split("max |logits fused - logits naive| = ")[1].split()[0])
    assert diff < 1e-4


def test_train_throughput_rejects_bad_settings(capsys):
    bench = _load("train_throughput")
    with pytest.raises(SystemExit):
        bench.main(["--profile", "ci", "--steps", "0"])
    assert "--steps must be at least 1" in capsys.readouterr().err
