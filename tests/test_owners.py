"""Leases of a dead process of this machine are taken at once; a live owner's, or another machine's, are waited out."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence

import pytest
from sqlalchemy import Engine, select, update

from newsletter import database, leases, ledger, outbox, owners
from newsletter.models import Delivery, DeliveryStatus, OutboundMessage
from newsletter.owners import Owner
from newsletter.render import render_issue
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber

ISSUE = "---\nsubject: Owners\nslug: owners-1\n---\n\n# Owners\n\nHello.\n"
LEASE_SECONDS = 600.0  # never runs out in a test: only the owner's death frees a row


def spawn() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


@pytest.fixture
def live() -> Iterator[str]:
    """The owner name of a process of this machine that runs until the test ends."""
    process = spawn()
    name = owners.of(process.pid)
    assert name is not None
    yield name
    process.kill()
    process.wait()


@pytest.fixture
def gone() -> str:
    """The owner name of a process of this machine that was killed (and reaped)."""
    process = spawn()
    name = owners.of(process.pid)
    process.kill()
    process.wait()
    assert name is not None
    return name


def elsewhere(name: str) -> str:
    """The same owner named by another host: its pid means nothing here."""
    owner = Owner.parse(name)
    assert owner is not None
    return str(dataclasses.replace(owner, host="another-host"))


def test_this_process_names_itself_and_is_alive() -> None:
    name = owners.this_process()
    assert name is not None
    owner = Owner.parse(name)
    assert owner is not None and owner.pid == os.getpid()
    assert owners.dead([name]) == []


def test_a_killed_process_is_dead_and_a_running_one_is_not(live: str, gone: str) -> None:
    assert owners.dead([live, gone]) == [gone]


def test_a_pid_given_to_another_process_is_not_its_old_owner() -> None:
    name = owners.this_process()
    owner = Owner.parse(name or "")
    assert owner is not None
    reused = str(dataclasses.replace(owner, started=owner.started - 1))  # our pid, an earlier process's start
    assert owners.dead([reused]) == [reused]


def test_another_machine_or_boot_is_never_judged(gone: str) -> None:
    owner = Owner.parse(gone)
    assert owner is not None
    other_boot = str(dataclasses.replace(owner, boot="00000000-0000-0000-0000-000000000000"))
    other_pids = str(dataclasses.replace(owner, namespace="1"))
    assert owners.dead([elsewhere(gone), other_boot, other_pids, "unreadable", None]) == []


def claimed_deliveries(engine: Engine, settings: Settings, holders: list[str]) -> list[int]:
    """Deliveries of one issue, one per holder, claimed and then named as that holder's."""
    with database.transaction(engine) as session:
        for number in range(len(holders)):
            add_subscriber(session, f"o{number}@example.com")
        issue = ledger.store_issue(session, render_issue(ISSUE, settings))
        ledger.create_deliveries(session, issue)
        ids = list(ledger.claimable_ids(session, issue.id, LEASE_SECONDS))
        claims = leases.claim(session, issue.id, ids, LEASE_SECONDS)
        assert len(claims) == len(holders)
        for delivery_id, holder in zip(ids, holders, strict=True):
            session.execute(update(Delivery).where(Delivery.id == delivery_id).values(claimed_by=holder))
    return ids


def test_a_claim_names_its_owner(any_engine: Engine, settings: Settings) -> None:
    with database.transaction(any_engine) as session:
        add_subscriber(session, "me@example.com")
        issue = ledger.store_issue(session, render_issue(ISSUE, settings))
        ledger.create_deliveries(session, issue)
        [claim] = leases.claim(session, issue.id, list(ledger.claimable_ids(session, issue.id, 60)), 60)
        assert session.scalar(select(Delivery.claimed_by)) == owners.this_process()


def test_only_the_rows_of_a_dead_owner_of_this_machine_are_given_back(
    any_engine: Engine, settings: Settings, live: str, gone: str
) -> None:
    ids = claimed_deliveries(any_engine, settings, [live, gone, elsewhere(gone)])
    with database.transaction(any_engine) as session:
        issue_id = session.scalar(select(Delivery.issue_id))
        assert issue_id is not None
        assert leases.release_orphans(session, Delivery, Delivery.issue_id == issue_id) == [ids[1]]
        [again] = leases.claim(session, issue_id, ids, LEASE_SECONDS)
        assert again.delivery_id == ids[1] and again.attempts == 2, "the dead owner's try stays counted"
        assert leases.release_orphans(session, Delivery) == [], "a row is given back once"
        statuses = dict(session.execute(select(Delivery.id, Delivery.status)).all())
    assert set(statuses.values()) == {DeliveryStatus.SENDING}, "the live and the far owners keep theirs"


def test_a_one_off_message_of_a_dead_owner_is_requeued_at_once(any_engine: Engine, live: str, gone: str) -> None:
    held = {}
    with database.transaction(any_engine) as session:
        for holder in (live, gone, elsewhere(gone)):
            outbound_id = outbox.store_message(session, "confirmation", "b@example.org", "r@example.com", b"Hi.\r\n")
            assert outbox.claim_messages(session.connection(), [outbound_id], LEASE_SECONDS) != []
            session.execute(update(OutboundMessage).where(OutboundMessage.id == outbound_id).values(claimed_by=holder))
            held[holder] = outbound_id
    queued: dict[int, dt.datetime | None] = {}

    def enqueue(outbound_ids: Sequence[int], at: dt.datetime | None) -> None:
        queued.update(dict.fromkeys(outbound_ids, at))

    assert outbox.requeue_unsent(any_engine, LEASE_SECONDS, enqueue) == 3
    assert queued[held[gone]] is None, "now, not when its lease runs out"
    assert queued[held[live]] is not None and queued[held[elsewhere(gone)]] is not None
