"""Interactive demos (ipywidgets): the sampling sliders, a chat box, two models side by side, the
attention explorer and the next-token lens, plus the token bar chart.

The widget classes work without a browser: change a control's `.value` from Python and
the outputs (`.text`, `.chart`, `.transcript`) update, so they are testable and scriptable.
Outputs are plain HTML/Image widgets (not `Output` capture areas, which need a frontend).
"""

from __future__ import annotations

import base64
import html
import io

import ipywidgets as W
import matplotlib.figure
import numpy as np
import torch

from . import plots
from .chat import Conversation
from .interpret import attention_maps, check_text, next_token_lens
from .sampling import encode_prompt, generate, next_token_probs
from .vocab import SEP, SPECIALS, Vocab

PALETTE = ("#bbbbbb", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")


# ---------------------------------------------------------------------------- the bar chart


def token_label(vocab: Vocab, i: int) -> str:
    """A printable label for token `i`: specials as `<sep>`, blanks as visible symbols."""
    tok = vocab.idx2token[int(i)]
    if tok in SPECIALS:
        return tok
    return {" ": "␣", "\n": "↵", "\t": "⇥", "\u3000": "□"}.get(tok, tok)


def plot_token_bars(ax, dists: dict, vocab: Vocab, n: int = 20, tokens=None, title: str | None = None,
                    colors=None):
    """Grouped bars of next-token distributions over the `n` most likely tokens of the first one.

    `dists` maps a label to a probability vector (vocab_size,). Returns the token ids shown.
    Call `plots.setup()` before creating `ax`, so that Chinese tick labels get the CJK font.
    """
    items = [(label, torch.as_tensor(p, dtype=torch.float32).flatten()) for label, p in dists.items()]
    if not items:
        raise ValueError("give at least one distribution to plot")
    if tokens is None:
        tokens = items[0][1].topk(min(n, items[0][1].numel())).indices.tolist()
    if colors is None:
        colors = PALETTE[1:] if len(items) == 1 else PALETTE
    x = np.arange(len(tokens))
    width = 0.8 / len(items)
    for j, (label, p) in enumerate(items):
        ax.bar(x + (j - (len(items) - 1) / 2) * width, p[tokens].numpy(), width,
               label=label, color=colors[j % len(colors)])
    ax.set_xticks(x, [token_label(vocab, i) for i in tokens])
    ax.set_xlabel("next token (most likely first)")
    ax.set_ylabel("probability")
    if title:
        ax.set_title(title)
    if len(items) > 1:
        ax.legend(fontsize="small")
    return tokens


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _ids_html(vocab: Vocab, ids) -> str:
    text = "".join("↵" if int(i) == SEP else ("" if int(i) < len(SPECIALS) else vocab.idx2token[int(i)])
                   for i in ids)
    return html.escape(text)


# ---------------------------------------------------------------------------- sampling demo


class SamplingDemo:
    """Sliders for temperature, top-k, top-p, length and seed; live text and next-token chart.

    `top_k = 0` and `top_p = 1` switch those filters off; temperature 0 is greedy decoding.
    Display it in a notebook (`demo` as the last line of a cell); drive it from Python by
    setting e.g. `demo.temperature.value = 1.2` (then `demo.text.value` holds the new sample).
    """

    def __init__(self, model, vocab: Vocab, prompt: str = "中国", temperature: float = 0.8,
                 top_k: int = 0, top_p: float = 1.0, length: int = 40, seed: int = 0, n_bars: int = 20):
        self.model, self.vocab, self.n_bars = model, vocab, n_bars
        slider = dict(continuous_update=False, style={"description_width": "90px"},
                      layout=W.Layout(width="420px"))
        self.prompt = W.Text(value=prompt, description="prompt", continuous_update=False,
                             style={"description_width": "90px"}, layout=W.Layout(width="420px"))
        self.temperature = W.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.05,
                                         description="temperature", **slider)
        self.top_k = W.IntSlider(value=top_k, min=0, max=100, description="top-k (0 off)", **slider)
        self.top_p = W.FloatSlider(value=top_p, min=0.05, max=1.0, step=0.01,
                                   description="top-p (1 off)", **slider)
        self.length = W.IntSlider(value=length, min=1, max=200, description="length", **slider)
        self.seed = W.IntSlider(value=seed, min=0, max=99, description="seed", **slider)
        self.text = W.HTML()
        self.chart = W.Image(format="png")
        self.status = W.HTML()
        self.controls = [self.prompt, self.temperature, self.top_k, self.top_p, self.length, self.seed]
        self.ui = W.VBox([W.HBox([W.VBox(self.controls), self.chart]), self.status, self.text])
        self.renders, self._chart_key = 0, None
        for control in self.controls:
            control.observe(self._on_change, names="value")
        self.render()

    def settings(self) -> dict:
        """The sampler settings the controls describe, as `generate` takes them."""
        return dict(temperature=float(self.temperature.value),
                    top_k=int(self.top_k.value) or None,
                    top_p=None if self.top_p.value >= 1 else float(self.top_p.value))

    def _on_change(self, change) -> None:
        self.render()

    @torch.no_grad()
    def render(self) -> None:
        """Recompute the next-token chart and the sample; errors show as a message."""
        try:
            ids = encode_prompt(self.vocab, self.prompt.value)
        except ValueError as err:
            self.status.value = f"<span style='color:#c00'>{html.escape(str(err))}</span>"
            return
        settings = self.settings()
        device = next(self.model.parameters()).device
        block = self.model.config.block_size
        idx = torch.tensor([ids[-block:]], dtype=torch.long, device=device)
        was_training = self.model.training
        self.model.eval()
        logits = self.model(idx)[0][0, -1].float().cpu()
        self.model.train(was_training)
        model_probs = logits.softmax(-1)
        probs = next_token_probs(logits, **settings)
        out = generate(self.model, idx, int(self.length.value), seed=int(self.seed.value), **settings)
        new = out[0, idx.size(1):].tolist()

        chart_key = (tuple(idx[0].tolist()), tuple(settings.items()))
        if chart_key != self._chart_key:  # the seed and the length do not change the chart
            plots.setup()  # before the axes exist: tick labels take the font of their creation
            fig = matplotlib.figure.Figure(figsize=(6.4, 2.8))
            ax = fig.subplots()
            kept = int((probs > 0).sum())
            plot_token_bars(ax, {"model (T=1)": model_probs, "sampled from": probs}, self.vocab,
                            n=self.n_bars,
                            title=f"next token after the prompt: {kept} tokens can be drawn")
            self.chart.value = figure_png(fig)
            self._chart_key = chart_key
        self.text.value = (f"<div style='font-size:1.1em;line-height:1.6'><b>{html.escape(self.prompt.value)}"
                           f"</b>{_ids_html(self.vocab, new)}</div>")
        s = settings
        self.status.value = (f"<small>temperature={s['temperature']:g}, top_k={s['top_k']}, "
                             f"top_p={s['top_p']}, {len(new)} new tokens, seed={self.seed.value}"
                             f"{' (greedy: the seed does not matter)' if s['temperature'] == 0 else ''}"
                             f"</small>")
        self.renders += 1

    def static_html(self) -> str:
        """The current state as plain HTML (settings, sample, chart) for readers without a kernel."""
        img = base64.b64encode(self.chart.value).decode()
        return (f"{self.status.value}{self.text.value}"
                f"<img src='data:image/png;base64,{img}' style='max-width:640px'/>")

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.ui._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = ("[sampling demo: the sliders need a live Jupyter kernel; the "
                                "book's website runs the same demo in the browser]")
        return bundle


