"""course_utils.serve with aiohttp's test client: valid requests, each bad input, concurrency,
batching (each request gets its text alone), streaming, disconnects, a full queue, time limits,
the page at GET / and a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch

from course_utils import sampling
from course_utils.model import GPT, GPTConfig
from course_utils.serve import make_app, parse_request
from course_utils.vocab import Vocab

TEXT = "今天天气很好。我们去公园散步吧！你好吗？"
pytestmark = pytest.mark.usefixtures("one_thread")   # the worker thread uses torch's threads


@pytest.fixture(scope="module")
def model_and_vocab():
    vocab = Vocab.build([TEXT])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(vocab), block_size=32, d_model=16, n_heads=2,
                          n_layers=1, d_ff=32, dropout=0.0))
    return model, vocab


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def client(aiohttp_client, model_and_vocab):
    model, vocab = model_and_vocab
    return await aiohttp_client(make_app(model, vocab))


async def test_health(client):
    resp = await client.get("/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok" and body["parameters"] > 0


async def test_generate_returns_samples_strings(client):
    resp = await client.post("/generate", json={"context": "今天", "maxlength": 10, "samples": 3})
    assert resp.status == 200
    texts = await resp.json()
    assert isinstance(texts, list) and len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert all(len(t) <= 10 for t in texts)


async def test_sampler_settings_and_seed_are_honoured(client):
    body = {"context": "今天", "maxlength": 8, "samples": 2, "temperature": 1.0, "top_k": 5, "seed": 7}
    first = await (await client.post("/generate", json=body)).json()
    second = await (await client.post("/generate", json=body)).json()
    assert first == second
    greedy = {"context": "今天", "maxlength": 8, "samples": 2, "temperature": 0}
    a, b = await (await client.post("/generate", json=greedy)).json()
    assert a == b


BAD = [
    ("not json", "not valid JSON"),
    ([1, 2], "JSON object"),
    ({"maxlength": 5, "samples": 1}, "missing field 'context'"),
    ({"context": 5, "maxlength": 5}, "'context' must be str"),
    ({"context": "  ", "maxlength": 5}, "empty"),
    ({"context": "今" * 600, "maxlength": 5}, "at most"),
    ({"context": "今天"}, "missing field 'maxlength'"),
    ({"context": "今天", "maxlength": "5"}, "'maxlength' must be int"),
    ({"context": "今天", "maxlength": 0}, "'maxlength' must be between"),
    ({"context": "今天", "maxlength": 10_000}, "'maxlength' must be between"),
    ({"context": "今天", "maxlength": 5, "samples": 0}, "'samples' must be between"),
    ({"context": "今天", "maxlength": 5, "samples": 99}, "'samples' must be between"),
    ({"context": "今天", "maxlength": 5, "samples": True}, "'samples' must be int"),
    ({"context": "今天", "maxlength": 5, "temperature": -1}, "temperature"),
    ({"context": "今天", "maxlength": 5, "top_p": 2}, "top_p"),
    ({"context": "今天", "maxlength": 5, "top_k": 0}, "top_k"),
    ({"context": "今天", "maxlength": 5, "colour": "red"}, "unknown field"),
    ({"context": "xyz", "maxlength": 5}, "vocabulary"),
]


@pytest.mark.parametrize("body,message", BAD, ids=[m for _, m in BAD])
async def test_bad_input_gives_400_with_message(client, body, message):
    if isinstance(body, str):
        resp = await client.post("/generate", data=body, headers={"Content-Type": "application/json"})
    else:
        resp = await client.post("/generate", json=body)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert message in error


async def test_twenty_concurrent_requests_all_succeed(client):
    async def one(i):
        resp = await client.post("/generate", json={"context": "你好", "maxlength": 12, "samples": 2, "seed": i})
        return resp.status, await resp.json()

    results = await asyncio.gather(*(one(i) for i in range(20)))
    assert all(status == 200 and len(texts) == 2 for status, texts in results)


async def test_health_answers_while_generating(client):
    slow = asyncio.create_task(client.post("/generate", json={"context": "你好", "maxlength": 200, "samples": 16}))
    await asyncio.sleep(0)
    resp = await client.get("/health")
    assert resp.status == 200
    assert (await slow).status == 200


# ---------------------------------------------------------------------------- batching, streaming, load


class SlowHead(torch.nn.Module):
    """The model's head, sleeping a little per call so that requests overlap and stay in
    flight; with `banned` ids (the stop tokens), a request only ends at its maxlength."""

    def __init__(self, head, seconds: float, banned: list[int]):
        super().__init__()
        self.head, self.seconds, self.banned = head, seconds, banned

    def forward(self, x):
        time.sleep(self.seconds)
        logits = self.head(x)
        logits[..., self.banned] = float("-inf")
        return logits


def slow(model, seconds: float = 0.01, endless: bool = True):
    slowed = copy.deepcopy(model)
    vocab = Vocab.build([TEXT])
    slowed.lm_head = SlowHead(slowed.lm_head, seconds, sampling.stop_ids(vocab) if endless else [])
    return slowed


async def health(client) -> dict:
    return await (await client.get("/health")).json()


async def until(client, condition, tries: int = 400) -> dict:
    """Poll /health until `condition(state)`; the state (no timing is asserted)."""
    for _ in range(tries):
        state = await health(client)
        if condition(state):
            return state
        await asyncio.sleep(0.02)
    raise AssertionError(f"/health never reached the expected state: {state}")


def sse_events(raw: str) -> list[tuple[str, dict]]:
    events = []
    for block in raw.strip().split("\n\n"):
        lines = block.split("\n")
        kind = next((x[7:] for x in lines if x.startswith("event: ")), "message")
        events.append((kind, json.loads("".join(x[6:] for x in lines if x.startswith("data: ")))))
    return events


LONG_PROMPT = "今天天气很好我们去公园散步吧" * 3       # 42 characters: more than block_size 32
REQUESTS = [
    {"context": "今天", "maxlength": 30, "samples": 1, "temperature": 0},
    {"context": "你好", "maxlength": 40, "samples": 3, "temperature": 1.0, "top_k": 5, "seed": 1},
    {"context": LONG_PROMPT, "maxlength": 50, "samples": 2, "seed": 2, "repetition_penalty": 1.3},
    {"context": "我们去公园散步", "maxlength": 60, "samples": 4, "temperature": 1.2, "top_p": 0.8,
     "seed": 3},
    {"context": "天气", "maxlength": 20, "samples": 2, "temperature": 0, "repetition_penalty": 2.0},
]


def alone(model, vocab, body: dict) -> list[str]:
    args = parse_request(body)
    return sampling.complete(model, vocab, **args)


async def test_concurrent_requests_are_batched_and_each_gets_its_text_alone(aiohttp_client,
                                                                            model_and_vocab):
    model, vocab = model_and_vocab
    client = await aiohttp_client(make_app(slow(model, 0.002, endless=False), vocab))
    answers = await asyncio.gather(*(client.post("/generate", json=b) for b in REQUESTS))
    texts = [await r.json() for r in answers]
    for body, got in zip(REQUESTS, texts, strict=True):
        assert got == alone(model, vocab, body), body
    state = await health(client)
    assert state["largest_batch"] > 1 and state["rows_in_use"] == 0 and state["finished"] == len(REQUESTS)


async def test_serial_app_gives_the_same_texts_one_request_at_a_time(aiohttp_client, model_and_vocab):
    model, vocab = model_and_vocab
    client = await aiohttp_client(make_app(model, vocab, batching=False))
    answers = await asyncio.gather(*(client.post("/generate", json=b) for b in REQUESTS))
    for body, resp in zip(REQUESTS, answers, strict=True):
        assert await resp.json() == alone(model, vocab, body)
    state = await health(client)
    assert state["batching"] is False and state["largest_batch"] == 1


async def test_streamed_pieces_concatenate_to_the_full_text(aiohttp_client, model_and_vocab):
    model, vocab = model_and_vocab
    client = await aiohttp_client(make_app(model, vocab))
    for body in REQUESTS[1:3]:
        resp = await client.post("/generate", json={**body, "stream": True})
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        events = sse_events(await resp.text())
        kinds = [k for k, _ in events]
        assert kinds[-1] == "done" and set(kinds[:-1]) == {"message"} and len(kinds) > 2
        joined = ["".join(pieces) for pieces in zip(*(d["pieces"] for _, d in events[:-1]), strict=True)]
        final = events[-1][1]["texts"]
        plain = await (await client.post("/generate", json=body)).json()
        assert joined == final == plain == alone(model, vocab, body)


async def test_a_client_that_disconnects_mid_stream_frees_its_rows(aiohttp_client, model_and_vocab):
    model, vocab = model_and_vocab
    client = await aiohttp_client(make_app(slow(model), vocab))
    body = {"context": "今天", "maxlength": 500, "samples": 4, "temperature": 0, "stream": True}
    resp = await client.post("/generate", json=body)
    assert (await resp.content.readline()).startswith(b"data: ")
    assert (await health(client))["rows_in_use"] == 4
    resp.close()   # the client goes away
    state = await until(client, lambda s: s["rows_in_use"] == 0)
    assert state["cancelled"] == 1 and state["finished"] == 0 and state["running"] == 0


async def test_a_full_queue_answers_503_with_retry_after(aiohttp_client, model_and_vocab):
    model, vocab = model_and_vocab
    client = await aiohttp_client(make_app(slow(model), vocab, batching=False, max_queue=1))
    running = await client.post("/generate", json={"context": "今天", "maxlength": 500,
                                                   "temperature": 0, "stream": True})
    await running.content.readline()                       # in flight: the one being decoded
    waiting = asyncio.create_task(client.post("/generate", json={"context": "你好", "maxlength": 3}))
    await until(client, lambda s: s["queued"] == 1)         # the one place in the queue is taken
    refused = await client.post("/generate", json={"context": "天气", "maxlength": 3})
    assert refused.status == 503 and int(refused.headers["Retry-After"]) >= 1
    assert "busy" in (await refused.json())["error"]
    running.close()                                         # leaves: the queued one runs
    assert (await waiting).status == 200
    assert (await health(client))["refused"] == 1


async def test_a_request_over_the_time_limit_gets_504_and_frees_its_rows(aiohttp_client,
                                                                         model_and_vocab):
    model, vocab = model_and_vocab
    client = await aiohttp_client(make_app(slow(model), vocab, time_limit=0.3))
    body = {"context": "今天", "maxlength": 500, "samples": 2, "temperature": 0}
    resp = await client.post("/generate", json=body)
    assert resp.status == 504 and "limit of 0.3 s" in (await resp.json())["error"]
    streamed = sse_events(await (await client.post("/generate", json={**body, "stream": True})).text())
    assert streamed[-1][0] == "error" and streamed[-1][1]["status"] == 504
    await until(client, lambda s: s["rows_in_use"] == 0 and s["running"] == 0)


async def test_health_answers_while_a_batch_streams(aiohttp_client, model_and_vocab):
    model, vocab = model_and_vocab
    client = await aiohttp_client(make_app(slow(model), vocab))
    resp = await client.post("/generate", json={"context": "今天", "maxlength": 100, "samples": 2,
                                                "temperature": 0, "stream": True})
    await resp.content.readline()
    state = await health(client)
    assert state["status"] == "ok" and state["running"] == 1
    resp.close()


async def test_stream_must_be_a_boolean(client):
    resp = await client.post("/generate", json={"context": "今天", "maxlength": 5, "stream": "yes"})
    assert resp.status == 400 and "'stream' must be true or false" in (await resp.json())["error"]


async def test_the_page_is_served_and_needs_nothing_from_outside(client):
    resp = await client.get("/")
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    assert "/generate" in page and "stream: true" in page
    assert "http://" not in page and "https://" not in page and "//cdn" not in page


def test_make_app_refuses_bad_limits(model_and_vocab):
    model, vocab = model_and_vocab
    with pytest.raises(ValueError, match="max_queue"):
        make_app(model, vocab, max_queue=-1)
    with pytest.raises(ValueError, match="max_rows"):
        make_app(model, vocab, max_rows=2)


def test_the_command_line_finishes_the_running_batch_on_sigterm(tmp_path):
    port = free_port()
    env = {**os.environ, "COURSE_PROFILE": "ci", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "course_utils.serve", "--profile", "ci",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/health", timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, log.seek(0) or log.read()
                time.sleep(0.1)
        body = json.dumps({"context": "中国", "maxlength": 512, "samples": 16, "temperature": 2.0,
                           "top_k": None, "top_p": None, "stream": True}).encode()
        req = urllib.request.Request(url + "/generate", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            first = resp.readline()
            proc.send_signal(signal.SIGTERM)         # mid-stream
            rest = resp.read().decode()
        assert first.startswith(b"data: ")
        assert "event: done" in rest                 # the running request was finished
        assert proc.wait(timeout=60) == 0
        log.seek(0)
        output = log.read()
        assert "finishing 1 running request(s)" in output and "server stopped" in output
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


class BrokenHead(torch.nn.Module):
    """A head that fails once when asked to: a bug, or memory running out, mid-generation."""

    def __init__(self, head):
        super().__init__()
        self.head, self.fail = head, False

    def forward(self, x):
        if self.fail:
            self.fail = False
            raise RuntimeError("out of memory (simulated)")
        return self.head(x)


async def test_a_failed_generation_gives_500_and_the_service_goes_on(aiohttp_client, model_and_vocab):
    model, vocab = model_and_vocab
    broken = copy.deepcopy(model)
    broken.lm_head = BrokenHead(broken.lm_head)
    client = await aiohttp_client(make_app(broken, vocab))
    broken.lm_head.fail = True
    resp = await client.post("/generate", json={"context": "今天", "maxlength": 5})
    assert resp.status == 500 and "out of memory (simulated)" in (await resp.json())["error"]
    body = {"context": "今天", "maxlength": 5, "seed": 1}
    resp = await client.post("/generate", json=body)
    assert resp.status == 200 and await resp.json() == alone(model, vocab, body)
    assert (await health(client))["rows_in_use"] == 0
