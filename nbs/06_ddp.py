# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Data parallelism: one model, many processes (DDP)
#
# Chapter 05 pretrained the GPT in one process. When one GPU (or one CPU) is too slow, the
# simplest way to use several is **data parallelism** (数据并行): every process holds a full
# copy of the model, each works on a different slice of the batch, and after the backward
# pass the processes average their gradients so that every copy takes exactly the same
# optimizer step. PyTorch's `DistributedDataParallel` (DDP) does the averaging, overlapped
# with the backward pass; `torchrun` starts the processes, on one machine or many. In this
# chapter we check the arithmetic that makes DDP correct, watch an all-reduce happen, run
# the book's training loop on two processes (and on two simulated machines), prove that two
# ranks with half a batch each end up with the same weights as one process with the whole
# batch, and measure honestly what two processes buy on this laptop-sized machine.
#
# **Learning goals**
#
# - explain why averaging per-rank gradients equals the gradient of the global batch, and when
#   it does not (unequal token counts);
# - know what an all-reduce is, how the ring algorithm does it, and what it costs;
# - launch `course_utils.ddp` with `torchrun`, on one machine and as a simulated two-machine job,
#   and read what each rank prints;
# - verify experimentally that DDP training equals single-process training on the global batch;
# - avoid the classic mistakes: forgetting `set_epoch`, attaching layers to the wrapper,
#   saving on every rank, waiting forever for a dead rank.

# %%
from course_utils import config, plots, timing

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
print(timing.machine_line())   # the training runs below report tokens/s
config.seed_everything(0)

# %% [markdown]
# ## 1. The idea: same weights, different data, averaged gradients
#
# ![One data-parallel step with two ranks](../book/images/ddp.png)
#
# Take a global batch of $B$ windows and $W$ processes (**ranks**, 进程编号 0 to $W-1$). Rank
# $r$ computes the mean loss $L_r$ over its $n_r$ target tokens and its gradient $g_r = \nabla
# L_r$. The loss of the whole batch is the mean over all $N = \sum_r n_r$ tokens:
#
# $$L = \frac{1}{N}\sum_{r}\sum_{i \in r} \ell_i = \sum_r \frac{n_r}{N} L_r
# \quad\Longrightarrow\quad \nabla L = \sum_r \frac{n_r}{N}\, g_r .$$
#
# DDP computes $\frac{1}{W}\sum_r g_r$: a plain average. The two agree exactly when every rank
# has the same number of tokens, $n_r = N/W$. Our batches are windows of `block_size` tokens
# with no padding, and `course_utils.ddp` refuses a batch size that does not split evenly, so
# this holds. (With padded, variable-length examples it does not hold; exercise 06.1 is about
# that case.)
#
# Let us check the identity on the real model before involving any process group: the
# gradient of one batch, against the average of the gradients of its two halves.

# %%
import torch

from course_utils import artifacts
from course_utils.batches import WindowBatches
from course_utils.model import GPT, GPTConfig

vocab = artifacts.news_vocab()
source = WindowBatches(artifacts.news_tokens("train"), profile.batch_size, profile.block_size)
model = GPT(GPTConfig(vocab_size=len(vocab), **profile.model_kwargs())).eval()  # eval: no dropout


def gradient(x, y):
    model.zero_grad()
    _, loss = model(x, y)
    loss.backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


g_global = gradient(*source.get(0))                                    # one process, B windows
g_halves = [gradient(*source.get(0, rank=r, world_size=2)) for r in range(2)]  # B/2 each
g_ddp = (g_halves[0] + g_halves[1]) / 2                                 # what DDP's all-reduce makes
diff = (g_global - g_ddp).abs().max().item()
print(f"{g_global.numel():,} gradient entries; largest |g| = {g_global.abs().max():.2e}")
print(f"max |global-batch gradient - average of half-batch gradients| = {diff:.2e}")
assert diff < 1e-6 * g_global.abs().max().item() + 1e-9

# %% [markdown]
# The difference is at the level of float32 rounding: summing the same numbers in a
# different order. This is the whole correctness argument of DDP; everything else is making
# the averaging fast and the processes agree on who is who.