# ---------------------------------------------------------------------------- chat


class ChatWidget:
    """A chat box over a `course_utils.chat.Conversation`: type, press Enter (or 发送), read.

    Drive it from Python with `chat.send("你好")`; `chat.transcript.value` holds the HTML.
    """

    def __init__(self, model, vocab: Vocab, **settings):
        self.conversation = Conversation(model, vocab, **settings)
        self.entry = W.Text(placeholder="说点什么，按回车发送", continuous_update=False,
                            layout=W.Layout(width="420px"))
        self.send_button = W.Button(description="发送", button_style="primary")
        self.reset_button = W.Button(description="清空")
        self.transcript = W.HTML()
        self.status = W.HTML()
        self.ui = W.VBox([self.transcript, W.HBox([self.entry, self.send_button, self.reset_button]),
                          self.status])
        self.entry.observe(lambda change: self.send(change["new"]), names="value")
        self.send_button.on_click(lambda _: self.send())
        self.reset_button.on_click(lambda _: self.reset())
        self._render()

    def send(self, message: str | None = None) -> str | None:
        """Send `message` (default: the entry box); returns the reply, or None if nothing was sent."""
        message = self.entry.value if message is None else message
        if not message or not message.strip():
            return None
        try:
            reply = self.conversation.say(message)
        except ValueError as err:
            self.status.value = f"<span style='color:#c00'>{html.escape(str(err))}</span>"
            return None
        self.status.value = ""
        if self.entry.value:
            self.entry.value = ""  # fires the observer with "", which sends nothing
        self._render()
        return reply

    def reset(self) -> None:
        self.conversation.reset()
        self.status.value = ""
        self._render()

    def _render(self) -> None:
        rows = []
        for turn in self.conversation.turns:
            who, color = ("你", "#1f77b4") if turn.speaker == "user" else ("机", "#2ca02c")
            text = html.escape(turn.text) or "<i>（无回复）</i>"
            rows.append(f"<div><b style='color:{color}'>{who}：</b>{text}</div>")
        self.transcript.value = "".join(rows) or "<i>（还没有对话）</i>"

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.ui._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = "[chat widget: needs a live Jupyter kernel]"
        return bundle


