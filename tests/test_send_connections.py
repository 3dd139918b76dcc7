"""`smtp_connections` holds across every worker: no more SMTP connections open at once, whatever the threads."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from dramatiq.rate_limits.backends import RedisBackend
from sqlalchemy import Engine, select

from newsletter import campaign, database
from newsletter.connections import CONNECTION_IDLE_SECONDS, Slots
from newsletter.models import Delivery, DeliveryStatus
from newsletter.queue import Queue
from newsletter.render import render_issue
from newsletter.sender import Sender
from newsletter.settings import Settings
from tests.conftest import REDIS_URL, require_service
from tests.mailserver import MailSink
from tests.test_crash import add_subscribers, environment
from tests.test_send import add_people, rendered
from tests.test_send_distributed import cleanup_broker

ISSUE = "---\nsubject: Few connections\nslug: few-1\n---\n\n# Few connections\n\nHello.\n"
WORKERS = 2
THREADS_PER_WORKER = 3
SUBSCRIBERS = 150


def wait_until(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def slots() -> Iterator[Slots]:
    """One SMTP connection slot in Redis, under a key of this test's own."""
    require_service("redis")
    key = f"newsletter:test_{uuid.uuid4().hex[:12]}:connections"
    backend = RedisBackend(url=REDIS_URL)
    yield Slots(backend, key, 1, ttl_seconds=30)
    backend.client.delete(f"{key}:0")
    backend.client.close()


@pytest.mark.redis
def test_a_batch_that_finds_every_slot_taken_goes_back_untouched(
    engine: Engine, settings: Settings, smtpd: MailSink, slots: Slots
) -> None:
    config = settings.replace(smtp_host="127.0.0.1", smtp_port=smtpd.port, smtp_connections=1)
    add_people(engine, 4)
    issue_id = campaign.start(engine, rendered(config))
    with database.transaction(engine) as session:
        ids = list(session.scalars(select(Delivery.id).order_by(Delivery.id)))
    holder, waiter = Sender(config, engine, slots=slots), Sender(config, engine, slots=slots)
    assert holder.hold_slot()
    left = waiter.send_deliveries(issue_id, ids)
    assert left.ids == ids and left.ready_at is not None, "the whole batch comes back later"
    with database.transaction(engine) as session:
        rows = session.execute(select(Delivery.status, Delivery.attempts)).all()
    assert rows == [(DeliveryStatus.PENDING, 0)] * 4 and smtpd.received == [], "claimable, no try counted"
    holder.close()  # gives its slot back
    assert waiter.send_deliveries(issue_id, ids).ids == [] and len(smtpd.received) == 4
    assert smtpd.open_connections == 1 and slots.take() is None
    # Idle: the connection is closed and its slot given back, for a thread of any worker to take.
    assert wait_until(lambda: smtpd.open_connections == 0, CONNECTION_IDLE_SECONDS + 3)
    assert wait_until(lambda: (slot := slots.take()) is not None and (slot.give_back() or True), 1)
    waiter.close()


def start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-c",
        "from newsletter.cli import main; main()",
        "worker",
        "--threads",
        str(THREADS_PER_WORKER),
    ]
    return subprocess.Popen(command, env=environment(settings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(120)
def test_workers_never_open_more_than_smtp_connections_together(
    postgres_settings: Settings, postgres_engine: Engine, smtpd: MailSink
) -> None:
    require_service("redis")
    settings = postgres_settings.replace(
        broker_url=REDIS_URL,
        queue_name=f"test_{uuid.uuid4().hex[:12]}",
        smtp_host="127.0.0.1",
        smtp_port=smtpd.port,
        smtp_connections=2,
        batch_size=5,
        lease_seconds=10,
        retry_delay_seconds=0.05,
    )
    add_subscribers(postgres_engine, SUBSCRIBERS)
    workers = [start_worker(settings) for _ in range(WORKERS)]
    try:
        queue = Queue(settings, postgres_engine)
        counts = campaign.send_issue(postgres_engine, queue, render_issue(ISSUE, settings))
        queue.stop()
        assert counts[DeliveryStatus.SENT] == SUBSCRIBERS and counts.remaining == 0
        assert sorted(message.recipient for message in smtpd.received) == sorted(
            f"r{number}@example.com" for number in range(SUBSCRIBERS)
        ), "each once: no batch lost or failed"
        with database.transaction(postgres_engine) as session:
            assert set(session.scalars(select(Delivery.attempts))) == {1}, "waiting for a slot costs no try"
        assert smtpd.peak_connections == settings.smtp_connections, (
            f"{WORKERS} workers of {THREADS_PER_WORKER} threads opened {smtpd.peak_connections} at once"
        )
        assert wait_until(lambda: smtpd.open_connections == 0, CONNECTION_IDLE_SECONDS + 3), "idle ones close"
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            _, errors = worker.communicate(timeout=60)
            assert b"Traceback" not in errors, errors.decode(errors="replace")
        cleanup_broker(settings)
