"""course_utils.serve with aiohttp's test client: valid requests, each bad input, concurrency."""

from __future__ import annotations

import asyncio

import pytest
import torch

from course_utils.model import GPT, GPTConfig
from course_utils.serve import make_app
from course_utils.vocab import Vocab


@pytest.fixture(scope="module")
def model_and_vocab():
    vocab = Vocab.build(["今天天气很好。我们去公园散步吧！你好吗？"])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(vocab), block_size=32, d_model=16, n_heads=2,
                          n_layers=1, d_ff=32, dropout=0.0))
    return model, vocab


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
