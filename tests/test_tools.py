"""tools/: time_chapters.py runs notebooks from an empty cache and writes the runtimes page;
browser_models.py counts what a model costs per token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script, tiny_gpt

TOOL = Path(__file__).resolve().parent.parent / "tools" / "time_chapters.py"
BROWSER_MODELS = Path(__file__).resolve().parent.parent / "tools" / "browser_models.py"


def _load():
    return load_script(TOOL, "time_chapters")


def _notebook(path: Path, title: str, code: str) -> Path:
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": [f"# {title}\n", "Some text."]},
                    {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                     "source": [code]}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


def test_times_each_notebook_and_writes_the_page(tmp_path):
    tool = _load()
    ok = _notebook(tmp_path / "01_ok.ipynb", "01 · Fine", "import os\nprint(os.environ['COURSE_CACHE'])")
    bad = _notebook(tmp_path / "02_bad.ipynb", "02 · Broken", "raise ValueError('boom')")
    out = tmp_path / "runtimes.md"
    assert tool.main(["--profile", "ci", "--out", str(out), str(ok), str(bad)]) == 1  # one failed
    page = out.read_text(encoding="utf-8")
    assert "| 01 · Fine |" in page and "| ok |" in page
    assert "| 02 · Broken |" in page and "failed" in page
    assert "1 of 2 ran" in page and "| profile | ci |" in page
    assert not list(tmp_path.glob(".runtimes.md.*"))  # no temporary file left behind
    assert ok.read_text(encoding="utf-8").count('"outputs": []') == 1  # the notebook is untouched


def test_keep_notebooks_keeps_what_ran_with_cell_times(tmp_path):
    tool = _load()
    ok = _notebook(tmp_path / "01_ok.ipynb", "01 · Fine", "print('ran here')")
    kept = tmp_path / "kept"
    assert tool.main(["--profile", "ci", "--out", str(tmp_path / "r.md"), "--keep-notebooks",
                      str(kept), str(ok)]) == 0
    cell = json.loads((kept / "01_ok.ipynb").read_text(encoding="utf-8"))["cells"][1]
    assert "ran here" in "".join(cell["outputs"][0]["text"])    # a string or a list of lines
    assert "shell.execute_reply" in cell["metadata"]["execution"]


def test_a_missing_notebook_is_a_clear_error(tmp_path, capsys):
    tool = _load()
    with pytest.raises(SystemExit):
        tool.main(["--out", str(tmp_path / "x.md"), str(tmp_path / "nope.ipynb")])
    assert "no such notebook" in capsys.readouterr().err


def test_retime_replaces_only_the_rows_run_again(tmp_path):
    tool = _load()
    a = _notebook(tmp_path / "01_a.ipynb", "01 · A", "x = 1")
    b = _notebook(tmp_path / "02_b.ipynb", "02 · B", "raise ValueError('boom')")
    page = tmp_path / "runtimes.md"
    assert tool.main(["--profile", "ci", "--out", str(page), str(a), str(b)]) == 1
    cache = tmp_path / "left"
    cache.mkdir()
    (cache / "built_before.txt").write_text("x")
    _notebook(b, "02 · B", "import os\nassert os.path.exists(os.path.join(os.environ['COURSE_CACHE'], "
                           "'built_before.txt'))")
    assert tool.main(["--profile", "ci", "--retime", str(page), "--reason", "a test",
                      "--cache-from", str(cache), str(b)]) == 0
    text = page.read_text(encoding="utf-8")
    assert "| 01 · A |" in text and "| 02 · B |" in text and "failed" not in text
    assert "2 of 2 ran" in text and "Re-timed on " in text and ": 02 (a test)." in text
    machine, rows, notes = tool.read_page(text)
    assert [r[0] for r in rows] == ["01 · A", "02 · B"] and len(notes) == 1
    assert machine.startswith("| machine | |") and "| profile | ci |" in machine
    with pytest.raises(SystemExit):                                  # a chapter the page lacks
        tool.main(["--profile", "ci", "--retime", str(page),
                   str(_notebook(tmp_path / "03_c.ipynb", "03 · C", "z = 3"))])


def test_macs_per_token_counts_the_matrices():
    cfg = tiny_gpt(40, 16).config
    d, f = cfg.d_model, cfg.d_ff
    assert load_script(BROWSER_MODELS, "browser_models").macs_per_token(cfg, context=0) == cfg.n_layers * (4 * d * d + 2 * d * f) + 40 * d


def test_deep_dives_are_timed_apart_and_read_back():
    tool = _load()
    machine = "| machine | |\n|---|---|\n| cores | 2 |\n"
    results = [("05 · Training", 420.0, "ok"), ("05a · Going further: packed or padded", 120.0, "ok"),
               ("06 · DDP", 60.0, "ok")]
    page = tool.render("cpu", machine, results, ["a note"])
    assert "| **all chapters** | **8.0** | 2 of 2 ran |" in page
    assert "| **all deep dives** | **2.0** | 1 of 1 ran |" in page
    assert page.index("| 06 · DDP |") < page.index("| deep dive |") < page.index("| 05a · Going further")
    _, rows, notes = tool.read_page(page)
    assert rows == [results[0], results[2], results[1]] and notes == ["a note"]   # chapters first
