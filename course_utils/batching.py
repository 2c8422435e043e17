"""Dynamic batching: the requests in flight decoded together, one matrix multiply per layer.

Each request is a `Group` of rows (its samples) kept in lockstep and sampled with its own
generator, so it gets exactly the tokens `sampling.generate` gives it alone; a
`BatchEngine` shares only the one-token decode steps, over a preallocated KV cache with
one row (slot) per sample and a position per row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from .attention import StaticKVCache
from .decoding import decode_step, prefill
from .sampling import (
    apply_repetition_penalty,
    check_settings,
    context_start,
    draw,
    next_token_probs,
    sample_next,
    uniforms,
)
from .vocab import PAD

# ---------------------------------------------------------------------------- one request


class Group:
    """The rows of one request, decoded exactly as `sampling.generate` decodes them alone:
    same window rule, one generator for all of them, `<pad>` after a row stops, the
    repetition penalty over the group's own rows, and done when every row has stopped.

    The tokens are kept as Python lists: a group takes one token per row per step, and
    appending an int costs far less than a tensor operation (the engine pays this bookkeeping
    for every group in flight at every step). `out` builds the (rows, length) tensor when asked."""

    def __init__(self, ids: Sequence[int], num_samples: int, max_new_tokens: int, *,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 repetition_penalty: float = 1.0, seed: int | None = None,
                 stop_tokens: Iterable[int] | None = None, device="cpu"):
        check_settings(temperature, top_k, top_p, repetition_penalty, max_new_tokens)
        if not len(ids):
            raise ValueError("the prompt is empty: give at least one token")
        self.tokens = [[int(t) for t in ids] for _ in range(num_samples)]   # rows, prompt first
        self.device = torch.device(device)
        self.prompt_len, self.max_new_tokens = len(ids), max_new_tokens
        self.sampler = dict(temperature=temperature, top_k=top_k, top_p=top_p)
        self.repetition_penalty = repetition_penalty
        self.generator = None if seed is None else torch.Generator(device=device).manual_seed(seed)
        self.stops = frozenset(int(t) for t in stop_tokens or [])
        self.stopped = [False] * num_samples
        self.start, self.cached_from, self.steps = 0, None, 0
        self.finished = False
        self.rows: list[int] = []          # the engine's cache slots this group occupies

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def out(self) -> torch.Tensor:
        """Every row so far, prompt included (rows, length), like `sampling.generate`'s result."""
        return torch.tensor(self.tokens, dtype=torch.long, device=self.device)

    @property
    def done(self) -> torch.Tensor:
        """Which rows have stopped (rows,)."""
        return torch.tensor(self.stopped, dtype=torch.bool, device=self.device)

    def window(self) -> list[list[int]]:
        """The tokens the model sees now: each row from `start` on."""
        return [row[self.start:] for row in self.tokens]

    def slide(self, block_size: int) -> bool:
        """Move the window for this step; True when the group must be prefilled (its first
        step, or the window slid by half a block)."""
        self.start = context_start(len(self.tokens[0]), self.start, block_size)
        return self.cached_from != self.start

    def position(self) -> int:
        """Where the last token goes in the window (the decode step's `pos`)."""
        return len(self.tokens[0]) - 1 - self.start

    @property
    def setting(self) -> tuple:
        """(temperature, top_k, top_p): groups that share it can be filtered together."""
        return self.sampler["temperature"], self.sampler["top_k"], self.sampler["top_p"]

    def penalized(self, logits: torch.Tensor) -> torch.Tensor:
        """The rows' logits (rows, V) in float32, after the repetition penalty over the group's
        own tokens: what the sampler filters."""
        logits = logits.float()
        if self.repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits, self.out, self.repetition_penalty)
        return logits

    def advance(self, picked: list[int]) -> list[int]:
        """Append the tokens the engine picked for the rows; returns what each row got
        (`<pad>` for a row that had already stopped)."""
        got = [PAD if stopped else t for t, stopped in zip(picked, self.stopped, strict=True)]
        for row, t in zip(self.tokens, got, strict=True):
            row.append(t)
        self.steps += 1
        if self.stops:
            self.stopped = [s or t in self.stops for s, t in zip(self.stopped, got, strict=True)]
        self.finished = self.steps >= self.max_new_tokens or all(self.stopped)
        return got

    def new_tokens(self) -> torch.Tensor:
        """What was generated so far (rows, steps), prompt excluded."""
        return self.out[:, self.prompt_len:]


# ---------------------------------------------------------------------------- many requests


