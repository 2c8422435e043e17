"""The character vocabulary: `<pad>`, `<unk>`, `<sep>` at 0, 1, 2, then sorted characters.

Sorting makes ids identical in every process (iterating a `set` does not: string
hashing is randomised per process), so a saved checkpoint always matches its vocab.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from .files import atomic_write_text

PAD, UNK, SEP = 0, 1, 2
PAD_TOKEN, UNK_TOKEN, SEP_TOKEN = "<pad>", "<unk>", "<sep>"
SPECIALS = (PAD_TOKEN, UNK_TOKEN, SEP_TOKEN)
_SPECIAL_RE = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")


class VocabError(ValueError):
    """A vocabulary file is malformed."""


class Vocab:
    """A character-level vocabulary with three special tokens."""

    def __init__(self, token2idx: dict[str, int]):
        self.token2idx = _validate(token2idx)
        self.idx2token = [""] * len(self.token2idx)
        for tok, i in self.token2idx.items():
            self.idx2token[i] = tok

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 1) -> Vocab:
        """Specials first, then every character seen at least `min_freq` times, sorted."""
        if min_freq < 1:
            raise ValueError(f"min_freq must be at least 1, got {min_freq}")
        if isinstance(texts, str):
            texts = [texts]
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(text)
        chars = sorted(c for c, n in counts.items() if n >= min_freq)
        tokens = list(SPECIALS) + [c for c in chars if c not in SPECIALS]
        vocab = cls({tok: i for i, tok in enumerate(tokens)})
        vocab.counts = counts
        return vocab

    def __len__(self) -> int:
        return len(self.idx2token)

    def __contains__(self, token: str) -> bool:
        return token in self.token2idx

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.token2idx == other.token2idx

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, specials={SPECIALS})"

    def encode(self, text: str) -> list[int]:
        """Characters to ids; unknown characters become `<unk>`; `<sep>` etc. stay one token."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        get = self.token2idx.get
        ids: list[int] = []
        for piece in _SPECIAL_RE.split(text):
            if piece in self.token2idx and piece in SPECIALS:
                ids.append(self.token2idx[piece])
            else:
                ids.extend(get(c, UNK) for c in piece)
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """Ids to text. With `skip_special`, `<pad>` is dropped and `<sep>`/`<unk>` too."""
        n = len(self.idx2token)
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < n:
                raise ValueError(f"token id {i} is outside this vocabulary (0..{n - 1})")
            if skip_special and i < len(SPECIALS):
                continue
            out.append(self.idx2token[i])
        return "".join(out)

    def save(self, path: str | Path) -> None:
        """Write the `token2idx` mapping as JSON (atomically)."""
        atomic_write_text(path, json.dumps(self.token2idx, ensure_ascii=False, indent=0))

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file {path} does not exist")
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise VocabError(f"{path} is not a JSON vocabulary file ({err})") from None
        try:
            return cls(mapping)
        except VocabError as err:
            raise VocabError(f"{path}: {err}") from None


def _validate(mapping) -> dict[str, int]:
    if not isinstance(mapping, dict):
        raise VocabError(f"a vocabulary is a JSON object token -> id, got {type(mapping).__name__}")
    for tok, i in mapping.items():
        if not isinstance(tok, str) or not tok:
            raise VocabError(f"token {tok!r} is not a non-empty string")
        if isinstance(i, bool) or not isinstance(i, int):
            raise VocabError(f"the id of token {tok!r} is {i!r}, not an integer")
    for expected, tok in enumerate(SPECIALS):
        if tok not in mapping:
            raise VocabError(f"special token {tok} is missing (it must have id {expected})")
        if mapping[tok] != expected:
            raise VocabError(f"special token {tok} has id {mapping[tok]}, expected {expected}")
    seen: dict[int, str] = {}
    for tok, i in mapping.items():
        if i in seen:
            raise VocabError(f"tokens {seen[i]!r} and {tok!r} share the id {i}")
        seen[i] = tok
    if sorted(seen) != list(range(len(seen))):
        missing = sorted(set(range(len(seen))) - set(seen))[:5]
        unexpected = sorted(set(seen) - set(range(len(seen))))[:5]
        raise VocabError(f"ids must run 0..{len(seen) - 1} without gaps; missing {missing}, "
                         f"unexpected {unexpected}")
    return dict(mapping)