# %% [markdown]
# ## 2. All-reduce: every rank ends with the sum
#
# The collective operation behind DDP is **all-reduce** (全归约): each rank contributes a
# tensor and every rank receives the element-wise sum (DDP then divides by $W$). Sending all
# gradients to rank 0 and back would make rank 0 a bottleneck that receives $(W-1)$ full
# copies. The **ring all-reduce** avoids it: arrange the ranks in a ring, cut every tensor
# into $W$ chunks, then
#
# 1. *reduce-scatter*, $W-1$ steps: each rank passes one chunk to its right-hand neighbour,
#    which adds it to its own copy of that chunk. Afterwards rank $r$ holds the complete sum of
#    chunk $(r+1) \bmod W$.
# 2. *all-gather*, $W-1$ steps: the finished chunks travel around the ring once more and are
#    copied, until every rank has all of them.
#
# Each rank sends $2(W-1)$ chunks of size $N/W$: about $2N$ values whatever the number of
# ranks, so the ring scales. Here it is, simulated in one process on a list of tensors (one
# per rank):

# %%
def ring_all_reduce(tensors, snapshots=None):
    """Simulate a ring all-reduce over len(tensors) ranks; every rank gets the sum."""
    W = len(tensors)
    chunks = [list(t.clone().tensor_split(W)) for t in tensors]   # chunks[rank][chunk]

    def record():
        if snapshots is not None:
            snapshots.append(torch.stack([torch.cat(c) for c in chunks]))

    for step in range(W - 1):            # reduce-scatter
        sends = [(r, (r - step) % W) for r in range(W)]
        data = [chunks[r][c].clone() for r, c in sends]    # everyone sends at the same time
        for (r, c), d in zip(sends, data, strict=True):
            chunks[(r + 1) % W][c] += d
        record()
    for step in range(W - 1):            # all-gather
        sends = [(r, (r + 1 - step) % W) for r in range(W)]
        data = [chunks[r][c].clone() for r, c in sends]
        for (r, c), d in zip(sends, data, strict=True):
            chunks[(r + 1) % W][c] = d
        record()
    return [torch.cat(c) for c in chunks]


grads = [torch.randn(10) for _ in range(4)]
reduced = ring_all_reduce(grads)
assert all(torch.allclose(t, sum(grads)) for t in reduced)
print("every rank holds the sum:", [round(v, 3) for v in reduced[2][:4].tolist()], "...")

# %% [markdown]
# To watch the algorithm, give each of 4 ranks a tensor of ones, one element per chunk: after
# each step, an entry says how many ranks' contributions that rank's copy of the chunk
# already contains. At the end every entry must be 4.

# %%
import matplotlib.pyplot as plt

W = 4
snapshots = []
ring_all_reduce([torch.ones(W) for _ in range(W)], snapshots)
fig, axes = plt.subplots(1, len(snapshots), figsize=(2.0 * len(snapshots), 2.6))
for k, (ax, snap) in enumerate(zip(axes, snapshots, strict=True)):
    ax.imshow(snap.numpy(), cmap="Greens", vmin=0, vmax=W)
    for (r, c), v in zip(torch.cartesian_prod(torch.arange(W), torch.arange(W)).tolist(),
                         snap.reshape(-1).tolist(), strict=True):
        ax.text(c, r, int(v), ha="center", va="center", fontsize=9,
                color="white" if v > W / 2 else "black")
    phase = "reduce-scatter" if k < W - 1 else "all-gather"
    ax.set_title(f"step {k + 1}\n{phase}", fontsize=9)
    ax.set_xlabel("chunk")
    ax.set_xticks(range(W))
    ax.set_yticks(range(W))
    ax.grid(False)
axes[0].set_ylabel("rank")
fig.suptitle("Ring all-reduce, 4 ranks: contributions held per (rank, chunk)", y=1.04)
plt.show()
assert (snapshots[-1] == W).all()

