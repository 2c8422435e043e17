"""Samplers as operations on logits, and generation (greedy, multinomial, beam, KV cache).

Filters work on *logits*: masked entries become -inf and one softmax follows. (The
source material re-applied softmax to probabilities and applied temperature as
softmax(log(p)/T), which flattens the distribution; see chapter 08.)

Context rule: the model sees at most `block_size` tokens. When the context is full it
slides forward by half a block (`block_size // 2` tokens kept), in both the cached and
the recomputing path, so the two give identical tokens and the cache stays fast.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
import types
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import torch

from .config import compiler_available
from .vocab import PAD, SEP, Vocab

STOP_CHARS = "。？！"


# ---------------------------------------------------------------------------- validation


def check_settings(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                   repetition_penalty: float = 1.0, max_new_tokens: int | None = None) -> None:
    """Raise ValueError naming the first bad sampler setting."""
    if not _is_number(temperature) or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 means greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a whole number >= 1 or None (no top-k), got {top_k!r}")
    if top_p is not None and (not _is_number(top_p) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] or None (no top-p), got {top_p!r}")
    if (not _is_number(repetition_penalty) or not math.isfinite(repetition_penalty)
            or repetition_penalty <= 0):
        raise ValueError(f"repetition_penalty must be a finite number > 0 (1 means none), "
                         f"got {repetition_penalty!r}")
    if max_new_tokens is not None and (isinstance(max_new_tokens, bool)
                                       or not isinstance(max_new_tokens, int) or max_new_tokens < 1):
        raise ValueError(f"max_new_tokens must be a whole number >= 1, got {max_new_tokens!r}")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x  # x == x: not NaN


# ---------------------------------------------------------------------------- logits -> logits


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide logits by T: T < 1 sharpens, T > 1 flattens. (T = 0 is greedy: use argmax.)"""
    check_settings(temperature=temperature)
    if temperature == 0:
        raise ValueError("temperature 0 is greedy decoding: take the argmax instead of dividing by 0")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep exactly the k largest logits (ties broken by index); the rest become -inf."""
    check_settings(top_k=k)
    if k is None or k >= logits.size(-1):
        return logits
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, logits.topk(k, dim=-1).indices, True)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float | None) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose mass reaches p."""
    check_settings(top_p=p)
    if p is None or p >= 1:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    drop_sorted = _beyond_nucleus(sorted_logits, p)
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def _beyond_nucleus(sorted_logits: torch.Tensor, p: float) -> torch.Tensor:
    """For logits sorted in descending order: True where the mass already reached p before
    this token (top-p drops it)."""
    probs = sorted_logits.softmax(dim=-1)
    return probs.cumsum(dim=-1) - probs >= p


def apply_repetition_penalty(logits: torch.Tensor, previous: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty: make tokens already in `previous` (B, T) less likely (penalty > 1)."""
    check_settings(repetition_penalty=penalty)
    if penalty == 1.0 or previous.numel() == 0:
        return logits
    seen = logits.gather(-1, previous)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(-1, previous, seen)


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Temperature, then top-k, then top-p, all on logits (temperature 0 keeps only the argmax)."""
    check_settings(temperature, top_k, top_p)
    if temperature == 0:
        return top_k_filter(logits, 1)
    logits = apply_temperature(logits, temperature)
    if top_k is not None and top_k < logits.size(-1) and top_p is not None and top_p < 1:
        return _top_k_then_top_p(logits, top_k, top_p)
    return top_p_filter(top_k_filter(logits, top_k), top_p)


def _top_k_then_top_p(logits: torch.Tensor, k: int, p: float) -> torch.Tensor:
    """`top_p_filter(top_k_filter(logits, k), p)` without sorting the whole vocabulary: after
    top-k only k logits are finite, and `topk` returns them already sorted, so the nucleus is
    found among those k (sorting all 4,690 logits for each token cost more than the rest of
    the sampler together)."""
    values, order = logits.topk(k, dim=-1)                  # the k largest, in descending order
    kept = values.masked_fill(_beyond_nucleus(values, p), float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, kept)


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None) -> torch.Tensor:
    """The distribution the sampler draws from: one softmax over the filtered logits."""
    return filter_logits(logits, temperature, top_k, top_p).float().softmax(dim=-1)


