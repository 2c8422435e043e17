# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 12 · Serving the model over HTTP
#
# A model in a notebook helps one person; a model behind an HTTP endpoint helps every
# program that can send a request. The course wrapped its GPT in a small asynchronous web
# service (异步服务): a client posts a context, the server answers with a few candidate
# continuations. In this chapter we build that service twice, first as a ten-line sketch,
# then with `course_utils.serve`, which adds what a real service needs: validation with
# clear 400 errors, limits on input size, one model loaded once, and generation moved off
# the event loop so the server keeps answering while it computes. We start it as a real
# process, call it, feed it bad requests, and measure latency and throughput under
# concurrent clients.
#
# **Learning goals**
#
# - the course's interface: `POST /generate` with `{"context", "maxlength", "samples"}`;
# - why a CPU-bound handler must not run on the event loop, measured;
# - validating requests so that bad input gets a 400 with a message, never a stack trace;
# - measuring latency (p50/p95) and throughput with concurrent clients, and reading them.

# %%
from course_utils import config, plots

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
config.seed_everything(0)

# %% [markdown]
# ## 1. The model we serve
#
# The pretrained news GPT of chapter 05, from the cache (or trained now if it is missing).

# %%
import torch

from course_utils import artifacts, sampling

model, vocab, info = artifacts.pretrained_lm(profile)
print(f"{model.num_parameters():,} parameters, block_size {model.config.block_size}, "
      f"validation loss {info['val_loss']:.3f}")
print(sampling.complete(model, vocab, "中国", max_new_tokens=30, temperature=0.8, top_k=40, seed=0))

# %% [markdown]
# ## 2. A first sketch, and what is wrong with it
#
# aiohttp runs every handler on one event loop (事件循环): a single thread that switches
# between requests whenever a handler `await`s. The shortest possible service calls the
# model directly inside the handler:

# %%
from aiohttp import web


async def naive_generate(request):
    body = await request.json()
    return web.json_response(sampling.complete(
        model, vocab, body["context"], max_new_tokens=body["maxlength"],
        num_samples=body.get("samples", 1), temperature=0.8, top_k=40, top_p=0.9))


async def naive_health(request):
    return web.json_response({"status": "ok"})


naive_app = web.Application()
naive_app.router.add_post("/generate", naive_generate)
naive_app.router.add_get("/health", naive_health)
for route in naive_app.router.routes():   # add_get also registers HEAD for the same path
    print(f"{route.method:6s} {route.resource.canonical}")

# %% [markdown]
# It works for one polite client. Two problems show up at once with more:
#
# 1. `sampling.complete` computes for a long time **without awaiting**, so the loop is
#    blocked: no other request, not even `/health`, is answered until it finishes.
# 2. Nothing is validated: a missing field is a `KeyError` (a 500 with a stack trace), and a
#    `maxlength` of ten million keeps the server busy for hours.
#
# Let us measure the first problem. `serve.run_in_thread` serves an app on a free local
# port from its own event loop in a background thread, so this notebook's loop is free to
# play the clients: we fire one long generation and, meanwhile, time a `/health` call.

# %%
import asyncio
import time

from aiohttp import ClientSession

from course_utils import serve

LONG = {"context": "中国", "maxlength": 4 * model.config.block_size, "samples": 8,
        "temperature": 0.8, "top_k": 40, "seed": 0}


async def health_latency_during_generation(app):
    """Seconds /health takes to answer while a long /generate is being computed."""
    with serve.run_in_thread(app) as server:
        async with ClientSession() as session:
            slow = asyncio.create_task(session.post(server.url + "/generate", json=LONG))
            await asyncio.sleep(0.2)                      # the generation is under way
            t0 = time.perf_counter()
            async with session.get(server.url + "/health") as resp:
                assert resp.status == 200
            health = time.perf_counter() - t0
            t0 = time.perf_counter()
            (await slow).release()
            return health, time.perf_counter() - t0 + health


naive_health_s, naive_total_s = await health_latency_during_generation(naive_app)
print(config.machine_line())
print(f"naive service: /health answered after {naive_health_s * 1000:.0f} ms "
      f"(the generation finished {naive_total_s * 1000:.0f} ms after the health call began)")

