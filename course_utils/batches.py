"""From text to batches (chapter 02): torch datasets (the course's padded lines, a packed token
stream, dialogue examples, labelled reviews) and the batch sources the training loop draws from.

Splits are made by document (paragraph, conversation), never by window, so no
validation text is ever seen in training. (The corpora themselves are `course_utils.data`.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .files import atomic_path
from .vocab import PAD, SEP, Vocab


def split_documents(docs: Sequence, val_fraction: float = 0.1, seed: int = 0):
    """Shuffle whole documents deterministically and cut off a validation share."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(docs) < 2:
        raise ValueError(f"need at least two documents to split, got {len(docs)}")
    order = np.random.default_rng(seed).permutation(len(docs))
    n_val = max(1, round(len(docs) * val_fraction))
    val = [docs[i] for i in sorted(order[:n_val])]
    train = [docs[i] for i in sorted(order[n_val:])]
    return train, val


# ------------------------------------------------------------ (a) the course's padded lines


class PaddedLines(Dataset):
    """The course's dataset: each line of `min_len`..`max_len` characters is one example.

    `x` is the line without its last character, `y` the line shifted left by one; both
    are padded with `<pad>` to `max_len - 1`, and the loss ignores `<pad>` targets.
    """

    def __init__(self, lines: Sequence[str], vocab: Vocab, min_len: int = 16, max_len: int = 64):
        if not 2 <= min_len <= max_len:
            raise ValueError(f"need 2 <= min_len <= max_len, got {min_len}, {max_len}")
        self.vocab, self.min_len, self.max_len = vocab, min_len, max_len
        self.lines = [s for s in lines if min_len <= len(s) <= max_len]
        if not self.lines:
            raise ValueError(f"no line has {min_len}..{max_len} characters")
        self.seq_len = max_len - 1

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.vocab.encode(self.lines[i])
        x = torch.full((self.seq_len,), PAD, dtype=torch.long)
        y = torch.full((self.seq_len,), PAD, dtype=torch.long)
        x[: len(ids) - 1] = torch.tensor(ids[:-1])
        y[: len(ids) - 1] = torch.tensor(ids[1:])
        return x, y


# ------------------------------------------------------------ (b) a packed token stream


def pack_documents(docs: Sequence[str], vocab: Vocab) -> np.ndarray:
    """Encode every document and join them with `<sep>` into one uint16 token stream."""
    if len(vocab) > np.iinfo(np.uint16).max:
        raise ValueError(f"a vocabulary of {len(vocab)} tokens does not fit in uint16")
    out: list[int] = []
    for doc in docs:
        out.extend(vocab.encode(doc))
        out.append(SEP)
    return np.asarray(out, dtype=np.uint16)


def save_tokens(tokens: np.ndarray, path: str | Path) -> Path:
    """Write a token stream to a raw uint16 file (atomically) for `np.memmap`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        np.asarray(tokens, dtype=np.uint16).tofile(tmp)
    return path


def load_tokens(path: str | Path) -> np.memmap:
    """Map a uint16 token file into memory without reading it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"token file {path} does not exist")
    if path.stat().st_size % 2:
        raise ValueError(f"{path} has an odd number of bytes: not a uint16 token file")
    return np.memmap(path, dtype=np.uint16, mode="r")


class PackedWindows(Dataset):
    """Random windows of `block_size + 1` tokens from a packed stream.

    Item `i` always gives the same window (its offset is drawn from a generator seeded
    with `(seed, i)`), so runs are reproducible, resumable and split cleanly over ranks.
    """

    def __init__(self, tokens: np.ndarray, block_size: int, num_samples: int, seed: int = 0):
        if len(tokens) <= block_size + 1:
            raise ValueError(
                f"the token stream ({len(tokens)} tokens) is shorter than one window "
                f"({block_size + 1}): use more text or a smaller block_size"
            )
        self.tokens, self.block_size, self.num_samples, self.seed = tokens, block_size, num_samples, seed

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = int(np.random.default_rng((self.seed, i)).integers(len(self.tokens) - self.block_size - 1))
        chunk = torch.from_numpy(self.tokens[start : start + self.block_size + 1].astype(np.int64))
        return chunk[:-1], chunk[1:]


