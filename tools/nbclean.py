"""Keep committed notebooks small: drop widget state, execution timings and huge outputs.

Usage: python tools/nbclean.py NOTEBOOK.ipynb [...]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
MAX_TEXT = 20_000  # characters of text output kept per cell
# a tqdm bar's text fallback, e.g. "training:   0%|          | 0/2500 [00:00<?, ?step/s]"
TQDM_TEXT = re.compile(r"\d+%\|.*\|\s*\d+/\d*|\|\s*\d+/\?|\[\d\d:\d\d<")


def _is_frozen_progress_bar(out) -> bool:
    """A display of a widget (tqdm.auto's bar): stored, it shows only its first state."""
    if out.get("output_type") != "display_data":
        return False
    data = out.get("data", {})
    if WIDGET_MIME in data:
        return True
    return set(data) == {"text/plain"} and bool(TQDM_TEXT.search("".join(data["text/plain"])))


def clean(nb) -> None:
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if "outputs" not in cell:
            continue
        cell["outputs"] = [out for out in cell["outputs"] if not _is_frozen_progress_bar(out)]
        for out in cell["outputs"]:
            out.get("data", {}).pop(WIDGET_MIME, None)
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
