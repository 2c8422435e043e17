"""`python -m course_utils.export`: a trained GPT as a Hugging Face `transformers` checkpoint or as
an ONNX file (chapter 13). (The models the site runs are written by `make browser-models`.)"""

from __future__ import annotations

import argparse
import sys

from .. import artifacts
from ..config import PROFILES, get_profile
from ..export import to_huggingface, to_onnx
from . import PROFILE_HELP

MODELS = {"news": "the pretrained news GPT (chapter 05)", "dialogue": "the dialogue GPT (chapter 11)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m course_utils.export",
        description="Export one of the book's trained models as a Hugging Face transformers "
                    "checkpoint (`huggingface`) or as an ONNX file (`onnx`).")
    sub = parser.add_subparsers(dest="command", required=True)
    hf = sub.add_parser("huggingface", help="a GPT2LMHeadModel checkpoint and its tokenizer")
    hf.add_argument("--out", required=True, help="the checkpoint folder to write")
    onnx_cmd = sub.add_parser("onnx", help="the forward pass as an ONNX file")
    onnx_cmd.add_argument("--out", required=True, help="the .onnx file to write")
    onnx_cmd.add_argument("--int8", action="store_true", help="also write an int8 copy (.int8.onnx)")
    for p in (hf, onnx_cmd):
        p.add_argument("--profile", choices=list(PROFILES), help=PROFILE_HELP)
        p.add_argument("--model", choices=list(MODELS), default="news",
                       help="; ".join(f"{k}: {v}" for k, v in MODELS.items()))
    args = parser.parse_args(argv)
    try:
        profile = get_profile(args.profile)
        build = artifacts.pretrained_lm if args.model == "news" else artifacts.dialogue_lm
        model, vocab, _ = build(profile, device="cpu")
        if args.command == "huggingface":
            print(f"wrote {to_huggingface(model, vocab, args.out)}")
        else:
            path = to_onnx(model, args.out, quantize=args.int8)
            print(f"wrote {path}" + (f" and {path.with_suffix('.int8.onnx')}" if args.int8 else ""))
    except (ValueError, RuntimeError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
