"""Run every chapter in order, as a learner would on a fresh machine, and write the book's
"how long each chapter takes" appendix (book/runtimes.md).

    python tools/time_chapters.py                    # profile cpu, empty cache, all chapters
    python tools/time_chapters.py --profile ci --out /tmp/runtimes.md
    python tools/time_chapters.py --retime book/runtimes.md nbs/05_training.ipynb   # one row again
    python tools/time_chapters.py --keep-notebooks /tmp/executed   # and keep what ran

Each notebook is executed by nbconvert into a temporary folder (the committed notebooks are
not touched) with a fresh, empty COURSE_CACHE, so whatever a chapter needs from an earlier
one (the vocabulary, the pretrained model) is built by that earlier chapter, exactly as on
a student's laptop. The wall time of each chapter is what this machine measured.

`--retime PAGE` runs only the chapters given and replaces their rows in PAGE, an earlier page
of this tool from the same machine, e.g. when another program shared the machine while they
ran; the page says which rows were re-timed, and when. Each runs from an empty cache, or with
`--cache-from DIR` from a copy of DIR: the cache a whole run left (`--keep-cache`), so that a
chapter finds what the chapters before it built, as in the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run_all import machine_section  # noqa: E402

from course_utils.files import atomic_write_text  # noqa: E402


def chapter_title(notebook: Path) -> str:
    """The text of the notebook's first heading, e.g. `05 · Training the GPT`."""
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return notebook.stem


def run_chapter(notebook: Path, out_dir: Path, env: dict, timeout: int) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
           f"--ExecutePreprocessor.timeout={timeout}", "--ExecutePreprocessor.kernel_name=python3",
           "--output-dir", str(out_dir), str(notebook)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=notebook.parent, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = re.sub(r"\x1b\[[0-9;]*m", "", proc.stderr).strip().splitlines()[-1:] or ["no message"]
        return seconds, f"failed: {tail[0][:200]}"  # (without the terminal's colour codes)
    return seconds, "ok"


DEEP_DIVE = re.compile(r"^\d\d[a-z] ·")     # "08a · Going further: ...", under chapter 08


def is_deep_dive(title: str) -> bool:
    return bool(DEEP_DIVE.match(title))


def read_page(page: str) -> tuple[str, list[tuple[str, float, str]], list[str]]:
    """The machine section, the chapter rows (title, seconds, status), deep dives included, and
    the notes of a page this tool wrote."""
    lines = page.splitlines()
    start = lines.index("| machine | |")
    end = lines.index("", start)
    rows, notes = [], []
    for line in lines[lines.index("| chapter | minutes | result |") + 2:]:
        if line.startswith("| **") or line.startswith(("| chapter |", "| deep dive |", "|---")):
            continue
        if line.startswith("| "):
            title, minutes, status = (c.strip() for c in line.strip("|").split("|"))
            rows.append((title, float(minutes) * 60, status))
        elif line.startswith("- "):
            notes.append(line[2:])
    return "\n".join(lines[start:end]) + "\n", rows, notes


def _table(header: str, rows: list, total: str) -> str:
    ran = sum(status == "ok" for _, _, status in rows)
    lines = [f"| {title} | {seconds / 60:.1f} | {status} |" for title, seconds, status in rows]
    return (f"| {header} | minutes | result |\n|---|---:|---|\n" + "\n".join(lines)
            + f"\n| **{total}** | **{sum(r[1] for r in rows) / 60:.1f}** | {ran} of {len(rows)} ran |\n")


