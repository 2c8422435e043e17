"""The widgets work without a browser: setting a control re-renders, the chat appends turns."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("ipywidgets")

from course_utils import widgets  # noqa: E402
from course_utils.model import GPT, GPTConfig  # noqa: E402
from course_utils.vocab import Vocab  # noqa: E402

TEXT = "今天天气很好。你好吗？我很好！人民日报记者报道，中国经济发展。"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and a busy CI machine does not oversubscribe)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    vocab = Vocab.build([TEXT])
    model = GPT(GPTConfig(vocab_size=len(vocab), block_size=16, d_model=16, n_heads=2, n_layers=1,
                          d_ff=32, dropout=0.0))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(30)  # peaked distributions: different settings give different samples
    return model.eval(), vocab


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