# ---------------------------------------------------------------------------- two policies side by side


class CompareWidget:
    """One prompt, several models side by side (chapter 14: before and after preference tuning),
    each continuation with the reward model's verdict. Type a prompt (Enter) or press 生成;
    `greedy` switches to temperature 0. Drive it from Python: `w.prompt.value = "这家酒店"`,
    then read `w.results` (per model: the text and its reward)."""

    def __init__(self, models: dict, vocab: Vocab, reward_fn=None, prompt: str = "这本书",
                 max_new_tokens: int = 24, temperature: float = 1.0, seed: int = 0):
        self.models, self.vocab, self.reward_fn = models, vocab, reward_fn
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.prompt = W.Text(value=prompt, description="prompt", continuous_update=False)
        self.seed = W.IntSlider(value=seed, min=0, max=99, description="seed", continuous_update=False)
        self.greedy = W.Checkbox(value=False, description="greedy")
        self.button = W.Button(description="生成", button_style="primary")
        self.columns = {name: W.HTML(layout=W.Layout(width="320px")) for name in models}
        self.status = W.HTML()
        self.ui = W.VBox([W.HBox([self.prompt, self.button]), W.HBox([self.seed, self.greedy]),
                          W.HBox(list(self.columns.values())), self.status])
        for control in (self.prompt, self.seed, self.greedy):
            control.observe(lambda _: self.render(), names="value")
        self.button.on_click(lambda _: self.render())
        self.results: dict = {}
        self.render()

    @torch.no_grad()
    def render(self) -> None:
        try:
            ids = encode_prompt(self.vocab, self.prompt.value)
        except ValueError as err:
            self.status.value = f"<span style='color:#c00'>{html.escape(str(err))}</span>"
            return
        temperature = 0.0 if self.greedy.value else self.temperature
        for name, model in self.models.items():
            idx = torch.tensor([ids[-model.config.block_size:]])
            out = generate(model, idx, self.max_new_tokens, temperature=temperature,
                           stop_tokens=[SEP], seed=int(self.seed.value))
            reward = None if self.reward_fn is None else float(self.reward_fn(out)[0])
            self.results[name] = {"text": _ids_html(self.vocab, out[0, idx.size(1):].tolist()), "reward": reward}
            verdict = "" if reward is None else (
                f"<br><small>reward model: P(positive) = {reward:.3f} "
                f"({'正面 positive' if reward > 0.5 else '负面 negative'})</small>")
            self.columns[name].value = (f"<b>{html.escape(name)}</b><div style='font-size:1.1em;line-height:1.6'>"
                                        f"<b>{html.escape(self.prompt.value)}</b>{self.results[name]['text']}</div>{verdict}")
        self.status.value = (f"<small>{'greedy' if temperature == 0 else f'temperature {temperature:g}, seed {self.seed.value}'}"
                             f", up to {self.max_new_tokens} tokens</small>")

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.ui._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = "[side-by-side generation: needs a live Jupyter kernel; the site runs it in the browser]"
        return bundle