def render(profile: str, machine: str, results: list, notes: list[str]) -> str:
    """The page: the machine, one row per chapter (title, minutes, status) and their total, then
    the optional deep dives ("Going further" notebooks) apart with theirs, then the notes."""
    chapters = [r for r in results if not is_deep_dive(r[0])]
    dives = [r for r in results if is_deep_dive(r[0])]
    longest, longest_s, _ = max(chapters or results, key=lambda r: r[1])
    page = (
        "# Appendix: how long each chapter takes\n\n"
        "The chapters below were executed in order by `make runtimes`\n"
        f"(`python tools/time_chapters.py`) under the `{profile}` profile, starting from an empty\n"
        "cache: each chapter built what it needed, as on a student's first run. Times are\n"
        "wall-clock minutes for the whole notebook on the machine below. The longest was\n"
        f"*{longest}* ({longest_s / 60:.0f} minutes); a chapter\n"
        "that reuses a cached model (the pretrained GPT of chapter 05) only loads it.\n\n"
        + machine + "\n" + _table("chapter", chapters, "all chapters")
    )
    if dives:
        page += ("\nThe *Going further* notebooks are optional: a reader runs them by choice, after\n"
                 "their chapter, so they are timed apart (in the same run, after the chapters before them).\n\n"
                 + _table("deep dive", dives, "all deep dives"))
    return page + ("\n" + "\n".join(f"- {n}" for n in notes) + "\n" if notes else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--profile", default="cpu", choices=["ci", "cpu", "gpu"])
    parser.add_argument("--out", help="the page to write (default: book/runtimes.md, or PAGE with --retime)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell at most")
    parser.add_argument("--keep-cache", metavar="DIR",
                        help="use DIR as the (initially empty) cache and keep what the chapters built")
    parser.add_argument("--retime", metavar="PAGE",
                        help="run only the chapters given and replace their rows in PAGE (written by "
                             "this tool on the same machine)")
    parser.add_argument("--reason", default="", help="with --retime: why the rows were re-timed")
    parser.add_argument("--cache-from", metavar="DIR",
                        help="with --retime: start each chapter from a copy of this cache")
    parser.add_argument("--keep-notebooks", metavar="DIR",
                        help="also keep the executed notebooks in DIR (with each cell's start and end "
                             "time in its metadata), e.g. to see which cells take the time")
    parser.add_argument("chapters", nargs="*", help="notebooks to run (default: every chapter)")
    args = parser.parse_args(argv)
    if args.cache_from and not (args.retime and Path(args.cache_from).is_dir()):
        parser.error("--cache-from needs --retime and an existing cache folder")
    if args.retime:
        if not args.chapters:
            parser.error("--retime needs the chapters to run again")
        if not Path(args.retime).is_file():
            parser.error(f"--retime {args.retime}: no such page; run without --retime first")
    out = Path(args.out or args.retime or ROOT / "book" / "runtimes.md")
    notebooks = [Path(c).resolve() for c in args.chapters] or sorted((ROOT / "nbs").glob("[0-9]*.ipynb"))
    missing = [str(n) for n in notebooks if not n.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    if args.keep_cache and Path(args.keep_cache).exists() and any(Path(args.keep_cache).iterdir()):
        parser.error(f"--keep-cache {args.keep_cache}: not empty; the timing starts from an empty cache")
    old = read_page(Path(args.retime).read_text(encoding="utf-8")) if args.retime else None
    if old:
        unknown = sorted({chapter_title(nb) for nb in notebooks} - {title for title, _, _ in old[1]})
        if unknown:
            parser.error(f"--retime: {', '.join(unknown)} not in {args.retime}")

    machine = machine_section(args.profile)  # the load average before the first chapter
    results = []  # (title, seconds, status) per chapter, in order
    with tempfile.TemporaryDirectory(prefix="time_chapters.") as tmp:
        for i, nb in enumerate(notebooks):
            # one empty cache for the whole run, or (re-timing) a new one for each chapter
            cache = args.keep_cache or str(Path(tmp) / (f"cache{i}" if old else "cache"))
            if args.cache_from:
                shutil.copytree(args.cache_from, cache)
            env = {**os.environ, "COURSE_PROFILE": args.profile, "COURSE_CACHE": cache}
            print(f"running {nb.name} (profile {args.profile}) ...", flush=True)
            seconds, status = run_chapter(nb, Path(tmp) / "out", env, args.timeout)
            print(f"  {seconds / 60:.1f} min, {status}", flush=True)
            executed = Path(tmp) / "out" / nb.name
            if args.keep_notebooks and executed.is_file():
                Path(args.keep_notebooks).mkdir(parents=True, exist_ok=True)
                shutil.copy2(executed, Path(args.keep_notebooks) / nb.name)
            results.append((chapter_title(nb), seconds, status))
    notes = []
    if old:
        machine, old_rows, notes = old
        new = {title: (title, seconds, status) for title, seconds, status in results}
        results = [new.get(row[0], row) for row in old_rows]
        start = ("with a copy of the cache the whole run left" if args.cache_from
                 else "from an empty cache")
        notes.append(f"Re-timed on {time.strftime('%Y-%m-%d')}, each {start}: "
                     + ", ".join(t.split(" · ")[0] for t in new)
                     + (f" ({args.reason})" if args.reason else "") + ".")
    atomic_write_text(out, render(args.profile, machine, results, notes))  # never half-written
    print(f"wrote {out}")
    return 0 if all(status == "ok" for _, _, status in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
