"""course_utils.batching: the decode step with one position per row, a request's Group, and the
BatchEngine that decodes many requests together yet gives each the tokens `sampling.generate`
gives it alone."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_gpt

from course_utils import sampling
from course_utils.attention import StaticKVCache
from course_utils.batching import BatchEngine, Group, generate_together
from course_utils.decoding import decode_step, prefill
from course_utils.vocab import PAD

pytestmark = pytest.mark.usefixtures("one_thread")
BLOCK, VOCAB = 16, 40


@pytest.fixture(scope="module")
def model():
    """Peaked distributions in float64: greedy ties cannot flip on rounding."""
    return tiny_gpt(VOCAB, BLOCK, seed=0, scale=20, dtype=torch.float64)


def prefilled(model, windows: list[list[int]]):
    """Caches (B, H, T, hd) holding each row's window, as a prefill writes them."""
    keys, values = [], []
    for layer in range(len(model.blocks)):
        ks, vs = [], []
        for ids in windows:
            cache = model.new_cache()
            model(torch.tensor([ids]), cache=cache)
            ks.append(cache[layer].k_buf)
            vs.append(cache[layer].v_buf)
        keys.append(torch.cat(ks))
        values.append(torch.cat(vs))
    return keys, values


def caches(keys, values, copy: bool = False) -> list[StaticKVCache]:
    """Static caches over the buffers (copies of them, with `copy`), one per layer."""
    return [StaticKVCache.wrap(k.clone() if copy else k, v.clone() if copy else v)
            for k, v in zip(keys, values, strict=True)]


# ---------------------------------------------------------------------------- one position per row


@torch.no_grad()
def test_rows_at_one_position_match_sampling_decode_step(model):
    windows = [[5, 6, 7, 8], [9, 3, 4, 30]]
    keys, values = prefilled(model, windows)
    token = torch.tensor([[11], [12]])
    want = decode_step(model, token, torch.tensor(4), caches(keys, values, copy=True))
    got = decode_step(model, token, torch.tensor([4, 4]), caches(keys, values))
    assert torch.allclose(got, want, atol=1e-12)


@torch.no_grad()
def test_rows_at_different_positions_match_full_recomputation(model):
    windows = [[5], [6, 7, 8, 9, 10, 11], list(range(3, 3 + BLOCK - 1))]
    keys, values = prefilled(model, windows)
    token = torch.tensor([[20], [21], [22]])
    pos = torch.tensor([len(w) for w in windows])
    got = decode_step(model, token, pos, caches(keys, values))
    for b, w in enumerate(windows):
        full = model(torch.tensor([w + [20 + b]]))[0][0, -1]
        assert torch.allclose(got[b], full, atol=1e-10), f"row {b} (position {len(w)})"
    # each row's new key went to its own position, nowhere else
    for b, p in enumerate(pos.tolist()):
        cache = model.new_cache()
        model(torch.tensor([windows[b] + [20 + b]]), cache=cache)
        assert torch.allclose(keys[0][b, :, : p + 1], cache[0].k, atol=1e-10)


@torch.no_grad()
def test_stale_positions_beyond_a_row_are_masked_out(model):
    keys, values = prefilled(model, [[5, 6, 7]])
    clean = decode_step(model, torch.tensor([[8]]), torch.tensor([3]), caches(keys, values, copy=True))
    for k, v in zip(keys, values, strict=True):   # what an earlier request left in the slot
        k[:, :, 4:] = 1e3
        v[:, :, 4:] = -1e3
    dirty = decode_step(model, torch.tensor([[8]]), torch.tensor([3]), caches(keys, values))
    assert torch.equal(clean, dirty)


# ---------------------------------------------------------------------------- Group and engine


def test_right_padded_prefill_gives_each_row_its_logits_and_cache_alone(model):
    """The engine prefills new groups together: windows of different lengths right-padded with
    <pad>; each row's logits at its own last position, its cache as its window alone writes it."""
    windows = [[5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8], [9]]
    ids = torch.full((3, 8), PAD, dtype=torch.long)
    for i, w in enumerate(windows):
        ids[i, :len(w)] = torch.tensor(w)
    cache = model.new_cache()
    logits = prefill(model, ids, cache, torch.tensor([len(w) for w in windows]))
    keys, values = prefilled(model, windows)
    for i, w in enumerate(windows):
        alone_logits = prefill(model, torch.tensor([w]), model.new_cache())
        torch.testing.assert_close(logits[i], alone_logits[0])
        for layer, c in enumerate(cache):   # the real positions; the padded ones get overwritten
            torch.testing.assert_close(c.k_buf[i, :, :len(w)], keys[layer][i, :, :len(w)])
            torch.testing.assert_close(c.v_buf[i, :, :len(w)], values[layer][i, :, :len(w)])


def alone(model, spec: dict) -> torch.Tensor:
    ids, n, steps, settings = spec["ids"], spec["n"], spec["steps"], spec["settings"]
    return sampling.generate(model, torch.tensor([ids] * n), steps, **settings)


def group(spec: dict) -> Group:
    return Group(spec["ids"], spec["n"], spec["steps"], **spec["settings"])


