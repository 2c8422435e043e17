"""The dialogue model of chapter 11 and the terminal chat, end to end under profile `ci`:
`python -m course_utils.chat` in a subprocess with its own small cache folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from course_utils import artifacts, chat, config
from course_utils.data import to_fullwidth
from course_utils.vocab import SEP, UNK

ROOT = Path(__file__).resolve().parent.parent


def run_chat(cache: Path, args=(), stdin: str = "", timeout: int = 300):
    env = {**os.environ, "COURSE_CACHE": str(cache), "COURSE_PROFILE": "ci",
           "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "course_utils.chat", "--profile", "ci", *args],
                          input=stdin, capture_output=True, text=True, encoding="utf-8",
                          env=env, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A fresh cache in which the terminal chat builds the ci models (seconds)."""
    return tmp_path_factory.mktemp("cache")


def test_terminal_chat_replies_to_each_line_and_exits_0_on_eof(cache):
    out = run_chat(cache, ["--seed", "0", "--max-new-tokens", "8"], stdin="你好\n今天天气怎么样?\n")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    replies = [line for line in out.stdout.splitlines() if line.startswith("机> ")]
    assert len(replies) == 2
    assert (cache / "pretrained_ci.pt").is_file() and (cache / "reviews_lm_ci.pt").is_file()
    assert (cache / "dialogue_ci_from_reviews.pt").is_file()  # the default base: chapter 10's


def test_terminal_chat_with_empty_input_exits_0(cache):
    out = run_chat(cache, stdin="")
    assert out.returncode == 0 and out.stdout == "" and "Traceback" not in out.stderr


def test_terminal_chat_help_and_bad_model(cache):
    out = run_chat(cache, ["--help"])
    assert out.returncode == 0 and "--model" in out.stdout and "--top-p" in out.stdout
    out = run_chat(cache, ["--model", str(cache / "missing.pt")], stdin="你好\n")
    assert out.returncode == 1 and "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_terminal_chat_exits_0_on_ctrl_c(cache):
    env = {**os.environ, "COURSE_CACHE": str(cache), "COURSE_PROFILE": "ci", "OMP_NUM_THREADS": "1",
           "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.Popen([sys.executable, "-m", "course_utils.chat", "--profile", "ci",
                             "--max-new-tokens", "4"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8", env=env, cwd=ROOT)
    try:
        proc.stdin.write("你好\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("机> ")  # it answered and now waits for a line
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err


def test_dialogue_lm_is_cached_and_improves_on_the_pretrained_model(cache, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(cache))
    profile = config.get_profile("ci")
    if not (cache / "dialogue_ci_from_reviews.pt").is_file():  # when this test runs alone
        artifacts.dialogue_lm(profile, progress=False, device="cpu")
    model, vocab, info = artifacts.dialogue_lm(profile, device="cpu")
    assert info["path"] == cache / "dialogue_ci_from_reviews.pt" and info["base"] == "reviews"
    assert info["val_loss"] < info["val_loss_before"]
    assert info["best_step"] in info["history"]["eval_step"]
    assert info["val_loss"] == min(info["history"]["val_loss"])
    again, _, _ = artifacts.dialogue_lm(profile, device="cpu")
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    pre, _, _ = artifacts.review_lm(profile, device="cpu")
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                       pre.state_dict().values(), strict=True))


def test_dialogue_splits_are_by_conversation_and_fitted_to_the_vocab():
    vocab = artifacts.news_vocab()
    train, val = artifacts.dialogue_splits(vocab)
    assert len(val) == round(0.1 * (len(train) + len(val)))
    assert not {tuple(d) for d in train} & {tuple(d) for d in val}
    text = "".join(t for d in train + val for t in d)
    assert "," not in text and "?" not in text  # read as full-width forms, not <unk>
    rate = sum(ch not in vocab for ch in text) / len(text)
    assert rate < 0.02


def test_conversation_normalises_half_width_input():
    torch.manual_seed(0)
    vocab = artifacts.news_vocab()
    from course_utils.model import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=len(vocab), block_size=32, d_model=16, n_heads=2,
                          n_layers=1, d_ff=32, dropout=0.0))
    conv = chat.Conversation(model, vocab, max_new_tokens=4, seed=0)
    conv.say("你好,Python?")
    assert conv.turns[0].text == to_fullwidth("你好,Python?") == "你好，Ｐｙｔｈｏｎ？"
    assert UNK not in conv.context_ids()[:len(conv.turns[0].text)]
    raw = chat.Conversation(model, vocab, max_new_tokens=4, seed=0, normalize=False)
    raw.say("你好,Python?")
    assert raw.turns[0].text == "你好,Python?" and UNK in raw.context_ids()
    # history kept in order, cropped from the left to leave room for the reply
    for _ in range(10):
        conv.say("今天天气很好")
    ids = conv.context_ids()
    assert len(ids) <= conv.context_budget and ids[-1] == SEP and len(conv) == 22


def test_a_damaged_cached_model_is_a_clear_error_not_a_retrain(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    profile = config.get_profile("ci")
    for path, what in [(artifacts.dialogue_path(profile), "dialogue model"),
                       (artifacts.pretrained_path(profile), "model")]:
        path.write_bytes(b"not a checkpoint")  # e.g. a copy cut short
        build = artifacts.dialogue_lm if what == "dialogue model" else artifacts.pretrained_lm
        with pytest.raises(artifacts.ArtifactError, match=f"the cached {what} does not fit: .*Delete "):
            build(profile, progress=False)
        assert path.read_bytes() == b"not a checkpoint"  # nothing was overwritten


def test_dialogue_lm_from_the_news_base(cache, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(cache))
    profile = config.get_profile("ci")
    model, _, info = artifacts.dialogue_lm(profile, base="news", progress=False, device="cpu")
    assert info["path"] == cache / "dialogue_ci_from_news.pt" == artifacts.dialogue_path(profile, base="news")
    assert info["base"] == "news" and info["pretrained_path"] == str(artifacts.pretrained_path(profile))
    assert info["val_loss"] <= info["val_loss_before"]
    default, _, _ = artifacts.dialogue_lm(profile, device="cpu")   # each base has its own file
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                       default.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="base must be one of reviews, news"):
        artifacts.dialogue_lm(profile, base="wiki")
