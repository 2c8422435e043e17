"""Smoke test of bench/serve.py under profile ci: two servers, the same requests, a table and ratios.

No timing is asserted: the numbers depend on the machine, the script only reports them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_script

BENCH = Path(__file__).resolve().parent.parent / "bench" / "serve.py"


def _load():
    return load_script(BENCH, "bench_serve")


def test_serve_bench_runs_and_prints_ratios(capsys):
    bench = _load()
    assert bench.main(["--profile", "ci", "--clients", "4", "--requests", "1", "--maxlength", "8",
                       "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "| greedy | serial |" in out and "| greedy | batched |" in out
    assert "ratio batched / serial at 4 clients, greedy: throughput" in out
    assert "identical texts from both servers: True" in out
    assert "cpu count:" in out and "torch threads: 1 in each server process" in out


def test_serve_bench_rejects_bad_settings(capsys):
    bench = _load()
    with pytest.raises(SystemExit):
        bench.main(["--profile", "ci", "--clients", "0"])
    assert "--clients must be at least 1" in capsys.readouterr().err
