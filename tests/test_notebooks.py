"""House rules for the chapters: pairs in sync, every notebook in _toc.yml in order, small files."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"
# chapters NN_topic, and their optional deep dives ("Going further") NNa_topic, NNb_topic, ...
NOTEBOOKS = sorted(NBS.glob("[0-9][0-9]*_*.ipynb"))
SCRIPTS = sorted(NBS.glob("[0-9][0-9]*_*.py"))


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


# ---------------------------------------------------------------------------- house rules

MAX_CELL_LINES = 40
EXERCISE = re.compile(r"\*\*Exercise\b[^*]*\*\*")
EXERCISE_TITLE = re.compile(r"\*\*Exercise (\d\d[a-z]?)\.(\d+)(?: \([^)]+\))?\.?\*\*")


def _code_cells(py: Path):
    return [c.source for c in jupytext.read(py).cells if c.cell_type == "code"]


@pytest.mark.parametrize("py", SCRIPTS, ids=lambda p: p.name)
def test_code_cells_are_short(py: Path):
    long = [(src.splitlines()[0][:60], len(src.splitlines())) for src in _code_cells(py)
            if len(src.splitlines()) > MAX_CELL_LINES]
    assert not long, f"{py.name}: code cells over {MAX_CELL_LINES} lines (split them): {long}"


def _exercises(py: Path):
    """(number k, title text, the cells up to the next exercise) for every exercise heading."""
    cells = jupytext.read(py).cells
    found = []
    for i, cell in enumerate(cells):
        if cell.cell_type != "markdown":
            continue
        for m in EXERCISE.finditer(cell.source):
            found.append((i, m.group(0)))
    out = []
    for j, (i, title) in enumerate(found):
        end = found[j + 1][0] if j + 1 < len(found) else len(cells)
        out.append((title, cells[i:end] if end > i else cells[i:i + 1]))
    return out


@pytest.mark.parametrize("py", SCRIPTS, ids=lambda p: p.name)
def test_exercise_titles_are_numbered(py: Path):
    chapter = py.name.split("_")[0]          # "08", or "08a" for a deep dive of chapter 08
    titles = [title for title, _ in _exercises(py)]
    bad = [t for t in titles if not EXERCISE_TITLE.fullmatch(t)
           or EXERCISE_TITLE.fullmatch(t).group(1) != chapter]
    assert not bad, f"{py.name}: exercise headings not of the form **Exercise {chapter}.k (what).**: {bad}"
    numbers = [int(EXERCISE_TITLE.fullmatch(t).group(2)) for t in titles]
    assert numbers == list(range(1, len(numbers) + 1)), f"{py.name}: exercises numbered {numbers}"


@pytest.mark.parametrize("py", SCRIPTS, ids=lambda p: p.name)
def test_every_exercise_has_a_checker(py: Path):
    """Each exercise is followed by a cell calling its checker, or is an open project whose
    reference answer is tested in tests/ (a test named test_open_project_NN_k)."""
    tests = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("test_*.py"))
    missing = []
    for title, cells in _exercises(py):
        m = EXERCISE_TITLE.fullmatch(title)
        if m is None:
            continue
        checked = any(c.cell_type == "code" and re.search(rf"\bch{m.group(1)}\.check_\w+\(", c.source)
                      for c in cells)
        open_project = "Open project" in cells[0].source and (
            f"test_open_project_{m.group(1)}_{m.group(2)}" in tests)
        if not (checked or open_project):
            missing.append(title)
    assert not missing, f"{py.name}: exercises with no checker and no tested reference answer: {missing}"


@pytest.mark.parametrize("py", SCRIPTS, ids=lambda p: p.name)
def test_checker_results_are_not_echoed(py: Path):
    """`_ = chNN.check_x(answer)`: a bare call as a cell's last line would echo True/False."""
    echoed = []
    for src in _code_cells(py):
        lines = [ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!"))]
        try:
            tree = ast.parse("\n".join(lines))
        except SyntaxError:
            continue
        for node in tree.body:
            if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                    and isinstance(node.value.func, ast.Attribute)
                    and node.value.func.attr.startswith("check_")):
                echoed.append(ast.unparse(node)[:60])
    assert not echoed, f"{py.name}: assign checker calls to `_` (`_ = ch.check_x(...)`): {echoed}"


# ---------------------------------------------------------------------------- a main path, deep dives

MAIN_PATH_LINES, DEEP_DIVE_LINES = 650, 500


def _is_deep_dive(py: Path) -> bool:
    return not py.name.split("_")[0].isdigit()          # NNa_topic: a deep dive of chapter NN


@pytest.mark.parametrize("py", SCRIPTS, ids=lambda p: p.name)
def test_a_main_path_reads_in_one_sitting(py: Path):
    lines = len(py.read_text(encoding="utf-8").splitlines())
    limit = DEEP_DIVE_LINES if _is_deep_dive(py) else MAIN_PATH_LINES
    assert lines <= limit, (f"{py.name} has {lines} lines (at most {limit}): move engineering to a "
                            "Going further notebook")


@pytest.mark.parametrize("py", SCRIPTS, ids=lambda p: p.name)
def test_claims_read_as_prose_and_the_machine_is_printed_once(py: Path):
    text = py.read_text(encoding="utf-8")
    assert 'profile.name != "ci"' not in text, f"{py.name}: state claims with config.claim"
    assert text.count("machine_line()") <= 1, f"{py.name}: print the machine line once, in the setup cell"


@pytest.mark.parametrize("py", [p for p in SCRIPTS if not _is_deep_dive(p) and p.name[:2] != "00"],
                         ids=lambda p: p.name)
def test_every_chapter_has_a_diagram(py: Path):
    figures = re.findall(r"!\[[^\]]+\]\(\.\./book/images/([a-z0-9_]+\.png)\)", py.read_text(encoding="utf-8"))
    assert figures, f"{py.name} shows no diagram from book/images/"
    for name in figures:
        assert (ROOT / "book" / "images" / name).is_file(), f"{py.name}: book/images/{name} is missing"
        assert (ROOT / "book" / "images" / f"make_{name[:-4]}.py").is_file(), f"{name} has no script"


def test_every_deep_dive_follows_its_chapter():
    chapters = {p.name.split("_")[0] for p in SCRIPTS if not _is_deep_dive(p)}
    for py in filter(_is_deep_dive, SCRIPTS):
        assert py.name[:2] in chapters, f"{py.name} is the deep dive of no chapter"
        first = jupytext.read(py).cells[0].source.splitlines()[0]
        assert first.startswith(f"# {py.name.split('_')[0]} · Going further"), f"{py.name}: title {first!r}"
