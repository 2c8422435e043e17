"""The fast path of generation (course_utils.decoding): the static KV cache, the fixed-shape step
through the model's own blocks, and its compiled and frozen forms, token-identical to recomputation."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_gpt

from course_utils import decoding, sampling
from course_utils.config import compiler_available

pytestmark = pytest.mark.usefixtures("one_thread")


def test_static_cache_is_written_in_place_and_matches_the_growing_cache():
    model = tiny_gpt(40, 16, scale=4.0)
    x = torch.randint(3, 40, (2, 6))
    static, growing = model.new_cache(), model.new_cache(static=False)
    with torch.no_grad():
        a = model(x, cache=static)[0]
        b = model(x, cache=growing)[0]
        buffer = static[0].k_buf
        a2 = model(x[:, :1], cache=static)[0]
        b2 = model(x[:, :1], cache=growing)[0]
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a2, b2, atol=1e-6)
    assert static[0].k_buf is buffer and static[0].k_buf.shape[2] == 16      # preallocated, reused
    assert len(static[0]) == len(growing[0]) == 7 and static[0].k.shape == growing[0].k.shape


@pytest.mark.skipif(compiler_available() is not None, reason="no C++ compiler for torch.compile")
def test_compiled_decoding_gives_the_tokens_of_recomputation():
    model = tiny_gpt(40, 16, scale=6.0)
    prompt = torch.tensor([[5, 9, 17, 4], [7, 7, 30, 2]])
    recomputed = sampling.generate(model, prompt, 40, temperature=0, use_cache=False)   # slides twice
    compiled = sampling.generate(model, prompt, 40, temperature=0, compiled=True)
    eager = sampling.generate(model, prompt, 40, temperature=0)
    assert torch.equal(compiled, recomputed) and torch.equal(eager, recomputed)
    sampled = [sampling.generate(model, prompt, 20, temperature=1.0, top_k=10, seed=3, compiled=c)
               for c in (False, True)]
    assert torch.equal(*sampled)


@pytest.mark.skipif(compiler_available() is not None, reason="no C++ compiler for torch.compile")
def test_frozen_compilation_follows_each_model_and_its_weights():
    first, second = tiny_gpt(40, 16, scale=6.0), tiny_gpt(40, 16, seed=1, scale=6.0)
    prompt = torch.tensor([[5, 9, 17, 4]])

    def frozen_and_recomputed(model):
        return (sampling.generate(model, prompt, 10, temperature=0, compiled="frozen"),
                sampling.generate(model, prompt, 10, temperature=0, use_cache=False))

    a, want_a = frozen_and_recomputed(first)
    b, want_b = frozen_and_recomputed(second)         # same shapes, other weights: its own copy
    assert torch.equal(a, want_a) and torch.equal(b, want_b) and not torch.equal(want_a, want_b)
    first.load_state_dict(second.state_dict())         # new weights in place: compiled again
    again, _ = frozen_and_recomputed(first)
    assert torch.equal(again, want_b)


def test_bad_compile_setting_is_named():
    with pytest.raises(ValueError, match="compiled must be False.*'frozen'.*got 'fast'"):
        sampling.generate(tiny_gpt(40, 16), torch.tensor([[3, 4]]), 4, compiled="fast")


def test_decode_step_compiles_to_one_graph_without_breaks():
    explanation = decoding.explain_decode_step(tiny_gpt(40, 16))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


@pytest.mark.parametrize("compiled", [True, "frozen"])
def test_no_compiler_means_eager_with_one_message(monkeypatch, capsys, compiled):
    monkeypatch.setattr(decoding, "compiler_available", lambda: "no C++ compiler (test)")
    model = tiny_gpt(40, 16, scale=4.0)
    prompt = torch.tensor([[5, 9, 17]])
    out = sampling.generate(model, prompt, 6, temperature=0, compiled=compiled)
    assert torch.equal(out, sampling.generate(model, prompt, 6, temperature=0, use_cache=False))
    assert capsys.readouterr().out.count("torch.compile is not available here") == 1
    decoding._EAGER_ONLY.discard(id(model))
