"""A small asynchronous generation service (aiohttp), the course's interface.

POST /generate  {"context": str, "maxlength": int, "samples": int, ...sampler settings}
                -> 200 ["continuation", ...] | 400/503/504 {"error": "..."}
                with "stream": true, server-sent events: one per new piece of text, then
                `event: done` with the full texts
GET  /health    -> {"status": "ok", ...}  (answers at once, even mid-generation)
GET  /          -> a page to try the service from a browser (no external requests)

The model is loaded once and runs in ONE worker thread, off the event loop. Requests that
wait, or arrive while a batch runs, are decoded together (`course_utils.batching`): each
gets the text it would get alone. The command line, `python -m course_utils.serve --help`, is
course_utils/cli/serve.py; running the service in a thread or a process, and load-testing it,
is `course_utils.serve_tools`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter, deque
from importlib import resources

from aiohttp import web

from . import sampling
from .batching import BatchEngine, Group

MAX_CONTEXT_CHARS = 512
MAX_LENGTH = 512
MAX_SAMPLES = 16
SETTINGS = {"temperature": (int, float), "top_k": (int,), "top_p": (int, float),
            "repetition_penalty": (int, float), "seed": (int,)}
MAX_ROWS = 64           # rows (samples) decoded at once: the batch's KV-cache slots
MAX_QUEUE = 64          # requests waiting for a slot; one more gets 503 + Retry-After
TIME_LIMIT_S = 120.0    # per request, queueing included; then 504
RETRY_AFTER_S = 1
POLL_S = 0.25           # how often a waiting handler checks that its client is still there
MODEL_KEY = web.AppKey("model", object)
VOCAB_KEY = web.AppKey("vocab", object)
INFO_KEY = web.AppKey("info", dict)
WORKER_KEY = web.AppKey("worker", object)


class BadRequest(ValueError):
    """The request is malformed; its message goes back to the client with a 400."""


# ---------------------------------------------------------------------------- validation


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
    unknown = sorted(set(body) - {"context", "maxlength", "samples", "stream"} - set(SETTINGS))
    if unknown:
        raise BadRequest(f"unknown field(s) {unknown}; allowed: context, maxlength, samples, stream, "
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


def wants_stream(body: dict) -> bool:
    """The optional "stream" field: true for server-sent events."""
    value = body.get("stream", False)
    if not isinstance(value, bool):
        raise BadRequest(f"field 'stream' must be true or false, got {json.dumps(value)}")
    return value


def make_group(model, vocab, args: dict) -> Group:
    """The rows `sampling.complete(model, vocab, **args)` would decode, as a batching.Group:
    the same prompt (cropped to the window), stop tokens and sampler settings."""
    args = dict(args)
    ids = sampling.encode_prompt(vocab, args.pop("prompt"))[-model.config.block_size:]
    return Group(ids, args.pop("num_samples"), args.pop("max_new_tokens"),
                 stop_tokens=sampling.stop_ids(vocab), device=next(model.parameters()).device,
                 **args)


# ---------------------------------------------------------------------------- the worker


class Job:
    """One accepted request: its rows, where its events go (an asyncio queue on the loop that
    serves its client) and whether that client still wants the answer."""

    def __init__(self, group: Group, stream: bool):
        self.group, self.stream = group, stream
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()   # set by the handler: client gone or time is up

    def emit(self, kind: str, payload) -> None:
        """From the worker thread: hand an event to the handler's loop."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass


class Worker:
    """The one thread that runs the model. It admits queued jobs into a `BatchEngine` when
    their rows fit, steps the engine (every request in flight gets a token), sends each job
    its new text, and drops the jobs whose client has gone. `max_groups=1` decodes one
    request at a time: the unbatched service."""

    def __init__(self, model, vocab, max_rows: int = MAX_ROWS, max_queue: int = MAX_QUEUE,
                 max_groups: int | None = None):
        self.engine = BatchEngine(model, max_rows, max_groups)
        self.vocab, self.max_queue = vocab, max_queue
        self.pending: deque[Job] = deque()
        self.running: dict[Group, Job] = {}         # the groups in the engine, and their jobs
        self.cond = threading.Condition()
        self.accepting, self.stopping = True, False
        self.stats = Counter(finished=0, cancelled=0, refused=0, largest_batch=0)
        self.thread = threading.Thread(target=self._run, name="generate", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def submit(self, job: Job) -> str | None:
        """Queue a job; None if accepted, else why not (the queue is full, or shutting down)."""
        with self.cond:
            if not self.accepting:
                return "the server is shutting down: retry on another instance or later"
            if len(self.pending) >= self.max_queue:
                self.stats["refused"] += 1
                return (f"the service is busy: {len(self.pending)} requests are already waiting "
                        f"(the queue holds {self.max_queue}); retry in a moment")
            self.pending.append(job)
            self.cond.notify()
            return None

    def drain(self) -> None:
        """Stop taking requests; the queued ones get 503; the running batch finishes."""
        with self.cond:
            self.accepting = False
            while self.pending:
                self.pending.popleft().emit("error", (503, "the server is shutting down: retry later"))
            self.cond.notify()

    def stop(self, timeout: float = 30) -> None:
        """End the thread (after drain, once the handlers are done); what is left gets 503."""
        self.drain()
        with self.cond:
            self.stopping = True
            self.cond.notify()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self.cond:
                while not (self.pending or self.running or self.stopping):
                    self.cond.wait()
                if self.stopping:
                    break
                self._admit()
            self._drop_abandoned()
            if self.engine.groups:
                self._step()
        for job in list(self.running.values()):
            job.emit("error", (503, "the server stopped before this request finished: retry later"))

    def _admit(self) -> None:
        """Queued jobs join the batch in arrival order while their rows fit."""
        while self.pending:
            job = self.pending[0]
            if job.cancelled.is_set():
                self.pending.popleft()
                self.stats["cancelled"] += 1
            elif self.engine.fits(job.group):
                self.pending.popleft()
                self.engine.add(job.group)
                self.running[job.group] = job
            else:
                break

    def _drop_abandoned(self) -> None:
        for group, job in list(self.running.items()):
            if job.cancelled.is_set():
                self.stats["cancelled"] += 1
                del self.running[group]
                self.engine.remove(group)

    def _step(self) -> None:
        try:
            stepped = self.engine.step()
        except Exception as err:  # a bug or out of memory: fail these requests, keep serving
            for group, job in self.running.items():
                job.emit("error", (500, f"generation failed: {type(err).__name__}: {err}"))
                if group in self.engine.groups:
                    self.engine.remove(group)
            self.running.clear()
            return
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(stepped))
        for group, tokens in stepped:
            job = self.running[group]
            if job.stream:
                pieces = [self.vocab.decode([t], skip_special=True) for t in tokens.tolist()]
                if any(pieces):
                    job.emit("pieces", pieces)
            if group.finished:
                del self.running[group]
                self.stats["finished"] += 1
                job.emit("done", [self.vocab.decode(row.tolist(), skip_special=True)
                                  for row in group.new_tokens()])

    def state(self) -> dict:
        return {"queued": len(self.pending), "running": len(self.running),
                "rows_in_use": self.engine.rows_in_use(), **self.stats}


# ---------------------------------------------------------------------------- handlers


class ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


def _json_error(status: int, message: str, **headers) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


async def _events(job: Job, request: web.Request, deadline: float):
    """The job's events as they arrive. Raises TimeoutError past `deadline` (loop time) and
    ClientGone when the connection has closed; either way the job is cancelled."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError
            try:
                kind, payload = await asyncio.wait_for(job.events.get(), min(left, POLL_S))
            except asyncio.TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    raise ClientGone from None
                continue
            yield kind, payload
            if kind in ("done", "error"):
                return
    finally:
        job.cancelled.set()   # a no-op for a finished job; frees the rows of an abandoned one


def _too_slow(limit: float) -> str:
    return (f"the request took longer than the service's limit of {limit:g} s (queueing "
            f"included): ask for fewer characters (maxlength) or samples, or retry when it is "
            f"less busy")


def _sse(data, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _answer(request: web.Request, job: Job, deadline: float, limit: float):
    """The non-streaming answer: the JSON list of continuations once they are all done."""
    try:
        async for kind, payload in _events(job, request, deadline):
            if kind == "done":
                return web.json_response(payload)
            if kind == "error":
                status, message = payload
                return _json_error(status, message)
    except asyncio.TimeoutError:
        return _json_error(504, _too_slow(limit))
    except ClientGone:
        return web.Response(status=499)   # nobody reads it: the connection is closed


async def _stream(request: web.Request, job: Job, deadline: float, limit: float):
    """Server-sent events: `data: {"pieces": [...]}` per step with new text (one piece per
    sample), then `event: done` with {"texts": [...]}, or `event: error` with {"error": ...}."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                       "Cache-Control": "no-cache"})
    await resp.prepare(request)
    try:
        async for kind, payload in _events(job, request, deadline):
            if kind == "pieces":
                await resp.write(_sse({"pieces": payload}))
            elif kind == "done":
                await resp.write(_sse({"texts": payload}, "done"))
            else:
                await resp.write(_sse({"status": payload[0], "error": payload[1]}, "error"))
        await resp.write_eof()
    except asyncio.TimeoutError:
        await resp.write(_sse({"status": 504, "error": _too_slow(limit)}, "error"))
        await resp.write_eof()
    except (ClientGone, ConnectionResetError):
        pass   # the client left; _events cancelled the job, so its rows are freed
    return resp