# %% [markdown]
# Now the real thing. `torch.distributed` needs one process per rank. The quickest way to
# start a few from Python is `torch.multiprocessing.spawn(fn, args, nprocs)`, which calls
# `fn(rank, *args)` in each new process. `course_utils.ddp.all_reduce_demo` joins a Gloo
# process group (Gloo is PyTorch's CPU communication backend; NCCL is the GPU one), gives rank
# $r$ the tensor $[0, 1, 2, 3] + 10r$, and calls `dist.all_reduce`. A spawned process's
# prints do not reach the notebook, so each rank writes what it saw to a small JSON file.

# %%
import json
import tempfile
from pathlib import Path

import torch.multiprocessing as mp

from course_utils import ddp

world = 3
with tempfile.TemporaryDirectory() as tmp:
    mp.spawn(ddp.all_reduce_demo, args=(world, ddp.free_port(), tmp), nprocs=world, join=True)
    seen = [json.loads((Path(tmp) / f"rank{r}.json").read_text()) for r in range(world)]
for s in seen:
    print(f"rank {s['rank']} (pid {s['pid']}): before {s['before']} -> after all_reduce "
          f"{s['sum']} -> divided by {world}: {s['mean']}")

simulated = ring_all_reduce([torch.tensor(s["before"]) for s in seen])
assert all(torch.equal(torch.tensor(s["sum"]), simulated[s["rank"]]) for s in seen)
assert len({s["pid"] for s in seen}) == world  # separate processes, as the text below says
print("the Gloo all-reduce and our ring simulation agree")

# %% [markdown]
# Three separate processes (three pids), one result. Gloo's own algorithm for three ranks
# need not be a ring, but the result is the same sum, which is all DDP relies on.
#
# ## 3. The entry point: `course_utils.ddp`
#
# A DDP program is one script that every rank runs. `python -m course_utils.ddp` does, in order:
#
# 1. reads `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT` from the
#    environment, which `torchrun` sets (started without them, it stops with a one-line
#    error instead of hanging);
# 2. picks its device (`cuda:LOCAL_RANK` with GPUs, else the CPU) and joins the process group
#    with the matching backend (NCCL or Gloo) and a **timeout**, so that a dead rank makes the
#    others fail after a while instead of waiting forever;
# 3. lets rank 0 build the cached token files while the others wait at a **barrier**;
# 4. builds the GPT (the same seed everywhere; DDP also broadcasts rank 0's weights), wraps it
#    in `DistributedDataParallel`, and calls **the book's one training loop**,
#    `course_utils.train.train(model, source, cfg, rank=..., world_size=..., ddp_model=ddp)`.
#    The batch source hands each rank its share of the global batch of each step; evaluation
#    losses are summed over the ranks; only rank 0 logs and writes checkpoints;
# 5. checks that the replicas still hold identical weights, and leaves the process group in
#    a `finally` block.
#
# Here is step 2, the part every DDP program has:

# %%
import inspect

print(inspect.getsource(ddp.init))

# %% [markdown]
# `torchrun` is the launcher installed with PyTorch (it is `python -m torch.distributed.run`).
# Before calling it from shell cells, we make sure the shell finds the `torchrun` of this
# notebook's environment and passes the notebook's profile on. `OMP_NUM_THREADS=1` gives
# each rank one CPU thread; `torchrun` would set the same with a warning, and two ranks with
# two threads each on a two-core machine would only fight over the cores.

# %%
import os
import shutil
import sys

