"""Worker processes killed with SIGKILL mid-send, then resumed: everyone gets the issue, duplicates stay
within the documented window (ledger.py) and carry the first copy's Message-ID."""

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
