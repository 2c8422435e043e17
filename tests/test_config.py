"""course_utils.config: profiles, their selection, seeding, the cache folder."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from course_utils import config


def test_three_profiles_with_consistent_sizes():
    assert set(config.PROFILES) == {"ci", "cpu", "gpu"}
    for name, p in config.PROFILES.items():
        assert p.name == name
        assert p.d_model % p.n_heads == 0, f"{name}: d_model must divide into heads"
        assert p.warmup_steps < p.max_steps
        assert set(p.model_kwargs()) == {"block_size", "d_model", "n_heads", "n_layers", "d_ff", "dropout"}


def test_gpu_profile_is_the_course_setting():
    p = config.PROFILES["gpu"]
    assert (p.d_model, p.n_heads, p.n_layers, p.d_ff, p.dropout) == (256, 8, 6, 1024, 0.1)
    assert (p.batch_size, p.lr, p.finetune_lr) == (32, 1e-4, 1e-5)


def test_ci_is_the_smallest():
    ci, cpu = config.PROFILES["ci"], config.PROFILES["cpu"]
    assert ci.d_model < cpu.d_model and ci.max_steps < cpu.max_steps
    assert ci.max_docs is not None and cpu.max_docs is None


def test_explicit_name_wins(monkeypatch):
    monkeypatch.setenv(config.PROFILE_ENV, "cpu")
    assert config.get_profile("ci").name == "ci"


@pytest.mark.parametrize("value, expected", [("ci", "ci"), ("cpu", "cpu"), (" GPU ", "gpu")])
def test_env_var_selects_the_profile(monkeypatch, value, expected):
    monkeypatch.setenv(config.PROFILE_ENV, value)
    assert config.get_profile().name == expected


def test_hardware_default_without_env_var(monkeypatch):
    monkeypatch.delenv(config.PROFILE_ENV, raising=False)
    expected = "gpu" if torch.cuda.is_available() else "cpu"
    assert config.get_profile().name == expected


def test_unknown_profile_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(config.PROFILE_ENV, "laptop")
    with pytest.raises(ValueError, match=r"unknown profile 'laptop'.*ci, cpu, gpu.*COURSE_PROFILE"):
        config.get_profile()
    with pytest.raises(ValueError, match="unknown profile 'tpu'"):
        config.get_profile("tpu")


def test_replace_makes_a_new_profile():
    ci = config.get_profile("ci")
    small = ci.replace(max_steps=3)
    assert small.max_steps == 3 and ci.max_steps != 3 and small.name == "ci"


def _draw():
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_seed_everything_repeats_every_generator():
    config.seed_everything(123)
    first = _draw()
    config.seed_everything(123)
    assert _draw() == first
    config.seed_everything(124)
    assert _draw() != first


def test_cache_dir_follows_env_var(monkeypatch, tmp_path):
    target = tmp_path / "nested" / "cache"
    monkeypatch.setenv(config.CACHE_ENV, str(target))
    assert config.cache_dir() == target and target.is_dir()


def test_summary_names_profile_device_and_versions():
    line = config.summary(config.get_profile("ci"))
    assert "profile=ci" in line and f"torch {torch.__version__}" in line and "python" in line


def test_device():
    assert config.get_device("cpu") == torch.device("cpu")
    assert config.get_device().type in {"cpu", "cuda", "mps"}


def test_claim_ticks_a_true_statement_and_fails_a_false_one(capsys):
    cpu, ci = config.PROFILES["cpu"], config.PROFILES["ci"]
    config.claim("two is more than one", 2 > 1, cpu)
    assert capsys.readouterr().out == "\u2713 two is more than one\n"
    with pytest.raises(AssertionError, match="does not show what the text says: one is more than two"):
        config.claim("one is more than two", 1 > 2, cpu)
    config.claim("one is more than two", 1 > 2, ci)     # the tiny ci run only says it is not checked
    assert "checked on the full run" in capsys.readouterr().out
