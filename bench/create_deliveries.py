"""Benchmark: create the delivery rows of one issue for N active subscribers on PostgreSQL (default 1,000,000).

`newsletter send` stores the issue and creates one `pending` delivery per active subscriber with one
set-based INSERT ... SELECT, never loading the list into memory. Target on a 2-core machine: 1,000,000
subscribers in under 60 s. Also times streaming the unfinished delivery IDs out in queue batches (what
`send` enqueues next) and reports the peak memory of this process, which must not grow with N.

    python bench/create_deliveries.py [--subscribers N] [--segment]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import uuid

from sqlalchemy import create_engine, text

from newsletter import campaign, database, ledger
from newsletter.demo import SAMPLE_ISSUE
from newsletter.render import render_issue_file
from newsletter.segments import Segment
from newsletter.settings import Settings

POSTGRES_ADMIN_URL = os.environ.get("NEWSLETTER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def populate(engine_url: str, count: int) -> None:
    """N active subscribers, made by the database itself (generate_series): the setup is not what is timed."""
    engine = create_engine(engine_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO subscribers (email, email_key, status, source, bounce_score, attributes, created_at) "
                "SELECT 'reader' || n || '@example.org', 'reader' || n || '@example.org', 'active', 'import', 0, "
                "'{}', now() FROM generate_series(1, :count) AS n"
            ),
            {"count": count},
        )
        connection.execute(text("ANALYZE subscribers"))
    engine.dispose()


def tag_some(engine_url: str) -> None:
    """Half the list tagged `ai`, every tenth reader also `old`: the segment `--tag ai --exclude-tag old`."""
    engine = create_engine(engine_url)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO subscriber_tags (subscriber_id, tag) SELECT id, 'ai' FROM subscribers WHERE id % 2 = 0")
        )
        connection.execute(
            text("INSERT INTO subscriber_tags (subscriber_id, tag) SELECT id, 'old' FROM subscribers WHERE id % 10 = 0")
        )
        connection.execute(text("ANALYZE subscriber_tags"))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument(
        "--segment", action="store_true", help="Send to `--tag ai --exclude-tag old` (40%% of the list)."
    )
    args = parser.parse_args()
    segment = Segment(tags=("ai",), exclude_tags=("old",)) if args.segment else Segment()
    name = f"newsletter_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        settings = Settings(
            database_url=url, secret_key="bench", from_address="editor@example.org", postal_address="1 Example Street"
        )
        engine = database.make_engine(settings)
        database.upgrade(engine)
        populate(url, args.subscribers)
        if args.segment:
            tag_some(url)
        rendered = render_issue_file(SAMPLE_ISSUE, settings, subject="bench")

        started = time.perf_counter()
        issue_id = campaign.start(engine, rendered, segment=segment)
        create_seconds = time.perf_counter() - started

        started = time.perf_counter()
        batches = rows = 0
        with database.make_sessionmaker(engine)() as session:
            batch: list[int] = []
            for delivery_id in ledger.claimable_ids(session, issue_id, settings.lease_seconds):
                batch.append(delivery_id)
                if len(batch) == settings.batch_size:
                    batches, rows, batch = batches + 1, rows + len(batch), []
            batches, rows = batches + (1 if batch else 0), rows + len(batch)
        stream_seconds = time.perf_counter() - started
        with database.transaction(engine) as session:
            total = ledger.counts(session, issue_id).total
        engine.dispose()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"subscribers:                 {args.subscribers:,}")
    print(f"audience:                    {segment.describe()}")
    print(f"delivery rows created:       {total:,}")
    print(f"store issue + INSERT SELECT: {create_seconds:.1f} s  ({total / create_seconds:,.0f} rows/s)")
    print(f"stream IDs into batches:     {stream_seconds:.1f} s  ({batches:,} batches of {settings.batch_size})")
    print(f"peak memory of this process: {peak_mb:.0f} MB")
    target = create_seconds * 1_000_000 / args.subscribers < 60
    print(f"target (1,000,000 < 60 s):   {'met' if target else 'MISSED'}")


if __name__ == "__main__":
    main()