os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
os.environ["COURSE_PROFILE"] = profile.name
os.environ["OMP_NUM_THREADS"] = "1"
demo_steps = {"ci": 6, "cpu": 40, "gpu": 200}[profile.name]
os.environ["DEMO_STEPS"] = str(demo_steps)
os.environ["DEMO_EVAL"] = str(demo_steps // 2)
runs = config.cache_dir() / "ch06_runs"   # git-ignored; emptied at every run of the notebook
shutil.rmtree(runs, ignore_errors=True)
runs.mkdir(parents=True)
os.environ["RUNS"] = str(runs)   # the shell cells below run in this folder
print(f"profile {profile.name}: {demo_steps} steps per demonstration run; outputs in "
      f"<cache>/{runs.relative_to(config.cache_dir())}")

# %% [markdown]
# Two processes on this machine (`--standalone` means: one machine, pick a free port for the
# rendezvous yourself). Every line is printed by one rank and says which.

# %% language="bash"
# cd "$RUNS"
# torchrun --standalone --nproc_per_node=2 -m course_utils.ddp --profile $COURSE_PROFILE \
#     --steps $DEMO_STEPS --eval-interval $DEMO_EVAL --eval-iters 4 --out demo

# %% [markdown]
# Both ranks report in, each with half of the windows of every step; only rank 0 logs the
# losses (of the whole global batch: the ranks' sums are added up); at the end both ranks
# print the same parameter sum, and rank 0 confirms that the replicas differ by exactly 0:
# they started equal and applied the same averaged gradient with the same optimizer. The
# checkpoints are the module's own `state_dict`, so chapter 05's loaders read them unchanged:

# %%
from course_utils.checkpoints import CheckpointManager, model_from_checkpoint

latest = CheckpointManager(runs / "demo").latest()
reloaded, _, ckpt = model_from_checkpoint(latest, vocab=vocab)
print(f"{latest.name}: step {ckpt['step']}, first keys {list(ckpt['model'])[:3]}")
assert not any(k.startswith("module.") for k in ckpt["model"])
assert json.loads((runs / "demo" / "summary.json").read_text())["replica_spread"] == 0  # see above

# %% [markdown]
# Inside the wrapper, though, every parameter's *name* gains a `module.` prefix, which matters
# to any code that picks parameters by name (to freeze some of them, say). A process group of
# one process is enough to see it:

# %%
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)  # a group of one
wrapper = DistributedDataParallel(reloaded)
bare_names = [n for n, _ in reloaded.named_parameters()]
wrapped_names = [n for n, _ in wrapper.named_parameters()]
last = f"blocks.{len(reloaded.blocks) - 1}."      # the last block, as a name prefix
print("bare:", bare_names[-3], "| wrapped:", wrapped_names[-3])
print(f"names starting with {last!r}: {sum(n.startswith(last) for n in bare_names)} bare, "
      f"{sum(n.startswith(last) for n in wrapped_names)} wrapped")
same_tensors = {id(p) for p in wrapper.parameters()} == {id(p) for p in reloaded.parameters()}
print("the wrapper holds the very same parameter tensors:", same_tensors)
assert same_tensors and wrapper.module.blocks[-1] is reloaded.blocks[-1]
dist.destroy_process_group()

# %% [markdown]
# ## 4. Does DDP really equal one big batch? An experiment
#
# The algebra of section 1 says: two ranks with $B/2$ windows each must follow the same
# trajectory as one process with $B$ windows. We train both for $K$ steps from the same seed
# (the one process right here in the notebook, with `ddp.build_run` building exactly what
# each rank builds) and compare every parameter.

# %%
K = {"ci": 6, "cpu": 20, "gpu": 50}[profile.name]
B = profile.batch_size
os.environ.update(EQ_STEPS=str(K), EQ_BATCH=str(B))
print(f"K = {K} steps, global batch B = {B} windows")

# %% language="bash"
# cd "$RUNS"
# torchrun --standalone --nproc_per_node=2 -m course_utils.ddp --profile $COURSE_PROFILE \
#     --steps $EQ_STEPS --batch-size $EQ_BATCH --eval-iters 2 --save-params ddp_params.pt

# %%
from course_utils.train import train

job = ddp.build_run(profile, vocab, artifacts.news_tokens("train"), artifacts.news_tokens("val"),
                    batch_size=B, steps=K, eval_iters=2)
start = {k: v.clone() for k, v in job.model.state_dict().items()}
single = train(job.model, job.train_source, job.cfg, val_source=job.val_source)
one = single.model.state_dict()
two = torch.load(runs / "ddp_params.pt", weights_only=True)

max_diff = max((one[k] - two[k]).abs().max().item() for k in one)
moved = max((one[k] - start[k]).abs().max().item() for k in one)
print(f"after {K} steps: max |1 process (B={B}) - 2 ranks (B/2 each)| = {max_diff:.2e}")
print(f"for scale: training moved some weight by {moved:.2e} from its initial value")
assert max_diff < 1e-4 and moved > 1e-3
config.claim(f"training moved the weights more than 100 times further ({moved:.1e}) than the "
             f"two runs differ ({max_diff:.1e})", moved > 100 * max_diff)

