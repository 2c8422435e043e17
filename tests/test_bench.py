"""Smoke tests of the benchmark scripts: they run with tiny settings and print their table.

No timing is asserted: the numbers depend on the machine, the scripts only report them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_script

from course_utils import config

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str):
    return load_script(BENCH / f"{name}.py", f"bench_{name}")


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


def test_finetune_bench_runs_and_prints_every_strategy(capsys):
    bench = _load("finetune")
    assert bench.main(["--profile", "ci", "--steps", "1", "--repeats", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for name in ("all layers", "LoRA r=8, every block", "last block + head", "LoRA r=8, last block",
                 "head only"):
        assert f"| {name} |" in out
    assert "ratio all layers / LoRA r=8, every block (time per step):" in out
    # trainable counts agree with finetune's own closed forms (ci: one head of 2 classes)
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in out.splitlines()
            if line.startswith("| ") and "variant" not in line}
    d_model = config.get_profile("ci").d_model
    assert int(rows["head only"].replace(",", "")) == 2 * d_model + 2
    assert int(rows["all layers"].replace(",", "")) > int(rows["last block + head"].replace(",", ""))


def test_finetune_bench_rejects_bad_settings(capsys):
    bench = _load("finetune")
    with pytest.raises(SystemExit):
        bench.main(["--profile", "ci", "--rank", "0"])
    assert "--rank must be at least 1" in capsys.readouterr().err


def test_export_bench_runs_and_prints_every_runtime(capsys):
    pytest.importorskip("onnxruntime")
    bench = _load("export")
    assert bench.main(["--profile", "ci", "--new-tokens", "4", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("PyTorch eager", "ONNX Runtime fp32", "ONNX Runtime int8", "PyTorch generate (KV cache)"):
        assert f"| {name} |" in out
    assert "ratio ONNX Runtime fp32 / PyTorch eager: decoding" in out and "cpu flags:" in out
    fp32_row = next(line for line in out.splitlines() if line.startswith("| ONNX Runtime fp32 |"))
    assert float(fp32_row.split("|")[6]) < 1e-4            # the same logits as PyTorch
    assert fp32_row.split("|")[7].strip() == "yes"         # and the same greedy tokens


def test_export_bench_rejects_bad_settings(capsys):
    bench = _load("export")
    with pytest.raises(SystemExit):
        bench.main(["--profile", "ci", "--new-tokens", "0"])
    assert "--new-tokens must be at least 1" in capsys.readouterr().err


def test_train_step_bench_compares_variants_on_the_same_batches(capsys):
    bench = _load("train_step")
    assert bench.main(["--profile", "ci", "--steps", "5", "--block", "2", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    variants, profile = out.split("Where the plain fp32 step's time goes")
    rows = {line.split("|")[1].strip(): line.split("|") for line in variants.splitlines()
            if line.startswith("| ") and "variant" not in line}
    assert {"fp32 eager (the plain step)", "+ fused AdamW", "+ fused AdamW + torch.compile"} <= set(rows)
    for cells in rows.values():                           # the same training, whatever the variant
        assert float(cells[6]) < 1e-3
    assert "fastest:" in out and "cpu flags:" in out
    ops = [line.split("|")[1].strip() for line in profile.splitlines() if line.startswith("| ")]
    assert ops[0] == "operator" and ops[-1] == "(outside the operators)" and len(ops) == 13


def test_train_step_bench_rejects_bad_settings(capsys):
    bench = _load("train_step")
    with pytest.raises(SystemExit):
        bench.main(["--profile", "ci", "--steps", "0"])
    assert "--steps must be at least 1" in capsys.readouterr().err