class BatchEngine:
    """Groups in flight over one preallocated KV cache of `max_rows` slots.

    `add` puts a group in free slots (lowest first); `step` gives every row of every group
    its next token: groups whose window is new or slid are prefilled together (ONE forward
    pass over their right-padded windows), all the others share ONE `decode_step`, given one
    position per row (rows at different places of their windows step together, each writing its
    cache slot at its own position and attending to its positions 0..pos[b] only);
    finished groups leave and their slots are reused. `max_groups` caps the requests decoded
    at once (1: one after the other, the unbatched service)."""

    def __init__(self, model, max_rows: int = 64, max_groups: int | None = None):
        if max_rows < 1 or (max_groups is not None and max_groups < 1):
            raise ValueError(f"max_rows and max_groups must be at least 1, got {max_rows}, {max_groups}")
        cfg = model.config
        self.model, self.max_rows, self.max_groups = model, max_rows, max_groups
        param = next(model.parameters())
        self.device = param.device
        shape = (max_rows, cfg.n_heads, cfg.block_size, cfg.d_model // cfg.n_heads)
        self.keys = [torch.zeros(shape, dtype=param.dtype, device=param.device) for _ in model.blocks]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.free = list(range(max_rows))
        self.groups: list[Group] = []

    def rows_in_use(self) -> int:
        return self.max_rows - len(self.free)

    def fits(self, group: Group) -> bool:
        """Is there room for `group` now?"""
        if len(group) > self.max_rows:
            raise ValueError(f"a request of {len(group)} rows can never fit in {self.max_rows} slots")
        under_cap = self.max_groups is None or len(self.groups) < self.max_groups
        return under_cap and len(group) <= len(self.free)

    def add(self, group: Group) -> None:
        if not self.fits(group):
            raise RuntimeError("no room for this group now: check fits() first")
        self.free.sort()
        group.rows, self.free = self.free[:len(group)], self.free[len(group):]
        self.groups.append(group)

    def remove(self, group: Group) -> None:
        """Take a group out (finished or abandoned); its slots become free."""
        self.groups.remove(group)
        self.free += group.rows
        group.rows = []

    @torch.inference_mode()
    def step(self) -> list[tuple[Group, torch.Tensor]]:
        """One token for every row in flight: [(group, its new tokens (rows,)), ...]."""
        block = self.model.config.block_size
        prefill = [g for g in self.groups if g.slide(block)]
        steady = [g for g in self.groups if g not in prefill]
        logits = {}
        if steady:
            batch = self._decode(steady)
            logits = dict(zip(steady, batch.split([len(g) for g in steady]), strict=True))
        if prefill:   # after the shared step, which fed these slots a dummy token
            logits.update(self._prefill(prefill))
        stepped = self._sample(logits)
        for g, _ in stepped:
            if g.finished:
                self.remove(g)
        return stepped

    def _sample(self, logits: dict) -> list[tuple[Group, torch.Tensor]]:
        """Every group's next tokens. The groups that share a sampler setting are filtered and
        drawn in ONE call (temperature, top-k, top-p, the softmax and the inverse-transform
        search work row by row, so each row gets the probabilities it gets alone); only the
        uniform numbers come per group, from the group's own generator, which keeps each
        request's text exactly its own."""
        by_setting: dict[tuple, list[Group]] = {}
        for g in self.groups:
            by_setting.setdefault(g.setting, []).append(g)
        new = {}
        for (temperature, top_k, top_p), groups in by_setting.items():
            batch = torch.cat([g.penalized(logits[g]) for g in groups])
            if temperature == 0:
                picks = sample_next(batch, temperature=0)
            else:   # each group's uniform numbers from its own generator, one draw for all
                u = torch.cat([uniforms(len(g), g.generator, self.device) for g in groups])
                picks = draw(next_token_probs(batch, temperature, top_k, top_p), u=u)
            picks, r = picks.view(-1).tolist(), 0
            for g in groups:
                new[g] = g.advance(picks[r:r + len(g)])
                r += len(g)
        return [(g, torch.tensor(new[g], dtype=torch.long, device=self.device)) for g in self.groups]

    def _decode(self, groups: list[Group]) -> torch.Tensor:
        """ONE decode step for the rows of `groups`, over slots 0..hi-1 (free slots and
        slots about to be prefilled get `<pad>` at position 0 and are ignored). Returns
        the logits of the groups' rows, group after group."""
        rows = torch.tensor([r for g in groups for r in g.rows], device=self.device)
        hi = 1 + int(rows.max())
        token = torch.full((hi, 1), PAD, dtype=torch.long, device=self.device)
        pos = torch.zeros(hi, dtype=torch.long, device=self.device)
        token[rows, 0] = torch.tensor([row[-1] for g in groups for row in g.tokens], device=self.device)
        pos[rows] = torch.tensor([g.position() for g in groups for _ in g.rows], device=self.device)
        cache = [StaticKVCache.wrap(k[:hi], v[:hi]) for k, v in zip(self.keys, self.values, strict=True)]
        logits = decode_step(self.model, token, pos, cache)
        return logits[rows]

    def _prefill(self, groups: list[Group]) -> dict[Group, torch.Tensor]:
        """The windows of `groups` through the model in ONE forward pass, right-padded with
        `<pad>` to the longest (each row's logits at its own last position, as
        `decoding.prefill` explains); the cache rows are copied into the groups' slots.
        Returns each group's last-position logits (rows, V)."""
        windows = [row for g in groups for row in g.window()]
        lengths = [len(w) for w in windows]
        ids = torch.tensor([w + [PAD] * (max(lengths) - len(w)) for w in windows], device=self.device)
        cache = self.model.new_cache()
        logits = prefill(self.model, ids, cache, torch.tensor(lengths, device=self.device))
        rows = torch.tensor([r for g in groups for r in g.rows], device=self.device)
        for layer, c in enumerate(cache):
            self.keys[layer][rows] = c.k_buf
            self.values[layer][rows] = c.v_buf
        for g in groups:
            g.cached_from = g.start
        return dict(zip(groups, logits.split([len(g) for g in groups]), strict=True))


def generate_together(model, groups: Sequence[Group], max_rows: int = 64,
                      arrivals: Sequence[int] | None = None) -> list[torch.Tensor]:
    """Decode `groups` through one engine until all finish; group i joins at step
    `arrivals[i]` (default: all at step 0), or later if the slots are full. Returns each
    group's ids, prompt included, like `sampling.generate`. (A test and teaching helper:
    the service feeds its engine from a queue instead.)"""
    engine = BatchEngine(model, max_rows)
    arrivals = list(arrivals) if arrivals is not None else [0] * len(groups)
    waiting = sorted(range(len(groups)), key=lambda i: arrivals[i])
    step = 0
    while waiting or engine.groups:
        while waiting and arrivals[waiting[0]] <= step and engine.fits(groups[waiting[0]]):
            engine.add(groups[waiting.pop(0)])
        engine.step()
        step += 1
    return [g.out for g in groups]
