"""Sending an issue, start to finish: store it, create its deliveries, enqueue them, follow until done."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import make_msgid

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from newsletter import database, ledger, links
from newsletter.leases import Claim
from newsletter.message import MessageTemplate, Recipient
from newsletter.models import Delivery, DeliveryStatus, Issue, IssueStatus, Subscriber
from newsletter.queue import Queue
from newsletter.render import RenderedIssue
from newsletter.sender import Composer
from newsletter.settings import Settings
from newsletter.signing import DkimSigner
from newsletter.smtp import PermanentFailure, Reply, SmtpConnection, TemporaryFailure
from newsletter.tokens import Signer

FOLLOW_POLL_SECONDS = 0.5
TEST_SUBJECT_PREFIX = "[TEST] "
TEST_SUBSCRIBER_ID = 0  # links in a test message name no subscriber: they open, and change nothing

Progress = Callable[[ledger.Counts], None]


@dataclass(frozen=True)
class Preflight:
    """What `send` is about to do."""

    slug: str
    subject: str
    new_recipients: int  # active subscribers who get a delivery row now
    unfinished: int  # rows of an earlier run still to go (a resumed send)
    already_sent: int
    status: str  # the stored issue's status, or "new"


def preflight(engine: Engine, rendered: RenderedIssue, force: bool = False) -> Preflight:
    """Count who would receive the issue, without changing anything.

    Raises:
        IssueChanged: another text is stored under this slug and `force` is not set.
    """
    session: Session
    with database.make_sessionmaker(engine)() as session:
        issue = session.scalar(select(Issue).where(Issue.slug == rendered.slug))
        if issue is not None and issue.source_hash != rendered.source_hash and not force:
            ledger.store_issue(session, rendered, force=False)  # raises IssueChanged with the explanation
        if issue is None:
            return Preflight(rendered.slug, rendered.subject, ledger.count_recipients(session, None), 0, 0, "new")
        counts = ledger.counts(session, issue.id)
        new = 0 if issue.status == IssueStatus.SENT else ledger.count_recipients(session, issue.id)
        return Preflight(rendered.slug, rendered.subject, new, counts.remaining,
                         counts[DeliveryStatus.SENT], issue.status)


def start(engine: Engine, rendered: RenderedIssue, force: bool = False) -> int:
    """Store the issue and create its deliveries (one INSERT ... SELECT); returns the issue id."""
    with database.transaction(engine) as session:
        issue = ledger.store_issue(session, rendered, force)
        ledger.create_deliveries(session, issue)
        return issue.id


def enqueue_unfinished(engine: Engine, queue: Queue, issue_id: int) -> int:
    """Enqueue every unfinished delivery of the issue in batches; returns the number of messages."""
    with database.make_sessionmaker(engine)() as session:
        ids = ledger.claimable_ids(session, issue_id, queue.settings.lease_seconds)
        return queue.enqueue_batches(issue_id, ids)


def follow(engine: Engine, queue: Queue, issue_id: int, progress: Progress | None = None) -> ledger.Counts:
    """Report progress from the database until no delivery is unfinished; returns the final counts.

    When nothing moved for `lease_seconds` while due rows wait (a worker died holding its queue
    message, or a lease expired), those rows are enqueued again; claiming makes that harmless.

    Raises:
        SessionRefused: the in-process worker's relay refused our session (AUTH, TLS certificate); the
            rows it had not sent stay unfinished for the next run.
    """
    lease_seconds = queue.settings.lease_seconds
    last_done, last_move = -1, time.monotonic()
    while True:
        refused = queue.refused()
        if refused is not None:
            raise refused
        with database.transaction(engine) as session:
            counts = ledger.counts(session, issue_id)
            if counts.remaining == 0:
                ledger.finish_issue(session, issue_id)
        if progress is not None:
            progress(counts)
        if counts.remaining == 0:
            return counts
        if counts.done != last_done:
            last_done, last_move = counts.done, time.monotonic()
        elif time.monotonic() - last_move > lease_seconds:
            with database.make_sessionmaker(engine)() as session:
                queue.enqueue_batches(issue_id, ledger.claimable_ids(session, issue_id, lease_seconds, due_only=True))
            last_move = time.monotonic()
        time.sleep(FOLLOW_POLL_SECONDS)


def send_issue(
    engine: Engine, queue: Queue, rendered: RenderedIssue, force: bool = False, progress: Progress | None = None
) -> ledger.Counts:
    """Send (or resume) an issue and return when it is out.

    Embedded (StubBroker): the worker runs in this process and stops when this returns or is
    interrupted; what is unfinished then goes out on the next run. Distributed: workers do the work and
    this only follows; an interrupt here loses nothing.
    """
    issue_id = start(engine, rendered, force)
    if queue.embedded:
        queue.start_worker()
    try:
        enqueue_unfinished(engine, queue, issue_id)
        return follow(engine, queue, issue_id, progress)
    finally:
        if queue.embedded:
            queue.stop()


def resend_failed(engine: Engine, queue: Queue, slug: str, progress: Progress | None = None) -> ledger.Counts:
    """Put the deliveries that exhausted their retries back in the queue, and follow until done."""
    with database.transaction(engine) as session:
        issue = ledger.find_issue(session, slug)
        ledger.retry_failed(session, issue.id)
        issue_id = issue.id
    if queue.embedded:
        queue.start_worker()
    try:
        enqueue_unfinished(engine, queue, issue_id)
        return follow(engine, queue, issue_id, progress)
    finally:
        if queue.embedded:
            queue.stop()


@dataclass(frozen=True)
class TestSend:
    address: str
    reply: str
    accepted: bool


def send_test(settings: Settings, rendered: RenderedIssue, addresses: Sequence[str]) -> list[TestSend]:
    """Send the issue, subject prefixed [TEST], to `addresses` only; nothing is recorded."""
    template = MessageTemplate.build(rendered, settings, subject_prefix=TEST_SUBJECT_PREFIX)
    signer = Signer(settings.secret_key)
    dkim = DkimSigner.from_settings(settings)
    local, domain = links.bounce_base(settings)
    connection = SmtpConnection(settings)
    outcomes = []
    try:
        for number, address in enumerate(addresses, start=1):
            recipient = Recipient(
                email=address, name=None, message_id=make_msgid(f"test.{number}", links.sender_domain(settings)),
                unsubscribe_url=links.unsubscribe_url(settings, signer, TEST_SUBSCRIBER_ID),
                unsubscribe_mailto=links.unsubscribe_mailto(settings, signer, TEST_SUBSCRIBER_ID),
                preferences_url=links.preferences_url(settings, signer, TEST_SUBSCRIBER_ID),
            )
            message = template.fill(recipient)
            message = dkim.sign(message) if dkim is not None else message
            try:
                reply: Reply = connection.send(f"{local}@{domain}", address, message)
            except (TemporaryFailure, PermanentFailure) as failure:
                reply = failure.reply
            outcomes.append(TestSend(address, str(reply), 200 <= reply.code < 300))
    finally:
        connection.close()
    return outcomes


@dataclass(frozen=True)
class DryRun:
    messages: int
    total_bytes: int
    seconds: float


def dry_run(engine: Engine, settings: Settings, rendered: RenderedIssue, force: bool = False) -> DryRun:
    """Everything but the SMTP transaction: store, create deliveries, compose and sign every message; then
    roll all of it back."""
    started = time.monotonic()
    composer = Composer(settings, DkimSigner.from_settings(settings))
    template = MessageTemplate.build(rendered, settings)
    messages = total = 0
    with database.make_sessionmaker(engine)() as session:
        try:
            issue = ledger.store_issue(session, rendered, force)
            ledger.create_deliveries(session, issue)
            rows = session.execute(
                select(Delivery.id, Delivery.subscriber_id, Subscriber.email, Subscriber.name)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(Delivery.issue_id == issue.id, Delivery.status == DeliveryStatus.PENDING)
                .execution_options(yield_per=ledger.STREAM_ROWS)
            )
            for delivery_id, subscriber_id, email, name in rows:
                composed = composer.compose(template, issue.id, Claim(delivery_id, subscriber_id, email, name, 1))
                messages, total = messages + 1, total + len(composed.message)
        finally:
            session.rollback()
    return DryRun(messages, total, time.monotonic() - started)
