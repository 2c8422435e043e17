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
# the event loop so the server keeps answering while it computes. Then we make it hold
# under load the way inference servers such as vLLM and TGI do: requests that arrive
# together are decoded together (**dynamic batching**, 动态批处理), tokens are streamed to
# the client as they are generated, and a full queue, a slow request, a vanished client or
# a shutdown each get a clear, measured answer.
#
# **Learning goals**
#
# - the course's interface: `POST /generate` with `{"context", "maxlength", "samples"}`;
# - why a CPU-bound handler must not run on the event loop, measured;
# - validating requests so that bad input gets a 400 with a message, never a stack trace;
# - why one matrix multiply over many rows beats many multiplies over one, and what dynamic
#   batching does with requests that arrive at different times;
# - measuring latency (p50/p95), throughput and time to first token with concurrent clients,
#   one request at a time against batched, and reading the numbers.

# %%
from course_utils import config, plots, timing

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
print(timing.machine_line())   # sections 2, 3, 6, 7 and 8 time the service
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

from course_utils import serve, serve_tools

LONG = {"context": "中国", "maxlength": 4 * model.config.block_size, "samples": 8,
        "temperature": 0.8, "top_k": 40, "seed": 0}


async def health_latency_during_generation(app):
    """Seconds /health takes to answer while a long /generate is being computed."""
    with serve_tools.run_in_thread(app) as server:
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
print(f"torch threads: {torch.get_num_threads()}")
print(f"naive service: /health answered after {naive_health_s * 1000:.0f} ms "
      f"(the generation finished {naive_total_s * 1000:.0f} ms after the health call began)")

# %% [markdown]
# ## 3. `course_utils.serve`
#
# The canonical service fixes both problems. Its handler parses and validates the body
# (`parse_request`) on the event loop, then puts the request in a queue served by **one
# worker thread** that owns the model, and `await`s the answer: the loop is free while
# PyTorch computes (PyTorch releases Python's GIL inside its kernels), and only that one
# thread ever touches the model.
#
# ![A request's path: the client posts to the event loop, where generate_handler validates it (limits on context, maxlength and samples; else 400) and Worker.submit queues it (a full queue answers 503 with Retry-After); the worker thread admits it into the BatchEngine's 64 cache slots when its rows fit and steps all rows together; each step's new text goes back to the handler as events, which it writes to the client as server-sent events, within the time limit (else 504)](../book/images/serving.png)
#
# *A request's path through `course_utils.serve`: the limits are read from the module, the slots
# filled by a real `BatchEngine` (`book/images/make_serving.py`); sections 6 and 7 are about the
# slots.* Same measurement as for the sketch:

# %%
app = serve.make_app(model, vocab)
served_health_s, served_total_s = await health_latency_during_generation(app)
print(f"torch threads: {torch.get_num_threads()}")
config.claim(f"course_utils.serve answered /health after {served_health_s * 1000:.0f} ms, the naive "
             f"service after {naive_health_s * 1000:.0f} ms", served_health_s < naive_health_s)

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
# `repetition_penalty` and a `seed` that makes the answer reproducible. Greedy decoding
# (temperature 0) must give exactly the text of the sketch's core call, `sampling.complete`:

# %%
body = {"context": "今天", "maxlength": 30, "samples": 2, "temperature": 1.0, "top_k": 10, "seed": 42}
first, second = call(body)[1], call(body)[1]
print(first)
assert first == second, "the same seed must give the same samples"
status, served = call({"context": "今天", "maxlength": 20, "samples": 1, "temperature": 0})
inline = sampling.complete(model, vocab, "今天", max_new_tokens=20, temperature=0)
print(status, served, inline)
assert status == 200 and served == inline

# %% [markdown]
# The same process serves a page at `GET /` to try the service from a browser (run
# `python -m course_utils.serve` and open http://127.0.0.1:8080/): a prompt, the sampler
# settings, and the text as it streams in (section 8). It is one HTML file shipped inside
# the package with its JavaScript inline, so it needs no CDN and nothing leaves the machine.

# %%
import re

with urllib.request.urlopen(BASE + "/") as resp:
    page = resp.read().decode()
    print(resp.status, resp.headers["Content-Type"], f"{len(page):,} characters:",
          re.search(r"<title>(.*)</title>", page).group(1))
