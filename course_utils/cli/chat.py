"""`python -m course_utils.chat`: talk to the dialogue model of chapter 11 in the terminal."""

from __future__ import annotations

import argparse
import sys

from .. import artifacts
from ..chat import Conversation
from ..checkpoints import model_from_checkpoint
from ..config import PROFILES, get_device, get_profile
from . import PROFILE_HELP


def load_model(profile, checkpoint: str | None = None):
    """(model, vocab, description) for `checkpoint`: `"dialogue"` (or None) is the fine-tuned
    dialogue model of chapter 11 (built on demand), `"pretrained"` the news LM, anything
    else a checkpoint file."""
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
    parser = argparse.ArgumentParser(
        prog="python -m course_utils.chat",
        description="Talk to the char-level GPT in the terminal. Each line you type is one turn; "
                    "the history is kept (turns joined by <sep>). Commands: /reset clears the "
                    "history, /history shows what the model sees, /quit (or Ctrl-D) leaves.")
    parser.add_argument("--profile", choices=list(PROFILES), help=PROFILE_HELP)
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