def uniforms(n: int, generator: torch.Generator | None = None, device="cpu",
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The n uniform numbers in [0, 1) (n, 1) that `draw` turns into n tokens (`next_token_probs`
    gives float32 probabilities, hence the default dtype)."""
    return torch.rand(n, 1, generator=generator, device=device, dtype=dtype)


def draw(probs: torch.Tensor, generator: torch.Generator | None = None, *,
         u: torch.Tensor | None = None) -> torch.Tensor:
    """One token per row of `probs` (B, V) -> (B, 1), by inverse transform sampling: one
    uniform number u per row, and the first token whose cumulative probability exceeds u
    (scaled by the row's total, so rounding cannot run past the last token). A token of
    probability 0 is never drawn. The site's `gpt.js` draws the same way. (`torch.multinomial`
    would draw one exponential number per vocabulary entry, 4,690 per token, which cost more
    than the rest of the sampler.) `u` (B, 1): uniform numbers drawn already (chapter 12's
    engine draws them per request, from each request's own generator)."""
    cdf = probs.cumsum(dim=-1)
    u = uniforms(probs.size(0), generator, probs.device, cdf.dtype) if u is None else u.to(cdf.dtype)
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True)


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One next token per row of `logits` (B, V) -> (B, 1). Temperature 0 is greedy."""
    if temperature == 0:
        check_settings(temperature, top_k, top_p)
        return logits.argmax(dim=-1, keepdim=True)
    return draw(next_token_probs(logits, temperature, top_k, top_p), generator)


# ---------------------------------------------------------------------------- generation


def _check_prompt(idx) -> torch.Tensor:
    if not isinstance(idx, torch.Tensor):
        idx = torch.as_tensor(idx, dtype=torch.long)
    if idx.dim() == 1:
        idx = idx[None]
    if idx.dim() != 2 or idx.size(1) == 0 or idx.numel() == 0:
        raise ValueError("the prompt is empty: give at least one token")
    return idx.long()


def _context_start(length: int, start: int, block_size: int) -> int:
    """Where the model's window begins: slide by half a block whenever it is full."""
    keep = max(1, block_size // 2)
    while length - start > block_size:
        start = length - keep if length - keep > start else start + 1
    return start


def decode_step(model, token: torch.Tensor, pos: torch.Tensor, keys: list, values: list) -> torch.Tensor:
    """One new token through the model with preallocated (static) KV caches, in fixed shapes:
    what `torch.compile` turns into one graph for every step. `token` (B, 1); `pos`, a 0-d
    long tensor, is its position in the window, or a (B,) tensor with one position per row
    (rows at different places of their windows: chapter 12's batching); `keys`/`values` are
    the caches' buffers (B, H, block_size, head_dim), written in place at `pos`. Returns the
    logits (B, V).

    The attention reads all `block_size` cached positions with a mask (`<= pos`), so the
    shapes never change from step to step and nothing is recompiled; positions beyond a
    row's own (left there by an earlier occupant of its cache slot) are masked out."""
    cfg = model.config
    B, H, T = token.size(0), cfg.n_heads, cfg.block_size
    hd = cfg.d_model // H
    per_row = pos.dim() == 1
    at = pos[:, None] if per_row else pos.view(1, 1)                           # (B, 1) or (1, 1)
    x = model.tok_emb(token) + model.pos_emb(at)                               # (B, 1, d)
    keep = (torch.arange(T, device=token.device) <= at).view(at.size(0), 1, 1, T)
    rows = torch.arange(B, device=token.device)
    for block, k_buf, v_buf in zip(model.blocks, keys, values, strict=True):
        q, k, v = block.attn.qkv(block.ln1(x)).split(cfg.d_model, dim=2)
        q, k, v = (t.view(B, 1, H, hd).transpose(1, 2) for t in (q, k, v))   # (B, H, 1, hd)
        if per_row:                                                            # row b at pos[b]
            k_buf[rows, :, pos] = k[:, :, 0]
            v_buf[rows, :, pos] = v[:, :, 0]
        else:
            k_buf.index_copy_(2, pos.view(1), k)
            v_buf.index_copy_(2, pos.view(1), v)
        y = torch.nn.functional.scaled_dot_product_attention(q, k_buf, v_buf, attn_mask=keep)
        x = x + block.attn.proj(y.transpose(1, 2).reshape(B, 1, cfg.d_model))
        x = x + block.mlp(block.ln2(x))
    return model.lm_head(model.ln_f(x))[:, -1]


def prefill(model, window: torch.Tensor, cache: list,
            lengths: torch.Tensor | None = None) -> torch.Tensor:
    """The window (B, T) through the model into an empty `cache`; returns the logits of its last
    position only (B, V): the language-model head at every position would cost T times as
    much, for logits nobody reads.

    lengths: optional (B,) real lengths of right-padded rows; each row's logits are then
    taken at its own last real position. Causal attention keeps the padding after a row's
    end out of everything before it, and a later decode step overwrites those cache slots
    before it ever attends to them."""
    h = model.hidden_states(window, cache=cache)
    if lengths is None:
        return model.lm_head(h[:, -1])
    return model.lm_head(h[torch.arange(h.size(0), device=h.device), lengths - 1])


def explain_decode_step(model, cached: int = 3):
    """What `torch.compile` makes of one `decode_step` of `model` (batch 1, after a prefill of
    `cached` tokens): `torch._dynamo.explain`'s report, with `graph_count`, `graph_break_count`
    and `break_reasons`. Dynamo is reset first so that no earlier compilation answers for it
    (compiled functions recompile on their next call)."""
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.arange(1, cached + 1)[None], cache=cache)
        torch._dynamo.reset()
        return torch._dynamo.explain(decode_step)(model, torch.tensor([[cached + 1]]), torch.tensor(cached),
                                                  [c.k_buf for c in cache], [c.v_buf for c in cache])


_EAGER_ONLY: set[int] = set()   # ids of models whose step could not be compiled: said once


def check_compile(compile) -> None:
    """Raise ValueError unless `compile` is False, True or "frozen"."""
    if not (isinstance(compile, bool) or (isinstance(compile, str) and compile == "frozen")):
        raise ValueError(f"compile must be False (eager), True (compiled step) or 'frozen' (compiled "
                         f"with the weights frozen in), got {compile!r}")


@functools.cache
def _compiled_decode_step():
    # A one-token step is mostly overhead (chapter 09 profiles one). `cpp_wrapper` makes Inductor
    # launch the step's kernels from C++ instead of Python; in a side-by-side trial on the 2-core
    # Xeon of the benchmarks appendix it was faster per token than the plain compiled step (its
    # compilation takes longer), and Inductor's `decompose_mm_pass` for one-row products was not.
    return torch.compile(decode_step, fullgraph=True, dynamic=False, options={"cpp_wrapper": True})


@functools.cache
def _compiled_prefill():
    # Each slide of the window re-reads its kept half (new positions, so new keys and values):
    # always `block_size // 2` tokens, one fixed shape, so one compiled graph serves every slide.
    return torch.compile(prefill, fullgraph=True, dynamic=False, options={"cpp_wrapper": True})


# compile="frozen": Inductor's freezing turns the weights into constants of the compiled code, so it
# can lay them out ahead of time and, with `max_autotune`, time for each matrix product its own
# generated micro-GEMM against MKL's prepacked GEMM and keep the faster. Dynamo reads `freezing`
# while it traces, so these must be global settings during a call that compiles (as torch.compile
# options, freezing did not take effect in torch 2.13); set around every call they cost about a
# sixth of a step here, so `_FrozenFunction` sets them only for inputs of a shape it has not seen
# (should Dynamo recompile for another reason, that graph reads the weights as inputs: slower,
# never stale).
# The last two keep the autotuner's tables and statistics out of the output.
FROZEN_INDUCTOR = {"cpp_wrapper": True, "freezing": True, "max_autotune": True,
                   "max_autotune_gemm_backends": "CPP,ATEN", "autotune_num_choices_displayed": 0,
                   "max_autotune_report_choices_stats": False}
_FROZEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> _Frozen


class _FrozenFunction:
    """`fn` compiled with the weights frozen in, on a fresh copy of its code: Dynamo keeps its
    compiled graphs per code object, so each model (and each version of its weights) gets its own."""

    def __init__(self, fn):
        copy = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__,
                                  fn.__closure__)
        copy.__kwdefaults__ = fn.__kwdefaults__
        self.compiled = torch.compile(copy, fullgraph=True, dynamic=False)
        self.shapes: set = set()     # the inputs' shapes (strides, dtypes) compiled so far

    def __call__(self, *args):
        # what Dynamo's guards check of each tensor: a new combination is a new compilation
        shapes = tuple((t.shape, t.stride(), t.dtype, t.requires_grad) for a in args
                       for t in (a if isinstance(a, (list, tuple)) else [a]) if isinstance(t, torch.Tensor))
        if shapes in self.shapes:
            return self.compiled(*args)
        from torch._inductor import config as inductor_config

        with inductor_config.patch(FROZEN_INDUCTOR), warnings.catch_warnings():
            # torch's own autotuning code calls the deprecated `Tensor.storage()`: not the reader's
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            out = self.compiled(*args)
        self.shapes.add(shapes)
        return out