# %% [markdown]
# The two runs agree to about float32 rounding, compounded over $K$ AdamW steps (Adam divides
# by $\sqrt{v}$, so a rounding difference in a tiny gradient can become a slightly larger one
# in an update), while training moved the weights more than a hundred times further (the
# claim above). Two caveats for your own experiments: with dropout, each rank draws its own masks,
# so the trajectories are equally good but no longer identical (the `cpu` profile uses no
# dropout); and with unequal token counts per rank, DDP's plain average is not the global
# mean.
#
# ## 5. Two machines, simulated on one
#
# The course ran DDP across two machines. `torchrun` is started once **per machine**, each
# time with the total number of machines (`--nnodes`), its own index (`--node_rank`) and the
# address of machine 0 (`--master_addr`, `--master_port`), where a small key-value store lets
# the ranks find each other. We can rehearse exactly that here: two `torchrun` launches,
# "node 0" and "node 1", one process each, both pointing at 127.0.0.1. They start in the
# background and we wait for both.

# %% language="bash"
# cd "$RUNS"
# PORT=$(python -c "from course_utils.ddp import free_port; print(free_port())")
# COMMON="--nnodes=2 --nproc_per_node=1 --master_addr=127.0.0.1 --master_port=$PORT"
# ARGS="--profile $COURSE_PROFILE --steps $DEMO_STEPS --eval-interval $DEMO_STEPS --eval-iters 2"
# torchrun $COMMON --node_rank=0 -m course_utils.ddp $ARGS > node0.log 2>&1 &
# NODE0=$!
# torchrun $COMMON --node_rank=1 -m course_utils.ddp $ARGS > node1.log 2>&1 &
# NODE1=$!
# wait $NODE0; STATUS0=$?
# wait $NODE1; STATUS1=$?
# echo "== node 0 (exit $STATUS0) =="; cat node0.log
# echo "== node 1 (exit $STATUS1) =="; cat node1.log
# exit $((STATUS0 + STATUS1))

# %% [markdown]
# Node 0 holds global rank 0, node 1 holds global rank 1, and each has `local_rank 0` (the
# first process on its machine, which on a GPU machine selects `cuda:0`). On a real cluster,
# the same two commands run on two machines, with `--master_addr` set to machine 0's address
# on the network both can reach. What changes:
#
# - **The network interface.** Gloo and NCCL pick an interface by themselves and sometimes pick
#   the wrong one (a Docker bridge, a VPN). Name it: `GLOO_SOCKET_IFNAME=eth0`,
#   `NCCL_SOCKET_IFNAME=eth0` (see `ip addr` for the names).
# - **NCCL's variables.** `NCCL_DEBUG=INFO` prints which transport NCCL chose (InfiniBand,
#   sockets, NVLink between local GPUs); `NCCL_IB_DISABLE=1` forces plain TCP when InfiniBand
#   is missing or misconfigured; `TORCH_NCCL_ASYNC_ERROR_HANDLING` decides what a failed or
#   timed-out collective does: its default, 3, tears the process down without first aborting
#   the NCCL communicators (which can itself hang), and 1 aborts them first (see PyTorch's
#   page on NCCL environment variables; the default changed from 1 to 3 in
#   [pytorch/pytorch#110723](https://github.com/pytorch/pytorch/pull/110723)).
# - **Firewalls and ports.** Machine 0 must accept connections on `--master_port`, and the
#   backends open further ports between all machines; a closed port looks like a hang until
#   the timeout fires. Open the range between the nodes, or run inside one trusted network.
# - **Shared storage.** Every rank reads the training data and, when resuming, the checkpoint:
#   both must be at the same path on every machine (a shared file system, or copies). Rank 0
#   alone writes checkpoints, so write them where you will find them later.
# - **The same code and environment everywhere**: identical versions of PyTorch and of
#   `course_utils`, or the ranks disagree about the model in surprising ways.
#
# ## 6. `mp.spawn` or `torchrun`?
#
# Section 2 started processes with `torch.multiprocessing.spawn`; the course's scripts did the
# same for training. Both work; they differ in who is responsible for what.
#
# | | `mp.spawn(fn, nprocs=N)` | `torchrun ... script.py` |
# |---|---|---|
# | who starts the ranks | your Python program | the launcher, one per machine |
# | `RANK`, `WORLD_SIZE`, `MASTER_*` | you set them (and pick a free port) | set for you |
# | several machines | you compute global ranks yourself | `--nnodes`, `--node_rank` |
# | a rank crashes | the others are terminated | the others are terminated; optional restarts (`--max-restarts`) |
# | the rank function | must be importable (a module, not a notebook cell; a script needs `if __name__ == "__main__":`) | the whole script is the rank |
# | from a notebook | works with an importable function | from a shell cell, as here |
#
# For training, prefer `torchrun`: the same script runs with 1 or 8 processes, on one machine
# or several, and you never write port-picking code.