assert "http://" not in page and "https://" not in page   # nothing is fetched from elsewhere

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
    "stream as text": {"context": "今天", "maxlength": 10, "stream": "yes"},
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
# ## 6. Why batching helps: one matrix multiply for many rows
#
# Decoding one token runs the token's activation, a row of `d_model` numbers, through every
# layer: a handful of matrix multiplies by the layer's weights, then attention over the
# cached keys and values. With one row, each multiply reads a whole weight matrix to do one
# row of arithmetic, and PyTorch's fixed cost per operation (dispatch, Python) is paid for
# that single row. Stack 16 rows (16 sequences, each at its own position) into a (16, d_model)
# matrix and the same weights and operations serve all 16, in far less than 16 times the time.
# `decoding.decode_step`, chapter 08's decode step given one position per row, is that step;
# we time it for batches of 1 to 64 rows on one thread, as each server process below runs:

# %%
from course_utils.attention import StaticKVCache
from course_utils.decoding import decode_step


def steps_of(rows: int, repeats: int = 30):
    """`repeats` decode steps for `rows` rows, each at a random position."""
    cfg = model.config
    shape = (rows, cfg.n_heads, cfg.block_size, cfg.d_model // cfg.n_heads)
    cache = [StaticKVCache.wrap(torch.zeros(shape), torch.zeros(shape)) for _ in model.blocks]
    token, pos = torch.randint(3, len(vocab), (rows, 1)), torch.randint(0, cfg.block_size, (rows,))
    return lambda: [decode_step(model, token, pos, cache) for _ in range(repeats)]


ROWS = [1, 2, 4, 8, 16, 32, 64]
with torch.inference_mode():    # side by side, best of 5 interleaved rounds
    seconds = timing.time_interleaved({b: steps_of(b) for b in ROWS}, repeats=5, threads=1)
steps = pd.DataFrame({"rows": ROWS, "ms per step": [1000 * min(seconds[b]) / 30 for b in ROWS]})
steps["ms per row"] = steps["ms per step"] / steps.rows
one, sixteen = steps.set_index("rows").loc[1], steps.set_index("rows").loc[16]
print("torch threads: 1")
config.claim(f"a step for 16 rows takes {sixteen['ms per step'] / one['ms per step']:.1f}x the time of a "
             f"step for one row: {one['ms per row'] / sixteen['ms per row']:.1f}x less time per row",
             sixteen["ms per row"] < one["ms per row"] / 2 and sixteen["ms per step"] < 8 * one["ms per step"])
steps.round(3)

# %% [markdown]
# The time per row falls steeply as rows are added: a step for 16 rows costs far less than 16
# steps for one row (the claim above), because the fixed costs are paid once and the weights
# are read once for all the rows, until the arithmetic itself becomes the cost. That is the whole
# case for batching on a CPU, and even more on a GPU, which is mostly idle at one row.
#
# Requests do not arrive together: one comes while another is half-way through its answer.
# *Dynamic* (or continuous) batching lets every request join the running batch at the next
# step and leave it when it is done. `course_utils.batching` does it with a KV cache of one
# row (*slot*) per sample: each step, ONE shared `decode_step` serves every row in flight,
# each at its own position, and the tokens of every request are drawn from its own random
# generator, so a request gets exactly the text it would get alone, whoever shares the batch.
# The service's worker thread feeds this engine from its queue (the figure in section 3). How
# the engine does it, checked token for token against `sampling.generate`, and what choosing
# the tokens of many requests at once costs, is the subject of
# [Going further: the batching engine](12a_batching_engine.ipynb).
#
# ## 7. Latency and throughput under concurrent clients: one at a time against batched
#
# Now the service under load. Two servers run as processes with the same model:
# `python -m course_utils.serve --serial`, which decodes one request at a time (the service
# as it was before batching: a request waits for every request ahead of it), and the
# batching one. `serve_tools.ServerProcess` starts each on a free port and waits for `/health`.
# Each of `c` concurrent clients sends requests back to back; `serve_tools.load_test` records every
# request's latency and the requests per second. Every request asks for 40 characters after
# 中国 with the service's default sampler; each client sends seeds 0, 1, 2, 3 in turn, so every
# level asks for the same mix of answers (answers stop early at 。, so seeds change the work)
# and both servers do exactly the same work and must return the same texts.
#
# The machine has two cores. Each server gets one torch thread (`OMP_NUM_THREADS=1`) and the
# clients run in this notebook's process; we measure how much CPU each side really used
# (CPU seconds divided by wall seconds, from `psutil`).

# %%
import psutil
from tqdm.auto import tqdm


def body(k: int) -> dict:
    """Request k of the load test (client k // per_client sends seeds 0..per_client-1)."""
    return {"context": "中国", "maxlength": 40, "samples": 1, "seed": k % per_client}


async def measure_load(server, clients: int, per_client: int, stream: bool = False) -> dict:
    """serve.load_test, plus the cores each side used (CPU seconds / wall seconds)."""
    srv, me = psutil.Process(server.proc.pid), psutil.Process()
    cpu = lambda p: sum(p.cpu_times()[:2])           # user + system seconds
    s0, c0 = cpu(srv), cpu(me)
    result = await serve_tools.load_test(server.url, body, clients, per_client, stream=stream)
    result["server cores"] = (cpu(srv) - s0) / result["seconds"]
    result["client cores"] = (cpu(me) - c0) / result["seconds"]
    return result


serial_server = serve_tools.ServerProcess(profile.name, "--serial", threads=1)
batched_server = serve_tools.ServerProcess(profile.name, threads=1)
levels, per_client = [1, 2, 4, 8, 16, 32], 4
runs = []
for clients in tqdm(levels, desc="load test"):
    for name, server_ in (("serial", serial_server), ("batched", batched_server)):
        runs.append({"server": name, **await measure_load(server_, clients, per_client)})
load = pd.DataFrame(runs)
load.drop(columns="texts").round(2)

# %%
import matplotlib.pyplot as plt
from matplotlib.ticker import NullLocator, ScalarFormatter

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
for name, colour in (("serial", "C0"), ("batched", "C1")):
    part = load[load.server == name]
    ax1.plot(part.clients, part["req/s"], "o-", color=colour, label=name)
    ax2.plot(part.clients, part["p50 ms"], "o-", color=colour, label=f"{name} p50")
    ax2.plot(part.clients, part["p95 ms"], "s--", color=colour, alpha=0.6, label=f"{name} p95")
ax1.set(xlabel="concurrent clients", ylabel="requests per second", title="Throughput", xscale="log",
        ylim=(0, None))
ax2.set(xlabel="concurrent clients", ylabel="latency (ms, log scale)", title="Latency (p50 and p95)",
        xscale="log", yscale="log")
ax2.yaxis.set_major_formatter(ScalarFormatter())
for ax in (ax1, ax2):
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
by = load.set_index(["server", "clients"])
top = levels[-1]
for c in sorted({levels[-1], 16} & set(levels)):
    s, b = by.loc[("serial", c)], by.loc[("batched", c)]
    print(f"{c} clients: serial {s['req/s']:.1f} req/s (p95 {s['p95 ms']:.0f} ms), batched "
          f"{b['req/s']:.1f} req/s (p95 {b['p95 ms']:.0f} ms): x{b['req/s'] / s['req/s']:.2f} "
          f"the throughput, x{b['p95 ms'] / s['p95 ms']:.2f} the p95 latency")
same = sum(a == b for a, b in zip(by.loc[("serial", top), "texts"], by.loc[("batched", top), "texts"],
                                  strict=True))
print(f"requests that got the same text from both servers at {top} clients: {same} of "
      f"{len(by.loc[('serial', top), 'texts'])}")
b16, s16, b1 = by.loc[("batched", 16)], by.loc[("serial", 16)], by.loc[("batched", 1)]
config.claim(f"at 16 clients the batched server answers x{b16['req/s'] / s16['req/s']:.1f} the requests "
             f"per second of the serial one, at a lower p95 latency", b16["req/s"] > 1.5 * s16["req/s"]
             and b16["p95 ms"] < s16["p95 ms"])
config.claim(f"the batched throughput more than doubles from 1 client to 16 ({b1['req/s']:.1f} to "
             f"{b16['req/s']:.1f} req/s)", b16["req/s"] > 2 * b1["req/s"])
srv, cli = load["server cores"], load["client cores"]
config.claim(f"each server process used about one core at every level ({srv.min():.2f} to {srv.max():.2f}), "
             f"the clients at most {cli.max():.2f}: the servers, not this notebook, were the limit",
             bool(srv.between(0.7, 1.3).all()) and cli.max() < 0.5)

# %% [markdown]
# The **serial** server handles one generation at a time. From two clients on, a request is
# always waiting, so the worker is always busy and more clients cannot make it faster (its range
# is printed below); what grows is the *queue*: a request waits for the `c - 1` ahead of it, so
# its latency grows in proportion to `c`, about `c` divided by the throughput (Little's law,
# printed below). The **batched** server turns the same clients into bigger batches: its
# throughput more than doubles from one client to 16, and its latency grows more slowly than the
# serial server's (the claims). Each server kept about one core busy, all that one torch thread
# and one Python interpreter can, and the clients needed little of the other (the last claim):
# the batched server's gain is more requests per step on the same core, not more CPU. What caps
# it: the shared step costs more as rows are added (section 6), and each request's sampled token
# is still chosen with its own random numbers, a cost per request (measured in the deep dive).
# No request failed in either server (`load_test` insists on 200), and a line above counts the
# requests that got the same text from both servers (a difference could only come from rounding:
# the deep dive measures it).

# %%
serial = load[load.server == "serial"]
print(f"serial server from {levels[1]} to {top} clients: {serial['req/s'].iloc[1:].min():.1f} to "
      f"{serial['req/s'].iloc[1:].max():.1f} req/s")
print("serial server, p50 latency vs clients / throughput (Little's law), ms: " + ", ".join(
    f"c={c}: {p:.0f} vs {1000 * c / r:.0f}" for c, p, r in zip(serial.clients, serial["p50 ms"],
                                                                 serial["req/s"], strict=True)))

# %% [markdown]
# ## 8. Streaming: the first words sooner
#
# A batched request still takes as long as its own tokens take. What a person waiting for the
# answer notices first is the **time to first token**. With `"stream": true` the service
# answers with server-sent events (`text/event-stream`): one `data:` line per step with the new
# piece of text of every sample, then an `event: done` with the full texts (or `event: error`
# with a status and a message). The pieces put together are the non-streamed answer:

# %%
from aiohttp import ClientSession

request = {"context": "新华社北京", "maxlength": 30, "samples": 2, "seed": 7}
async with ClientSession() as session:
    async with session.post(batched_server.url + "/generate", json={**request, "stream": True}) as resp:
        print(resp.status, resp.headers["Content-Type"])
        raw = (await resp.read()).decode()
events = raw.strip().split("\n\n")
print("\n".join(events[:3]), "\n...\n" + events[-1])
pieces = [json.loads(e[6:])["pieces"] for e in events[:-1]]
streamed = ["".join(p) for p in zip(*pieces, strict=True)]
final = json.loads(events[-1].split("data: ")[1])["texts"]
status, plain = call(request)
assert streamed == final == plain, (streamed, final, plain)

# %%
stream_clients = 8
streaming = await measure_load(batched_server, stream_clients, per_client, stream=True)
print(f"{stream_clients} clients streaming: p95 {streaming['first piece p95 ms']:.0f} ms to the first "
      f"piece, {streaming['p95 ms']:.0f} ms to the whole answer (server threads: 1)")
config.claim(f"with streaming the first piece of text came after {streaming['first piece p50 ms']:.0f} ms "
             f"(p50), the whole answer after {streaming['p50 ms']:.0f} ms: less than a third",
             streaming["first piece p50 ms"] < streaming["p50 ms"] / 3)

# %% [markdown]
# With streaming, the first characters appear after a fraction of the time the whole answer
# takes (under a third: the claim): the prefill and one shared step, then the rest arrives piece
# by piece. The page at `GET /` reads the same events with `fetch` and a stream reader.
#
# ## 9. Holding under load: a full queue, a slow request, a vanished client, a shutdown
#
# A service must stay predictable when asked for more than it can do:
#
# - **a bounded queue**: at most `--max-queue` requests wait for a slot; one more gets
#   `503 Service Unavailable` with a `Retry-After` header, at once, instead of waiting forever;
# - **a time limit** per request, queueing included (`--time-limit`): past it, `504` with a
#   message saying what to change;
# - **a client that disconnects** (or a time limit that expires) frees its rows at the next step;
# - **`/health` answers throughout**: the event loop never computes (section 3);
# - **SIGTERM** (what `docker stop` or systemd send) stops taking requests, finishes the running
#   batch, and exits with status 0.
#
# Two deliberately small servers show the first two. One decodes one request at a time and
# has two places in its queue; eight clients arrive at once. The other has a time limit of
# 0.3 s, and a client asks it for 16 samples of 512 characters at a high temperature: far
# more work than that (each of the 512 steps draws 16 tokens from the whole vocabulary).

# %%
import collections

queue2 = serve_tools.ServerProcess(profile.name, "--serial", "--max-queue", "2", threads=1)
limit = serve_tools.ServerProcess(profile.name, "--time-limit", "0.3", threads=1)


async def answer(session, server, body):
    async with session.post(server.url + "/generate", json=body) as resp:
        return resp.status, resp.headers.get("Retry-After"), (await resp.json())


long = {"context": "中国", "maxlength": 512, "samples": 16, "temperature": 2.0, "top_k": None,
        "top_p": None, "seed": 0}
async with ClientSession() as session:
    crowd = await asyncio.gather(*(answer(session, queue2, body(k)) for k in range(8)))
    slow_status, _, slow_answer = await answer(session, limit, long)
print("8 at once:", dict(collections.Counter(status for status, _, _ in crowd)))
refused = next(a for a in crowd if a[0] == 503)
print(f"503 with Retry-After: {refused[1]} s, {refused[2]}")
print(slow_status, slow_answer)
assert {s for s, _, _ in crowd} <= {200, 503} and all(r for s, r, _ in crowd if s == 503)
assert slow_status == 504

# %% [markdown]
# The server took what its queue could hold (and the request its worker had already picked
# up) and told the others at once to come back later (the counts above); the long request was
# stopped at its time limit with a message saying what to change. (A client that walks away in
# the middle of a stream, and its rows freed at the next step, is shown in the deep dive.)
#
# Finally the shutdown. The server we started by hand in section 4 gets a SIGTERM while it
# streams a long answer: it stops listening, finishes the running request, and exits cleanly.

# %%
async with ClientSession() as session:
    async with session.post(BASE + "/generate", json={**long, "stream": True}) as resp:
        await resp.content.readline()                  # generation is under way
        server.terminate()                             # SIGTERM
        rest = (await resp.read()).decode()
code = server.wait(timeout=120)
print("the request in flight ended with:", rest.strip().split("\n\n")[-1][:60], "…")
print("exit code", code, "| the server said:", server.stdout.read().strip().splitlines()[-2:])
assert "event: done" in rest and code == 0
for process in (serial_server, batched_server, queue2, limit):
    assert process.stop() == 0

# %% [markdown]
# > **Pitfalls.**
# > - **Blocking the event loop.** A handler that computes without awaiting freezes the
# >   whole server (section 2). Move CPU work off the loop, to a worker thread.
# > - **One model, many threads.** A PyTorch module is not made for concurrent forward
# >   passes that share a KV cache or a generator, and on a CPU more threads do not make more
# >   arithmetic: one worker owns the model, and batching is how it serves many requests.
# > - **Batching that changes the answers.** Sampling the whole batch with one generator, or
# >   splitting a request's samples between batches, gives each request a different text than
# >   it gets alone and silently breaks the `seed` contract (the deep dive lists more).
# > - **Unbounded inputs and queues.** Every size a client controls (`context`, `maxlength`,
# >   `samples`) needs a limit, and so does the queue: without one, overload shows up as ever
# >   longer waits instead of a quick 503 the client can act on.
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
#   (`python -m course_utils.serve --port 8080`; `GET /` is a page to try it).
# - The model runs in one worker thread, so the event loop stays responsive: `/health`
#   answered during a long generation instead of after it.
# - Every bad request gets a 400 with a message; sizes are bounded; a full queue gets a 503
#   with `Retry-After`, a request over its time limit a 504; SIGTERM finishes the running
#   batch and exits cleanly.
# - One request at a time, more clients only lengthen the queue. Dynamic batching
#   (`course_utils.batching`) decodes every request in flight with one shared step, each request
#   still getting the tokens it gets alone: throughput grows with the clients and latency more
#   slowly than one at a time (section 7; `bench/serve.py` in the benchmarks appendix). How the
#   engine does it is [the deep dive](12a_batching_engine.ipynb).
# - Streaming (`"stream": true`) shows the first words after a fraction of the answer's time.
#
# Chapter 13 takes the model out of PyTorch: into Hugging Face `transformers`, where most
# language models are published, and into ONNX, the format that ships a model without Python.