class _Frozen(NamedTuple):
    weights: tuple     # (address, version) of every parameter and buffer when it was compiled
    step: Callable
    prefill: Callable


def _weights_key(model) -> tuple:
    # In-place updates (an optimizer step, load_state_dict, p.add_) bump a tensor's version;
    # replacing `.data` moves its address. Either means the frozen copy is out of date.
    return tuple((t.data_ptr(), t._version) for t in itertools.chain(model.parameters(), model.buffers()))


def _frozen(model) -> _Frozen:
    """The model's frozen compiled step and prefill, compiled again when its weights changed."""
    key = _weights_key(model)
    entry = _FROZEN.get(model)
    if entry is None or entry.weights != key:
        entry = _FROZEN[model] = _Frozen(key, _FrozenFunction(decode_step), _FrozenFunction(prefill))
    return entry


def _compiled_or_eager(model, compiled, eager, *args):
    """`compiled(model, *args)` where there is one (not None) and `torch.compile` works here, else
    `eager(model, *args)`; the first failure for a model is said once, and that model is decoded
    eagerly from then on."""
    if compiled is not None and id(model) not in _EAGER_ONLY:
        why = compiler_available()
        if why is None:
            try:
                return compiled(model, *args)
            except Exception as err:  # a failed compilation: say so once, then decode eagerly
                why = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
        print(f"torch.compile is not available here ({why}): decoding without it")
        _EAGER_ONLY.add(id(model))
    return eager(model, *args)