def random_batch(tokens: np.ndarray, batch_size: int, block_size: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """nanoGPT's `get_batch`: `batch_size` random windows as (x, y) tensors."""
    if len(tokens) <= block_size + 1:
        raise ValueError(f"the token stream ({len(tokens)}) is shorter than one window ({block_size + 1})")
    starts = torch.randint(len(tokens) - block_size - 1, (batch_size,), generator=generator)
    chunks = np.stack([tokens[s : s + block_size + 1] for s in starts.tolist()]).astype(np.int64)
    chunks = torch.from_numpy(chunks)
    return chunks[:, :-1], chunks[:, 1:]


# ------------------------------------------------------------ dialogue examples


def encode_dialogue(turns: Sequence[str], vocab: Vocab) -> list[int]:
    """Turns joined by `<sep>`, with a final `<sep>` so the model learns where a turn ends."""
    ids: list[int] = []
    for turn in turns:
        ids.extend(vocab.encode(turn))
        ids.append(SEP)
    return ids


class DialogueExamples(Dataset):
    """One example per reply: the history (cropped from the left) then the reply.

    With `response_only=True` the targets of history tokens are `<pad>`, so the loss is
    taken only on the reply and its closing `<sep>`.
    """

    def __init__(self, dialogues: Sequence[Sequence[str]], vocab: Vocab, block_size: int,
                 response_only: bool = True):
        self.block_size, self.response_only = block_size, response_only
        self.examples: list[tuple[list[int], int]] = []  # (ids, number of history tokens)
        for turns in dialogues:
            for k in range(1, len(turns)):
                history = encode_dialogue(turns[:k], vocab)
                reply = encode_dialogue(turns[k : k + 1], vocab)
                reply = reply[: block_size]  # an over-long reply keeps its beginning
                keep = block_size + 1 - len(reply)
                history = history[-keep:] if keep > 0 else []
                self.examples.append((history + reply, len(history)))
        if not self.examples:
            raise ValueError("no dialogue has two turns: nothing to learn from")

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids, n_history = self.examples[i]
        x = torch.full((self.block_size,), PAD, dtype=torch.long)
        y = torch.full((self.block_size,), PAD, dtype=torch.long)
        seq = torch.tensor(ids)
        x[: len(ids) - 1] = seq[:-1]
        y[: len(ids) - 1] = seq[1:]
        if self.response_only and n_history > 1:
            y[: n_history - 1] = PAD  # targets inside the history are not learned
        return x, y


def non_pad_fraction(batch: torch.Tensor) -> float:
    """The share of tokens in a batch that are not `<pad>` (useful work per batch)."""
    return float((batch != PAD).float().mean())


# ------------------------------------------------------------ labelled texts (Task 2)


class LabeledTexts(Dataset):
    """(ids, label) pairs: each text encoded, cut to `max_len` characters, right-padded."""

    def __init__(self, texts: Sequence[str], labels: Sequence[int], vocab: Vocab, max_len: int):
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.max_len = max_len
        self.ids = [vocab.encode(t)[:max_len] for t in texts]
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        empty = [i for i, ids in enumerate(self.ids) if not ids]
        if empty:
            raise ValueError(f"{len(empty)} texts are empty (first at index {empty[0]})")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.full((self.max_len,), PAD, dtype=torch.long)
        x[: len(self.ids[i])] = torch.tensor(self.ids[i])
        return x, self.labels[i]


# ---------------------------------------------------------------------------- batch sources for the training loop


class WindowBatches:
    """Random windows of a packed token stream; batch `step` is a pure function of `step`."""

    def __init__(self, tokens: np.ndarray, batch_size: int, block_size: int, seed: int = 0):
        if len(tokens) <= block_size + 1:
            raise ValueError(f"the token stream ({len(tokens)} tokens) is shorter than one "
                             f"window ({block_size + 1}): use more text or a smaller block_size")
        self.tokens, self.batch_size, self.block_size, self.seed = tokens, batch_size, block_size, seed

    def get(self, step: int, rank: int = 0, world_size: int = 1):
        starts = np.random.default_rng((self.seed, step)).integers(
            len(self.tokens) - self.block_size - 1, size=self.batch_size)
        starts = np.array_split(starts, world_size)[rank]
        chunks = np.stack([self.tokens[s: s + self.block_size + 1] for s in starts]).astype(np.int64)
        chunks = torch.from_numpy(chunks)
        return chunks[:, :-1], chunks[:, 1:]


class DatasetBatches:
    """Epochs over a map-style dataset of (x, y) pairs, reshuffled every epoch.

    The permutation of epoch `e` is drawn from `(seed, e)`: the same idea as calling
    `DistributedSampler.set_epoch(e)` (which the source material forgot).
    """

    def __init__(self, dataset, batch_size: int, seed: int = 0, shuffle: bool = True):
        if len(dataset) < batch_size:
            raise ValueError(f"the dataset has {len(dataset)} examples, fewer than one batch ({batch_size})")
        self.dataset, self.batch_size, self.seed, self.shuffle = dataset, batch_size, seed, shuffle
        self.steps_per_epoch = len(dataset) // batch_size  # the last partial batch is dropped

    def indices(self, step: int) -> np.ndarray:
        epoch, i = divmod(step, self.steps_per_epoch)
        n = len(self.dataset)
        order = np.random.default_rng((self.seed, epoch)).permutation(n) if self.shuffle else np.arange(n)
        return order[i * self.batch_size: (i + 1) * self.batch_size]

    def get(self, step: int, rank: int = 0, world_size: int = 1):
        idx = np.array_split(self.indices(step), world_size)[rank]
        xs, ys = zip(*(self.dataset[int(j)] for j in idx), strict=True)
        return torch.stack(xs), torch.stack(ys)
