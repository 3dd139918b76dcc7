"""The ledger's set-based steps, on SQLite and PostgreSQL: deliveries created once, claimed once."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select

from newsletter import database, leases, ledger
from newsletter.models import Delivery, DeliveryStatus, Issue, SubscriberStatus
from newsletter.render import render_issue
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber

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
        assert left.delivery_ids == sorted(ids) and left.ready_at is not None
        assert ledger.counts(session, issue_id)[DeliveryStatus.SENDING] == 5


def test_deliveries_on_sqlite(engine: Engine, settings: Settings) -> None:
    check_deliveries_are_created_once_and_claimed_once(engine, settings)


@pytest.mark.postgres
def test_deliveries_on_postgres(postgres_engine: Engine, postgres_settings: Settings) -> None:
    check_deliveries_are_created_once_and_claimed_once(postgres_engine, postgres_settings)
