"""The fast path of generation: a KV cache read in fixed shapes, and its compiled forms.

`sampling.generate` asks a `CachedDecoder` for the logits of each next token. The decoder
prefills the window into a preallocated cache once, then feeds ONE new token per step
(`decode_step`), through the model's own blocks (`GPT.hidden_states(..., pos=...)`): each
block writes its keys and values at `pos` and attends over every cache slot up to it. The
shapes never change from step to step, so `torch.compile` turns a step into one graph:

- `compiled=True`: the step and the slide's prefill compiled by Inductor, with its kernels
  launched from C++ (`cpp_wrapper`);
- `compiled="frozen"`: also the weights frozen in as constants, so Inductor can prepack them and
  time, per matrix, its own micro-GEMM against MKL's; faster per token, but it compiles longer
  and again whenever the weights change (benchmarks appendix).

Chapter 08 teaches the cache and its deep dive 08a this module; 09a looks at what the compiler
makes of a step; chapter 12's batching engine (12a) calls `decode_step` with one position per row.
"""

from __future__ import annotations

import functools
import itertools
import types
import warnings
import weakref
from collections.abc import Callable
from typing import NamedTuple

import torch

from .attention import StaticKVCache
from .config import compiler_available


def decode_step(model, token: torch.Tensor, pos: torch.Tensor, cache: list[StaticKVCache]) -> torch.Tensor:
    """One new token per row through the model, in fixed shapes: `token` (B, 1) at position
    `pos` (0-d, or (B,) one per row: rows at different places of their windows, as in chapter
    12's engine) of static caches holding the window (written in place). Returns the logits (B, V)."""
    return model.lm_head(model.hidden_states(token, cache=cache, pos=pos))[:, -1]


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


def check_compiled(compiled) -> None:
    """Raise ValueError unless `compiled` is False, True or "frozen"."""
    if not (isinstance(compiled, bool) or (isinstance(compiled, str) and compiled == "frozen")):
        raise ValueError(f"compiled must be False (eager), True (compiled step) or 'frozen' (compiled "
                         f"with the weights frozen in), got {compiled!r}")


class CachedDecoder:
    """The logits of the next token of a growing batch of sequences, through a KV cache.

    `next_logits(out, start, n)`: the model reads `out[:, start:n]`. A new window (the first
    call, or `start` moved when the context slid) is prefilled into a new cache; otherwise only
    the token at n - 1 goes through `decode_step`. `compiled`: False, True or "frozen"."""

    def __init__(self, model, compiled: bool | str = False):
        check_compiled(compiled)
        self.model, self.compiled = model, compiled
        self.cache: list[StaticKVCache] | None = None
        self.cached_from: int | None = None
        self.step_fn = self.prefill_fn = None
        self.token = self.pos = None

    def next_logits(self, out: torch.Tensor, start: int, n: int) -> torch.Tensor:
        if self.token is None:   # the compiled functions, and the step's inputs, refilled each step
            self.step_fn, self.prefill_fn = compiled_fns(self.model, self.compiled)
            self.token = out.new_empty((out.size(0), 1))
            self.pos = out.new_zeros(())
        if self.cache is None or self.cached_from != start:
            self.cache, self.cached_from = self.model.new_cache(), start
            return run_prefill(self.model, out[:, start:n], self.cache, self.prefill_fn)
        self.pos.fill_(len(self.cache[0]))
        self.token.copy_(out[:, n - 1:n])
        logits = compiled_or_eager(self.model, self.step_fn, decode_step, self.token, self.pos, self.cache)
        for c in self.cache:     # the step wrote one more position
            c.length += 1
        return logits