# %% [markdown]
# ## 3. `course_utils.serve`
#
# ![The request path: the client posts JSON to /generate; on the event loop the handler validates it with parse_request (400 on bad input) and hands generation to a worker thread with run_in_executor while /health keeps answering; the worker runs sampling.complete under a lock and the JSON list of continuations goes back](../book/images/service.png)
#
# *The request path of `course_utils.serve`: validation happens on the event loop, generation runs one at a time in a worker thread, so the loop stays free and `/health` answers mid-generation.*
#
# The canonical service fixes both problems. Its handler parses and validates the body
# (`parse_request`), then hands the generation to a worker thread with
# `loop.run_in_executor`: the loop is free while PyTorch computes (PyTorch releases
# Python's GIL inside its kernels), and a lock makes sure the one model is used by one
# generation at a time. Same measurement:

# %%
app = serve.make_app(model, vocab)
served_health_s, served_total_s = await health_latency_during_generation(app)
print(config.machine_line())
print(f"course_utils.serve: /health answered after {served_health_s * 1000:.0f} ms "
      f"(naive: {naive_health_s * 1000:.0f} ms)")
if profile.name != "ci":   # the ci model finishes LONG before /health is even asked
    assert served_health_s < naive_health_s

# %% [markdown]
# Both services must still agree on *what* they generate: with greedy decoding
# (temperature 0) the sketch's core call and the service give the same text.

# %%
async def post(app, body):
    with serve.run_in_thread(app) as server:
        async with ClientSession() as session:
            async with session.post(server.url + "/generate", json=body) as resp:
                return resp.status, await resp.json()


# an aiohttp Application is bound to the loop that first ran it: serve a fresh one
status, served = await post(serve.make_app(model, vocab),
                            {"context": "今天", "maxlength": 20, "samples": 1, "temperature": 0})
inline = sampling.complete(model, vocab, "今天", max_new_tokens=20, temperature=0)
print(status, served, inline)
assert status == 200 and served == inline

# %% [markdown]
# ## 4. A real server process
#
# In production the service is its own process: `python -m course_utils.serve --port 8080`.
# We start it in the background, wait until `/health` answers, and talk to it over HTTP
# like any client would.

