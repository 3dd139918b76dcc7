"""Benchmark: import a CSV of subscribers into a fresh SQLite database, its time and its peak memory.

Targets on a 2-core machine: 100,000 rows in under 10 s; 1,000,000 rows (a 50 MB file) under 300 MB of
peak resident memory in the importing process, and in each validation process. Each import runs in a
process of its own, so that the peak is the import's alone (not the writing of the file).

    python bench/import_subscribers.py                 # 100,000 then 1,000,000 rows
    python bench/import_subscribers.py --rows N        # one size
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from newsletter import database, roster
from newsletter.listfile import ListFile
from newsletter.models import Event, Subscriber
from newsletter.settings import Settings

DOMAINS = ["gmail.com", "qq.com", "163.com", "outlook.com", "yahoo.com", "example.org", "mail.example.net"]
TIME_TARGET_SECONDS_PER_100K = 10.0
MEMORY_TARGET_MB = 300


def write_csv(path: Path, rows: int) -> None:
    """A list like a real one: mixed-case addresses, names, an extra column, a few duplicates and typos."""
    rng = random.Random(42)
    with path.open("w", encoding="utf-8") as out:
        out.write("email,name,city\n")
        for i in range(rows):
            domain = rng.choice(DOMAINS) if i % 3 else f"company{i % 5000}.com"
            email = f"Reader.{i}@{domain.upper() if i % 11 == 0 else domain}"
            if i % 1000 == 999:
                email = email.replace("@", "")  # a typo: rejected
            out.write(f"{email},读者 {i},City {i % 97}\n")


def run_import(csv_path: Path, db_path: Path) -> dict[str, float]:
    """In a process of its own: validation alone, then the whole import; times and peak memory."""
    with ListFile(csv_path) as listing:
        columns = roster.columns_of(listing.name, listing.header)
        started = time.perf_counter()
        for _chunk in roster._validated(roster._rows(listing.records(), columns)):
            pass
        validation_seconds = time.perf_counter() - started
    settings = Settings(database_url=f"sqlite:///{db_path}")
    engine = database.make_engine(settings)
    database.upgrade(engine)
    started = time.perf_counter()
    with database.transaction(engine) as session:
        report = roster.import_csv(session, csv_path)
    seconds = time.perf_counter() - started
    with database.transaction(engine) as session:
        stored = session.scalar(select(func.count()).select_from(Subscriber)) or 0
        events = session.scalar(select(func.count()).select_from(Event)) or 0
    engine.dispose()
    return {
        "added": report.added,
        "rejected": report.rejected_count,
        "stored": stored,
        "events": events,
        "validation_seconds": validation_seconds,
        "seconds": seconds,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def measure(rows: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        csv_path = Path(directory) / "list.csv"
        write_csv(csv_path, rows)
        size_mb = csv_path.stat().st_size / 1_048_576
        command = [sys.executable, __file__, "--import-only", str(csv_path), str(Path(directory) / "bench.db")]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    result["rows"], result["file_mb"] = rows, size_mb
    return result


def show(result: dict[str, float]) -> None:
    rows, seconds = int(result["rows"]), result["seconds"]
    print(f"rows in file:          {rows:,} ({result['file_mb']:.1f} MB)")
    stored, events = int(result["stored"]), int(result["events"])
    print(f"imported:              {int(result['added']):,} (stored {stored:,}, events {events:,})")
    print(f"rejected:              {int(result['rejected']):,}")
    print(f"validation alone:      {result['validation_seconds']:.2f} s")
    print(f"whole import:          {seconds:.2f} s  ({rows / seconds:,.0f} rows/s)")
    peak, children = result["peak_mb"], result["children_peak_mb"]
    print(f"peak memory:           {peak:.0f} MB importing, {children:.0f} MB per validator")
    if rows >= 100_000:
        met = seconds * 100_000 / rows < TIME_TARGET_SECONDS_PER_100K
        print(f"target (100k < 10 s):  {'met' if met else 'MISSED'}")
    met = max(result["peak_mb"], result["children_peak_mb"]) < MEMORY_TARGET_MB
    print(f"target (< {MEMORY_TARGET_MB} MB):       {'met' if met else 'MISSED'}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--import-only", nargs=2, type=Path, metavar=("CSV", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.import_only:
        print(json.dumps(run_import(*args.import_only)))
        return
    results = [measure(rows) for rows in ([args.rows] if args.rows else [100_000, 1_000_000])]
    for result in results:
        show(result)
    if len(results) == 2:
        small, large = results
        print(f"memory, 1,000,000 rows / 100,000 rows: {large['peak_mb'] / small['peak_mb']:.2f}x (flat is 1.0x)")


if __name__ == "__main__":
    main()