def run_prefill(model, window: torch.Tensor, cache: list, compiled: Callable | None) -> torch.Tensor:
    """`prefill` into a new static cache; through `compiled` (if not None) for the window a slide
    keeps, `block_size // 2` tokens, and eagerly for a prompt of any other length (one graph per shape)."""
    if compiled is None or window.size(1) != max(1, model.config.block_size // 2):
        return prefill(model, window, cache)

    def eager(model, window, cache):
        for c in cache:      # a compilation that failed part-way must not leave positions behind
            c.crop(0)
        return prefill(model, window, cache)

    return compiled_or_eager(model, compiled, eager, window, cache)


# ---------------------------------------------------------------------------- compiled steps

_EAGER_ONLY: set[int] = set()   # ids of models whose step could not be compiled: said once


def compiled_or_eager(model, compiled: Callable | None, eager: Callable, *args):
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


def compiled_fns(model, compiled: bool | str) -> tuple[Callable | None, Callable | None]:
    """The compiled step and slide prefill that `compiled` asks for, or (None, None) for eager
    decoding (the frozen ones are checked against the model's current weights)."""
    if not compiled:
        return None, None
    if compiled == "frozen":
        frozen = frozen_copy(model)
        return frozen.step, frozen.prefill
    return _compiled(decode_step), _compiled(prefill)


@functools.cache
def _compiled(fn: Callable) -> Callable:
    # A one-token step is mostly overhead (09a profiles one). `cpp_wrapper` makes Inductor
    # launch the step's kernels from C++ instead of Python; in a side-by-side trial on the 2-core
    # Xeon of the benchmarks appendix it was faster per token than the plain compiled step (its
    # compilation takes longer), and Inductor's `decompose_mm_pass` for one-row products was not.
    # The slide's prefill always has `block_size // 2` tokens: one fixed shape, one graph.
    return torch.compile(fn, fullgraph=True, dynamic=False, options={"cpp_wrapper": True})


# compiled="frozen": Inductor's freezing turns the weights into constants of the compiled code, so it
# can lay them out ahead of time and, with `max_autotune`, time for each matrix product its own
# generated micro-GEMM against MKL's prepacked GEMM and keep the faster. Dynamo reads `freezing`
# while it traces, so these must be global settings during a call that compiles (as torch.compile
# options, freezing did not take effect in torch 2.13); set around every call they cost about a
# sixth of a step here, so `FrozenWeightsFunction` sets them only for inputs of a shape it has not
# seen (should Dynamo recompile for another reason, that graph reads the weights as inputs: slower,
# never stale). The last two keep the autotuner's tables and statistics out of the output.
FREEZING_SETTINGS = {"cpp_wrapper": True, "freezing": True, "max_autotune": True,
                     "max_autotune_gemm_backends": "CPP,ATEN", "autotune_num_choices_displayed": 0,
                     "max_autotune_report_choices_stats": False}


def _shapes(args) -> tuple:
    """What Dynamo's guards check of each tensor among `args` (lists and caches opened): its shape,
    strides, dtype and `requires_grad`. A new combination is a new compilation."""
    tensors = []
    for a in args:
        for item in a if isinstance(a, (list, tuple)) else (a,):
            if isinstance(item, torch.Tensor):
                tensors.append(item)
            elif isinstance(item, StaticKVCache) and item.k_buf is not None:
                tensors += (item.k_buf, item.v_buf)
    return tuple((t.shape, t.stride(), t.dtype, t.requires_grad) for t in tensors)


class FrozenWeightsFunction:
    """`fn` compiled with the weights frozen in, on a fresh copy of its code: Dynamo keeps its
    compiled graphs per code object, so each model (and each version of its weights) gets its own."""

    def __init__(self, fn):
        code_copy = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__,
                                       fn.__defaults__, fn.__closure__)
        code_copy.__kwdefaults__ = fn.__kwdefaults__
        self.compiled = torch.compile(code_copy, fullgraph=True, dynamic=False)
        self.shapes: set = set()     # the inputs' shapes (strides, dtypes) compiled so far

    def __call__(self, *args):
        shapes = _shapes(args)
        if shapes in self.shapes:
            return self.compiled(*args)
        # heavy: a second to import, only to compile
        from torch._inductor import config as inductor_config

        with inductor_config.patch(FREEZING_SETTINGS), warnings.catch_warnings():
            # torch's own autotuning code calls the deprecated `Tensor.storage()`: not the reader's
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            out = self.compiled(*args)
        self.shapes.add(shapes)
        return out


class FrozenCopy(NamedTuple):
    weights: tuple     # (address, version) of every parameter and buffer when it was compiled
    step: Callable
    prefill: Callable


_FROZEN_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> FrozenCopy


def _weights_key(model) -> tuple:
    # In-place updates (an optimizer step, load_state_dict, p.add_) bump a tensor's version;
    # replacing `.data` moves its address. Either means the frozen copy is out of date.
    return tuple((t.data_ptr(), t._version) for t in itertools.chain(model.parameters(), model.buffers()))


def frozen_copy(model) -> FrozenCopy:
    """The model's frozen compiled step and prefill, compiled again when its weights changed."""
    key = _weights_key(model)
    entry = _FROZEN_COPIES.get(model)
    if entry is None or entry.weights != key:
        entry = _FROZEN_COPIES[model] = FrozenCopy(key, FrozenWeightsFunction(decode_step),
                                                   FrozenWeightsFunction(prefill))
    return entry


def explain_decode_step(model, cached: int = 3):
    """What `torch.compile` makes of one `decode_step` of `model` (batch 1, after a prefill of
    `cached` tokens): `torch._dynamo.explain`'s report, with `graph_count`, `graph_break_count`
    and `break_reasons`. Dynamo is reset first so that no earlier compilation answers for it
    (compiled functions recompile on their next call)."""
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.arange(1, cached + 1)[None], cache=cache)
        torch._dynamo.reset()
        return torch._dynamo.explain(decode_step)(model, torch.tensor([[cached + 1]]),
                                                  torch.tensor(cached), cache)