def _compiled_fns(model, compile) -> tuple[Callable | None, Callable | None]:
    """The compiled step and slide prefill that `compile` asks for, or (None, None) for eager
    decoding; looked up once per `generate` call (the frozen ones are checked against the
    model's current weights)."""
    if not compile:
        return None, None
    if compile == "frozen":
        frozen = _frozen(model)
        return frozen.step, frozen.prefill
    return _compiled_decode_step(), _compiled_prefill()


def _step(model, token, pos, caches, keys, values, compiled) -> torch.Tensor:
    """The next logits (B, V) for one new token, through the static caches (lengths advanced);
    `keys`/`values` are the caches' buffers, listed once per cache; `compiled`: the compiled
    `decode_step`, or None."""
    logits = _compiled_or_eager(model, compiled, decode_step, token, pos, keys, values)
    return _advance(caches, logits)


def _prefill(model, window: torch.Tensor, cache: list, compiled) -> torch.Tensor:
    """`prefill` into a new static cache; through `compiled` (if not None) for the window a slide keeps,
    `block_size // 2` tokens, and eager for a prompt of any other length (one graph per shape)."""
    if window.size(1) != max(1, model.config.block_size // 2):
        return prefill(model, window, cache)

    def eager(model, window, cache):
        for c in cache:      # a compilation that failed part-way must not leave positions behind
            c.crop(0)
        return prefill(model, window, cache)

    return _compiled_or_eager(model, compiled, eager, window, cache)


def _advance(caches, logits: torch.Tensor) -> torch.Tensor:
    """Count the position just written into every cache; pass the logits through."""
    for c in caches:
        c.length += 1
    return logits


@torch.no_grad()
def generate(model, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, use_cache: bool = True, *, repetition_penalty: float = 1.0,
             stop_tokens: Iterable[int] | None = None, generator: torch.Generator | None = None,
             seed: int | None = None, compile: bool | str = False) -> torch.Tensor:
    """Extend `idx` (B, T) by up to `max_new_tokens` tokens; returns the ids, prompt included.

    Rows that emit a stop token stop there and are padded with `<pad>`; generation ends
    when every row has stopped. With `use_cache` each step feeds one token through a
    preallocated KV cache instead of re-running the whole context; with `compile` that
    step, and the prefill of the half window kept at each slide, are compiled by
    `torch.compile` (once per batch size; it falls back to eager mode, saying so, where no
    C++ compiler is available). `compile="frozen"` also freezes the weights into the compiled
    code, so Inductor can prepack them and pick the faster of its own GEMM and MKL's for each
    matrix: faster per token (benchmarks appendix), but its compilation takes longer and is
    redone whenever the weights have changed since (an optimizer step, `load_state_dict`).
    """
    check_settings(temperature, top_k, top_p, repetition_penalty, max_new_tokens)
    check_compile(compile)
    idx = _check_prompt(idx)
    device = next(model.parameters()).device
    idx = idx.to(device)
    compiled_step, compiled_prefill = _compiled_fns(model, compile if use_cache else False)
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    stops = torch.tensor(sorted(set(stop_tokens or [])), dtype=torch.long, device=device)
    block = model.config.block_size
    was_training = model.training
    model.eval()

    # Every buffer is allocated once: the output (prompt, then the new tokens written in place),
    # the one-token input and its position (the compiled step's inputs, refilled every step).
    B, n = idx.shape
    out = torch.full((B, n + max_new_tokens), PAD, dtype=torch.long, device=device)
    out[:, :n] = idx
    token = torch.empty((B, 1), dtype=torch.long, device=device)
    pos = torch.zeros((), dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    start, cache, cached_from = 0, None, None
    for _ in range(max_new_tokens):
        start = _context_start(n, start, block)
        if use_cache:
            if cache is None or cached_from != start:
                cache, cached_from = model.new_cache(), start
                logits = _prefill(model, out[:, start:n], cache, compiled_prefill)
                keys, values = [c.k_buf for c in cache], [c.v_buf for c in cache]  # allocated now
            else:
                pos.fill_(len(cache[0]))
                token.copy_(out[:, n - 1:n])
                logits = _step(model, token, pos, cache, keys, values, compiled_step)
        else:
            logits = model(out[:, start:n])[0][:, -1, :]
        logits = logits.float()
        if repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits, out[:, :n], repetition_penalty)
        nxt = sample_next(logits, temperature, top_k, top_p, generator)
        out[:, n:n + 1] = nxt.masked_fill_(done[:, None], PAD)
        n += 1
        if stops.numel():
            done |= torch.isin(nxt[:, 0], stops)
            if bool(done.all()):
                break
    model.train(was_training)
    return out[:, :n].contiguous()


@torch.no_grad()
def beam_search(model, idx, max_new_tokens: int, beam_width: int = 4, length_penalty: float = 0.0,
                stop_tokens: Iterable[int] | None = None) -> torch.Tensor:
    """The most likely continuation found by keeping `beam_width` partial sequences.

    Scores are summed log-probabilities divided by length**length_penalty. A beam that
    emits a stop token is finished. Width 1 is greedy decoding. Returns (1, T + n) ids.
    """
    if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
        raise ValueError(f"beam_width must be a whole number >= 1, got {beam_width!r}")
    check_settings(max_new_tokens=max_new_tokens)
    idx = _check_prompt(idx)
    if idx.size(0) != 1:
        raise ValueError(f"beam_search takes one prompt (batch of 1), got a batch of {idx.size(0)}")
    device = next(model.parameters()).device
    stops = set(stop_tokens or [])
    block, prompt_len = model.config.block_size, idx.size(1)
    was_training = model.training
    model.eval()

    def score(logp: float, seq_len: int) -> float:
        return logp / max(1, seq_len - prompt_len) ** length_penalty

    beams = [(0.0, idx[0].to(device), 0)]  # (log-prob, ids, window start)
    finished: list[tuple[float, torch.Tensor]] = []
    for _ in range(max_new_tokens):
        starts = [_context_start(len(ids), s, block) for _, ids, s in beams]
        lengths = {len(ids) - s for (_, ids, _), s in zip(beams, starts, strict=True)}
        if len(lengths) == 1:
            batch = torch.stack([ids[s:] for (_, ids, _), s in zip(beams, starts, strict=True)])
            logp = model(batch)[0][:, -1, :].float().log_softmax(-1)
        else:
            logp = torch.cat([model(ids[s:][None])[0][:, -1, :].float().log_softmax(-1)
                              for (_, ids, _), s in zip(beams, starts, strict=True)])
        totals = torch.tensor([b[0] for b in beams], device=device)[:, None] + logp
        top = totals.flatten().topk(min(beam_width, totals.numel()))
        new_beams = []
        for value, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            b, tok = divmod(flat, logp.size(1))
            ids = torch.cat([beams[b][1], torch.tensor([tok], device=device)])
            if tok in stops:
                finished.append((value, ids))
            else:
                new_beams.append((value, ids, starts[b]))
        beams = new_beams
        if not beams or (len(finished) >= beam_width and max(
                score(v, len(i)) for v, i in finished) >= max(score(v, len(i)) for v, i, _ in beams)):
            break
    candidates = finished + [(v, i) for v, i, _ in beams]
    best = max(candidates, key=lambda c: score(c[0], len(c[1])))[1]
    model.train(was_training)
    return best[None]


@torch.no_grad()
def sequence_logprob(model, ids, prompt_len: int) -> float:
    """Sum of log p(token | everything before it) over the tokens after the first `prompt_len`.

    The whole sequence must fit in the model's context (`block_size` tokens).
    """
    ids = _check_prompt(ids)
    if ids.size(0) != 1:
        raise ValueError(f"sequence_logprob takes one sequence (batch of 1), got {ids.size(0)}")
    if not 1 <= prompt_len < ids.size(1):
        raise ValueError(f"prompt_len must be in 1..{ids.size(1) - 1}, got {prompt_len}")
    if ids.size(1) > model.config.block_size:
        raise ValueError(f"the sequence has {ids.size(1)} tokens, more than block_size="
                         f"{model.config.block_size}: score a shorter one")
    device = next(model.parameters()).device
    ids = ids.to(device)
    was_training = model.training
    model.eval()
    logits = model(ids[:, :-1])[0]
    logp = logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(-1)
    model.train(was_training)
    picked = logp.gather(-1, ids[:, 1:, None])[0, :, 0]
    return float(picked[prompt_len - 1:].sum())


def tokens_per_second(model, idx, max_new_tokens: int, repeats: int = 3, threads: int | None = None,
                      **settings) -> float:
    """Generation speed: new tokens per second, the best of `repeats` timed runs (after one
    untimed warm-up). Pass `use_cache=False` to time the recomputing path. `threads` sets
    torch's CPU threads for the measurement (restored afterwards); None keeps the current."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a whole number >= 1, got {repeats!r}")
    settings.setdefault("temperature", 0)
    settings.pop("stop_tokens", None)  # time exactly max_new_tokens tokens
    from .measure import num_threads

    with num_threads(threads):
        generate(model, idx, min(max_new_tokens, 4), **settings)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = generate(model, idx, max_new_tokens, **settings)
            best = min(best, time.perf_counter() - t0)
    new = out.size(1) - _check_prompt(idx).size(1)
    return new / max(best, 1e-9)


# ---------------------------------------------------------------------------- text in, text out


def stop_ids(vocab: Vocab, chars: str = STOP_CHARS, sep: bool = True) -> list[int]:
    """Ids of the course's stop tokens: `<sep>` and 。？！ (those in the vocabulary)."""
    ids = [vocab.token2idx[c] for c in chars if c in vocab.token2idx]
    return ([SEP] if sep else []) + ids


def encode_prompt(vocab: Vocab, prompt: str) -> list[int]:
    """Encode a text prompt, refusing an empty one or one the vocabulary cannot read at all."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("the prompt is empty: type at least one character")
    ids = vocab.encode(prompt)
    known = [i for i in ids if i != 1]
    if not known:
        raise ValueError(f"no character of the prompt {prompt[:30]!r} is in the vocabulary: "
                         f"try Chinese text like the training corpus")
    return ids


def complete(model, vocab: Vocab, prompt: str, max_new_tokens: int = 50, num_samples: int = 1,
             stop: bool = True, **settings) -> list[str]:
    """Text in, `num_samples` continuations out (the prompt not repeated, specials dropped)."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a whole number >= 1, got {num_samples!r}")
    ids = encode_prompt(vocab, prompt)
    block = model.config.block_size
    ids = ids[-block:]
    idx = torch.tensor([ids] * num_samples, dtype=torch.long)
    out = generate(model, idx, max_new_tokens, stop_tokens=stop_ids(vocab) if stop else None, **settings)
    return [vocab.decode(row[len(ids):].tolist(), skip_special=True) for row in out]


def decode_batch(vocab: Vocab, ids: torch.Tensor | Sequence[Sequence[int]]) -> list[str]:
    """Decode each row, dropping `<pad>`/`<sep>`/`<unk>`."""
    return [vocab.decode(list(map(int, row)), skip_special=True) for row in ids]