# %%
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = free_port()
BASE = f"http://127.0.0.1:{PORT}"
server = subprocess.Popen(
    [sys.executable, "-m", "course_utils.serve", "--port", str(PORT), "--profile", profile.name],
    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

for _ in range(600):  # up to 60 s for the model to load
    try:
        with urllib.request.urlopen(f"{BASE}/health", timeout=1) as resp:
            health = json.load(resp)
            break
    except (urllib.error.URLError, ConnectionError):
        time.sleep(0.1)
else:
    server.kill()
    raise RuntimeError("the server did not start:\n" + server.stdout.read())
print(json.dumps(health, ensure_ascii=False))


# %%
def call(body: bytes | dict, path: str = "/generate"):
    """POST a body (a dict is sent as JSON); return (status, decoded JSON answer)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


status, texts = call({"context": "新华社北京", "maxlength": 40, "samples": 3})
print(status)
for t in texts:
    print(" 新华社北京" + t)

# %% [markdown]
# Optional fields set the sampler (chapter 08): `temperature`, `top_k`, `top_p`,
# `repetition_penalty` and a `seed` that makes the answer reproducible.

# %%
body = {"context": "今天", "maxlength": 30, "samples": 2, "temperature": 1.0, "top_k": 10, "seed": 42}
first, second = call(body)[1], call(body)[1]
print(first)
assert first == second, "the same seed must give the same samples"

# %% [markdown]
# ## 5. Bad requests get a 400 and a message
#
# Every way a client can get a request wrong, with what the service answers:

# %%
import pandas as pd

bad_requests = {
    "not JSON": b"{context: oops",
    "a list, not an object": [1, 2, 3],
    "missing context": {"maxlength": 10},
    "context is a number": {"context": 42, "maxlength": 10},
    "empty context": {"context": "   ", "maxlength": 10},
    "context too long": {"context": "长" * 1000, "maxlength": 10},
    "maxlength as text": {"context": "今天", "maxlength": "10"},
    "maxlength 0": {"context": "今天", "maxlength": 0},
    "maxlength huge": {"context": "今天", "maxlength": 10**7},
    "samples 100": {"context": "今天", "maxlength": 10, "samples": 100},
    "negative temperature": {"context": "今天", "maxlength": 10, "temperature": -1},
    "top_p 1.5": {"context": "今天", "maxlength": 10, "top_p": 1.5},
    "unknown field": {"context": "今天", "maxlength": 10, "beam": 4},
    "no known character": {"context": "🙂🙂", "maxlength": 10},
}
rows = []
for name, body in bad_requests.items():
    status, answer = call(body if isinstance(body, bytes) else body)
    rows.append({"request": name, "status": status, "error": answer.get("error") if isinstance(answer, dict) else answer})
errors = pd.DataFrame(rows)
assert (errors.status == 400).all()
pd.set_option("display.max_colwidth", 90)
errors

# %% [markdown]
# ## 6. Latency and throughput under concurrent clients
#
# Now many clients at once. Each of `c` concurrent clients sends requests back to back;
# we record every request's latency and the total requests per second. To compare like
# with like, every request does the same work: greedy decoding (temperature 0) of the
# same prompt, so each one generates the same characters and stops at the same place.

# %%
import numpy as np
from tqdm.auto import tqdm


async def load_test(concurrency: int, requests_per_client: int):
    latencies = []

    async def client(session, k):
        for _ in range(requests_per_client):
            body = {"context": "中国", "maxlength": 40, "samples": 1, "temperature": 0}
            t0 = time.perf_counter()
            async with session.post(BASE + "/generate", json=body) as resp:
                assert resp.status == 200
                await resp.json()
            latencies.append(time.perf_counter() - t0)

    async with ClientSession() as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(session, k) for k in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies)
    return {"clients": concurrency, "requests": len(lat), "req/s": len(lat) / wall,
            "p50 ms": 1000 * np.percentile(lat, 50), "p95 ms": 1000 * np.percentile(lat, 95)}


levels = [1, 2, 4, 8, 16] if profile.name != "ci" else [1, 4]
per_client = 4 if profile.name != "ci" else 2
load = pd.DataFrame([await load_test(c, per_client) for c in tqdm(levels, desc="load test")])
load.round(1)

# %%
import matplotlib.pyplot as plt

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
ax1.plot(load.clients, load["p50 ms"], "o-", label="p50")
ax1.plot(load.clients, load["p95 ms"], "s--", label="p95")
ax1.set(xlabel="concurrent clients", ylabel="latency (ms)", title="Latency grows with the queue", xscale="log")
ax1.legend()
ax2.plot(load.clients, load["req/s"], "o-", color="C2")
ax2.set(xlabel="concurrent clients", ylabel="requests per second", title="Throughput does not grow",
        xscale="log", ylim=(0, None))
fig.tight_layout()
plt.show()
print(config.machine_line())
one, most = load.iloc[0], load.iloc[-1]
change = most["req/s"] / one["req/s"]
trend = "fell" if change < 0.9 else "rose" if change > 1.1 else "stayed about flat"
print(f"throughput {trend}: {one['req/s']:.1f} req/s with 1 client, {most['req/s']:.1f} with "
      f"{int(most['clients'])} (x{change:.2f}); lowest {load['req/s'].min():.1f} req/s")
print("p50 latency vs clients / throughput (Little's law), ms: " + ", ".join(
    f"c={c}: {p:.0f} vs {1000 * c / r:.0f}" for c, p, r in zip(load.clients, load["p50 ms"], load["req/s"],
                                                                     strict=True)))
if profile.name != "ci":  # the next paragraph: latency grows with the queue, throughput does not grow
    assert load["p50 ms"].is_monotonic_increasing
    assert load["req/s"].iloc[1:].max() < 1.25 * one["req/s"]

# %% [markdown]
# Read the two plots with the lines printed under them. The server handles one generation
# at a time (one model behind a lock, and PyTorch already uses every core for it), so more
# clients cannot raise throughput: concurrency does not make the machine faster. It can make
# it slower, and a drop of tens of percent is not timing noise: the clients run in this
# notebook's process on the same cores as the server, more open connections mean more work
# for both event loops and the worker threads, and other programs compete for the CPU (the
# load average in the machine line). On a quiet machine with cores to spare the line is
# flatter; the first printed line says what happened in this run. What concurrency changes
# for certain is the *queue*: with `c` clients always waiting, a request waits for the
# `c - 1` ahead of it, so its latency is about `c` divided by the throughput (Little's law,
# compared with the measured p50 in the last line). Latency grows in proportion to `c` where
# throughput is flat, and faster where throughput drops. Note that no request failed: the
# event loop kept accepting and queueing them.
#
# The way to more throughput on the same hardware is **batching**: one forward pass over
# several sequences costs much less than several passes. The `samples` field already
# batches the candidates of one request:

# %%
def chars_per_second(samples: int, length: int = 40, repeats: int = 3) -> float:
    """Characters returned per second of wall time (rows that hit 。 stop early)."""
    chars, t0 = 0, time.perf_counter()
    for seed in range(repeats):
        status, texts = call({"context": "中国", "maxlength": length, "samples": samples,
                              "seed": seed, "temperature": 1.0})
        assert status == 200 and len(texts) == samples
        chars += sum(map(len, texts))
    return chars / (time.perf_counter() - t0)


batching = pd.DataFrame([{"samples per request": s, "characters/s returned": chars_per_second(s)}
                         for s in [1, 4, 16]])
print(config.machine_line())
rate = batching["characters/s returned"]
print(f"16 samples per request return x{rate.iloc[-1] / rate.iloc[0]:.1f} the characters per second of 1")
if profile.name != "ci":  # the summary: batching raises throughput
    assert rate.is_monotonic_increasing
batching.round(0)

# %%
server.terminate()
server.wait(timeout=10)
print("server stopped, exit code", server.returncode)

# %% [markdown]
# > **Pitfalls.**
# > - **Blocking the event loop.** A handler that computes without awaiting freezes the
# >   whole server (section 2). Move CPU work to an executor.
# > - **One model, many threads.** A PyTorch module is not made for concurrent forward
# >   passes that share a KV cache or a generator; serialise them (a lock) or give each
# >   worker its own copy.
# > - **Unbounded inputs.** Every size a client controls (`context`, `maxlength`, `samples`)
# >   needs a limit, or one request can occupy the server for hours or exhaust memory.
# > - **Stack traces as answers.** A `KeyError` from a missing field becomes a 500 with
# >   internals; validate first and answer 400 with a message the client can act on.
# > - **Binding to 0.0.0.0** exposes the service to the whole network; the default here is
# >   127.0.0.1.
#
# ## Exercises
#
# **Exercise 12.1 (percentile).** Write `percentile(values, q)` returning the q-th percentile (0-100) with
# linear interpolation between closest ranks, like `np.percentile` (without calling it).

# %%
from course_utils.exercises import ch12


def percentile(values, q):
    raise NotImplementedError


_ = ch12.check_percentile(percentile)


# %% tags=["hide-cell"]
# Solution
def percentile(values, q):
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


_ = ch12.check_percentile(percentile)


# %% [markdown]
# **Exercise 12.2 (validate maxlength).** Write `validate_maxlength(body)` that returns `body["maxlength"]` when it is
# an integer between 1 and 512, and otherwise raises `ValueError` with a message naming the
# field (a `bool` is not an integer here, even though Python says `True == 1`).

# %%
def validate_maxlength(body):
    raise NotImplementedError


_ = ch12.check_validate_maxlength(validate_maxlength)


# %% tags=["hide-cell"]
# Solution
def validate_maxlength(body):
    value = body.get("maxlength")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 512:
        raise ValueError(f"field 'maxlength' must be an integer between 1 and 512, got {value!r}")
    return value


_ = ch12.check_validate_maxlength(validate_maxlength)

# %% [markdown]
# ## Summary
#
# - The course's interface, `POST /generate` with `context`, `maxlength` and `samples`,
#   answered by a JSON list of continuations, is served by `course_utils.serve`
#   (`python -m course_utils.serve --port 8080`).
# - Generation runs in a worker thread, so the event loop stays responsive: `/health`
#   answered in milliseconds during a long generation instead of waiting for it.
# - Every bad request gets a 400 with a message; sizes are bounded.
# - With one model on one machine, concurrency queues requests: latency grows, throughput
#   does not (it can even fall when clients and server share a busy CPU, section 6);
#   batching several sequences into one forward pass is what raises throughput.
#
# Chapter 13 takes the model out of PyTorch: into Hugging Face `transformers`, where most
# language models are published, and into ONNX, the format that ships a model without Python.
