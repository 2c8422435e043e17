"""course_utils.chat: history joined by <sep>, replies stop at <sep>, cropping; and its command
line, course_utils.cli.chat."""

from __future__ import annotations

import io
import sys

import pytest
import torch
from conftest import tiny_lm

from course_utils import chat
from course_utils.cli import chat as cli_chat
from course_utils.vocab import SEP

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(block_size=24)


def test_history_is_turns_joined_by_sep(lm):
    model, vocab = lm
    conv = chat.Conversation(model, vocab, max_new_tokens=8, seed=0)
    conv.add("user", "你好")
    conv.add("bot", "我很好")
    assert conv.context_ids() == vocab.encode("你好<sep>我很好<sep>")
    assert conv.history_text() == "你好<sep>我很好<sep>"


def test_say_appends_two_turns_and_stops_at_sep(lm):
    model, vocab = lm
    conv = chat.Conversation(model, vocab, max_new_tokens=12, seed=0, temperature=1.0, top_p=None)
    for message in ["你好", "今天天气好吗", "人民日报"]:
        reply = conv.say(message)
        assert "<sep>" not in reply and len(reply) <= 12
    assert [t.speaker for t in conv.turns] == ["user", "bot"] * 3
    assert conv.turns[0].text == "你好"


def test_reply_ends_at_the_first_sep(lm, monkeypatch):
    model, vocab = lm
    conv = chat.Conversation(model, vocab, max_new_tokens=12)
    calls = {}

    def fake_generate(model, idx, n, **kw):
        calls.update(kw)
        new = torch.tensor([vocab.encode("很好") + [SEP]])
        return torch.cat([idx, new], dim=1)

    monkeypatch.setattr(chat, "generate", fake_generate)
    assert conv.say("你好") == "很好"
    assert calls["stop_tokens"] == [SEP]


def test_history_is_cropped_to_leave_room_for_a_reply(lm):
    model, vocab = lm
    conv = chat.Conversation(model, vocab, max_new_tokens=8)
    for i in range(10):
        conv.add("user" if i % 2 == 0 else "bot", "今天天气很好")
    ids = conv.context_ids()
    assert len(ids) == conv.context_budget == 24 - 8
    assert ids[-1] == SEP  # the most recent turns are kept
    full = vocab.encode("今天天气很好<sep>" * 10)
    assert ids == full[-16:]
    assert conv.say("你好") is not None  # generation never exceeds the context


def test_history_gets_all_the_room_a_reply_leaves_but_at_least_half(lm):
    model, vocab = lm                                   # block_size 24
    budgets = {n: chat.Conversation(model, vocab, max_new_tokens=n).context_budget for n in (1, 5, 12, 20, 60)}
    assert budgets == {1: 23, 5: 19, 12: 12, 20: 12, 60: 12}


def test_seeded_conversations_repeat(lm):
    model, vocab = lm
    a = chat.Conversation(model, vocab, max_new_tokens=10, seed=3, temperature=1.0)
    b = chat.Conversation(model, vocab, max_new_tokens=10, seed=3, temperature=1.0)
    assert [a.say("你好"), a.say("好")] == [b.say("你好"), b.say("好")]
    a.reset()
    assert len(a) == 0


def test_bad_input_raises_clear_errors(lm):
    model, vocab = lm
    with pytest.raises(ValueError, match="temperature"):
        chat.Conversation(model, vocab, temperature=-1)
    conv = chat.Conversation(model, vocab)
    with pytest.raises(ValueError, match="empty"):
        conv.say("  ")
    with pytest.raises(ValueError, match="vocabulary"):
        conv.say("abc")
    assert conv.turns == []


def test_main_help():
    with pytest.raises(SystemExit) as exc:
        cli_chat.main(["--help"])
    assert exc.value.code == 0


def test_main_reads_stdin_until_eof(lm, monkeypatch, capsys):
    model, vocab = lm
    monkeypatch.setattr(cli_chat, "load_model", lambda profile, checkpoint=None: (model, vocab, "tiny"))
    monkeypatch.setattr(sys, "stdin", io.StringIO("你好\n/history\n\nabc\n/reset\n今天\n"))
    assert cli_chat.main(["--profile", "ci", "--seed", "0", "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    assert out.count("机> ") == 2
    assert "你好<sep>" in out and "history cleared" in out and "vocabulary" in out


def test_main_exits_cleanly_on_ctrl_c(lm, monkeypatch):
    model, vocab = lm

    class Interrupting(io.StringIO):
        def readline(self, *args):
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_chat, "load_model", lambda profile, checkpoint=None: (model, vocab, "tiny"))
    monkeypatch.setattr(sys, "stdin", Interrupting())
    assert cli_chat.main(["--profile", "ci"]) == 0


def test_main_reports_bad_settings(lm, monkeypatch, capsys):
    model, vocab = lm
    monkeypatch.setattr(cli_chat, "load_model", lambda profile, checkpoint=None: (model, vocab, "tiny"))
    assert cli_chat.main(["--profile", "ci", "--top-p", "2"]) == 1
    assert "top_p" in capsys.readouterr().err
