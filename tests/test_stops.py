"""One of two workers stopped mid-send (SIGTERM) or killed (SIGKILL), on PostgreSQL with Redis or RabbitMQ:
the send completes by itself, nobody is missed, a clean stop mails nobody twice, and a kill costs about a lease."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from newsletter import campaign, database, leases, ledger
from newsletter.models import DeliveryStatus
from newsletter.queue import Queue
from newsletter.render import render_issue
from newsletter.settings import Settings
from tests.mailserver import MailSink
from tests.test_crash import add_subscribers, environment
from tests.test_send_distributed import BACKENDS, distributed_settings  # noqa: F401  (the fixture)

SUBSCRIBERS = 600
THREADS_PER_WORKER = 2
ISSUE = "---\nsubject: Stops\nslug: stops-1\n---\n\n# Stops\n\nShort on purpose.\n"


class Workers:
    """`newsletter worker` processes, their stderr kept in files to check for tracebacks."""

    def __init__(self, settings: Settings, directory: Path) -> None:
        self.settings, self.directory = settings, directory
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.directory / f"worker{len(self.processes)}.log").open("wb")
        command = [sys.executable, "-c", "from newsletter.cli import main; main()", "worker"]
        process = subprocess.Popen(
            [*command, "--threads", str(THREADS_PER_WORKER), "--verbose"],
            env=environment(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes.append(process)
        return process

    def logs(self) -> str:
        return "".join(path.read_text(errors="replace") for path in sorted(self.directory.glob("worker*.log")))

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def stop_settings(distributed_settings: Settings) -> Settings:  # noqa: F811
    return distributed_settings.replace(batch_size=50, lease_seconds=30)


@pytest.fixture
def workers(stop_settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    fleet = Workers(stop_settings, tmp_path)
    yield fleet
    fleet.stop_all()


def start_send(engine: Engine, settings: Settings) -> tuple[Queue, int]:
    add_subscribers(engine, SUBSCRIBERS)
    queue = Queue(settings, engine)
    issue_id = campaign.start(engine, render_issue(ISSUE, settings))
    queue.enqueue_unfinished(issue_id)
    return queue, issue_id


def wait_for_sent(engine: Engine, issue_id: int, at_least: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with database.transaction(engine) as session:
            if ledger.counts(session, issue_id)[DeliveryStatus.SENT] >= at_least:
                return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} sent after {seconds} s")


def copies(smtpd: MailSink) -> Counter[str]:
    return Counter(message.recipient for message in smtpd.received)


@pytest.mark.timeout(180)
def test_a_worker_stopped_with_sigterm_gives_its_rows_back_at_once(
    stop_settings: Settings, postgres_engine: Engine, smtpd: MailSink, workers: Workers
) -> None:
    smtpd.data_delay_seconds = 0.01  # a few seconds of sending, so the stop lands mid-send
    first, _second = workers.start(), workers.start()
    queue, issue_id = start_send(postgres_engine, stop_settings)
    wait_for_sent(postgres_engine, issue_id, SUBSCRIBERS // 5)
    first.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert first.wait(timeout=60) == 0
    counts = campaign.follow(postgres_engine, queue, issue_id)
    recovered = time.monotonic() - stopped_at
    queue.stop()
    print(f"\nSIGTERM: done {recovered:.1f} s after the stop (lease {stop_settings.lease_seconds:.0f} s)")
    assert counts[DeliveryStatus.SENT] == SUBSCRIBERS and counts.remaining == 0
    received = copies(smtpd)
    assert len(received) == SUBSCRIBERS, "nobody is missed"
    assert max(received.values()) == 1, "a clean stop records what it sent: nobody is mailed twice"
    assert recovered < stop_settings.lease_seconds, "the rows went back at once, not when their lease ran out"
    assert "Traceback" not in workers.logs(), workers.logs()


@pytest.mark.timeout(240)
def test_a_worker_killed_with_sigkill_costs_about_a_lease(
    stop_settings: Settings, postgres_engine: Engine, smtpd: MailSink, workers: Workers
) -> None:
    settings = stop_settings.replace(lease_seconds=10)
    workers.settings = settings
    smtpd.data_delay_seconds = 0.01
    first, _second = workers.start(), workers.start()
    queue, issue_id = start_send(postgres_engine, settings)
    wait_for_sent(postgres_engine, issue_id, SUBSCRIBERS // 5)
    first.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    first.wait()
    counts = campaign.follow(postgres_engine, queue, issue_id)
    recovered = time.monotonic() - killed_at
    queue.stop()
    print(f"\nSIGKILL: done {recovered:.1f} s after the kill (lease {settings.lease_seconds:.0f} s)")
    assert counts[DeliveryStatus.SENT] == SUBSCRIBERS and counts.remaining == 0
    received = copies(smtpd)
    assert len(received) == SUBSCRIBERS, "nobody is missed"
    duplicates = sum(received.values()) - SUBSCRIBERS
    assert duplicates <= THREADS_PER_WORKER * leases.GROUP_SIZE, f"{duplicates} sent twice, past the README's bound"
    assert recovered < 6 * settings.lease_seconds


def test_send_says_when_no_worker_takes_anything(
    stop_settings: Settings, postgres_engine: Engine, smtpd: MailSink
) -> None:
    queue, issue_id = start_send(postgres_engine, stop_settings)  # and no worker running
    lines: list[str] = []
    watch = campaign.Watch(postgres_engine, queue, issue_id, lines.append)
    with database.transaction(postgres_engine) as session:
        counts = ledger.counts(session, issue_id)
    watch.saw(counts, None)
    assert lines == [], "not at once"
    watch.last_move -= campaign.NO_WORKER_SECONDS  # as if nothing had moved for that long
    watch.saw(counts, None)
    watch.saw(counts, None)
    queue.stop()
    assert len(lines) == 1, "said once per stall"
    assert "no worker has taken a delivery" in lines[0] and "`newsletter worker`" in lines[0]
    assert stop_settings.queue_name in lines[0]
