"""Run every benchmark in bench/ and write the book's benchmarks appendix.

    python bench/run_all.py                      # profile cpu, writes book/benchmarks.md
    python bench/run_all.py --profile ci --out /tmp/bench.md

Each script prints markdown (its tables and ratios, measured side by side in one run);
this collects them under one page with the machine they ran on. Nothing here asserts a
speed: the numbers are what the machine measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run from a source checkout

import torch  # noqa: E402

from course_utils.files import atomic_write_text  # noqa: E402
from course_utils.timing import cpu_flags, cpu_model, load_average  # noqa: E402


def machine_section(profile: str) -> str:
    mem = ""
    try:
        kib = int(next(x for x in Path("/proc/meminfo").read_text().splitlines()
                       if x.startswith("MemTotal")).split()[1])
        mem = f"{kib / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu_flags().items())
    load = load_average()
    rows = [("date", dt.date.today().isoformat()), ("profile", profile), ("CPU", cpu_model()),
            ("CPU flags", flags), ("cores", str(os.cpu_count())), ("memory", mem), ("GPU", gpu),
            ("load average at the start", "n/a" if load is None else " ".join(f"{x:.2f}" for x in load)),
            ("python", platform.python_version()), ("torch", torch.__version__),
            ("torch threads", str(torch.get_num_threads()))]
    return "| machine | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--profile", default="cpu", choices=["ci", "cpu", "gpu"])
    parser.add_argument("--out", default=str(ROOT / "book" / "benchmarks.md"))
    args = parser.parse_args(argv)

    scripts = sorted(p for p in HERE.glob("*.py")
                     if p.name != Path(__file__).name and not p.name.startswith("_"))
    env = {**os.environ, "COURSE_PROFILE": args.profile}
    sections = []
    for script in scripts:
        print(f"running {script.name} (profile {args.profile}) ...", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script), "--profile", args.profile],
                              capture_output=True, text=True, env=env, cwd=ROOT)
        took = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n", file=sys.stderr)
            print(f"error: {script.name} failed (exit {proc.returncode})", file=sys.stderr)
            return 1
        print(proc.stdout)
        # the script's own headings go one level down, under this page's section for it
        body = "\n".join("#" + line if line.startswith("#") else line
                         for line in proc.stdout.strip().splitlines())
        sections.append(f"## `bench/{script.name}`\n\n{body}\n\n"
                        f"*({took:.0f} s on this machine)*\n")

    page = (
        "# Appendix: benchmarks\n\n"
        "Every ratio on this page was measured side by side in one run of `make bench`\n"
        "(`python bench/run_all.py`), which ran each script in `bench/` on the machine below.\n"
        "The book's performance claims point here. On other hardware the absolute numbers\n"
        "change; rerun `make bench` to measure yours.\n\n"
        + machine_section(args.profile) + "\n" + "\n".join(sections)
    )
    out = Path(args.out)
    atomic_write_text(out, page)  # never a half-written page
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
