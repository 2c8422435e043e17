"""Samplers as operations on logits, and generation: greedy, sampled, beam search (chapter 08).

Filters work on *logits*: masked entries become -inf and one softmax follows. (The
source material re-applied softmax to probabilities and applied temperature as
softmax(log(p)/T), which flattens the distribution; see chapter 08.)

Context rule: the model sees at most `block_size` tokens. When the context is full it
slides forward by half a block (`block_size // 2` tokens kept), in both the cached and
the recomputing path, so the two give identical tokens and the cache stays fast. The cached
path itself (the fixed-shape step, its compiled forms) is `course_utils.decoding`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from .decoding import CachedDecoder
from .vocab import PAD, SEP, UNK, Vocab

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


def check_prompt(idx) -> torch.Tensor:
    """The prompt as a (B, T) long tensor (a list or a 1-d tensor is one row); refuses an empty one."""
    if not isinstance(idx, torch.Tensor):
        idx = torch.as_tensor(idx, dtype=torch.long)
    if idx.dim() == 1:
        idx = idx[None]
    if idx.dim() != 2 or idx.size(1) == 0 or idx.numel() == 0:
        raise ValueError("the prompt is empty: give at least one token")
    return idx.long()


def context_start(length: int, start: int, block_size: int) -> int:
    """Where the model's window begins in a sequence of `length` tokens (it began at `start`):
    when the window is full it slides forward, keeping the last half block."""
    keep = max(1, block_size // 2)
    while length - start > block_size:
        start = length - keep if length - keep > start else start + 1
    return start


@torch.no_grad()
def generate(model, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, use_cache: bool = True, *, repetition_penalty: float = 1.0,
             stop_tokens: Iterable[int] | None = None, generator: torch.Generator | None = None,
             seed: int | None = None, compiled: bool | str = False) -> torch.Tensor:
    """Extend `idx` (B, T) by up to `max_new_tokens` tokens; returns the ids, prompt included.

    Each step takes the logits of the next token (through a KV cache, or with `use_cache=False`
    by running the model over the whole window again), applies the repetition penalty, samples,
    and writes `<pad>` for rows that have stopped. A row stops at a stop token; generation ends
    when every row has. `compiled` (True, or "frozen" with the weights frozen in) compiles the
    cached step with `torch.compile`: see `course_utils.decoding`.
    """
    check_settings(temperature, top_k, top_p, repetition_penalty, max_new_tokens)
    decoder = CachedDecoder(model, compiled)
    device = next(model.parameters()).device
    idx = check_prompt(idx).to(device)
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    stops = torch.tensor(sorted(set(stop_tokens or [])), dtype=torch.long, device=device)
    B, n = idx.shape
    out = torch.full((B, n + max_new_tokens), PAD, dtype=torch.long, device=device)
    out[:, :n] = idx                                    # the prompt, then new tokens in place
    done = torch.zeros(B, dtype=torch.bool, device=device)
    was_training, start = model.training, 0
    model.eval()
    for _ in range(max_new_tokens):
        start = context_start(n, start, model.config.block_size)
        if use_cache:
            logits = decoder.next_logits(out, start, n).float()
        else:
            logits = model(out[:, start:n])[0][:, -1].float()
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
    idx = check_prompt(idx)
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
        starts = [context_start(len(ids), s, block) for _, ids, s in beams]
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
    ids = check_prompt(ids)
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
    known = [i for i in ids if i != UNK]
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
