"""The key ingest paths on PostgreSQL, where readers of several mailboxes really do run at the same time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from newsletter import database
from newsletter.inbound import Verdict, apply_kept
from newsletter.mailboxes import ingest_committed
from newsletter.models import Event, Subscriber, SubscriberStatus, UnrecognizedMessage
from newsletter.settings import Settings
from newsletter.tally import Tally
from tests.inbound_mail import Sent, arf, dsn, failed, make_sent, more_verps

pytestmark = pytest.mark.postgres
THREADS = 4


@pytest.fixture
def pg_session(postgres_engine: Engine) -> Iterator[Session]:
    """A session on a fresh PostgreSQL database; the test commits what it wants kept."""
    with database.make_sessionmaker(postgres_engine)() as session:
        yield session


@pytest.fixture
def sent(pg_session: Session, postgres_settings: Settings) -> Sent:
    """Three subscribers, each with a delivery of one issue, committed for other connections to see."""
    sent = make_sent(pg_session, postgres_settings)
    pg_session.commit()
    return sent


def status_of(engine: Engine, email: str) -> tuple[str, float]:
    with database.transaction(engine) as session:
        subscriber = session.scalars(select(Subscriber).where(Subscriber.email_key == email)).one()
        return subscriber.status, subscriber.bounce_score


def count_events(engine: Engine, kind: str) -> int:
    with database.transaction(engine) as session:
        return session.scalar(select(func.count()).select_from(Event).where(Event.kind == kind)) or 0


def mailbox_full(to: str, rcpt: str, number: int) -> bytes:
    """A soft bounce: the MTA gave up on a full mailbox (RFC 3463 4.2.2), which may empty."""
    return dsn(
        to,
        [failed(rcpt, "4.2.2", "smtp; 452 4.2.2 mailbox full", "failed")],
        message_id=f"<full.{number}@mx.example.com>",
    )


def apply_committed(engine: Engine, settings: Settings, kept_id: int) -> Tally:
    with database.transaction(engine) as session:
        return apply_kept(session, settings, kept_id)


def at_once(work: Callable[[int], Tally], threads: int = THREADS) -> list[Tally | BaseException]:
    """Run `work(n)` on `threads` threads released together; what each returned or raised."""
    start = threading.Barrier(threads)
    results: list[Tally | BaseException] = [RuntimeError("not run")] * threads

    def run(number: int) -> None:
        start.wait()
        try:
            results[number] = work(number)
        except BaseException as error:  # noqa: BLE001 - the test asserts that nothing escaped
            results[number] = error

    workers = [threading.Thread(target=run, args=(number,)) for number in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    return results


def test_hard_bounce_with_verp(postgres_engine: Engine, sent: Sent) -> None:
    raw = dsn(sent.verp("ann@example.com"), [failed("ann@example.com")])
    result = ingest_committed(postgres_engine, sent.settings, raw, "stdin")
    assert (result.verdict, result.recorded, result.suppressed) == (Verdict.BOUNCE, 1, 1)
    assert status_of(postgres_engine, "ann@example.com")[0] == SubscriberStatus.BOUNCED
    assert status_of(postgres_engine, "bob@example.net")[0] == SubscriberStatus.ACTIVE


def test_soft_bounces_accumulate_to_the_threshold(postgres_engine: Engine, pg_session: Session, sent: Sent) -> None:
    verps = more_verps(pg_session, sent, "cho@example.com", 3)
    pg_session.commit()
    for number, verp in enumerate(verps):  # three deliveries, same Date: no decay between them
        result = ingest_committed(postgres_engine, sent.settings, mailbox_full(verp, "cho@example.com", number), "x")
        assert (result.verdict, result.recorded) == (Verdict.BOUNCE, 1)
        if number < 2:
            assert status_of(postgres_engine, "cho@example.com") == (SubscriberStatus.ACTIVE, pytest.approx(number + 1))
    assert status_of(postgres_engine, "cho@example.com") == (SubscriberStatus.BOUNCED, pytest.approx(3.0))


def test_arf_complaint(postgres_engine: Engine, sent: Sent) -> None:
    raw = arf("fbl@example.org", original_mail_from=sent.verp("bob@example.net"), rcpt_to="redacted@example.com")
    result = ingest_committed(postgres_engine, sent.settings, raw, "imap")
    assert (result.verdict, result.suppressed) == (Verdict.COMPLAINT, 1)
    assert status_of(postgres_engine, "bob@example.net")[0] == SubscriberStatus.COMPLAINED


def test_the_same_message_twice_is_recorded_once(postgres_engine: Engine, sent: Sent) -> None:
    raw = mailbox_full(sent.verp("cho@example.com"), "cho@example.com", 1)
    first = ingest_committed(postgres_engine, sent.settings, raw, "stdin")
    second = ingest_committed(postgres_engine, sent.settings, b"Received: from relay by mx\r\n" + raw, "imap")
    assert (first.recorded, second.recorded, second.duplicates) == (1, 0, 1)
    assert status_of(postgres_engine, "cho@example.com")[1] == pytest.approx(1.0)
    assert count_events(postgres_engine, "soft_bounce") == 1


@pytest.mark.parametrize("kind", ["hard", "soft", "complaint", "unrecognized"])
def test_concurrent_ingests_of_one_message_record_it_once(postgres_engine: Engine, sent: Sent, kind: str) -> None:
    raw = {
        "hard": dsn(sent.verp("ann@example.com"), [failed("ann@example.com")]),
        "soft": mailbox_full(sent.verp("cho@example.com"), "cho@example.com", 1),
        "complaint": arf("fbl@example.org", original_mail_from=sent.verp("bob@example.net")),
        "unrecognized": b"From: reader@example.com\r\nTo: bounces@example.org\r\nSubject: thanks!\r\n\r\nHi.\r\n",
    }[kind]
    for _round in range(3):  # the race is not certain in one round; three make a miss unlikely
        results = at_once(lambda number: ingest_committed(postgres_engine, sent.settings, raw, f"reader{number}"))
        assert not [result for result in results if isinstance(result, BaseException)], results
    if kind == "unrecognized":
        with database.transaction(postgres_engine) as session:
            recorded = session.scalar(select(func.count()).select_from(UnrecognizedMessage)) or 0
    else:
        recorded = count_events(
            postgres_engine, {"hard": "hard_bounce", "soft": "soft_bounce", "complaint": "complaint"}[kind]
        )
    assert recorded == 1
    assert count_events(postgres_engine, "status") == (0 if kind in ("soft", "unrecognized") else 1)


def test_concurrent_soft_bounces_of_different_messages_all_count(
    postgres_engine: Engine, pg_session: Session, sent: Sent
) -> None:
    verps = more_verps(pg_session, sent, "cho@example.com", THREADS)
    pg_session.commit()
    results = at_once(
        lambda number: ingest_committed(
            postgres_engine, sent.settings, mailbox_full(verps[number], "cho@example.com", number), f"r{number}"
        )
    )
    assert [result.recorded for result in results if isinstance(result, Tally)] == [1] * THREADS
    assert status_of(postgres_engine, "cho@example.com") == (SubscriberStatus.BOUNCED, pytest.approx(THREADS))
    assert count_events(postgres_engine, "status") == 1


def test_reports_naming_the_same_subscribers_in_opposite_orders_never_deadlock(
    postgres_engine: Engine, sent: Sent
) -> None:
    addresses = ["ann@example.com", "bob@example.net", "cho@example.com"]
    for round_number in range(4):
        reports = [
            dsn(
                "bounces@example.org",
                [
                    failed(address, "4.2.2", "smtp; 452 mailbox full", "failed")
                    for address in (addresses if number % 2 else addresses[::-1])
                ],
                message_id=f"<multi.{round_number}.{number}@mx.example.com>",
            )
            for number in range(THREADS)
        ]
        # Reports without our token are kept; applied by hand, each locks the readers it names.
        for report in reports:
            assert ingest_committed(postgres_engine, sent.settings, report, "x").verdict == Verdict.UNVERIFIED
        with database.transaction(postgres_engine) as session:
            kept = list(session.scalars(select(UnrecognizedMessage.id).order_by(UnrecognizedMessage.id)))[-THREADS:]
        results = at_once(lambda number, kept=kept: apply_committed(postgres_engine, sent.settings, kept[number]))
        assert not [result for result in results if isinstance(result, BaseException)], results
    assert count_events(postgres_engine, "soft_bounce") == 4 * THREADS * len(addresses)
