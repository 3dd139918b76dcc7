"""Fixed-window counters that hold back floods: sign-ups per client IP and per address."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from newsletter.models import Throttle, utcnow

# Rows older than this are swept on every hit: longer than the longest window anyone counts in.
RETENTION_SECONDS = 2 * 24 * 3600
KEY_MAC_HEX_CHARS = 32


def throttle_key(secret_key: str, kind: str, value: str) -> str:
    """The stored key for a client IP or an address: an HMAC, so the table holds no personal data."""
    mac = hmac.new(secret_key.encode(), f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
    return f"{kind}:{mac[:KEY_MAC_HEX_CHARS]}"


def window_start(now: dt.datetime, window_seconds: int) -> dt.datetime:
    """The start of the fixed window of `window_seconds` that holds `now`."""
    seconds = int(now.timestamp()) // window_seconds * window_seconds
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def hit(session: Session, key: str, window_seconds: int, now: dt.datetime | None = None) -> int:
    """Count one hit on `key` in the current window; returns the hits of this window, this one included.

    One atomic upsert, so concurrent requests never lose a count (SQLite and PostgreSQL alike).
    """
    now = now or utcnow()
    start = window_start(now, window_seconds)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    upsert = (
        insert(Throttle)
        .values(key=key, window_start=start, hits=1)
        .on_conflict_do_update(index_elements=[Throttle.key, Throttle.window_start], set_={"hits": Throttle.hits + 1})
    )
    hits = session.execute(upsert.returning(Throttle.hits)).scalar_one()
    session.execute(delete(Throttle).where(Throttle.window_start < now - dt.timedelta(seconds=RETENTION_SECONDS)))
    return int(hits)


def hits(session: Session, key: str, window_seconds: int, now: dt.datetime | None = None) -> int:
    """The hits on `key` in the current window, without counting one."""
    start = window_start(now or utcnow(), window_seconds)
    found = session.scalar(select(Throttle.hits).where(Throttle.key == key, Throttle.window_start == start))
    return int(found or 0)
