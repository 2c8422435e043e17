"""House rules for the chapters: pairs in sync, every notebook in _toc.yml in order, small files."""

from __future__ import annotations

import json
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"
NOTEBOOKS = sorted(NBS.glob("[0-9][0-9]_*.ipynb"))
SCRIPTS = sorted(NBS.glob("[0-9][0-9]_*.py"))


def _cells(path: Path):
    return [(c.cell_type, c.source.strip()) for c in jupytext.read(path).cells]


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in nbs/"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_pair_in_sync(nb: Path):
    py = nb.with_suffix(".py")
    assert py.exists(), f"{nb.name} has no paired {py.name}: run `make sync`"
    assert _cells(nb) == _cells(py), f"{nb.name} and {py.name} differ: run `make sync`"


@pytest.mark.parametrize("py", SCRIPTS, ids=lambda p: p.name)
def test_every_script_has_a_notebook(py: Path):
    assert py.with_suffix(".ipynb").exists(), f"{py.name} has no paired .ipynb: run `make sync`"


def _toc_files(node) -> list[str]:
    files = []
    if isinstance(node, dict):
        if "file" in node:
            files.append(node["file"])
        for value in node.values():
            files += _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            files += _toc_files(item)
    return files


def test_toc_lists_every_notebook_in_order():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    listed = [f for f in _toc_files(toc) if f.startswith("nbs/")]
    expected = [f"nbs/{nb.stem}" for nb in NOTEBOOKS]
    assert listed == expected


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_small_and_clean(nb: Path):
    assert nb.stat().st_size < 1_000_000, f"{nb.name} is {nb.stat().st_size} bytes: keep outputs small"
    raw = json.loads(nb.read_text(encoding="utf-8"))
    assert "widgets" not in raw.get("metadata", {}), f"{nb.name} stores widget state: run nbclean"
    code = [c for c in raw["cells"] if c["cell_type"] == "code"]
    assert any(c.get("outputs") for c in code), f"{nb.name} has no outputs: run `make execute`"
    text = []
    for c in code:
        for out in c.get("outputs", []):
            assert out.get("output_type") != "error", f"{nb.name} has a stored error output"
            text.append("".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", "")))
    assert "profile=cpu" in "\n".join(text), (
        f"{nb.name}: committed outputs must come from a `cpu`-profile run (make execute)"
    )
