"""Running the generation service (`course_utils.serve`) from a notebook, a test or a benchmark:
in a background thread, as its own process (as in production), and under a load of concurrent
clients (chapter 12).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np
from aiohttp import ClientSession, ClientTimeout, web


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
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=60)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def run_in_thread(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> ServerThread:
    """Serve `app` in a background thread (port 0: any free port); see ServerThread."""
    return ServerThread(app, host, port)


class ServerProcess:
    """`python -m course_utils.serve` in its own process on a free 127.0.0.1 port, as in
    production; `options` are its command-line options (e.g. "--serial"), `threads` sets
    torch's threads there (OMP_NUM_THREADS). Waits until /health answers. Use as a context
    manager, or call `stop()` (SIGTERM: the running batch finishes; returns the exit code)."""

    def __init__(self, profile: str, *options: str, threads: int | None = None,
                 timeout: float = 300):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "course_utils.serve", "--port", str(port), "--profile", profile,
             *options], stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                    self.health = json.load(resp)
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the server did not start:\n{self.output()}") from None
                time.sleep(0.1)

    def output(self) -> str:
        """What the server printed so far."""
        self.log.seek(0)
        return self.log.read()

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------- the client side


async def load_test(url: str, body, clients: int, per_client: int, stream: bool = False) -> dict:
    """`clients` concurrent clients each POST `per_client` requests to `url` + /generate, one
    after the other; request k (0, 1, ...) sends `body(k)`. Returns requests/s, the p50/p95
    latency in ms, with `stream` the p50/p95 time to the first piece of text, and the texts
    (by k) so runs can be compared. Every request must succeed."""
    latencies, first, texts = [], {}, {}

    async def one(session, k: int) -> None:
        t0 = time.perf_counter()
        async with session.post(url + "/generate", json={**body(k), "stream": stream}) as resp:
            if resp.status != 200:
                raise RuntimeError(f"request {k}: HTTP {resp.status}: {await resp.text()}")
            if not stream:
                texts[k] = await resp.json()
            else:
                event = "message"
                async for line in resp.content:   # server-sent events, line by line
                    if line.startswith(b"event: "):
                        event = line[7:].strip().decode()
                    elif line.startswith(b"data: "):
                        if k not in first:
                            first[k] = time.perf_counter() - t0
                        if event != "message":
                            break
                data = json.loads(line[6:])
                if event != "done":
                    raise RuntimeError(f"request {k}: {data}")
                texts[k] = data["texts"]
        latencies.append(time.perf_counter() - t0)

    async def client(session, c: int) -> None:
        for i in range(per_client):
            await one(session, c * per_client + i)

    async with ClientSession(timeout=ClientTimeout(total=None)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(session, c) for c in range(clients)))
        wall = time.perf_counter() - t0
    ms = lambda xs, q: 1000 * float(np.percentile(xs, q))
    result = {"clients": clients, "requests": len(latencies), "seconds": wall,
              "req/s": len(latencies) / wall, "p50 ms": ms(latencies, 50), "p95 ms": ms(latencies, 95)}
    if stream:
        firsts = list(first.values())
        result.update({"first piece p50 ms": ms(firsts, 50), "first piece p95 ms": ms(firsts, 95)})
    result["texts"] = [texts[k] for k in sorted(texts)]
    return result
