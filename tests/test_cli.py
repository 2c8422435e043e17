"""The command lines (course_utils/cli): every command the README lists answers `--help`, through
the documented `python -m course_utils.X` (which hands over to course_utils/cli/X.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[tuple[str, ...]]:
    """The commands of the README's "Command lines" block: `-m course_utils.X` on each line, with
    its subcommand if it has one (`export onnx`)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Command lines", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [tuple(m.group(1).split()) for line in block.splitlines()
            if (m := re.search(r"-m (course_utils\.\w+(?: [a-z]+)?)", line))]


def test_the_readme_lists_every_command_line():
    listed = {command[0].rsplit(".", 1)[1] for command in readme_commands()}
    commands = {p.stem for p in (ROOT / "course_utils" / "cli").glob("*.py") if p.stem != "__init__"}
    assert listed == commands, f"README lists {sorted(listed)}, course_utils/cli has {sorted(commands)}"


@pytest.mark.parametrize("command", readme_commands(), ids=" ".join)
def test_each_command_answers_help(command):
    env = {**os.environ, "COURSE_PROFILE": "ci", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", *command, "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"python -m {command[0]}" in proc.stdout and "--profile" in proc.stdout, proc.stdout
