"""Sampler properties, the KV cache, beam search and clear errors (course_utils.sampling)."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import tiny_gpt

from course_utils import sampling
from course_utils.model import GPT
from course_utils.vocab import SEP, Vocab


def tiny_model(block_size: int = 16, vocab_size: int = 40, seed: int = 0, dtype=torch.float64) -> GPT:
    """Peaked next-token distributions, in float64 so greedy ties cannot flip."""
    return tiny_gpt(vocab_size, block_size, seed=seed, scale=20, dtype=dtype)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> GPT:
    return tiny_model()


# ---------------------------------------------------------------------------- filters


@pytest.mark.parametrize("k", [1, 3, 7, 20])
def test_top_k_keeps_exactly_k(k):
    torch.manual_seed(k)
    logits = torch.randn(5, 20)
    probs = sampling.next_token_probs(logits, top_k=k)
    assert ((probs > 0).sum(-1) == k).all()
    # the kept ones are the k largest logits
    kept = probs > 0
    assert (logits[kept].view(5, k).min(-1).values >= logits.masked_fill(kept, -1e9).max(-1).values).all()


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_top_k_keeps_exactly_k_with_ties(k):
    logits = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.5, 3.0, -2.0]])
    probs = sampling.next_token_probs(logits, top_k=k)
    assert int((probs > 0).sum()) == k
    assert torch.isclose(probs.sum(), torch.tensor(1.0))


def test_top_k_larger_than_vocabulary_is_clamped():
    logits = torch.randn(2, 10)
    assert torch.equal(sampling.top_k_filter(logits, 1000), logits)
    probs = sampling.next_token_probs(logits, top_k=1000)
    assert torch.allclose(probs, logits.softmax(-1))


def brute_force_top_p(probs: list[float], p: float) -> set[int]:
    """The smallest set of tokens whose mass reaches p (the most likely such set on ties)."""
    n = len(probs)
    for size in range(1, n + 1):
        best = max(itertools.combinations(range(n), size), key=lambda s: sum(probs[i] for i in s))
        if sum(probs[i] for i in best) >= p - 1e-12:
            return set(best)
    return set(range(n))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8, 0.9, 0.99, 1.0])
def test_top_p_keeps_smallest_set_reaching_p(seed, p):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(8, generator=g, dtype=torch.float64) * 2
    probs = logits.softmax(-1)
    kept = sampling.top_p_filter(logits, p) > float("-inf")
    expected = brute_force_top_p(probs.tolist(), p)
    assert set(torch.nonzero(kept).flatten().tolist()) == expected
    assert float(probs[kept].sum()) >= p - 1e-9
    out = sampling.next_token_probs(logits, top_p=p)
    assert torch.allclose(out[kept].double(), probs[kept] / probs[kept].sum(), atol=1e-6)


@pytest.mark.parametrize("k, p", [(1, 0.9), (5, 0.5), (40, 0.9), (40, 0.99), (300, 0.95)])
def test_top_k_then_top_p_sorts_only_k_yet_keeps_what_the_two_filters_keep(k, p):
    g = torch.Generator().manual_seed(k)
    logits = torch.randn(64, 500, generator=g) * 3   # (no ties: both break them as they like)
    want = sampling.top_p_filter(sampling.top_k_filter(logits / 0.8, k), p)
    got = sampling.filter_logits(logits, temperature=0.8, top_k=k, top_p=p)
    assert torch.equal(got > float("-inf"), want > float("-inf"))
    assert torch.equal(got, want)                                # the kept logits themselves too
    probs = sampling.next_token_probs(logits, temperature=0.8, top_k=k, top_p=p)
    assert torch.allclose(probs, want.softmax(-1), atol=0, rtol=1e-6)


def test_draw_follows_the_probabilities_and_never_picks_a_zero():
    probs = torch.tensor([[0.2, 0.0, 0.5, 0.0, 0.3]]).expand(40_000, 5)
    picks = sampling.draw(probs, torch.Generator().manual_seed(0)).flatten()
    freq = torch.bincount(picks, minlength=5).double() / len(picks)
    assert freq[1] == 0 and freq[3] == 0                      # probability 0: never drawn
    assert torch.allclose(freq, probs[0].double(), atol=0.01)  # 4 standard errors at 40,000 draws
    last = torch.zeros(3, 6)
    last[:, -1] = 1.0                                          # all the mass on the last token
    assert sampling.draw(last).flatten().tolist() == [5, 5, 5]
    sliver = torch.tensor([[0.3, 0.3, 0.3999999, 0.0]])       # sums to just under 1: no overrun
    assert all(sampling.draw(sliver.expand(1000, 4)).flatten() < 3)


def test_draw_gives_each_row_its_own_number_from_the_generator():
    probs = torch.rand(4, 50).softmax(-1)
    together = sampling.draw(probs, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    one_by_one = torch.cat([sampling.draw(probs[b:b + 1], g) for b in range(4)])
    assert torch.equal(together, one_by_one)


def test_top_p_always_keeps_the_most_likely_token():
    logits = torch.tensor([[5.0, 1.0, 0.0, -1.0]])
    kept = sampling.top_p_filter(logits, 1e-6) > float("-inf")
    assert kept.tolist() == [[True, False, False, False]]


def test_temperature_zero_is_argmax():
    torch.manual_seed(0)
    logits = torch.randn(16, 30)
    expected = logits.argmax(-1, keepdim=True)
    for _ in range(3):
        assert torch.equal(sampling.sample_next(logits, temperature=0), expected)
    probs = sampling.next_token_probs(logits, temperature=0)
    assert torch.equal(probs.argmax(-1, keepdim=True), expected)
    assert torch.equal((probs > 0).sum(-1), torch.ones(16, dtype=torch.long))


def test_temperature_divides_logits():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    for t in (0.5, 1.0, 1.5):
        assert torch.allclose(sampling.next_token_probs(logits, temperature=t), (logits / t).softmax(-1))
    sharp, flat = (sampling.next_token_probs(logits, temperature=t) for t in (0.5, 1.5))
    assert sharp.max() > logits.softmax(-1).max() > flat.max()


def test_repetition_penalty_lowers_repeated_tokens():
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.3, 1.0]])
    previous = torch.tensor([[0, 1]])
    before = logits.softmax(-1)
    after = sampling.apply_repetition_penalty(logits, previous, 1.5).softmax(-1)
    assert (after[0, [0, 1]] < before[0, [0, 1]]).all()  # both signs of logit are handled
    assert (after[0, [2, 3, 4]] > before[0, [2, 3, 4]]).all()
    assert torch.equal(sampling.apply_repetition_penalty(logits, previous, 1.0), logits)


def test_repetition_penalty_in_generation_reduces_repeats(model):
    prompt = torch.tensor([[1, 2, 3]])
    plain = sampling.generate(model, prompt, 60, temperature=0)[0, 3:]
    penalised = sampling.generate(model, prompt, 60, temperature=0, repetition_penalty=3.0)[0, 3:]
    assert len(set(penalised.tolist())) > len(set(plain.tolist()))


# ---------------------------------------------------------------------------- generation


def test_generate_returns_prompt_then_new_tokens(model):
    prompt = torch.tensor([[3, 4, 5], [6, 7, 8]])
    out = sampling.generate(model, prompt, 10, temperature=1.0, top_k=5, seed=0)
    assert out.shape == (2, 13)
    assert torch.equal(out[:, :3], prompt)
    again = sampling.generate(model, prompt, 10, temperature=1.0, top_k=5, seed=0)
    assert torch.equal(out, again)  # the same seed gives the same sample


@pytest.mark.parametrize("prompt_len", [1, 5, 16, 23])
def test_kv_cache_is_token_identical_over_200_tokens(prompt_len):
    model = tiny_model(block_size=16, seed=1)
    prompt = torch.arange(prompt_len)[None] % 37 + 3
    assert prompt_len + 200 > model.config.block_size  # the window slides many times
    cached = sampling.generate(model, prompt, 200, temperature=0, use_cache=True)
    recomputed = sampling.generate(model, prompt, 200, temperature=0, use_cache=False)
    assert cached.shape == (1, prompt_len + 200)
    assert torch.equal(cached, recomputed)
    assert len(set(cached[0, prompt_len:].tolist())) > 1  # not a degenerate constant stream


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kv_cache_is_token_identical_in_float32(seed):
    model = tiny_model(block_size=16, seed=seed, dtype=torch.float32)
    prompt = torch.tensor([[7, 3, 9, 4, 1]])
    cached = sampling.generate(model, prompt, 200, temperature=0, use_cache=True)
    assert torch.equal(cached, sampling.generate(model, prompt, 200, temperature=0, use_cache=False))


def test_kv_cache_is_identical_when_sampling_too():
    model = tiny_model(block_size=12, seed=2)
    prompt = torch.tensor([[5, 6, 7]])
    kw = dict(temperature=0.9, top_k=10, top_p=0.95)
    cached = sampling.generate(model, prompt, 100, use_cache=True, seed=3, **kw)
    recomputed = sampling.generate(model, prompt, 100, use_cache=False, seed=3, **kw)
    assert torch.equal(cached, recomputed)


def test_context_slides_by_half_a_block():
    assert sampling.context_start(16, 0, 16) == 0
    assert sampling.context_start(17, 0, 16) == 9  # keep the last 8 tokens
    assert sampling.context_start(24, 9, 16) == 9
    assert sampling.context_start(26, 9, 16) == 18


def test_stop_tokens_stop(model):
    prompt = torch.tensor([[1, 2, 3]])
    free = sampling.generate(model, prompt, 30, temperature=0)[0, 3:].tolist()
    stop = free[4]
    first = free.index(stop)
    out = sampling.generate(model, prompt, 30, temperature=0, stop_tokens=[stop])[0, 3:].tolist()
    assert out == free[: first + 1]
    # in a batch, a stopped row is padded while the others go on
    batch = torch.tensor([[1, 2, 3], [9, 9, 9]])
    other_free = sampling.generate(model, batch[1:], 30, temperature=0)[0, 3:].tolist()
    if stop not in other_free[: first + 1]:
        out = sampling.generate(model, batch, 30, temperature=0, stop_tokens=[stop])
        assert out[0, 3 + first + 1:].eq(0).all()


def test_beam_width_one_is_greedy(model):
    prompt = torch.tensor([[4, 5, 6, 7]])
    greedy = sampling.generate(model, prompt, 40, temperature=0)
    assert torch.equal(sampling.beam_search(model, prompt, 40, beam_width=1), greedy)


def test_wider_beam_finds_at_least_as_likely_sequence():
    model = tiny_model(block_size=32, seed=4)
    prompt = torch.tensor([[4, 5]])
    greedy = sampling.generate(model, prompt, 12, temperature=0)
    beam = sampling.beam_search(model, prompt, 12, beam_width=5)
    assert beam.shape == greedy.shape
    lp_greedy = sampling.sequence_logprob(model, greedy, 2)
    lp_beam = sampling.sequence_logprob(model, beam, 2)
    assert lp_beam >= lp_greedy - 1e-9


def test_sequence_logprob_matches_a_loop(model):
    ids = torch.tensor([[3, 9, 4, 1, 7, 2]])
    total = 0.0
    for t in range(2, ids.size(1)):
        with torch.no_grad():
            logits = model(ids[:, :t])[0][0, -1]
        total += float(logits.log_softmax(-1)[ids[0, t]])
    assert sampling.sequence_logprob(model, ids, 2) == pytest.approx(total, abs=1e-9)


# ---------------------------------------------------------------------------- bad settings


@pytest.mark.parametrize("kwargs, name", [
    (dict(temperature=-0.5), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(temperature=float("inf")), "temperature"),
    (dict(top_k=0), "top_k"),
    (dict(top_k=-3), "top_k"),
    (dict(top_k=2.5), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=-0.1), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(repetition_penalty=0), "repetition_penalty"),
    (dict(repetition_penalty=-1.2), "repetition_penalty"),
])
def test_bad_settings_raise_value_error_naming_them(model, kwargs, name):
    with pytest.raises(ValueError, match=name):
        sampling.generate(model, torch.tensor([[1, 2]]), 5, **kwargs)
    if "repetition_penalty" not in kwargs:
        with pytest.raises(ValueError, match=name):
            sampling.next_token_probs(torch.randn(1, 10), **kwargs)


@pytest.mark.parametrize("length", [0, -4, 2.5])
def test_non_positive_length_raises(model, length):
    with pytest.raises(ValueError, match="max_new_tokens"):
        sampling.generate(model, torch.tensor([[1, 2]]), length)


def test_empty_prompt_raises(model):
    with pytest.raises(ValueError, match="prompt"):
        sampling.generate(model, torch.zeros(1, 0, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="prompt"):
        sampling.generate(model, [], 5)
    vocab = Vocab.build(["你好世界"])
    with pytest.raises(ValueError, match="prompt"):
        sampling.complete(model, vocab, "   ", 5)
    with pytest.raises(ValueError, match="prompt"):
        sampling.encode_prompt(vocab, "xyz")  # nothing the vocabulary knows


def test_bad_beam_width_raises(model):
    with pytest.raises(ValueError, match="beam_width"):
        sampling.beam_search(model, torch.tensor([[1, 2]]), 5, beam_width=0)


# ---------------------------------------------------------------------------- text in, text out


def test_complete_and_stop_ids():
    vocab = Vocab.build(["今天天气很好。你好吗？好！"])
    model = tiny_model(vocab_size=len(vocab), block_size=16, seed=5)
    ids = sampling.stop_ids(vocab)
    assert ids[0] == SEP and {vocab.decode([i]) for i in ids[1:]} == set("。？！")
    outs = sampling.complete(model, vocab, "今天", max_new_tokens=30, num_samples=3, temperature=1.0,
                             seed=0)
    assert len(outs) == 3 and all(isinstance(o, str) for o in outs)
    for o in outs:  # a sample ends at its first stop character (or runs to the length limit)
        for c in "。？！":
            assert c not in o[:-1]
