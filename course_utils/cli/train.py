"""`python -m course_utils.train`: pretrain the char-level GPT on the news corpus (chapter 05) and
cache it for the later chapters. A run that stops (a crash, Ctrl-C, a killed process) resumes
from its last checkpoint when the same command runs again."""

from __future__ import annotations

import argparse
import sys

from .. import amp, artifacts
from ..checkpoints import CheckpointError
from ..config import PROFILES, get_profile
from . import PROFILE_HELP


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m course_utils.train",
        description="Pretrain the char-level GPT on the news corpus (what chapter 05 does), "
                    "cache it for later chapters, and print its validation loss. An interrupted "
                    "run continues from its last checkpoint when run again.")
    parser.add_argument("--profile", choices=list(PROFILES), help=PROFILE_HELP)
    parser.add_argument("--steps", type=int, help="override the profile's number of steps")
    parser.add_argument("--force", action="store_true", help="retrain even if a cached model exists")
    parser.add_argument("--precision", default="fp32", choices=amp.PRECISIONS)
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    try:
        profile = get_profile(args.profile)
        if args.steps is not None:
            profile = profile.replace(max_steps=args.steps)
        model, vocab, info = artifacts.pretrained_lm(profile, force=args.force, precision=args.precision)
    except (ValueError, artifacts.ArtifactError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\n(interrupted: run the same command again to continue from the last checkpoint)",
              file=sys.stderr)
        return 130
    print(f"profile {profile.name}: {model.num_parameters():,} parameters, "
          f"val loss {info['val_loss']:.3f} (unigram baseline {info['unigram_loss']:.3f}), "
          f"checkpoint {info['path']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
