"""Worker processes killed with SIGKILL mid-send, then resumed: everyone gets the issue, duplicates stay
within the documented window (ledger.py) and carry the first copy's Message-ID. An embedded `send` killed
so is resumed at once: the rows it held are taken back without waiting out their lease."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select

from newsletter import campaign, database, leases, ledger
from newsletter.models import Delivery, DeliveryStatus, Subscriber, SubscriberStatus, utcnow
from newsletter.queue import Queue
from newsletter.render import render_issue
from newsletter.settings import Settings
from tests.mailserver import MailSink
from tests.test_send_distributed import BACKENDS, distributed_settings  # noqa: F401  (the fixture)

SUBSCRIBERS = 5_000
WORKERS = 2
THREADS_PER_WORKER = 2
KILLS = 4
EMBEDDED_SUBSCRIBERS = 600
ISSUE = "---\nsubject: Crash-proof notes\nslug: crash-1\n---\n\n# Crash-proof notes\n\nShort on purpose.\n"


def environment(settings: Settings) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("NEWSLETTER_")}
    for field in dataclasses.fields(settings):
        env[f"NEWSLETTER_{field.name.upper()}"] = str(getattr(settings, field.name))
    return env


def start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-c",
        "from newsletter.cli import main; main()",
        "worker",
        "--threads",
        str(THREADS_PER_WORKER),
    ]
    return subprocess.Popen(command, env=environment(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def workers(distributed_settings: Settings) -> Iterator[list[subprocess.Popen[bytes]]]:  # noqa: F811
    processes = [start_worker(distributed_settings) for _ in range(WORKERS)]
    yield processes
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def add_subscribers(engine: Engine, count: int) -> None:
    now = utcnow()
    rows = [
        {
            "email": f"r{number}@example.com",
            "email_key": f"r{number}@example.com",
            "status": SubscriberStatus.ACTIVE,
            "source": "import",
            "bounce_score": 0.0,
            "attributes": {},
            "created_at": now,
            "confirmed_at": now,
        }
        for number in range(count)
    ]
    with database.transaction(engine) as session:
        session.execute(insert(Subscriber), rows)


@pytest.mark.timeout(240)
def test_sigkilled_workers_lose_nothing_and_duplicate_within_the_window(
    distributed_settings: Settings,  # noqa: F811
    postgres_engine: Engine,
    smtpd: MailSink,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    settings = distributed_settings.replace(batch_size=50)  # enqueueing only; the workers need not know
    engine = postgres_engine
    add_subscribers(engine, SUBSCRIBERS)
    issue = render_issue(ISSUE, settings)
    queue = Queue(settings, engine)
    issue_id = campaign.start(engine, issue)
    queue.enqueue_unfinished(issue_id)
    chance = random.Random()
    kills = 0
    while kills < KILLS:
        time.sleep(chance.uniform(0.5, 1.5))
        with database.transaction(engine) as session:
            if ledger.counts(session, issue_id).remaining < SUBSCRIBERS // 10:
                break  # leave work for the resume
        victim = chance.randrange(len(workers))
        workers[victim].send_signal(signal.SIGKILL)
        workers[victim].wait()
        kills += 1
        workers[victim] = start_worker(settings)
    assert kills >= 2, "the workers finished before they could be killed twice: raise SUBSCRIBERS"

    resumed_at = time.monotonic()
    counts = campaign.send_issue(engine, queue, issue)  # resume: re-enqueue what is unfinished, follow
    print(f"\nresume took {time.monotonic() - resumed_at:.1f} s")
    queue.stop()

    assert counts[DeliveryStatus.SENT] == SUBSCRIBERS and counts.remaining == 0
    copies: dict[str, list[str]] = defaultdict(list)
    for message in smtpd.received:
        copies[message.recipient].append(message.header("Message-ID"))
    assert len(copies) == SUBSCRIBERS, "every subscriber received the issue at least once"
    duplicates = sum(len(ids) - 1 for ids in copies.values())
    window = kills * THREADS_PER_WORKER * leases.GROUP_SIZE
    assert duplicates <= window, f"{duplicates} duplicates, more than the window of {window}"
    assert all(len(set(ids)) == 1 for ids in copies.values()), "a second copy has the first one's Message-ID"
    with database.transaction(engine) as session:
        rows = session.execute(
            select(Subscriber.email, Delivery.message_id).join(Delivery, Delivery.subscriber_id == Subscriber.id)
        )
        recorded = {email: message_id for email, message_id in rows}
    assert all(recorded[address] == ids[0] for address, ids in copies.items())
    print(f"\n{kills} SIGKILLs, {duplicates} duplicates (window {window})")


def ids_in(engine: Engine, *statuses: DeliveryStatus) -> set[int]:
    with database.transaction(engine) as session:
        return set(session.scalars(select(Delivery.id).where(Delivery.status.in_(statuses))))


def wait_for(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {seconds} s")


def start_send(settings: Settings, issue: Path) -> subprocess.Popen[bytes]:
    """`newsletter send ISSUE --yes` in a process of its own, its worker embedded."""
    command = [sys.executable, "-c", "from newsletter.cli import main; main()", "send", str(issue), "--yes"]
    log = (issue.parent / "send.log").open("ab")
    process = subprocess.Popen(command, env=environment(settings), stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return process


@pytest.mark.timeout(240)
def test_an_embedded_send_killed_mid_send_is_resumed_without_waiting_out_its_leases(
    settings: Settings, engine: Engine, smtpd: MailSink, tmp_path: Path
) -> None:
    settings = settings.replace(smtp_host="127.0.0.1", smtp_port=smtpd.port, lease_seconds=60)
    add_subscribers(engine, EMBEDDED_SUBSCRIBERS)
    issue = tmp_path / "crash.md"
    issue.write_text(ISSUE, encoding="utf-8")
    smtpd.data_delay_seconds = 0.005
    first = start_send(settings, issue)
    wait_for(lambda: len(ids_in(engine, DeliveryStatus.SENT)) >= EMBEDDED_SUBSCRIBERS // 5, 60, "a fifth sent")
    smtpd.data_delay_seconds = 3.0  # every thread now waits in DATA, the rest of its group claimed
    time.sleep(1.0)
    first.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    first.wait()
    smtpd.data_delay_seconds = 0.005
    held = ids_in(engine, DeliveryStatus.SENDING)
    assert held, "the killed send held rows under a live lease"

    second = start_send(settings, issue)
    wait_for(lambda: not held & ids_in(engine, DeliveryStatus.SENDING, DeliveryStatus.PENDING), 120, "held rows sent")
    taken_back = time.monotonic() - killed_at
    assert second.wait(timeout=settings.lease_seconds) == 0, (tmp_path / "send.log").read_text()
    done = time.monotonic() - killed_at
    print(f"\nembedded SIGKILL: the {len(held)} rows it held sent {taken_back:.1f} s, all done {done:.1f} s after")
    assert len(ids_in(engine, DeliveryStatus.SENT)) == EMBEDDED_SUBSCRIBERS
    received: dict[str, int] = defaultdict(int)
    for message in smtpd.received:
        received[message.recipient] += 1
    assert len(received) == EMBEDDED_SUBSCRIBERS, "nobody is missed"
    duplicates = sum(received.values()) - EMBEDDED_SUBSCRIBERS
    window = settings.smtp_connections * leases.GROUP_SIZE
    assert duplicates <= window, f"{duplicates} sent twice, past the README's bound of {window}"
    assert done < settings.lease_seconds, "the dead send's rows were taken back at once, not when their lease ran out"
