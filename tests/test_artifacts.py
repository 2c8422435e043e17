"""course_utils.artifacts: the cached models' runs survive a crash. A run checkpoints into the
cache as it goes; run again, it resumes from its last checkpoint, says from which step, and
ends with exactly the weights of an uninterrupted run; its folder goes once the model is saved."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from course_utils import artifacts, config
from course_utils.checkpoints import CheckpointManager
from course_utils.model import GPT, GPTConfig
from course_utils.train import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
STEPS = 160                          # ci: an evaluation, and so a checkpoint, every 10 steps
NEWS_FILES = ("news_vocab.json", "news_train.u16", "news_val.u16")


@pytest.fixture(scope="module")
def news_cache(tmp_path_factory) -> Path:
    """The news vocabulary and token streams, built once and copied into each test's cache."""
    folder = tmp_path_factory.mktemp("news")
    env = os.environ.get(config.CACHE_ENV)
    os.environ[config.CACHE_ENV] = str(folder)
    try:
        artifacts.news_tokens("train"), artifacts.news_tokens("val")
    finally:
        if env is None:
            del os.environ[config.CACHE_ENV]
        else:
            os.environ[config.CACHE_ENV] = env
    return folder


def fresh_cache(news_cache: Path, path: Path) -> Path:
    path.mkdir()
    for name in NEWS_FILES:
        shutil.copy(news_cache / name, path / name)
    return path


def pretrain_command(cache: Path, **popen):
    env = {**os.environ, "COURSE_CACHE": str(cache), "COURSE_PROFILE": "ci", "OMP_NUM_THREADS": "1",
           "PYTHONIOENCODING": "utf-8"}
    return subprocess.Popen([sys.executable, "-m", "course_utils.train", "--profile", "ci",
                             "--steps", str(STEPS)], cwd=ROOT, env=env, text=True, encoding="utf-8",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def checkpointed_step(cache: Path) -> int:
    steps = [s for run in (cache / "runs").glob("pretrained_ci-*") for s in CheckpointManager(run).steps()]
    return max(steps, default=0)


def test_a_killed_pretraining_run_resumes_where_it_stopped(news_cache, tmp_path):
    killed = fresh_cache(news_cache, tmp_path / "killed")
    proc = pretrain_command(killed)
    deadline = time.monotonic() + 240
    while checkpointed_step(killed) < 40 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)                  # no chance to clean up or save anything
    proc.communicate(timeout=60)
    stopped_at = checkpointed_step(killed)
    assert 40 <= stopped_at < STEPS, f"killed after step {stopped_at}: the run ended first"
    assert not (killed / "pretrained_ci.pt").exists()

    again = pretrain_command(killed)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    resumed = re.search(r"resuming pretraining from step (\d+) of (\d+)", out)
    assert resumed and int(resumed.group(1)) == stopped_at and int(resumed.group(2)) == STEPS, out
    assert not list((killed / "runs").iterdir())       # the run's checkpoints are gone: the model is saved

    whole = fresh_cache(news_cache, tmp_path / "whole")
    uninterrupted = pretrain_command(whole)
    out, err = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0 and "resuming" not in out, err[-2000:]
    a = torch.load(killed / "pretrained_ci.pt", weights_only=True)["model"]
    b = torch.load(whole / "pretrained_ci.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "the weights differ"


def test_an_interrupted_fine_tuning_keeps_the_same_best_weights(news_cache, tmp_path, monkeypatch, capsys):
    """The dialogue fine-tuning keeps its best evaluation (best.pt): stopped part-way and run
    again, it picks the same step and ends with the same weights as a run that never stopped."""
    results = {}
    for name in ("whole", "stopped"):
        monkeypatch.setenv(config.CACHE_ENV, str(fresh_cache(news_cache, tmp_path / name)))
        profile = config.get_profile("ci")
        artifacts.review_lm(profile, progress=False)
        if name == "stopped":
            stop = 2 * max(2, profile.dialogue_steps // 12)     # the second evaluation

            def crash_after_two(self, ckpt, step, is_best=False, save=CheckpointManager.save, stop=stop):
                path = save(self, ckpt, step, is_best)
                if step >= stop:
                    raise KeyboardInterrupt              # as if the kernel were stopped here
                return path

            monkeypatch.setattr(CheckpointManager, "save", crash_after_two)
            with pytest.raises(KeyboardInterrupt):
                artifacts.dialogue_lm(profile, progress=False)
            monkeypatch.undo()
            monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / name))
            capsys.readouterr()
        model, _, info = artifacts.dialogue_lm(profile, progress=False)
        if name == "stopped":
            assert "resuming the dialogue fine-tuning from step" in capsys.readouterr().out
        results[name] = (model.state_dict(), info["best_step"], info["val_loss"])
    (whole, whole_best, whole_loss), (stopped, stopped_best, stopped_loss) = results.values()
    assert stopped_best == whole_best and stopped_loss == whole_loss
    assert all(torch.equal(whole[k], stopped[k]) for k in whole)


def test_another_setting_starts_afresh_instead_of_resuming(news_cache, tmp_path, monkeypatch):
    monkeypatch.setenv(config.CACHE_ENV, str(fresh_cache(news_cache, tmp_path / "cache")))
    model = GPT(GPTConfig(vocab_size=10, block_size=8, d_model=8, n_heads=2, n_layers=1, d_ff=8))
    cfg = TrainConfig(max_steps=10)
    folder = artifacts.run_folder("x", model, cfg, ["data"])
    assert folder == artifacts.run_folder("x", model, TrainConfig(max_steps=10, progress=False), ["data"])
    assert folder != artifacts.run_folder("x", model, TrainConfig(max_steps=11), ["data"])
    assert folder != artifacts.run_folder("x", model, cfg, ["other data"])
    with torch.no_grad():
        model.tok_emb.weight.add_(1.0)                 # another starting point
    assert folder != artifacts.run_folder("x", model, cfg, ["data"])
