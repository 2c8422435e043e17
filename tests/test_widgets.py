"""The widgets work without a browser: setting a control re-renders, the chat appends turns."""

from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets")

from conftest import tiny_lm  # noqa: E402

from course_utils import widgets  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(block_size=16, scale=30)  # peaked: different settings give different samples


def test_sampling_demo_renders_text_and_chart(lm):
    model, vocab = lm
    demo = widgets.SamplingDemo(model, vocab, prompt="今天", length=20, seed=0)
    assert demo.renders == 1
    assert demo.text.value.startswith("<div") and "今天" in demo.text.value
    assert demo.chart.value[:8] == b"\x89PNG\r\n\x1a\n"


def test_setting_a_slider_rerenders_the_sample(lm):
    model, vocab = lm
    demo = widgets.SamplingDemo(model, vocab, prompt="今天", temperature=1.0, length=30, seed=0)
    first_text, first_chart = demo.text.value, demo.chart.value
    demo.seed.value = 1
    assert demo.renders == 2
    assert demo.text.value != first_text
    demo.temperature.value = 0.0  # greedy: the seed stops mattering
    greedy = demo.text.value
    demo.seed.value = 7
    assert demo.text.value == greedy
    demo.top_k.value = 1
    assert demo.settings()["top_k"] == 1
    assert demo.chart.value != first_chart
    demo.length.value = 5
    assert demo.renders == 6


def test_a_bad_prompt_shows_a_message_instead_of_raising(lm):
    model, vocab = lm
    demo = widgets.SamplingDemo(model, vocab, prompt="今天")
    before = demo.text.value
    demo.prompt.value = "   "
    assert "empty" in demo.status.value and demo.text.value == before
    demo.prompt.value = "你好"
    assert "你好" in demo.text.value


def test_sampling_demo_has_a_static_fallback(lm):
    model, vocab = lm
    demo = widgets.SamplingDemo(model, vocab, prompt="今天", length=5)
    assert "data:image/png;base64," in demo.static_html()
    assert "live Jupyter kernel" in demo._repr_mimebundle_()["text/plain"]


def test_chat_widget_appends_turns(lm):
    model, vocab = lm
    chat = widgets.ChatWidget(model, vocab, max_new_tokens=10, seed=0)
    reply = chat.send("你好")
    assert isinstance(reply, str)
    assert [t.speaker for t in chat.conversation.turns] == ["user", "bot"]
    assert "你好" in chat.transcript.value
    chat.entry.value = "今天天气好吗"  # what pressing Enter in the box does
    assert len(chat.conversation.turns) == 4 and chat.entry.value == ""
    chat.entry.value = "人民"
    chat.send_button.click()  # the entry already sent it; the click finds it empty
    assert len(chat.conversation.turns) == 6
    chat.send("")
    assert len(chat.conversation.turns) == 6
    chat.reset_button.click()
    assert chat.conversation.turns == [] and "还没有对话" in chat.transcript.value


def test_chat_widget_reports_bad_messages(lm):
    model, vocab = lm
    chat = widgets.ChatWidget(model, vocab, max_new_tokens=5)
    assert chat.send("xyz") is None
    assert "vocabulary" in chat.status.value and chat.conversation.turns == []


def test_token_labels_are_printable(lm):
    _, vocab = lm
    assert widgets.token_label(vocab, 2) == "<sep>"
    assert widgets.token_label(vocab, vocab.token2idx["今"]) == "今"


def test_compare_widget_generates_from_every_model_with_a_verdict(lm):
    import torch

    model, vocab = lm
    reward = lambda ids: torch.full((ids.size(0),), 0.75)
    w = widgets.CompareWidget({"a": model, "b": model}, vocab, reward, prompt="今天", max_new_tokens=8)
    assert set(w.results) == {"a", "b"} and all(r["reward"] == 0.75 for r in w.results.values())
    assert "正面" in w.columns["a"].value
    w.greedy.value = True
    assert w.results["a"]["text"] == w.results["b"]["text"]       # the same model, greedy
    w.prompt.value = ""
    assert "empty" in w.status.value


def test_attention_explorer_and_lens_follow_the_text(lm):
    model, vocab = lm
    ex = widgets.AttentionExplorer(model, vocab, "今天")
    assert ex.renders == 1 and ex.maps.shape[-1] == len(vocab.encode("今天"))
    ex.text.value = "今天今天"
    ex.head.value = 0
    assert ex.renders == 3 and ex.maps.shape[-1] == 4 and ex.chart.value[:4] == b"\x89PNG"
    ex.text.value = "☃"
    assert "vocabulary" in ex.status.value
    lens = widgets.LensWidget(model, vocab, "今天", k=3)
    assert len(lens.rows) == model.config.n_layers and all(len(r) == 3 for _, r in lens.rows)
    lens.text.value = "今天" * 20
    assert "block" in lens.status.value