# %% [markdown]
# ## 7. Is it faster? Measured on this machine
#
# Same model, same global batch, same number of steps, three ways: one process with one
# thread, one process with two threads, and two ranks with one thread each. Each run reports
# the tokens per second of its training loop (rank 0 measures for the job; starting the
# processes is not counted). On a machine shared with other programs the same setup runs at
# different speeds from one run to the next, so one run of each proves nothing. We run
# several **rounds**, interleaved with `timing.time_interleaved` (every round runs each setup
# once, in alternating order, so a slow patch of the machine hits all three), and compare
# the setups *within* each round: two ranks against the faster single process of the same
# round. We call it a speed-up only if every round says so.

# %%
import subprocess

import numpy as np
from tqdm.auto import tqdm

speed_steps = {"ci": 6, "cpu": 15, "gpu": 200}[profile.name]
rounds = {"ci": 2, "cpu": 5, "gpu": 3}[profile.name]
setups = {"1 process, 1 thread": (1, 1), "1 process, 2 threads": (1, 2), "2 ranks, 1 thread each": (2, 1)}
measured = {label: [] for label in setups}  # tokens/s of each round, in round order


def launch(label):
    nproc, threads = setups[label]

    def run():
        out = f"speed_{nproc}x{threads}_{len(measured[label])}"
        cmd = ["torchrun", "--standalone", f"--nproc_per_node={nproc}", "-m", "course_utils.ddp",
               "--profile", profile.name, "--steps", str(speed_steps), "--eval-iters", "1", "--out", out]
        proc = subprocess.run(cmd, cwd=runs, env={**os.environ, "OMP_NUM_THREADS": str(threads)},
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        measured[label].append(json.loads((runs / out / "summary.json").read_text())["tokens_per_s"])
    return run


with tqdm(total=rounds * len(setups), desc="training runs") as bar:
    timing.time_interleaved({label: launch(label) for label in setups}, rounds, warmup=0,
                            on_round=bar.update)
for label, values in measured.items():
    print(f"{label:24s}" + "".join(f"{v:>9,.0f}" for v in values) + "  tokens/s, round by round")
one, two_threads, two_ranks = (np.array(v) for v in measured.values())
ratio_ranks, ratio_threads = two_ranks / np.maximum(one, two_threads), two_threads / one
unsteady = max(v.max() / v.min() - 1 for v in (one, two_threads, two_ranks))

# %%
fig, ax = plt.subplots(figsize=(7, 2.8))
colors = ["#9bbbe0", "#3b78b8", "#c77a1a"]
ax.barh(list(measured), [np.median(v) for v in measured.values()], color=colors, alpha=0.6)
for i, values in enumerate(measured.values()):
    ax.plot(values, [i] * len(values), "k|", ms=14)
    ax.text(max(values) * 1.02, i, f"median {np.median(values):,.0f}", va="center", fontsize=9)
ax.set_xlim(0, 1.3 * max(max(v) for v in measured.values()))
ax.invert_yaxis()
ax.set_xlabel(f"training throughput (tokens / s): bars the median of {rounds} rounds, ticks each round")
ax.set_title(f"profile {profile.name}: {speed_steps} steps, global batch {profile.batch_size}")
plt.show()
verdict = ("faster in every round: a speed-up" if ratio_ranks.min() > 1 else
           "slower in every round: a slow-down" if ratio_ranks.max() < 1 else
           "faster in some rounds and slower in others: no speed-up this measurement supports")
print(f"2 ranks / the faster single process of the round: median x{np.median(ratio_ranks):.2f} "
      f"(rounds x{ratio_ranks.min():.2f} to x{ratio_ranks.max():.2f}); {verdict}")
print(f"1 process, 2 threads / 1 thread: median x{np.median(ratio_threads):.2f} "
      f"(rounds x{ratio_threads.min():.2f} to x{ratio_threads.max():.2f})")
load = timing.load_average()
print(f"the same setup varied by up to {unsteady:.0%} from round to round; load average now "
      f"{'n/a' if load is None else f'{load[0]:.1f}'} on {os.cpu_count()} cores")
config.claim(f"two threads ran short of twice one thread in every round (at most "
             f"x{ratio_threads.max():.2f})", ratio_threads.max() < 2)

# %% [markdown]
# Two ranks can only beat one process if the single process leaves hardware idle. One
# process with two threads uses the second core only inside operations large enough to be
# split (the matrix products, big element-wise operations); Python and the many small
# operations of each step run on one core, which is why two threads fall short of twice one
# thread (the claim above). Two single-threaded ranks each run the whole step on their own
# core, on half of the batch, and pay for it with an all-reduce of every gradient, a second
# copy of the model and optimizer, and their own Python overhead. Which side wins depends on
# the machine and on what else runs on it, and the margin is small enough that a shared
# machine's noise can hide it: so the verdict line above says "a speed-up" (or "a
# slow-down") only when every round agrees, and otherwise that no speed-up is supported; it
# compares unrounded ratios, so a round printed as x1.00 may count on either side. On a busy
# machine (a load average above the number of cores) multi-threaded runs suffer most,
# because one descheduled thread stalls the whole matrix product: a ratio measured there says
# more about the neighbours than about DDP.
#
# DDP pays off when each rank has its own accelerator: on $W$ GPUs each rank computes on
# $B/W$ windows while the gradient buckets of later layers are all-reduced during the backward
# pass of earlier ones, and the throughput grows almost $W$-fold until communication
# (gradients of the whole model, every step) becomes the bottleneck. Only a measurement on
# that hardware can tell you where that point is.

# %% [markdown]
# > **Pitfalls.**
# >
# > - **Forgetting `set_epoch`.** With `DistributedSampler`, call `sampler.set_epoch(epoch)` at
# >   the start of every epoch; the source material did not, so every epoch visited the data in
# >   the same order. Our batch sources draw epoch $e$'s order from the seed $(s, e)$, which is
# >   the same fix built in (exercise 06.2 rebuilds `DistributedSampler`'s order by hand).
# > - **Attaching layers to the wrapper.** The source material put the classification head on the
# >   DDP object (`model.head = ...` after `model = DDP(model)`): the head's parameters are not
# >   registered with DDP, their gradients are never averaged, and the replicas drift apart.
# >   Build the complete module first, then wrap it; reach the module through `ddp.module`
# >   (exercise 06.3), never the other way round.
# > - **Hard-coded parameter names.** The source material froze layers by testing each
# >   parameter's name against `"layers.5"`. Names are a fragile key: the DDP wrapper prefixes
# >   them with `module.` (`torch.compile` with `_orig_mod.`), so an exact or prefix match
# >   written for the bare model (`name.startswith("layers.5.")`) matches nothing under the
# >   wrapper and nothing gets frozen (section 3 counted the matches); a substring test
# >   survives the prefix but matches too much (`"layers.5"` is also in `layers.50.`), and a
# >   renamed or resized model breaks either kind without an error. Select the parameters
# >   from the module's objects instead (`model.blocks[-1].parameters()`, on the unwrapped
# >   model), as chapter 10 does: the wrapper holds the very same tensors.
# > - **Saving on every rank.** $W$ ranks writing the same checkpoint file at once can corrupt
# >   it; only rank 0 saves (the loop does this), and it saves `module.state_dict()`, without the
# >   `module.` prefix, so single-process code can load it.
# > - **Barriers and collectives must be reached by every rank.** An `if rank == 0:` around an
# >   evaluation that all-reduces, or a rank that returns early, leaves the others waiting in the
# >   collective: that is why the process group has a timeout. Use a barrier where ranks must
# >   not run ahead (ours: until rank 0 has built the data files).
# > - **Unequal shards.** DDP averages gradients with equal weights; with different token counts
# >   per rank that is not the global-batch gradient. Keep shards equal, or weight the loss.
# > - **Threads.** $W$ ranks × $T$ threads must not exceed the cores; `OMP_NUM_THREADS` sets $T$.

# %% [markdown]
# ## Exercises
#
# **Exercise 06.1.** Each rank reports its mean loss and its number of target tokens. Write
# `global_mean_loss(rank_means, rank_counts)` returning the mean loss over all tokens of the
# global batch (a float). When is it equal to the plain average of `rank_means`?

# %%
from course_utils.exercises import ch06


def global_mean_loss(rank_means, rank_counts):
    raise NotImplementedError


_ = ch06.check_global_mean_loss(global_mean_loss)


# %% tags=["hide-cell"]
def global_mean_loss(rank_means, rank_counts):
    return float(sum(m * n for m, n in zip(rank_means, rank_counts, strict=True)) / sum(rank_counts))


_ = ch06.check_global_mean_loss(global_mean_loss)


# %% [markdown]
# **Exercise 06.2.** Rebuild `torch.utils.data.DistributedSampler` (with `shuffle=True`,
# `drop_last=False`): `sampler_indices(n, rank, world_size, epoch, seed=0)` returns the
# dataset indices rank `rank` visits in epoch `epoch`. The sampler shuffles with
# `torch.randperm(n, generator=g)` where `g` is seeded with `seed + epoch`, pads the order with
# its own first indices until its length is a multiple of `world_size`, and gives rank `r` every
# `world_size`-th index starting at `r`. The checker compares your order with the real sampler.

# %%
def sampler_indices(n, rank, world_size, epoch, seed=0):
    raise NotImplementedError


_ = ch06.check_sampler_indices(sampler_indices)


# %% tags=["hide-cell"]
import math


def sampler_indices(n, rank, world_size, epoch, seed=0):
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    order = torch.randperm(n, generator=g).tolist()
    total = math.ceil(n / world_size) * world_size
    order += (order * math.ceil(total / n))[: total - n]
    return order[rank:total:world_size]


_ = ch06.check_sampler_indices(sampler_indices)


# %% [markdown]
# **Exercise 06.3.** Write `unwrap(model)` that returns the plain `nn.Module` under any
# number of wrappers: `DistributedDataParallel` keeps it in `.module`, `torch.compile` in
# `._orig_mod`. It is what you attach new layers to and what you save.

# %%
def unwrap(model):
    raise NotImplementedError


_ = ch06.check_unwrap(unwrap)


# %% tags=["hide-cell"]
def unwrap(model):
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = model.module if hasattr(model, "module") else model._orig_mod
    return model


_ = ch06.check_unwrap(unwrap)

# %% [markdown]
# ## Summary
#
# - Data parallelism keeps a full replica of the model per rank; averaging the ranks' gradients
#   with an all-reduce gives exactly the global-batch gradient when the ranks have equal token
#   counts, which we checked on the GPT's gradients and, end to end, on parameters after
#   training ($K$ steps of 2 ranks against one process).
# - The ring all-reduce sends about $2N$ values per rank whatever the number of ranks.
# - `python -m course_utils.ddp` is the torchrun entry point: environment, process group with a
#   timeout, barrier, DDP wrapper, **the same `train` loop as chapter 05**, rank-0 logging and
#   checkpoints, and a clean shutdown. It runs on one machine (`--standalone`) or several
#   (`--nnodes`, `--node_rank`, `--master_addr`), as the simulated two-node run showed.
# - On a CPU, what a second rank brings depends on idle cores and on the load: section 7
#   measured it in interleaved rounds and calls it a speed-up only when every round agrees.
#   DDP pays off when each rank has its own device.
#
# Chapter 07 attacks speed and memory from the other side: fewer bits per number, with mixed
# precision. Its `precision` setting is the same one `python -m course_utils.ddp --precision`
# accepts, so the two combine.
