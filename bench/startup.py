"""How fast the editor's commands answer: `newsletter --help` and `newsletter preview` of each bundled sample.

Each command runs as the editor runs it, a new process in a directory made by `newsletter init`; the
figure is the best wall time of several runs (and the CPU time of that process), with the user cache
(compiled templates and catalogs) as a second run finds it. `--cold` empties that cache before each run.

    python bench/startup.py [--runs 5] [--cold]

Targets: `--help` under 0.3 s, `preview` under 0.6 s (best of 5).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from newsletter.resources import CACHE_DIR_VARIABLE, PACKAGE_DIR

TARGETS = {"--help": 0.3, "preview": 0.6}


def run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one `newsletter` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "from newsletter.cli import main; main()", *args],
        cwd=cwd,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="empty the user cache before each run")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "desk"
        work.mkdir()
        cache = Path(tmp) / "cache"
        env = {**os.environ, CACHE_DIR_VARIABLE: str(cache)}
        run(["init"], work, env)
        commands = [("--help", ["--help"])] + [
            ("preview", ["preview", str(sample), "-o", str(work / "out")])
            for sample in sorted((PACKAGE_DIR / "samples").glob("*.md"))
        ]
        cache_state = "cold" if options.cold else "warm"
        print(f"best of {options.runs} runs, {cache_state} user cache, load {os.getloadavg()[0]:.2f}")
        for kind, args in commands:
            figures = []
            for _ in range(options.runs):
                if options.cold:
                    shutil.rmtree(cache, ignore_errors=True)
                figures.append(run(args, work, env))
            wall, cpu = min(figures)
            name = " ".join(Path(arg).name if "/" in arg else arg for arg in args[:2])
            verdict = "ok" if wall < TARGETS[kind] else "over"
            print(f"newsletter {name:38s} wall {wall:5.2f} s  cpu {cpu:5.2f} s  target {TARGETS[kind]} s: {verdict}")


if __name__ == "__main__":
    main()
