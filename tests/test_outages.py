"""Links cut, refused or stalled mid-send by a TCP proxy in front of PostgreSQL, Redis, RabbitMQ and the relay:
each send finishes by itself soon after the link is back, without a traceback, losing nobody and mailing nobody
twice, and a relay's outage spends no reader's try."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from newsletter import campaign, database
from newsletter.models import Delivery, DeliveryStatus
from newsletter.queue import Queue
from newsletter.render import render_issue
from newsletter.settings import Settings
from tests.conftest import RABBITMQ_URL, REDIS_URL, require_service
from tests.mailserver import EVERYONE, MailSink
from tests.tcpproxy import TcpProxy, proxy_to
from tests.test_crash import add_subscribers
from tests.test_send_distributed import cleanup_broker
from tests.test_stops import SUBSCRIBERS, Workers, start_send, wait_for_sent

ISSUE = "---\nsubject: Outages\nslug: outages-1\n---\n\n# Outages\n\nShort on purpose.\n"

OUTAGE_SECONDS = 6.0
# The issue's target: finished within about 30 s of the link coming back.
RECOVERY_SECONDS = 30.0


def no_duplicates_nobody_missed(smtpd: MailSink, count: int) -> None:
    received = Counter(message.recipient for message in smtpd.received)
    assert len(received) == count, f"{count - len(received)} readers missed"
    assert max(received.values()) == 1, f"{sum(received.values()) - count} readers mailed twice"


def finish(engine: Engine, queue: Queue, issue_id: int, restored_at: threading.Event) -> tuple[float, list[str]]:
    """Follow the send to the end as `send` does; the seconds it took after the link came back, and its lines."""
    lines: list[str] = []
    counts = campaign.follow(engine, queue, issue_id, say=lines.append)
    assert counts[DeliveryStatus.SENT] == counts.total and counts.remaining == 0
    assert restored_at.is_set()
    return time.monotonic() - float(getattr(restored_at, "at", time.monotonic())), lines


def outage(proxy: TcpProxy, after: threading.Event, seconds: float = OUTAGE_SECONDS) -> threading.Event:
    """Cut the link behind `proxy` once `after` is set, restore it `seconds` later; returns 'restored'."""
    restored = threading.Event()

    def run() -> None:
        after.wait(60)
        proxy.cut()
        time.sleep(seconds)
        proxy.restore()
        restored.at = time.monotonic()  # type: ignore[attr-defined]
        restored.set()

    threading.Thread(target=run, daemon=True).start()
    return restored


def cut_mid_send(
    settings: Settings, engine: Engine, proxy: TcpProxy, direct: Engine, directory: Path
) -> tuple[float, list[str], str]:
    """Two workers send; the link behind `proxy` is cut once a fifth is sent (as `direct`, never cut, counts).

    Returns the seconds to done after the link came back, what `send` said, and the workers' logs.
    """
    workers = Workers(settings, directory)
    try:
        workers.start(), workers.start()
        queue, issue_id = start_send(engine, settings)
        restored = outage(proxy, started(direct, issue_id, SUBSCRIBERS // 5))
        recovery, lines = finish(engine, queue, issue_id, restored)
        queue.stop()
    finally:
        workers.stop_all()
    return recovery, lines, workers.logs()


@pytest.fixture
def postgres_proxy(postgres_url: str) -> Iterator[TcpProxy]:
    with proxy_to("127.0.0.1", 5432) as proxy:
        yield proxy


@pytest.fixture
def redis_proxy() -> Iterator[TcpProxy]:
    require_service("redis")
    with proxy_to("127.0.0.1", 6379) as proxy:
        yield proxy


@pytest.fixture
def fleet_settings(postgres_settings: Settings, smtpd: MailSink) -> Iterator[Settings]:
    require_service("redis")
    settings = postgres_settings.replace(
        broker_url=REDIS_URL,
        rate_limit_url=REDIS_URL,
        queue_name=f"test_{uuid.uuid4().hex[:12]}",
        smtp_host="127.0.0.1",
        smtp_port=smtpd.port,
        smtp_connections=2,
        batch_size=50,
        lease_seconds=30,
    )
    yield settings
    cleanup_broker(settings)


@pytest.fixture
def through_redis(fleet_settings: Settings, redis_proxy: TcpProxy) -> Settings:
    """The fleet's settings with the broker and the shared counts in Redis behind the proxy."""
    through = redis_proxy.url_for(REDIS_URL, 6379)
    return fleet_settings.replace(broker_url=through, rate_limit_url=through)


