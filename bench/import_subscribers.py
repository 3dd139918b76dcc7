"""Benchmark: import a CSV of N subscribers (default 100,000) into a fresh SQLite database.

Target: 100,000 rows in under 10 s on a 2-core machine. Prints the time of the whole import (read,
validate, de-duplicate, insert, log events, commit) and of its validation step alone.

    python bench/import_subscribers.py [--rows N]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from newsletter import database, roster
from newsletter.models import Event, Subscriber
from newsletter.settings import Settings

DOMAINS = ["gmail.com", "qq.com", "163.com", "outlook.com", "yahoo.com", "example.org", "mail.example.net"]


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
            out.write(f"{email},Reader {i},City {i % 97}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        csv_path = Path(directory) / "list.csv"
        write_csv(csv_path, args.rows)
        settings = Settings(database_url=f"sqlite:///{directory}/bench.db")
        engine = database.make_engine(settings)
        database.upgrade(engine)

        rows = list(roster._read_rows(csv_path, roster.ImportReport()))
        started = time.perf_counter()
        roster._validate(rows)
        validation_seconds = time.perf_counter() - started

        started = time.perf_counter()
        with database.transaction(engine) as session:
            report = roster.import_csv(session, csv_path)
        seconds = time.perf_counter() - started
        with database.transaction(engine) as session:
            stored = session.scalar(select(func.count()).select_from(Subscriber))
            events = session.scalar(select(func.count()).select_from(Event))
        engine.dispose()
    print(f"rows in file:        {args.rows:,}")
    print(f"imported:            {report.added:,} (stored {stored:,}, events {events:,})")
    print(f"rejected:            {len(report.rejected):,}")
    print(f"validation alone:    {validation_seconds:.2f} s")
    print(f"whole import:        {seconds:.2f} s  ({args.rows / seconds:,.0f} rows/s)")
    print(f"target (100k < 10s): {'met' if seconds * 100_000 / args.rows < 10 else 'MISSED'}")


if __name__ == "__main__":
    main()