# ---------------------------------------------------------------------------- inside the model


class AttentionExplorer:
    """Chapter 03's view: the causal attention map of one head (or all heads as small multiples)
    of one layer, for the text you type. `w.text.value = "..."`, `w.layer.value = 1`,
    `w.head.value = "all"`; `w.maps` holds the weights (layers, heads, query, key)."""

    def __init__(self, model, vocab: Vocab, text: str = "中国人民的生活水平不断提高"):
        self.model, self.vocab = model, vocab
        cfg = model.config
        self.text = W.Text(value=text, description="text", continuous_update=False)
        self.layer = W.Dropdown(options=list(range(cfg.n_layers)), value=0, description="layer")
        self.head = W.Dropdown(options=["all"] + list(range(cfg.n_heads)), value="all", description="head")
        self.chart, self.status = W.Image(format="png"), W.HTML()
        self.ui = W.VBox([W.HBox([self.text, self.layer, self.head]), self.status, self.chart])
        for control in (self.text, self.layer, self.head):
            control.observe(lambda _: self.render(), names="value")
        self.maps, self.renders = None, 0
        self.render()

    def render(self) -> None:
        try:
            ids = check_text(self.vocab, self.text.value, self.model.config.block_size)
        except ValueError as err:
            self.status.value = f"<span style='color:#c00'>{html.escape(str(err))}</span>"
            return
        self.maps = attention_maps(self.model, ids)
        heads = range(self.model.config.n_heads) if self.head.value == "all" else [int(self.head.value)]
        labels = [token_label(self.vocab, i) for i in ids]
        plots.setup()
        fig = matplotlib.figure.Figure(figsize=(2.6 * len(heads) + 0.6, 2.9))
        axes = np.atleast_1d(fig.subplots(1, len(heads)))
        for ax, h in zip(axes, heads, strict=True):
            ax.imshow(self.maps[int(self.layer.value), h].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks(range(len(ids)), labels, fontsize=7)
            ax.set_yticks(range(len(ids)), labels, fontsize=7)
            ax.set_title(f"layer {self.layer.value}, head {h}", fontsize=9)
            ax.grid(False)
        fig.supxlabel("key (read from)", fontsize=8)
        fig.supylabel("query", fontsize=8)
        self.chart.value = figure_png(fig)
        self.status.value = f"<small>{len(ids)} tokens; each row sums to 1, nothing above the diagonal</small>"
        self.renders += 1

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.ui._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = "[attention explorer: needs a live Jupyter kernel; the site runs it in the browser]"
        return bundle


class LensWidget:
    """Chapter 04's view: the top next tokens read from the residual stream after each block
    (through the final LayerNorm and the tied head). `w.text.value = "..."`; `w.rows` holds
    (block, [(token, probability), ...]) per block."""

    def __init__(self, model, vocab: Vocab, text: str = "中国人民的生活水平不断", k: int = 5):
        self.model, self.vocab, self.k = model, vocab, k
        self.text = W.Text(value=text, description="text", continuous_update=False)
        self.table, self.status = W.HTML(), W.HTML()
        self.ui = W.VBox([self.text, self.status, self.table])
        self.text.observe(lambda _: self.render(), names="value")
        self.rows, self.renders = [], 0
        self.render()

    def render(self) -> None:
        try:
            ids = check_text(self.vocab, self.text.value, self.model.config.block_size)
        except ValueError as err:
            self.status.value = f"<span style='color:#c00'>{html.escape(str(err))}</span>"
            return
        probs, tokens = next_token_lens(self.model, ids, self.k)
        self.rows = [(b, [(token_label(self.vocab, int(t)), float(p)) for t, p in zip(tokens[b], probs[b], strict=True)])
                     for b in range(len(probs))]
        cells = "".join(
            f"<tr><td>after block {b}{' (the prediction)' if b == len(self.rows) - 1 else ''}</td>"
            + "".join(f"<td>{html.escape(t)} <small>{p:.2f}</small></td>" for t, p in row) + "</tr>"
            for b, row in self.rows)
        self.table.value = f"<table>{cells}</table>"
        self.status.value = f"<small>the next token after {html.escape(self.text.value)}, block by block</small>"
        self.renders += 1

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.ui._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = "[next-token lens: needs a live Jupyter kernel; the site runs it in the browser]"
        return bundle
