"""A multi-turn conversation with a char-level GPT: turns joined by `<sep>`, replies end at `<sep>`.

`Conversation` is the one piece of chat logic the chat widget (chapter 08), chapter 11
and the terminal (`python -m course_utils.chat`) share.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import torch

from .data import to_fullwidth
from .datasets import encode_dialogue
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
        """How many history tokens the model is shown: the context minus room for a reply."""
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


# ---------------------------------------------------------------------------- command line


def load_model(profile, checkpoint: str | None = None):
    """(model, vocab, description) for `checkpoint`: `"dialogue"` (or None) is the fine-tuned
    dialogue model of chapter 11 (built on demand), `"pretrained"` the news LM, anything
    else a checkpoint file."""
    from . import artifacts
    from .config import get_device
    from .train import model_from_checkpoint

    device = get_device()
    if checkpoint in (None, "dialogue"):
        model, vocab, info = artifacts.dialogue_lm(profile, device=device)
        return model, vocab, (f"the dialogue model of profile {profile.name} (chapter 11, "
                              f"{info['train_conversations']} conversations)")
    if checkpoint != "pretrained":
        vocab = artifacts.news_vocab()
        model, stored_vocab, _ = model_from_checkpoint(checkpoint, map_location=device)
        return model, stored_vocab or vocab, f"checkpoint {checkpoint}"
    model, vocab, info = artifacts.pretrained_lm(profile, device=device)
    return model, vocab, (f"the pretrained news model of profile {profile.name} "
                          f"(not fine-tuned on dialogues: chapter 11 does that)")


def main(argv: list[str] | None = None) -> int:
    from .config import get_profile

    parser = argparse.ArgumentParser(
        prog="python -m course_utils.chat",
        description="Talk to the char-level GPT in the terminal. Each line you type is one turn; "
                    "the history is kept (turns joined by <sep>). Commands: /reset clears the "
                    "history, /history shows what the model sees, /quit (or Ctrl-D) leaves.")
    parser.add_argument("--profile", choices=["ci", "cpu", "gpu"],
                        help="model size (default: $COURSE_PROFILE, else gpu with CUDA, else cpu)")
    parser.add_argument("--model", "--checkpoint", dest="checkpoint", default="dialogue",
                        metavar="MODEL", help="'dialogue' (default: the model fine-tuned on "
                        "conversations in chapter 11, built and cached on first use), 'pretrained' "
                        "(the news model, not fine-tuned), or the path of a checkpoint file")
    parser.add_argument("--max-new-tokens", type=int, default=60)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)

    try:
        profile = get_profile(args.profile)
        model, vocab, what = load_model(profile, args.checkpoint)
        conv = Conversation(model, vocab, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            repetition_penalty=args.repetition_penalty, seed=args.seed)
    except KeyboardInterrupt:  # Ctrl-C while the model loads or trains: leave quietly
        print("\n(interrupted)", file=sys.stderr)
        return 0
    except Exception as err:  # a bad setting or checkpoint: say what, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 1

    interactive = sys.stdin.isatty()
    if interactive:
        print(f"Chatting with {what}. /reset, /history, /quit.", file=sys.stderr)
    try:
        while True:
            if interactive:
                print("你> ", end="", flush=True)
            line = sys.stdin.readline()
            if not line:  # EOF (Ctrl-D or the end of piped input)
                break
            line = line.strip()
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            if line == "/reset":
                conv.reset()
                print("(history cleared)")
                continue
            if line == "/history":
                print(conv.history_text() or "(empty)")
                continue
            try:
                reply = conv.say(line)
            except ValueError as err:
                print(f"({err})")
                continue
            print(f"机> {reply}" if reply else "机> （无回复）", flush=True)
    except KeyboardInterrupt:
        print(file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