def started(engine: Engine, issue_id: int, at_least: int) -> threading.Event:
    event = threading.Event()
    threading.Thread(target=lambda: (wait_for_sent(engine, issue_id, at_least), event.set()), daemon=True).start()
    return event


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(180)
def test_postgres_cut_mid_send_is_waited_out_and_nobody_is_mailed_twice(
    fleet_settings: Settings,
    postgres_engine: Engine,
    postgres_proxy: TcpProxy,
    smtpd: MailSink,
    tmp_path: Path,
) -> None:
    settings = fleet_settings.replace(database_url=postgres_proxy.url_for(fleet_settings.database_url, 5432))
    smtpd.data_delay_seconds = 0.01
    engine = database.make_engine(settings)
    try:
        recovery, lines, logs = cut_mid_send(settings, engine, postgres_proxy, postgres_engine, tmp_path)
    finally:
        engine.dispose()
    print(f"\nPostgreSQL cut {OUTAGE_SECONDS:.0f} s: done {recovery:.1f} s after it came back")
    no_duplicates_nobody_missed(smtpd, SUBSCRIBERS)
    assert recovery < RECOVERY_SECONDS
    assert any("the database is unreachable" in line for line in lines), lines
    assert "Traceback" not in logs, logs
    assert "the database is unreachable" in logs


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(180)
def test_a_broker_cut_mid_send_is_waited_out(
    broker: str, fleet_settings: Settings, postgres_engine: Engine, smtpd: MailSink, tmp_path: Path
) -> None:
    require_service(broker)
    url, port = (REDIS_URL, 6379) if broker == "redis" else (RABBITMQ_URL, 5672)
    smtpd.data_delay_seconds = 0.01
    with proxy_to("127.0.0.1", port) as proxy:
        through = proxy.url_for(url, port)
        # RabbitMQ as the broker: Redis still counts the connection slots, straight.
        settings = fleet_settings.replace(
            broker_url=through, rate_limit_url=through if broker == "redis" else REDIS_URL
        )
        try:
            recovery, _lines, logs = cut_mid_send(settings, postgres_engine, proxy, postgres_engine, tmp_path)
        finally:
            cleanup_broker(settings.replace(broker_url=url))
    print(f"\n{broker} cut {OUTAGE_SECONDS:.0f} s: done {recovery:.1f} s after it came back")
    no_duplicates_nobody_missed(smtpd, SUBSCRIBERS)
    assert recovery < RECOVERY_SECONDS
    assert "Traceback" not in logs, logs


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(120)
def test_a_worker_whose_broker_comes_back_enqueues_again_what_the_cut_may_have_lost(
    through_redis: Settings, postgres_engine: Engine, redis_proxy: TcpProxy, smtpd: MailSink, tmp_path: Path
) -> None:
    settings = through_redis
    add_subscribers(postgres_engine, 100)
    # Stored with its deliveries and never enqueued: as if the cut had lost every queue message, and no `send`
    # runs to sweep for them.
    issue_id = campaign.start(postgres_engine, render_issue(ISSUE, settings))
    workers = Workers(settings, tmp_path)
    try:
        workers.start()
        wait_for_line(workers, "Worker on")
        redis_proxy.cut()
        time.sleep(OUTAGE_SECONDS / 2)
        redis_proxy.restore()
        wait_for_sent(postgres_engine, issue_id, 100, seconds=RECOVERY_SECONDS)
    finally:
        workers.stop_all()
    no_duplicates_nobody_missed(smtpd, 100)
    assert "enqueued again" in workers.logs(), workers.logs()
    assert "Traceback" not in workers.logs(), workers.logs()


