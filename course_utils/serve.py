"""A small asynchronous generation service (aiohttp), the course's interface.

POST /generate  {"context": str, "maxlength": int, "samples": int, ...sampler settings}
                -> 200 ["continuation", ...] | 400 {"error": "..."}
GET  /health    -> {"status": "ok", ...}

The model is loaded once; generation runs in a worker thread, off the event loop, so
the server keeps answering while it generates. `python -m course_utils.serve --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from aiohttp import web

from . import sampling

MAX_CONTEXT_CHARS = 512
MAX_LENGTH = 512
MAX_SAMPLES = 16
SETTINGS = {"temperature": (int, float), "top_k": (int,), "top_p": (int, float),
            "repetition_penalty": (int, float), "seed": (int,)}
MODEL_KEY = web.AppKey("model", object)
VOCAB_KEY = web.AppKey("vocab", object)
EXECUTOR_KEY = web.AppKey("executor", ThreadPoolExecutor)
INFO_KEY = web.AppKey("info", dict)
LOCK_KEY = web.AppKey("lock", object)


class BadRequest(ValueError):
    """The request is malformed; its message goes back to the client with a 400."""


def _field(body: dict, name: str, types: tuple, required: bool = True, default=None):
    if name not in body or body[name] is None:
        if required:
            raise BadRequest(f"missing field {name!r}")
        return default
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, types):
        want = " or ".join(t.__name__ for t in types)
        raise BadRequest(f"field {name!r} must be {want}, got {type(value).__name__}")
    return value


def parse_request(body) -> dict:
    """Validate a /generate body; returns the arguments for `sampling.complete`."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object like "
                         '{"context": "今天", "maxlength": 50, "samples": 3}')
    unknown = sorted(set(body) - {"context", "maxlength", "samples"} - set(SETTINGS))
    if unknown:
        raise BadRequest(f"unknown field(s) {unknown}; allowed: context, maxlength, samples, "
                         + ", ".join(SETTINGS))
    context = _field(body, "context", (str,))
    if not context.strip():
        raise BadRequest("field 'context' is empty: give some text to continue")
    if len(context) > MAX_CONTEXT_CHARS:
        raise BadRequest(f"field 'context' has {len(context)} characters; at most {MAX_CONTEXT_CHARS}")
    maxlength = _field(body, "maxlength", (int,))
    if not 1 <= maxlength <= MAX_LENGTH:
        raise BadRequest(f"field 'maxlength' must be between 1 and {MAX_LENGTH}, got {maxlength}")
    samples = _field(body, "samples", (int,), required=False, default=1)
    if not 1 <= samples <= MAX_SAMPLES:
        raise BadRequest(f"field 'samples' must be between 1 and {MAX_SAMPLES}, got {samples}")
    settings = {k: _field(body, k, t, required=False) for k, t in SETTINGS.items() if k in body}
    settings.setdefault("temperature", 0.8)
    settings.setdefault("top_k", 40)
    settings.setdefault("top_p", 0.9)
    try:
        sampling.check_settings(settings["temperature"], settings["top_k"], settings["top_p"],
                                settings.get("repetition_penalty", 1.0))
    except ValueError as err:
        raise BadRequest(str(err)) from None
    return {"prompt": context, "max_new_tokens": maxlength, "num_samples": samples, **settings}


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def generate_handler(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _json_error(400, "the body is not valid JSON")
    try:
        args = parse_request(body)
    except BadRequest as err:
        return _json_error(400, str(err))
    app = request.app
    model, vocab = app[MODEL_KEY], app[VOCAB_KEY]

    def work():
        with app[LOCK_KEY], torch.inference_mode():
            return sampling.complete(model, vocab, **args)

    try:
        texts = await asyncio.get_running_loop().run_in_executor(app[EXECUTOR_KEY], work)
    except ValueError as err:  # e.g. a prompt the vocabulary cannot read at all
        return _json_error(400, str(err))
    return web.json_response(texts)


async def health_handler(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", **request.app[INFO_KEY]})


async def _shutdown(app: web.Application) -> None:
    app[EXECUTOR_KEY].shutdown(wait=False, cancel_futures=True)


def make_app(model=None, vocab=None, profile=None, workers: int = 1) -> web.Application:
    """The aiohttp application. Without `model`/`vocab`, loads the pretrained model of
    `profile` (default: the active one) once, now."""
    if (model is None) != (vocab is None):
        raise ValueError("give both model and vocab, or neither (to load the pretrained model)")
    info = {}
    if model is None:
        from .artifacts import pretrained_lm

        model, vocab, meta = pretrained_lm(profile, progress=False)
        info["profile"] = meta.get("profile")
    model.eval()
    info.update(parameters=model.num_parameters(), vocab_size=len(vocab),
                block_size=model.config.block_size, max_context_chars=MAX_CONTEXT_CHARS,
                max_length=MAX_LENGTH, max_samples=MAX_SAMPLES)
    app = web.Application(client_max_size=64 * 1024)
    app[MODEL_KEY], app[VOCAB_KEY], app[INFO_KEY] = model, vocab, info
    app[EXECUTOR_KEY] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="generate")
    # one model, one generation at a time: torch already uses every core for each one
    app[LOCK_KEY] = threading.Lock()
    app.router.add_post("/generate", generate_handler)
    app.router.add_get("/health", health_handler)
    app.on_shutdown.append(_shutdown)
    return app


class ServerThread:
    """An aiohttp app served on 127.0.0.1 by its own event loop in a background thread.

    Handy in notebooks and tests, whose own loop then stays free to act as the client.
    Use as a context manager, or call `stop()`.
    """

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0):
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        ready = threading.Event()
        failure: list[BaseException] = []

        def run():
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self.runner.setup())
                site = web.TCPSite(self.runner, host, port)
                self.loop.run_until_complete(site.start())
                self.port = site._server.sockets[0].getsockname()[1]
            except BaseException as err:  # reported to the caller below
                failure.append(err)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="aiohttp-server", daemon=True)
        self.thread.start()
        ready.wait(timeout=30)
        if failure:
            raise RuntimeError(f"the server could not start on {host}:{port}: {failure[0]}")
        self.url = f"http://{host}:{self.port}"

    def stop(self) -> None:
        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def run_in_thread(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> ServerThread:
    """Serve `app` in a background thread (port 0: any free port); see ServerThread."""
    return ServerThread(app, host, port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.serve",
                                     description="Serve the pretrained GPT over HTTP (POST /generate).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--profile", choices=["ci", "cpu", "gpu"])
    args = parser.parse_args(argv)
    from .config import get_profile

    app = make_app(profile=get_profile(args.profile))
    web.run_app(app, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
