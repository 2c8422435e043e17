"""`python -m course_utils.serve`: the generation web service of chapter 12, on the pretrained GPT."""

from __future__ import annotations

import argparse

from aiohttp import web

from .. import artifacts
from ..config import PROFILES, get_profile
from ..serve import MAX_QUEUE, MAX_ROWS, TIME_LIMIT_S, check_limits, make_app
from . import PROFILE_HELP


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m course_utils.serve",
        description="Serve the pretrained GPT over HTTP (POST /generate, GET / for a page to try "
                    "it). SIGTERM or Ctrl-C finishes the running batch, then exits.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--profile", choices=list(PROFILES), help=PROFILE_HELP)
    parser.add_argument("--serial", action="store_true",
                        help="decode one request at a time (no batching), for comparison")
    parser.add_argument("--max-rows", type=int, default=MAX_ROWS,
                        help=f"samples decoded together at most (default {MAX_ROWS})")
    parser.add_argument("--max-queue", type=int, default=MAX_QUEUE,
                        help=f"requests that may wait; more get 503 (default {MAX_QUEUE})")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT_S,
                        help=f"seconds per request, queueing included; then 504 (default {TIME_LIMIT_S:g})")
    args = parser.parse_args(argv)
    try:
        profile = get_profile(args.profile)
        check_limits(args.max_rows, args.max_queue, args.time_limit)   # before loading the model
        model, vocab, _ = artifacts.pretrained_lm(profile, progress=False)
        app = make_app(model, vocab, batching=not args.serial, max_rows=args.max_rows,
                       max_queue=args.max_queue, time_limit=args.time_limit,
                       info={"profile": profile.name})
    except ValueError as err:
        parser.error(str(err))
    web.run_app(app, host=args.host, port=args.port, shutdown_timeout=args.time_limit,
                print=lambda msg: print(msg, flush=True))
    print("server stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
