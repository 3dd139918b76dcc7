"""Benchmark: the desk's subscribers page and the API's list endpoint on a large list.

100,000 subscribers on SQLite and 1,000,000 on PostgreSQL; for each, 200 requests to `/admin/subscribers`
and 200 to `/api/v1/subscribers`, cycling through filters (status, address prefix, domain, tag, sign-up
dates, sort by address) and deep pages (keyset cursors at random rows), sent one after another through
the app in-process (httpx's ASGI transport: the app's own time, no network). Prints p50 and p99 in ms per
endpoint and database. Target: p99 under 200 ms.

    python bench/desk_list.py [--sqlite-rows N] [--postgres-rows N] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import httpx
from sqlalchemy import Engine, create_engine, text

from newsletter import accounts, database, directory
from newsletter.settings import Settings
from subscribers.app import create_app

POSTGRES_ADMIN_URL = os.environ.get("NEWSLETTER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
EDITOR, PASSWORD = "editor@example.org", "bench password 0123"
STATUSES = ("active", "active", "active", "active", "unsubscribed", "bounced", "pending", "complained")
DAYS_SPREAD = 730
TAG_ONE_IN_A_HUNDRED = (
    "INSERT INTO subscriber_tags (subscriber_id, tag) SELECT id, 'vip' FROM subscribers WHERE id % 100 = 0"
)


def populate(engine: Engine, rows: int) -> None:
    """`rows` subscribers over two years, mixed statuses, 1 in 100 tagged; made by SQL, not timed."""
    started = time.monotonic()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(
                text(
                    "INSERT INTO subscribers (email, email_key, name, status, source, bounce_score, attributes, "
                    "created_at) SELECT 'reader' || n || '@' || (ARRAY['example.org','example.net','mail.example'])"
                    "[1 + n % 3], 'reader' || n || '@' || (ARRAY['example.org','example.net','mail.example'])"
                    "[1 + n % 3], 'Reader ' || n, (ARRAY['active','active','active','active','unsubscribed',"
                    "'bounced','pending','complained'])[1 + n % 8], 'import', 0, '{}', "
                    ":now - make_interval(secs => (:rows - n) * :spread) FROM generate_series(1, :rows) AS n"
                ),
                {"rows": rows, "now": now, "spread": DAYS_SPREAD * 86400 / rows},
            )
            connection.execute(text(TAG_ONE_IN_A_HUNDRED))
            connection.execute(text("ANALYZE"))
        else:
            domains = ("example.org", "example.net", "mail.example")
            batch = []
            for n in range(1, rows + 1):
                address = f"reader{n}@{domains[n % 3]}"
                created = now - dt.timedelta(seconds=(rows - n) * DAYS_SPREAD * 86400 / rows)
                batch.append({"email": address, "name": f"Reader {n}", "status": STATUSES[n % 8], "created": created})
                if len(batch) == 10_000 or n == rows:
                    connection.execute(
                        text(
                            "INSERT INTO subscribers (email, email_key, name, status, source, bounce_score, "
                            "attributes, created_at) VALUES (:email, :email, :name, :status, 'import', 0, '{}', "
                            ":created)"
                        ),
                        batch,
                    )
                    batch = []
            connection.execute(text(TAG_ONE_IN_A_HUNDRED))
            connection.execute(text("ANALYZE"))
    print(f"  filled {rows:,} subscribers in {time.monotonic() - started:.1f} s", flush=True)


def queries(rows: int, count: int) -> list[dict[str, str]]:
    """The request mix: filters and deep pages, in a fixed pseudo-random order."""
    chance = random.Random(14)
    today = dt.date.today()
    mix: list[dict[str, str]] = []
    while len(mix) < count:
        deep = chance.randint(rows // 2, rows)
        mix += [
            {},
            {"status": "active"},
            {"status": "complained"},
            {"q": f"reader{chance.randint(1, rows)}"},
            {"q": "Reader 12"},
            {"q": "@example.net", "status": "active"},
            {"tag": "vip"},
            {
                "from": (today - dt.timedelta(days=400)).isoformat(),
                "until": (today - dt.timedelta(days=300)).isoformat(),
            },
            {"after": directory.cursor_at(directory.Sort.NEWEST, deep)},
            {"status": "bounced", "after": directory.cursor_at(directory.Sort.NEWEST, deep)},
            {"sort": "oldest", "after": directory.cursor_at(directory.Sort.OLDEST, deep)},
            {"sort": "email", "after": directory.cursor_at(directory.Sort.EMAIL, deep, f"reader{deep}@example.org")},
        ]
    return mix[:count]


async def timed(
    client: httpx.AsyncClient, path: str, mix: list[dict[str, str]], headers: dict[str, str]
) -> list[float]:
    times = []
    for params in mix:
        started = time.perf_counter()
        answer = await client.get(f"{path}?{urlencode(params)}", headers=headers)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (path, params, answer.status_code, answer.text[:300])
    return times


async def measure(settings: Settings, engine: Engine, rows: int, count: int) -> None:
    with database.transaction(engine) as session:
        accounts.add_account(session, EDITOR, PASSWORD)
        token = accounts.new_token(session, EDITOR)
    app = create_app(settings, engine, enqueue=lambda _id: None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=settings.base_url) as client:
        form = await client.get("/admin/sign-in")
        csrf = form.text.split('name="csrf_token" value="')[1].split('"')[0]
        signed = await client.post("/admin/sign-in", data={"email": EDITOR, "password": PASSWORD, "csrf_token": csrf})
        assert signed.status_code == 303
        mix = queries(rows, count)
        await timed(client, "/admin/subscribers", mix[:10], {})  # warm the caches and the connection pool
        for label, path, headers in (
            ("desk page", "/admin/subscribers", {}),
            ("API list", "/api/v1/subscribers", {"authorization": f"Bearer {token}"}),
        ):
            times = sorted(await timed(client, path, mix, headers))
            p50 = statistics.median(times)
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            print(f"  {label:10} {len(times)} requests: p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  max {times[-1]:6.1f} ms")


@contextmanager
def postgres_url() -> Iterator[str]:
    name = f"newsletter_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(url: str, rows: int, count: int) -> None:
    settings = Settings(database_url=url, secret_key="bench-secret-key-0123456789", base_url="http://bench.invalid")
    engine = database.make_engine(settings)
    database.upgrade(engine)
    populate(engine, rows)
    asyncio.run(measure(settings, engine, rows, count))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sqlite-rows", type=int, default=100_000)
    parser.add_argument("--postgres-rows", type=int, default=1_000_000, help="0 skips PostgreSQL")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory_name:
        print(f"SQLite, {args.sqlite_rows:,} subscribers", flush=True)
        run(f"sqlite:///{Path(directory_name) / 'bench.db'}", args.sqlite_rows, args.requests)
    if args.postgres_rows:
        print(f"PostgreSQL, {args.postgres_rows:,} subscribers", flush=True)
        with postgres_url() as url:
            run(url, args.postgres_rows, args.requests)


if __name__ == "__main__":
    main()
