"""Checkers for chapter 06 (data parallelism with DDP)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DistributedSampler

from . import checker


@checker("Exercise 06.1 (the loss of the global batch)")
def check_global_mean_loss(global_mean_loss) -> None:
    """`global_mean_loss(rank_means, rank_counts) -> float`: the mean over all tokens."""
    cases = [
        ([2.0, 4.0], [100, 100], 3.0),
        ([2.0, 4.0], [300, 100], 2.5),    # unequal shards: a plain average would say 3.0
        ([1.0], [7], 1.0),
        ([1.0, 2.0, 6.0], [1, 1, 2], 3.75),
    ]
    for means, counts, expected in cases:
        got = global_mean_loss(list(means), list(counts))
        assert isinstance(got, float), f"return a float, got {type(got).__name__}"
        hint = (" (you averaged the rank means: weight each by its token count)"
                if abs(got - sum(means) / len(means)) < 1e-9 and abs(expected - got) > 1e-9 else "")
        assert abs(got - expected) < 1e-9, (
            f"global_mean_loss({means}, {counts}) returned {got}, expected {expected}{hint}")


@checker("Exercise 06.2 (DistributedSampler by hand)")
def check_sampler_indices(sampler_indices) -> None:
    """`sampler_indices(n, rank, world_size, epoch, seed=0) -> list[int]`, as
    `DistributedSampler(shuffle=True, drop_last=False)` after `set_epoch(epoch)`."""

    for n, world, seed in [(10, 2, 0), (11, 3, 0), (7, 4, 5), (32, 2, 3)]:
        for epoch in (0, 1, 2):
            for rank in range(world):
                ref = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True,
                                         seed=seed, drop_last=False)
                ref.set_epoch(epoch)
                expected = list(ref)
                got = [int(i) for i in sampler_indices(n, rank, world, epoch, seed)]
                same_as_epoch0 = False
                if epoch:
                    ref.set_epoch(0)
                    same_as_epoch0 = got == list(ref)
                hint = " (the order ignores the epoch: seed the generator with seed + epoch)" \
                    if same_as_epoch0 else ""
                assert got == expected, (
                    f"n={n}, rank={rank}, world_size={world}, epoch={epoch}, seed={seed}: got "
                    f"{got}, DistributedSampler gives {expected}{hint}")


@checker("Exercise 06.3 (unwrap the model)")
def check_unwrap(unwrap) -> None:
    """`unwrap(model)` returns the plain module under DDP and/or torch.compile wrappers."""

    plain = nn.Linear(3, 2)
    assert unwrap(plain) is plain, "a plain module is returned as it is"
    compiled = torch.compile(plain)  # compiles lazily: nothing is compiled here
    assert unwrap(compiled) is plain, "torch.compile keeps the module in `._orig_mod`"
    started_here = False
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if not dist.is_initialized():  # a one-process group, enough to build a DDP wrapper
                store = dist.FileStore(str(Path(tmp) / "store"), 1)
                dist.init_process_group("gloo", store=store, rank=0, world_size=1)
                started_here = True
            wrapped = DDP(plain)
            assert unwrap(wrapped) is plain, "DistributedDataParallel keeps the module in `.module`"
            assert unwrap(torch.compile(wrapped)) is plain, (
                "torch.compile(DDP(model)): unwrap both layers (loop until neither attribute is left)")
            keys = set(unwrap(wrapped).state_dict())
            assert keys == {"weight", "bias"}, f"state_dict keys {keys} still carry a prefix"
        finally:
            if started_here:
                dist.destroy_process_group()
