"""Keep committed notebooks small: drop widget state, execution timings and huge outputs.

Usage: python -m course_utils.nbclean NOTEBOOK.ipynb [...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
MAX_TEXT = 20_000  # characters of text output kept per cell


def clean(nb) -> None:
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            data.pop(WIDGET_MIME, None)
            if out.get("output_type") == "stream" and len(out.get("text", "")) > MAX_TEXT:
                out["text"] = out["text"][:MAX_TEXT] + "\n[... output truncated ...]\n"


def main(argv: list[str] | None = None) -> int:
    paths = argv if argv is not None else sys.argv[1:]
    if not paths:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    for p in paths:
        nb = nbformat.read(p, as_version=4)
        clean(nb)
        tmp = Path(p).with_suffix(".ipynb.tmp")
        nbformat.write(nb, tmp)
        tmp.replace(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