async def generate_handler(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _json_error(400, "the body is not valid JSON")
    app = request.app
    try:
        args = parse_request(body)
        stream = wants_stream(body)
        group = make_group(app[MODEL_KEY], app[VOCAB_KEY], args)
    except BadRequest as err:
        return _json_error(400, str(err))
    except ValueError as err:  # e.g. a prompt the vocabulary cannot read at all
        return _json_error(400, str(err))
    job = Job(group, stream)
    refused = app[WORKER_KEY].submit(job)
    if refused:
        return _json_error(503, refused, **{"Retry-After": str(RETRY_AFTER_S)})
    limit = app[INFO_KEY]["time_limit_s"]
    deadline = asyncio.get_running_loop().time() + limit
    return await (_stream if stream else _answer)(request, job, deadline, limit)


async def health_handler(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", **request.app[INFO_KEY],
                              **request.app[WORKER_KEY].state()})


async def page_handler(request: web.Request) -> web.Response:
    html = resources.files(__package__).joinpath("serve_page.html").read_text(encoding="utf-8")
    return web.Response(text=html, content_type="text/html", charset="utf-8")


# ---------------------------------------------------------------------------- the app


async def _start_worker(app: web.Application) -> None:
    app[WORKER_KEY].start()


async def _drain(app: web.Application) -> None:
    worker = app[WORKER_KEY]
    if worker.running:
        print(f"shutting down: finishing {len(worker.running)} running request(s)", flush=True)
    worker.drain()


async def _stop_worker(app: web.Application) -> None:
    await asyncio.get_running_loop().run_in_executor(None, app[WORKER_KEY].stop)


def check_limits(max_rows: int, max_queue: int, time_limit: float) -> None:
    """Raise ValueError unless the service's limits make sense."""
    if max_queue < 0 or time_limit <= 0 or max_rows < MAX_SAMPLES:
        raise ValueError(f"need max_queue >= 0, time_limit > 0 and max_rows >= {MAX_SAMPLES} "
                         f"(one request's samples), got {max_queue}, {time_limit}, {max_rows}")


def make_app(model, vocab, *, batching: bool = True, max_rows: int = MAX_ROWS,
             max_queue: int = MAX_QUEUE, time_limit: float = TIME_LIMIT_S,
             info: dict | None = None) -> web.Application:
    """The aiohttp application serving `model` with `vocab`. `batching=False` decodes one
    request at a time (the unbatched service, for comparison); `max_rows` rows (samples) are
    decoded together at most; `max_queue` requests may wait; each has `time_limit` s. `info`:
    more to say at GET /health (e.g. the profile)."""
    check_limits(max_rows, max_queue, time_limit)
    info = dict(info or {})
    model.eval()
    info.update(parameters=model.num_parameters(), vocab_size=len(vocab),
                block_size=model.config.block_size, max_context_chars=MAX_CONTEXT_CHARS,
                max_length=MAX_LENGTH, max_samples=MAX_SAMPLES, batching=batching,
                max_rows=max_rows, max_queue=max_queue, time_limit_s=time_limit)
    app = web.Application(client_max_size=64 * 1024)
    app[MODEL_KEY], app[VOCAB_KEY], app[INFO_KEY] = model, vocab, info
    app[WORKER_KEY] = Worker(model, vocab, max_rows, max_queue, None if batching else 1)
    app.router.add_post("/generate", generate_handler)
    app.router.add_get("/health", health_handler)
    app.router.add_get("/", page_handler)
    app.on_startup.append(_start_worker)
    app.on_shutdown.append(_drain)
    app.on_cleanup.append(_stop_worker)
    return app


if __name__ == "__main__":  # `python -m course_utils.serve` runs the command line, kept apart
    import runpy

    runpy.run_module("course_utils.cli.serve", run_name="__main__")
