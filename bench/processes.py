"""What the benchmarks measure of processes: CPU seconds per process kind (Linux /proc), and a py-spy profile."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from sqlalchemy import Engine, text

SAMPLE_SECONDS = 0.25
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU seconds of a process so far, all its threads; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds so far of a process and of its children alive now (`serve --workers` and its processes)."""
    total = cpu_seconds(pid) or 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return total
    return total + sum(tree_cpu_seconds(int(child)) for child in children)


def backend_pids(admin: Engine, database_name: str) -> list[int]:
    """The PostgreSQL backends connected to a bench database."""
    with admin.connect() as connection:
        rows = connection.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = :name"), {"name": database_name}
        )
        return [row[0] for row in rows]


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


class CpuMeter:
    """CPU seconds spent by each kind of process between `start()` and `stop()`.

    Each kind names a function that lists its process ids; a background thread samples them every
    SAMPLE_SECONDS, so a process that appears during the run counts from zero and one that exits counts
    up to its last sample. The sampling thread's own CPU is taken out of this process's figure.
    """

    def __init__(self, kinds: dict[str, Callable[[], Iterable[int]]]) -> None:
        self.kinds = kinds
        self._first: dict[tuple[str, int], float] = {}
        self._last: dict[tuple[str, int], float] = {}
        self._own_overhead = 0.0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)

    def _sample(self, first: bool) -> None:
        for kind, pids in self.kinds.items():
            for pid in pids():
                seconds = cpu_seconds(pid)
                if seconds is None:
                    continue
                self._first.setdefault((kind, pid), seconds if first else 0.0)
                self._last[(kind, pid)] = seconds

    def _run(self) -> None:
        while not self._stopping.wait(SAMPLE_SECONDS):
            self._sample(first=False)
        self._own_overhead = time.thread_time()

    def start(self) -> None:
        self._sample(first=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        """Stop sampling; returns CPU seconds per kind."""
        self._stopping.set()
        self._thread.join()
        self._sample(first=False)
        totals: Counter[str] = Counter({kind: 0.0 for kind in self.kinds})
        for key, last in self._last.items():
            totals[key[0]] += last - self._first[key]
        for kind, pids in self.kinds.items():
            if os.getpid() in pids():
                totals[kind] -= self._own_overhead
        return dict(totals)


def py_spy() -> str | None:
    """The py-spy command beside this interpreter or on PATH (`pip install py-spy`), if any."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profile:
    """py-spy sampling one process from creation until `stop()`: the thread holding the GIL, so the
    figures say where its Python spends CPU rather than where its threads wait."""

    def __init__(self, pid: int, output: Path) -> None:
        command = py_spy()
        if command is None:
            raise SystemExit("--profile needs py-spy: pip install py-spy")
        self.output = output
        self._process = subprocess.Popen(
            [
                command,
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--output",
                str(output),
                "--nonblocking",
                "--gil",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self._process.send_signal(signal.SIGINT)  # py-spy writes its output on an interrupt
        self._process.wait(timeout=60)


def top_functions(collapsed: Path, count: int = 15) -> list[str]:
    """The functions with the most samples in a py-spy raw (collapsed stacks) file: self and inclusive."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        frames = [frame for frame in stack.split(";") if not frame.startswith(("process ", "thread "))]
        total += int(samples)
        if frames:
            own[frames[-1]] += int(samples)
        for frame in set(frames):
            inclusive[frame] += int(samples)
    if not total:
        return ["no samples"]
    lines = [f"{total} samples; by own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(count)]
    lines.append("by inclusive time:")
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(count)]
    return lines