SPECS = [  # prompts of different lengths, greedy and sampled, a window that slides
    dict(ids=[5], n=1, steps=12, settings=dict(temperature=0)),
    dict(ids=[7, 8, 9, 10, 11, 12, 13], n=3, steps=20,
         settings=dict(temperature=1.0, top_k=8, seed=1, stop_tokens=[4])),
    dict(ids=list(range(3, 3 + BLOCK)), n=2, steps=3 * BLOCK,       # full window: slides
         settings=dict(temperature=0.8, top_p=0.9, repetition_penalty=1.3, seed=2)),
    dict(ids=[20, 21], n=4, steps=2 * BLOCK, settings=dict(temperature=1.2, seed=3, stop_tokens=[6, 9])),
    dict(ids=[30, 31, 32], n=1, steps=BLOCK + 3, settings=dict(temperature=0, repetition_penalty=1.5)),
]


def test_each_group_in_a_batch_gets_its_tokens_alone(model):
    together = generate_together(model, [group(s) for s in SPECS])
    for i, spec in enumerate(SPECS):
        assert torch.equal(together[i], alone(model, spec)), f"request {i}"


SHARED = dict(temperature=0.8, top_k=10, top_p=0.9)   # the service's usual settings: filtered together
SAME_SETTING = [
    dict(ids=[5, 6], n=2, steps=20, settings=dict(SHARED, seed=10)),
    dict(ids=[9], n=1, steps=25, settings=dict(SHARED, seed=11, repetition_penalty=1.3)),
    dict(ids=[5, 6], n=2, steps=20, settings=dict(SHARED, seed=12)),     # same prompt, another seed
    dict(ids=[5, 6], n=2, steps=20, settings=dict(SHARED, seed=10)),     # ... and the same seed
    dict(ids=[7, 8, 9], n=1, steps=15, settings=dict(temperature=0)),
    dict(ids=[7, 8, 9], n=3, steps=15, settings=dict(temperature=0, repetition_penalty=1.5)),
]


def test_groups_sharing_a_setting_are_filtered_together_yet_draw_alone(model):
    together = generate_together(model, [group(s) for s in SAME_SETTING])
    for i, spec in enumerate(SAME_SETTING):
        assert torch.equal(together[i], alone(model, spec)), f"request {i}"
    assert torch.equal(together[0], together[3])          # one seed, one text
    assert not torch.equal(together[0], together[2])      # each group draws from its own generator


def test_requests_joining_mid_batch_and_waiting_for_slots_get_their_tokens_alone(model):
    groups = [group(s) for s in SPECS]
    together = generate_together(model, groups, max_rows=5, arrivals=[0, 0, 2, 5, 7])
    for i, spec in enumerate(SPECS):
        assert torch.equal(together[i], alone(model, spec)), f"request {i}"


def test_float32_batch_matches_alone():
    model32 = tiny_gpt(VOCAB, BLOCK, seed=1, scale=3)   # float32: rounding differs, tokens agree
    together = generate_together(model32, [group(s) for s in SPECS])
    for i, spec in enumerate(SPECS):
        assert torch.equal(together[i], alone(model32, spec)), f"request {i}"


def test_a_stopped_row_is_padded_and_its_group_finishes_when_every_row_stops(model):
    spec = dict(ids=[5, 6], n=3, steps=40, settings=dict(temperature=1.0, seed=0,
                                                         stop_tokens=list(range(3, 12))))
    g = group(spec)
    out = generate_together(model, [g])[0]
    assert g.finished and g.done.all() and g.steps < 40
    for row in out[:, 2:].tolist():
        stop = next(i for i, t in enumerate(row) if 3 <= t < 12)
        assert all(t == PAD for t in row[stop + 1:])


def test_the_window_slides_with_a_new_prefill(model):
    g = group(SPECS[2])
    engine = BatchEngine(model, max_rows=4)
    engine.add(g)
    starts = set()
    while engine.groups:
        engine.step()
        starts.add(g.cached_from)
    assert len(starts) > 2 and g.start > 0


def test_finished_groups_free_their_slots_for_the_next(model):
    engine = BatchEngine(model, max_rows=4)
    short, long = Group([5], 2, 2, temperature=0), Group([6], 2, 10, temperature=0)
    engine.add(short)
    engine.add(long)
    assert short.rows == [0, 1] and long.rows == [2, 3] and engine.rows_in_use() == 4
    late = Group([7, 8], 2, 3, temperature=0)
    assert not engine.fits(late)
    engine.step()
    engine.step()
    assert short.finished and short not in engine.groups and engine.rows_in_use() == 2
    engine.add(late)
    assert late.rows == [0, 1]
    while engine.groups:
        engine.step()
    assert engine.rows_in_use() == 0
    assert torch.equal(late.out, sampling.generate(model, torch.tensor([[7, 8]] * 2), 3, temperature=0))


def test_max_groups_one_decodes_one_request_at_a_time(model):
    engine = BatchEngine(model, max_rows=8, max_groups=1)
    engine.add(Group([5], 1, 3, temperature=0))
    assert not engine.fits(Group([6], 1, 3, temperature=0))


def test_bad_inputs_are_refused_with_a_message(model):
    with pytest.raises(ValueError, match="temperature"):
        Group([5], 1, 3, temperature=-1)
    with pytest.raises(ValueError, match="empty"):
        Group([], 1, 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        Group([5], 1, 0)
    engine = BatchEngine(model, max_rows=2)
    with pytest.raises(ValueError, match="never fit"):
        engine.fits(Group([5], 3, 3))
    with pytest.raises(ValueError, match="at least 1"):
        BatchEngine(model, max_rows=0)
