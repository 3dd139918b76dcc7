"""One-off messages outlive the process that stored them: a restarted queue sends each unsent one, once."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, event, func, select, update

from newsletter import confirmation, database, optin, outbox
from newsletter.leases import GROUP_SIZE
from newsletter.models import DeliveryStatus, OutboundMessage, Subscriber, utcnow
from newsletter.queue import Queue
from newsletter.sender import Sender
from newsletter.settings import Settings
from newsletter.tokens import Signer
from tests.conftest import REDIS_URL, require_service
from tests.mailserver import MailSink, free_port
from tests.test_send_distributed import cleanup_broker

MESSAGE = b"From: editor@example.org\r\nTo: x@example.com\r\nSubject: hello\r\n\r\nHello.\r\n"
COMMAND = [sys.executable, "-c", "from newsletter.cli import main; main()"]


def wait_until(condition: object, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def store(
    engine: Engine,
    recipient: str,
    status: DeliveryStatus = DeliveryStatus.PENDING,
    claimed_ago_seconds: float | None = None,
) -> int:
    """A stored one-off message that no queue holds, as a stopped process leaves it."""
    with database.transaction(engine) as session:
        outbound_id = outbox.store_message(session, "confirmation", "bounces@example.org", recipient, MESSAGE)
        claimed_at = None if claimed_ago_seconds is None else utcnow() - dt.timedelta(seconds=claimed_ago_seconds)
        session.execute(
            update(OutboundMessage)
            .where(OutboundMessage.id == outbound_id)
            .values(status=status, claimed_at=claimed_at)
        )
    return outbound_id


def store_confirmation(engine: Engine, settings: Settings, email: str) -> None:
    """A sign-up committed by a web app that stopped before handing its mail to the queue."""
    with database.transaction(engine) as session:
        request = optin.subscribe(session, settings, email, None)
        assert confirmation.store_confirmation(session, settings, Signer(settings.secret_key), request) is not None


def status_of(engine: Engine, outbound_id: int) -> str:
    with database.transaction(engine) as session:
        row = session.get(OutboundMessage, outbound_id)
        assert row is not None
        return row.status


def test_unsent_messages_lists_pending_and_sending_with_when_to_claim(engine: Engine) -> None:
    pending = store(engine, "pending@example.com")
    stuck = store(engine, "stuck@example.com", DeliveryStatus.SENDING, claimed_ago_seconds=3600)
    busy = store(engine, "busy@example.com", DeliveryStatus.SENDING, claimed_ago_seconds=1)
    for final in (DeliveryStatus.SENT, DeliveryStatus.BOUNCED, DeliveryStatus.FAILED):
        store(engine, f"{final}@example.com", final)
    with database.transaction(engine) as session:
        unsent = dict(outbox.unsent_messages(session, lease_seconds=60))
    assert set(unsent) == {pending, stuck, busy}
    assert unsent[pending] is None
    stuck_at, busy_at = unsent[stuck], unsent[busy]
    assert stuck_at is not None and stuck_at < utcnow()
    assert busy_at is not None and utcnow() + dt.timedelta(seconds=58) < busy_at < utcnow() + dt.timedelta(seconds=61)


def test_a_restarted_queue_sends_each_unsent_message_once(settings: Settings, engine: Engine, smtpd: MailSink) -> None:
    quick = settings.replace(smtp_host="127.0.0.1", smtp_port=smtpd.port, lease_seconds=0.5)
    pending = store(engine, "pending@example.com")
    # A worker died holding this one: its lease must run out before another worker may send it.
    busy = store(engine, "busy@example.com", DeliveryStatus.SENDING, claimed_ago_seconds=0)
    sent = store(engine, "sent@example.com", DeliveryStatus.SENT)
    queue = Queue(quick, engine)
    try:
        # Both starts enqueue before any worker runs, so each message is on the queue twice.
        assert outbox.requeue_unsent(engine, quick.lease_seconds, queue.send_messages) == 2
        assert outbox.requeue_unsent(engine, quick.lease_seconds, queue.send_messages) == 2  # a second start
        queue.start_worker(1)
        wait_until(lambda: status_of(engine, pending) == status_of(engine, busy) == DeliveryStatus.SENT)
        time.sleep(0.3)
    finally:
        queue.stop()
    assert sorted(message.recipient for message in smtpd.received) == ["busy@example.com", "pending@example.com"]
    assert status_of(engine, sent) == DeliveryStatus.SENT


def test_a_confirmation_whose_link_expired_unsent_is_given_up_not_sent(settings: Settings, engine: Engine) -> None:
    # serve was stopped for longer than a confirmation link lives: the link would only say it has expired.
    days = settings.confirm_max_age_seconds / 86400
    old, fresh = store(engine, "old@example.com"), store(engine, "fresh@example.com")
    with database.transaction(engine) as session:
        welcome = outbox.store_message(session, "welcome", "bounces@example.org", "hello@example.com", MESSAGE)
        long_ago = utcnow() - dt.timedelta(days=days + 1)
        session.execute(
            update(OutboundMessage).where(OutboundMessage.id.in_([old, welcome])).values(created_at=long_ago)
        )
    queued: list[int] = []
    lifetimes = confirmation.lifetimes(settings)
    assert outbox.requeue_unsent(engine, settings.lease_seconds, lambda ids, _at: queued.extend(ids), lifetimes) == 2
    assert sorted(queued) == [fresh, welcome], "a welcome has no link that expires"
    with database.transaction(engine) as session:
        given_up = session.get_one(OutboundMessage, old)
        assert (given_up.status, given_up.last_reply) == (DeliveryStatus.FAILED, outbox.OUTLIVED_REPLY)


def outbound_statements(engine: Engine) -> list[str]:
    """The statements run on `engine` from now on that change outbound_messages (a list that grows)."""
    statements: list[str] = []

    def seen(_connection: object, _cursor: object, statement: str, *_rest: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE OUTBOUND_MESSAGES"):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    return statements


def test_a_group_of_one_off_messages_is_claimed_and_recorded_in_one_statement_each(
    settings: Settings, any_engine: Engine, smtpd: MailSink
) -> None:
    quick = settings.replace(smtp_host="127.0.0.1", smtp_port=smtpd.port, retry_delay_seconds=60)
    smtpd.fail("reader3@example.com", "RCPT", "451 4.7.1 greylisted")
    smtpd.fail("reader7@example.com", "RCPT", "550 5.1.1 no such user")
    ids = [store(any_engine, f"reader{n}@example.com") for n in range(GROUP_SIZE)]
    statements = outbound_statements(any_engine)
    sender = Sender(quick, any_engine)
    try:
        left = sender.send_messages(ids)
    finally:
        sender.close()
    assert len(statements) == 2, "one claim and one record for the group"
    assert sorted(message.recipient for message in smtpd.received) == sorted(
        f"reader{n}@example.com" for n in range(GROUP_SIZE) if n not in (3, 7)
    )
    assert [status_of(any_engine, outbound_id) for outbound_id in ids[:8]] == [DeliveryStatus.SENT] * 3 + [
        DeliveryStatus.PENDING,  # tried again later
        *[DeliveryStatus.SENT] * 3,
        DeliveryStatus.BOUNCED,
    ]
    [retry] = left
    assert retry.ids == [ids[3]] and retry.ready_at is not None and retry.ready_at > utcnow() + dt.timedelta(seconds=50)


def test_one_off_messages_held_back_by_our_side_are_given_back_untried(
    settings: Settings, engine: Engine, smtpd: MailSink
) -> None:
    # The relay answers 421 at the third message: it and the rest of its group go back untried, their try
    # uncounted, and the next group is not even claimed; all of them come back once our side may try again.
    quick = settings.replace(smtp_host="127.0.0.1", smtp_port=smtpd.port)
    smtpd.fail("reader2@example.com", "RCPT", "421 4.3.0 closing, try later", times=1)
    ids = [store(engine, f"reader{n}@example.com") for n in range(GROUP_SIZE + 5)]
    sender = Sender(quick, engine)
    try:
        [held] = sender.send_messages(ids)
    finally:
        sender.close()
    assert held.ids == ids[2:] and held.ready_at is not None and held.ready_at > utcnow()
    assert [message.recipient for message in smtpd.received] == ["reader0@example.com", "reader1@example.com"]
    with database.transaction(engine) as session:
        rows = session.execute(select(OutboundMessage.status, OutboundMessage.attempts).order_by("id")).all()
    assert rows[:2] == [(DeliveryStatus.SENT, 1)] * 2
    assert rows[2:] == [(DeliveryStatus.PENDING, 0)] * (GROUP_SIZE + 3)


@contextmanager
def running(command: list[str], cwd: Path, ready: object) -> Iterator[None]:
    """A `newsletter` process, until the block ends (SIGTERM, as a service manager stops it)."""
    log = (cwd / "process.log").open("ab")
    process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: ready() if callable(ready) else True)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def serving_processes(pid: int) -> list[int]:
    """The processes uvicorn started to serve (multiprocessing's spawn), not its resource tracker."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()]


def running_process(pid: int) -> bool:
    """Whether `pid` runs still (a zombie has ended: only its parent's wait is left)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def write_config(path: Path, settings: Settings, smtpd: MailSink, extra: str = "") -> Path:
    config = path / "newsletter.toml"
    config.write_text(
        f'database_url = "{settings.database_url}"\nsecret_key = "{settings.secret_key}"\n'
        f'from_address = "{settings.from_address}"\nbase_url = "{settings.base_url}"\n'
        f'smtp_host = "127.0.0.1"\nsmtp_port = {smtpd.port}\n{extra}',
        encoding="utf-8",
    )
    return config


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_serve_sends_the_confirmations_it_stopped_before_sending(
    settings: Settings, engine: Engine, smtpd: MailSink, tmp_path: Path
) -> None:
    store_confirmation(engine, settings, "reader@example.com")
    already_sent = store(engine, "sent@example.com", DeliveryStatus.SENT)
    port = free_port()
    command = [
        *COMMAND,
        "--config",
        str(write_config(tmp_path, settings, smtpd)),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    for _start in range(2):  # started again after the mail went out: it does not go twice
        with running(command, tmp_path, lambda: _healthy(f"http://127.0.0.1:{port}")):
            wait_until(lambda: smtpd.to("reader@example.com"))
            time.sleep(0.3)
    [received] = smtpd.to("reader@example.com")
    assert received.message["Subject"].startswith("Confirm your subscription")
    assert [message.recipient for message in smtpd.received] == ["reader@example.com"]
    assert status_of(engine, already_sent) == DeliveryStatus.SENT


def test_serve_with_two_workers_signs_up_on_one_port_and_mails_each_reader_once(
    settings: Settings, engine: Engine, smtpd: MailSink, tmp_path: Path
) -> None:
    # Two processes on one SQLite database and one port, each with its own queue: sign-ups posted at once
    # over separate connections are each one row and one mail, and SIGTERM stops the processes with the parent.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = write_config(tmp_path, settings, smtpd, "signup_min_fill_seconds = 0\nsignup_limit_per_ip = 0\n")
    command = [*COMMAND, "--config", str(config), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    log = (tmp_path / "process.log").open("ab")
    process = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    children: list[int] = []
    try:
        wait_until(lambda: _healthy(url))
        children = serving_processes(process.pid)
        addresses = [f"reader{number}@example.com" for number in range(60)]

        def post(address: str) -> int:
            with httpx.Client(base_url=url) as client:  # a connection each: both processes take some
                return client.post("/subscribe", data={"email": address}).status_code

        with ThreadPoolExecutor(max_workers=20) as pool:
            assert set(pool.map(post, addresses)) == {200}
        wait_until(lambda: len(smtpd.received) >= len(addresses))
        time.sleep(0.5)  # a second copy would arrive by now
    finally:
        process.terminate()
        returncode = process.wait(timeout=30)
        log.close()
    assert len(children) == 2, (tmp_path / "process.log").read_text()
    assert returncode == 0
    assert not [child for child in children if running_process(child)]  # they ended with it
    assert sorted(message.recipient for message in smtpd.received) == sorted(addresses)
    with database.transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == len(addresses)


@pytest.mark.postgres
@pytest.mark.redis
def test_worker_sends_the_confirmations_a_web_app_could_not_enqueue(
    postgres_settings: Settings, postgres_engine: Engine, smtpd: MailSink, tmp_path: Path
) -> None:
    require_service("redis")
    settings = postgres_settings.replace(broker_url=REDIS_URL, queue_name=f"test_outbox_{free_port()}")
    store_confirmation(postgres_engine, settings, "reader@example.com")
    extra = f'broker_url = "{REDIS_URL}"\nqueue_name = "{settings.queue_name}"\n'
    command = [*COMMAND, "--config", str(write_config(tmp_path, settings, smtpd, extra)), "worker", "--threads", "1"]
    try:
        with running(command, tmp_path, lambda: smtpd.to("reader@example.com")):
            time.sleep(0.3)
    finally:
        cleanup_broker(settings)
    assert [message.recipient for message in smtpd.received] == ["reader@example.com"]


def test_a_message_held_in_a_slow_data_is_renewed_and_never_sent_twice(
    settings: Settings, engine: Engine, smtpd: MailSink
) -> None:
    # The server takes three leases to answer DATA; meanwhile another process keeps handing every unsent
    # message to its own worker, as a restarting one does. Only the renewed lease keeps it from sending too.
    quick = settings.replace(smtp_host="127.0.0.1", smtp_port=smtpd.port, lease_seconds=1.0)
    smtpd.data_delay_seconds = 3 * quick.lease_seconds
    outbound_id = store(engine, "slow@example.com")
    sending, other = Queue(quick, engine), Queue(quick, engine)
    try:
        sending.start_worker(1)
        other.start_worker(1)
        sending.send_message(outbound_id)
        wait_until(lambda: status_of(engine, outbound_id) == DeliveryStatus.SENDING)
        while status_of(engine, outbound_id) == DeliveryStatus.SENDING:
            outbox.requeue_unsent(engine, quick.lease_seconds, other.send_messages)
            time.sleep(quick.lease_seconds / 4)
        time.sleep(smtpd.data_delay_seconds)  # a copy the other worker took would arrive by now
    finally:
        sending.stop()
        other.stop()
    assert status_of(engine, outbound_id) == DeliveryStatus.SENT
    assert len(smtpd.to("slow@example.com")) == 1
