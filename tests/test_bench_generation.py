"""Smoke test of bench/generation.py under profile ci: it runs and prints its tables and ratios.

No timing is asserted: the numbers depend on the machine, the script only reports them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_script

BENCH = Path(__file__).resolve().parent.parent / "bench" / "generation.py"


def _load():
    return load_script(BENCH, "bench_generation")


def test_generation_bench_runs_and_prints_ratios(capsys):
    bench = _load()
    assert bench.main(["--profile", "ci", "--new-tokens", "8", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "| KV cache |" in out and "| recompute |" in out
    assert "ratio KV cache / recompute:" in out and "ratio int8 dynamic (torch.ao) / fp32: generation" in out
    assert "ratio int8 weight-only (from scratch) / fp32" in out
    assert "identical tokens: True" in out
    assert "| int8 dynamic (torch.ao) |" in out and "torch threads:" in out
    assert "| fp32, compiled step |" in out and "| KV cache, compiled step, weights frozen |" in out
    assert "compiled step with the weights frozen / recompute:" in out
    if bench.quantize.INT_MM:
        assert "ratio int8 weights and inputs (torch._int_mm) / fp32, both with the compiled decode step" in out


def test_generation_bench_rejects_bad_settings(capsys):
    bench = _load()
    with pytest.raises(SystemExit):
        bench.main(["--profile", "ci", "--new-tokens", "0"])
    assert "--new-tokens must be at least 1" in capsys.readouterr().err
