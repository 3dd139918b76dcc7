"""The ledger's set-based steps, on SQLite and PostgreSQL: deliveries created once, claimed once."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, event, func, select

from newsletter import database, leases, ledger, replies
from newsletter.models import Delivery, DeliveryStatus, Issue, Subscriber, SubscriberStatus
from newsletter.render import render_issue
from newsletter.settings import Settings
from newsletter.smtp import Reply
from newsletter.subscriptions import add_subscriber, unsubscribe

ISSUE = "---\nsubject: Ledger notes\nslug: ledger-1\n---\n\n# Ledger notes\n\nHello.\n"


def check_deliveries_are_created_once_and_claimed_once(engine: Engine, settings: Settings) -> None:
    with database.transaction(engine) as session:
        for number in range(5):
            add_subscriber(session, f"l{number}@example.com")
        add_subscriber(session, "pending@example.com", status=SubscriberStatus.PENDING)
        issue = ledger.store_issue(session, render_issue(ISSUE, settings))
        assert ledger.create_deliveries(session, issue) == 5
        assert ledger.create_deliveries(session, issue) == 0, "unique on issue + subscriber, and NOT EXISTS"
        issue_id = issue.id
    with database.transaction(engine) as session:
        ids = list(ledger.claimable_ids(session, issue_id, settings.lease_seconds))
        first = leases.claim(session, issue_id, ids, settings.lease_seconds)
    with database.transaction(engine) as session:
        second = leases.claim(session, issue_id, ids, settings.lease_seconds)
        assert len(first) == 5 and second == [], "a row under a live lease is nobody else's"
        assert list(ledger.claimable_ids(session, issue_id, settings.lease_seconds)) == []
        again = leases.claim(session, issue_id, ids, lease_seconds=-1)  # the lease ran out
        assert len(again) == 5 and {claim.attempts for claim in again} == {2}
        assert session.scalar(select(func.count()).select_from(Delivery)) == 5
        assert session.scalar(select(Issue.status)) == "sending"
        left = leases.unfinished(session, ids, settings.lease_seconds)
        assert left.ids == sorted(ids) and left.ready_at is not None
        assert ledger.counts(session, issue_id)[DeliveryStatus.SENDING] == 5


def test_deliveries_on_sqlite(engine: Engine, settings: Settings) -> None:
    check_deliveries_are_created_once_and_claimed_once(engine, settings)


@pytest.mark.postgres
def test_deliveries_on_postgres(postgres_engine: Engine, postgres_settings: Settings) -> None:
    check_deliveries_are_created_once_and_claimed_once(postgres_engine, postgres_settings)


def check_a_claim_carries_the_recipient_and_a_group_records_in_one_statement(
    engine: Engine, settings: Settings
) -> None:
    with database.transaction(engine) as session:
        for number in range(4):
            add_subscriber(session, f"g{number}@example.com", name=f"Reader {number}" if number else None)
        issue = ledger.store_issue(session, render_issue(ISSUE, settings))
        ledger.create_deliveries(session, issue)
        issue_id = issue.id
        unsubscribe(session, "g3@example.com")  # left after the deliveries were made
    with database.transaction(engine) as session:
        ids = list(ledger.claimable_ids(session, issue_id, settings.lease_seconds))
        claims = leases.claim(session, issue_id, ids, settings.lease_seconds)
    assert [(claim.email, claim.name, claim.attempts) for claim in claims] == [
        ("g0@example.com", None, 1),
        ("g1@example.com", "Reader 1", 1),
        ("g2@example.com", "Reader 2", 1),
    ]
    replies_given = [Reply(250, "2.0.0 ok"), Reply(451, "4.3.0 try later"), Reply(550, "5.1.1 no such user")]
    results = [
        leases.Result(claim, replies.judge(reply), f"<{claim.delivery_id}@example.org>")
        for claim, reply in zip(claims, replies_given, strict=True)
    ]
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with database.transaction(engine) as session:
        leases.record(session, settings, issue_id, results[:2])
    assert sum(statement.lstrip().upper().startswith("UPDATE DELIVERIES") for statement in statements) == 1
    with database.transaction(engine) as session:
        leases.record(session, settings, issue_id, results[2:])
        leases.record(session, settings, issue_id, results[:1])  # recorded already: no longer `sending`
        rows = session.execute(
            select(Subscriber.email, Delivery.status, Delivery.message_id, Delivery.sent_at, Delivery.next_attempt_at)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .order_by(Delivery.id)
        ).all()
    by_email = {row.email: row for row in rows}
    assert by_email["g0@example.com"].status == DeliveryStatus.SENT and by_email["g0@example.com"].sent_at
    assert by_email["g0@example.com"].message_id == f"<{claims[0].delivery_id}@example.org>"
    assert by_email["g1@example.com"].status == DeliveryStatus.PENDING
    assert by_email["g1@example.com"].next_attempt_at is not None and by_email["g1@example.com"].sent_at is None
    assert by_email["g2@example.com"].status == DeliveryStatus.BOUNCED
    assert by_email["g3@example.com"].status == DeliveryStatus.SKIPPED


def test_claim_and_record_on_sqlite(engine: Engine, settings: Settings) -> None:
    check_a_claim_carries_the_recipient_and_a_group_records_in_one_statement(engine, settings)


@pytest.mark.postgres
def test_claim_and_record_on_postgres(postgres_engine: Engine, postgres_settings: Settings) -> None:
    check_a_claim_carries_the_recipient_and_a_group_records_in_one_statement(postgres_engine, postgres_settings)


def test_counts_since_reads_what_is_not_sent_and_agrees_with_a_full_count(engine: Engine, settings: Settings) -> None:
    with database.transaction(engine) as session:
        for number in range(6):
            add_subscriber(session, f"c{number}@example.com")
        issue = ledger.store_issue(session, render_issue(ISSUE, settings))
        ledger.create_deliveries(session, issue)
        issue_id = issue.id
    with database.transaction(engine) as session:
        total = ledger.counts(session, issue_id).total
        ids = list(ledger.claimable_ids(session, issue_id, settings.lease_seconds))
        claims = leases.claim(session, issue_id, ids[:4], settings.lease_seconds)
        verdicts = [replies.judge(Reply(250, "ok"))] * 3 + [replies.judge(Reply(550, "5.1.1 no such user"))]
        results = [
            leases.Result(claim, verdict, "<m@example.org>") for claim, verdict in zip(claims, verdicts, strict=True)
        ]
        leases.record(session, settings, issue_id, results)
        leases.claim(session, issue_id, ids[4:5], settings.lease_seconds)
    with database.transaction(engine) as session:
        full, since = ledger.counts(session, issue_id), ledger.counts_since(session, issue_id, total)
    assert since == full
    assert (full[DeliveryStatus.SENT], full[DeliveryStatus.BOUNCED], full.remaining) == (3, 1, 2)
