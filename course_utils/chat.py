"""A multi-turn conversation with a char-level GPT: turns joined by `<sep>`, replies end at `<sep>`.

`Conversation` is the one piece of chat logic that chapter 11, its chat widget
(`course_utils.widgets.ChatWidget`) and the terminal (`python -m course_utils.chat`,
course_utils/cli/chat.py) share.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .batches import encode_dialogue
from .data import to_fullwidth
from .sampling import check_settings, generate
from .vocab import SEP, UNK, Vocab


@dataclass
class Turn:
    speaker: str  # "user" or "bot"
    text: str


@dataclass(repr=False, eq=False)
class Conversation:
    """The history of a chat and the sampler settings used to extend it.

    The model sees the turns in the training format of chapter 11 (every turn followed
    by `<sep>`), cropped from the left so that a reply of `max_new_tokens` still fits
    in the model's context of `block_size` tokens (at most half of it is kept for the reply).
    With `normalize`, half-width characters the vocabulary lacks (`,` `?` `A`) are read as
    their full-width forms (`，` `？` `Ａ`), as the dialogue model was trained (chapter 11).
    """

    model: torch.nn.Module
    vocab: Vocab
    max_new_tokens: int = 60
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = 0.95
    repetition_penalty: float = 1.0
    seed: int | None = None
    turns: list[Turn] = field(default_factory=list)
    normalize: bool = True

    def __post_init__(self):
        check_settings(self.temperature, self.top_k, self.top_p, self.repetition_penalty,
                       self.max_new_tokens)
        self.reset(keep_turns=True)

    # ------------------------------------------------------------------ state

    def reset(self, keep_turns: bool = False) -> None:
        """Forget the history (and restart the random stream of `seed`)."""
        if not keep_turns:
            self.turns = []
        device = next(self.model.parameters()).device
        self._generator = None if self.seed is None else torch.Generator(device).manual_seed(self.seed)

    @property
    def context_budget(self) -> int:
        """How many history tokens the model is shown: all that a reply of `max_new_tokens`
        leaves of the context, but at least half of it (a longer reply makes `generate` slide
        its window, which keeps the last half). Chapter 11 measures the trade-off."""
        block = self.model.config.block_size
        return max(1, block - min(self.max_new_tokens, block // 2))

    def context_ids(self) -> list[int]:
        """The history as the model reads it: turns each followed by `<sep>`, cropped from the left."""
        ids = encode_dialogue([t.text for t in self.turns], self.vocab)
        return ids[-self.context_budget:]

    def history_text(self) -> str:
        """The cropped history as text, `<sep>` included (what the model actually sees)."""
        return self.vocab.decode(self.context_ids())

    # ------------------------------------------------------------------ talking

    def add(self, speaker: str, text: str) -> None:
        if speaker not in ("user", "bot"):
            raise ValueError(f"speaker must be 'user' or 'bot', got {speaker!r}")
        self.turns.append(Turn(speaker, text))

    def say(self, message: str) -> str:
        """Add the user's `message`, generate the model's reply (up to `<sep>`), add and return it."""
        if not isinstance(message, str) or not message.strip():
            raise ValueError("the message is empty: type at least one character")
        message = message.strip().replace("\n", " ")
        if self.normalize:
            message = to_fullwidth(message, self.vocab)
        ids = self.vocab.encode(message)
        if all(i == UNK for i in ids):
            raise ValueError(f"no character of {message[:30]!r} is in the vocabulary: "
                             f"write Chinese text like the training corpus")
        self.add("user", message)
        reply = self.generate_reply()
        self.add("bot", reply)
        return reply

    @torch.no_grad()
    def generate_reply(self) -> str:
        """Sample one reply to the current history (not added to it)."""
        idx = torch.tensor([self.context_ids()], dtype=torch.long)
        out = generate(self.model, idx, self.max_new_tokens, temperature=self.temperature,
                       top_k=self.top_k, top_p=self.top_p,
                       repetition_penalty=self.repetition_penalty, stop_tokens=[SEP],
                       generator=self._generator)
        return self.vocab.decode(out[0, idx.size(1):].tolist(), skip_special=True).strip()

    def __len__(self) -> int:
        return len(self.turns)

    def __repr__(self) -> str:
        return (f"Conversation({len(self.turns)} turns, temperature={self.temperature}, "
                f"top_k={self.top_k}, top_p={self.top_p}, max_new_tokens={self.max_new_tokens})")


if __name__ == "__main__":  # `python -m course_utils.chat` runs the command line, kept apart
    import runpy

    runpy.run_module("course_utils.cli.chat", run_name="__main__")