def wait_for_line(workers: Workers, text: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while text not in workers.logs():
        assert time.monotonic() < deadline, workers.logs()
        time.sleep(0.1)


@pytest.fixture
def relay(smtpd: MailSink) -> Iterator[TcpProxy]:
    with proxy_to("127.0.0.1", smtpd.port) as proxy:
        yield proxy


def embedded_send(engine: Engine, settings: Settings, relay: TcpProxy) -> tuple[Queue, int]:
    config = settings.replace(
        smtp_host="127.0.0.1", smtp_port=relay.port, batch_size=20, smtp_connections=2, max_attempts=2, smtp_timeout=5
    )
    add_subscribers(engine, 100)
    queue = Queue(config, engine)
    return queue, campaign.start(engine, render_issue(ISSUE, config))


def tries(engine: Engine) -> Counter[int]:
    with database.transaction(engine) as session:
        return Counter(session.scalars(select(Delivery.attempts)))


@pytest.mark.timeout(120)
def test_a_relay_that_resets_connections_costs_no_reader_a_try(
    engine: Engine, settings: Settings, smtpd: MailSink, relay: TcpProxy
) -> None:
    smtpd.data_delay_seconds = 0.02
    queue, issue_id = embedded_send(engine, settings, relay)
    stop = threading.Event()

    def resets() -> None:
        deadline = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < deadline and not stop.wait(0.5):
            relay.reset_connections()
        stop.at = time.monotonic()  # type: ignore[attr-defined]
        stop.set()

    threading.Thread(target=resets, daemon=True).start()
    lines: list[str] = []
    counts = campaign.deliver(engine, queue, issue_id, say=lines.append)
    recovery = time.monotonic() - getattr(stop, "at", time.monotonic())
    print(f"\nrelay reset every 0.5 s for {OUTAGE_SECONDS:.0f} s: done {recovery:.1f} s after")
    assert counts[DeliveryStatus.SENT] == 100, "max_attempts is 2: resets spent nobody's tries"
    assert recovery < RECOVERY_SECONDS
    received = Counter(message.recipient for message in smtpd.received)
    # A reset after the final dot may have delivered (RFC 5321 4.1.1.4): only those go twice, with one try spent.
    assert sum(received.values()) - 100 <= tries(engine)[2]


@pytest.mark.timeout(120)
def test_a_relay_down_then_answering_421_is_waited_out(
    engine: Engine, settings: Settings, smtpd: MailSink, relay: TcpProxy
) -> None:
    queue, issue_id = embedded_send(engine, settings, relay)
    relay.refuse()
    smtpd.fail(EVERYONE, "RCPT", "421 4.3.2 too busy, closing")
    restored = threading.Event()

    def recover() -> None:
        time.sleep(OUTAGE_SECONDS / 2)
        relay.restore()  # reachable, but answering 421
        time.sleep(OUTAGE_SECONDS / 2)
        smtpd.faults.clear()
        restored.at = time.monotonic()  # type: ignore[attr-defined]
        restored.set()

    threading.Thread(target=recover, daemon=True).start()
    lines: list[str] = []
    counts = campaign.deliver(engine, queue, issue_id, say=lines.append)
    recovery = time.monotonic() - getattr(restored, "at", time.monotonic())
    print(f"\nrelay down then 421 for {OUTAGE_SECONDS:.0f} s: done {recovery:.1f} s after")
    assert counts[DeliveryStatus.SENT] == 100
    assert tries(engine) == Counter({1: 100}), "the relay's outage spent no reader's try"
    assert recovery < RECOVERY_SECONDS
    assert any("421" in line or "refused" in line.lower() or "connection" in line for line in lines), lines
    no_duplicates_nobody_missed(smtpd, 100)


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(120)
def test_send_waits_for_a_broker_down_at_start_with_one_line(
    broker: str, postgres_settings: Settings, postgres_engine: Engine, smtpd: MailSink, tmp_path: Path
) -> None:
    require_service(broker)
    url, port = (REDIS_URL, 6379) if broker == "redis" else (RABBITMQ_URL, 5672)
    with proxy_to("127.0.0.1", port) as proxy:
        settings = postgres_settings.replace(
            broker_url=proxy.url_for(url, port),
            rate_limit_url=REDIS_URL,
            queue_name=f"test_{uuid.uuid4().hex[:12]}",
            smtp_host="127.0.0.1",
            smtp_port=smtpd.port,
        )
        add_subscribers(postgres_engine, 20)
        (tmp_path / "issue.md").write_text(ISSUE, encoding="utf-8")
        workers = Workers(settings.replace(broker_url=url), tmp_path)
        workers.start()
        proxy.refuse()
        env = {key: value for key, value in os.environ.items() if not key.startswith("NEWSLETTER_")}
        env.update(
            {f"NEWSLETTER_{name.upper()}": str(getattr(settings, name)) for name in settings.__dataclass_fields__}
        )
        command = [sys.executable, "-c", "from newsletter.cli import main; main()", "send", "--yes", "issue.md"]
        output: list[str] = []
        try:
            send = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            stdout = send.stdout
            assert stdout is not None
            reader = threading.Thread(target=lambda: output.extend(line.decode(errors="replace") for line in stdout))
            reader.start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any("waiting for it" in line for line in output):
                time.sleep(0.1)
            proxy.restore()
            send.wait(timeout=90)
            reader.join(10)
            stdout.close()
        finally:
            workers.stop_all()
            cleanup_broker(settings.replace(broker_url=url))
    text = "".join(output)
    assert send.returncode == 0, text
    assert "Traceback" not in text, text
    assert "unreachable" in text and "waiting for it to come back" in text, text
    assert len({message.recipient for message in smtpd.received}) == 20


def test_a_worker_started_while_the_database_is_away_waits_for_it(
    postgres_proxy: TcpProxy, postgres_url: str, fleet_settings: Settings, postgres_engine: Engine
) -> None:
    settings = fleet_settings.replace(database_url=postgres_proxy.url_for(postgres_url, 5432))
    postgres_proxy.refuse()
    env = {key: value for key, value in os.environ.items() if not key.startswith("NEWSLETTER_")}
    env.update({f"NEWSLETTER_{name.upper()}": str(getattr(settings, name)) for name in settings.__dataclass_fields__})
    command = [sys.executable, "-c", "from newsletter.cli import main; main()", "worker", "--threads", "1"]
    worker = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output: list[str] = []
    stdout = worker.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: output.extend(line.decode(errors="replace") for line in stdout))
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("waiting for it" in line for line in output):
            time.sleep(0.1)
        assert worker.poll() is None, "".join(output)
        postgres_proxy.restore()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(line.startswith("Worker on") for line in output):
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        reader.join(10)
        stdout.close()
    text = "".join(output)
    assert "the database is unreachable" in text and "waiting for it to come back" in text, text
    assert any(line.startswith("Worker on") for line in output), text
    assert "Traceback" not in text, text
