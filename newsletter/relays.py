"""A relay that refused our session, kept in the database so every process sees it (the desk's dashboard
names it for a send that `newsletter send` or a worker runs), one row per relay however often it refuses."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import and_, case, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from newsletter.models import RELAY_MAX_CHARS, REPLY_MAX_CHARS, RelayRefusal, utcnow
from newsletter.settings import Settings


@dataclass(frozen=True)
class Refusal:
    """What the dashboard says about one relay."""

    relay: str
    reply: str
    first_at: dt.datetime
    last_at: dt.datetime
    attempts: int
    cleared_at: dt.datetime | None  # None while it still refuses


def relay_of(settings: Settings) -> str:
    return f"{settings.smtp_host}:{settings.smtp_port}"[:RELAY_MAX_CHARS]


def record_refusal(session: Session, relay: str, reply: str, at: dt.datetime | None = None) -> None:
    """Note that `relay` refused our session: a new row, or one more attempt on the open one with this reply.

    A different reply, or a refusal after the relay took a message again, starts the count afresh.
    """
    now = at or utcnow()
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(RelayRefusal).values(
        relay=relay[:RELAY_MAX_CHARS], reply=reply[:REPLY_MAX_CHARS], first_at=now, last_at=now, attempts=1
    )
    # One statement, so two processes refused at the same moment add up instead of colliding on the key.
    same = and_(RelayRefusal.cleared_at.is_(None), RelayRefusal.reply == statement.excluded.reply)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[RelayRefusal.relay],
            set_={
                "reply": statement.excluded.reply,
                "first_at": case((same, RelayRefusal.first_at), else_=statement.excluded.first_at),
                "last_at": statement.excluded.last_at,
                "attempts": case((same, RelayRefusal.attempts + 1), else_=1),
                "cleared_at": None,
            },
        )
    )


def record_accepted(session: Session, at: dt.datetime | None = None) -> None:
    """A message went out: every refusal still open is past (the editor fixed the setup, or moved relay)."""
    session.execute(update(RelayRefusal).where(RelayRefusal.cleared_at.is_(None)).values(cleared_at=at or utcnow()))


def refusals(session: Session, cleared_since: dt.datetime) -> list[Refusal]:
    """The refusals still open, and those cleared since `cleared_since`, the latest first."""
    query = (
        select(RelayRefusal)
        .where(or_(RelayRefusal.cleared_at.is_(None), RelayRefusal.cleared_at >= cleared_since))
        .order_by(RelayRefusal.last_at.desc())
    )
    return [
        Refusal(row.relay, row.reply, row.first_at, row.last_at, row.attempts, row.cleared_at)
        for row in session.scalars(query)
    ]
