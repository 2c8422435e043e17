"""Writing a file whole or not at all: a crash mid-write never leaves a half-written file.

Everything the book saves (vocabularies, token streams, checkpoints, exported models) goes
through `atomic_path`: write to a temporary file beside the target, then rename it into place.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp"):
    """A temporary file next to `path` to write to; when the block succeeds it becomes `path`
    (an ordinary 0644 file, by one rename), when it fails it is removed: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a saved file is an ordinary one
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: never half-written."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
