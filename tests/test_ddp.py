"""course_utils.ddp: two gloo ranks under torchrun equal one process on the global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from course_utils import artifacts, config, ddp
from course_utils.cli import ddp as cli_ddp
from course_utils.train import train

ROOT = Path(__file__).resolve().parent.parent
STEPS, BATCH = 6, 8


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ddp.TORCHRUN_VARS}
    env.update(OMP_NUM_THREADS="1", COURSE_PROFILE="ci", **extra)
    return env


def torchrun(*args: str, nproc: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    # `python -m torch.distributed.run` is `torchrun`; --standalone picks a free port itself
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "course_utils.ddp", *args]
    return subprocess.run(cmd, cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_two_ranks_equal_one_process_on_the_global_batch(tmp_path):
    out = tmp_path / "ddp.pt"
    proc = torchrun("--profile", "ci", "--steps", str(STEPS), "--batch-size", str(BATCH),
                    "--eval-interval", "3", "--save-params", str(out), "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for rank in (0, 1):  # both ranks ran, on half the batch each
        assert f"[rank {rank}/2] local_rank {rank} on cpu (gloo)" in proc.stdout
    assert f"{BATCH // 2} of the {BATCH} windows" in proc.stdout
    assert "largest parameter difference between ranks 0.0e+00" in proc.stdout
    assert (tmp_path / "run" / "summary.json").is_file()
    assert any(p.name.startswith("ckpt_") for p in (tmp_path / "run").iterdir())

    job = ddp.build_run(config.get_profile("ci"), artifacts.news_vocab(), artifacts.news_tokens("train"),
                        artifacts.news_tokens("val"), batch_size=BATCH, steps=STEPS, eval_interval=3)
    start = {k: v.clone() for k, v in job.model.state_dict().items()}
    single = train(job.model, job.train_source, job.cfg, val_source=job.val_source).model.state_dict()
    parallel = torch.load(out, weights_only=True)
    assert set(parallel) == set(single)  # the module's names: no "module." prefix
    diff = max(float((single[k] - parallel[k]).abs().max()) for k in single)
    moved = max(float((single[k] - start[k]).abs().max()) for k in single)
    assert diff < 1e-5, f"DDP and one process differ by {diff}"
    assert moved > 1e-3  # training really changed the weights, so the agreement means something


def test_batch_that_does_not_split_is_refused():
    proc = torchrun("--profile", "ci", "--steps", "2", "--batch-size", "7")
    assert proc.returncode != 0
    assert "does not split evenly over 2 ranks" in proc.stderr


def test_without_torchrun_a_one_line_error():
    proc = subprocess.run([sys.executable, "-m", "course_utils.ddp", "--profile", "ci"], cwd=ROOT,
                          env=clean_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: run me under torchrun"), proc.stderr
    assert "torchrun --standalone --nproc_per_node=2 -m course_utils.ddp" in lines[0]


def test_help_works_without_torchrun():
    proc = subprocess.run([sys.executable, "-m", "course_utils.ddp", "--help"], cwd=ROOT,
                          env=clean_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--save-params" in proc.stdout and "--profile" in proc.stdout


def test_dist_env_reads_torchrun_variables():
    assert ddp.DistEnv.from_environ({"RANK": "1"}) is None
    env = ddp.DistEnv.from_environ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0",
                                    "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"})
    assert (env.rank, env.world_size, env.local_rank, env.master_port) == (1, 2, 0, 29500)
    assert ddp.backend_for(torch.device("cpu")) == "gloo"
    assert ddp.backend_for(torch.device("cuda", 0)) == "nccl"


@pytest.mark.parametrize("bad", [["--steps", "0"], ["--resume"]])
def test_bad_arguments_are_refused(bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_ddp.parse_args(bad)
    assert exit_info.value.code != 0
