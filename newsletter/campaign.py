"""Sending an issue, start to finish: store it, create its deliveries, enqueue them, follow until done."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import make_msgid

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from newsletter import database, fields, leases, ledger, links, outages, topics
from newsletter.domainkeys import DkimSigner
from newsletter.leases import Claim
from newsletter.mime import MessageTemplate, Recipient
from newsletter.models import Delivery, DeliveryStatus, Issue, IssueStatus, Subscriber
from newsletter.queue import Queue
from newsletter.render import RenderedIssue
from newsletter.segments import Segment
from newsletter.sender import Composer
from newsletter.settings import Settings
from newsletter.slots import with_fallbacks
from newsletter.smtp import PermanentFailure, Reply, SmtpConnection, TemporaryFailure
from newsletter.tokens import Signer

FOLLOW_POLL_SECONDS = 0.5
FEED_POLL_SECONDS = 0.02
# In-process queue messages waiting per worker thread: enough that no thread starves between two top-ups,
# few enough that a send's memory does not grow with the list (each message carries batch_size ids).
EMBEDDED_BACKLOG_PER_THREAD = 4
TEST_SUBJECT_PREFIX = "[TEST] "
TEST_SUBSCRIBER_ID = 0  # links in a test message name no subscriber: they open, and change nothing

# Rows a dead process of this machine held are looked for this often (the `sending` rows of an index range).
ORPHAN_SWEEP_SECONDS = 2.0
# A send that made no progress this long says what it waits for; with no worker holding a row, that none listens.
STALL_SECONDS = 10.0
NO_WORKER_SECONDS = 30.0
LOGGER = logging.getLogger("newsletter.campaign")

Progress = Callable[[ledger.Counts], None]
Say = Callable[[str], None]


@dataclass(frozen=True)
class SendPlan:
    """What `send` is about to do."""

    slug: str
    subject: str
    new_recipients: int  # active subscribers who get a delivery row now
    unfinished: int  # rows of an earlier run still to go (a resumed send)
    already_sent: int
    status: str  # the stored issue's status, or "new"
    audience: str = "every active subscriber"  # the segment, in words


def plan(engine: Engine, rendered: RenderedIssue, force: bool = False, segment: Segment | None = None) -> SendPlan:
    """Count who would receive the issue, without changing anything.

    Raises:
        IssueChanged: another text is stored under this slug and `force` is not set.
        UnknownField: a personal field names no attribute of the list.
        InvalidTopic: the segment names a topic that does not exist.
    """
    segment = segment or Segment()
    session: Session
    with database.make_sessionmaker(engine)() as session:
        fields.require_known(session, rendered.fields)
        topics.topic_ids(session, segment.topics)
        shown = with_fallbacks(rendered.subject)
        issue = session.scalar(select(Issue).where(Issue.slug == rendered.slug))
        if issue is not None and issue.source_hash != rendered.source_hash and not force:
            ledger.store_issue(session, rendered, force=False)  # raises IssueChanged with the explanation
        if issue is None:
            new = ledger.count_recipients(session, None, segment)
            return SendPlan(rendered.slug, shown, new, 0, 0, "new", segment.describe())
        counts = ledger.counts(session, issue.id)
        new = 0 if issue.status == IssueStatus.SENT else ledger.count_recipients(session, issue.id, segment)
        sent = counts[DeliveryStatus.SENT]
        return SendPlan(rendered.slug, shown, new, counts.remaining, sent, issue.status, segment.describe())


def start(engine: Engine, rendered: RenderedIssue, force: bool = False, segment: Segment | None = None) -> int:
    """Store the issue and create its deliveries for the segment (one INSERT ... SELECT); returns the issue id.

    Run again with another segment, it adds the readers of that one who have no delivery yet.

    Raises:
        UnknownField: a personal field names no attribute of the list (nothing is stored).
        InvalidTopic: the segment names a topic that does not exist.
    """
    with database.transaction(engine) as session:
        return prepare(session, rendered, force, segment).id


def prepare(session: Session, rendered: RenderedIssue, force: bool = False, segment: Segment | None = None) -> Issue:
    """`start` inside the caller's transaction (a scheduled send marks itself started in the same one)."""
    segment = segment or Segment()
    fields.require_known(session, rendered.fields)
    topics.topic_ids(session, segment.topics)
    issue = ledger.store_issue(session, rendered, force)
    issue.segment = segment.as_json()
    ledger.create_deliveries(session, issue)
    return issue


class Feeder:
    """Hands an issue's unfinished deliveries to the in-process queue a few batches at a time.

    The in-process queue lives in memory: enqueueing every batch at once would make a send's memory grow
    with the list, while a real broker keeps its messages elsewhere (and survives this process).
    """

    def __init__(self, engine: Engine, queue: Queue, issue_id: int) -> None:
        self.engine = engine
        self.queue = queue
        self.issue_id = issue_id
        self._after_id = 0
        self._exhausted = False

    def top_up(self) -> None:
        """Enqueue the next batches until EMBEDDED_BACKLOG_PER_THREAD wait per worker thread."""
        settings = self.queue.settings
        room = EMBEDDED_BACKLOG_PER_THREAD * settings.smtp_connections - self.queue.backlog()
        if self._exhausted or room <= 0:
            return
        limit = room * settings.batch_size
        with database.make_sessionmaker(self.engine)() as session:
            ids = ledger.claimable_page(session, self.issue_id, settings.lease_seconds, self._after_id, limit)
        self._exhausted = len(ids) < limit
        if ids:
            self._after_id = ids[-1]
            self.queue.enqueue_batches(self.issue_id, ids)

    def restart(self) -> None:
        """Go over the unfinished deliveries again from the first (rows whose lease ran out)."""
        self._after_id, self._exhausted = 0, False


class Watch:
    """What `follow` notices between two polls: rows a dead worker left, a send that stalled, and why."""

    def __init__(self, engine: Engine, queue: Queue, issue_id: int, say: Say) -> None:
        self.engine, self.queue, self.issue_id, self.say = engine, queue, issue_id, say
        self.lease_seconds = queue.settings.lease_seconds
        now = time.monotonic()
        self.last_done, self.explained, self.waited_for = -1, "", ""
        self.last_move = self.last_sweep = self.last_requeue = now  # last progress, sweep, re-enqueue
        self.last_orphans = -math.inf  # the first look is at once: a resumed send takes a dead run's rows

    def saw(self, counts: ledger.Counts, feeder: Feeder | None) -> None:
        now = time.monotonic()
        if counts.done != self.last_done:
            self.last_done, self.last_move, self.explained = counts.done, now, ""
        if now - self.last_orphans >= ORPHAN_SWEEP_SECONDS:
            # Rows of a process of this machine that runs no longer: no lease of theirs is renewed again.
            self.last_orphans = now
            self._enqueue(lambda session: leases.release_orphans(session, Delivery, Delivery.issue_id == self.issue_id))
        if now - self.last_sweep > self.lease_seconds / 2:
            # A live worker renews its leases: one that ran out belongs to a worker that died.
            self.last_sweep = now
            self._enqueue(lambda session: ledger.expired_ids(session, self.issue_id, self.lease_seconds))
        if now - max(self.last_move, self.last_requeue) > self.lease_seconds:
            # Nothing moved for a whole lease while rows are due: a queue message was lost; claiming makes a
            # second one harmless.
            self.last_requeue = now
            if feeder is not None:
                feeder.restart()
            else:
                due = functools.partial(ledger.claimable_ids, issue_id=self.issue_id, lease_seconds=self.lease_seconds)
                self._enqueue(lambda session: list(due(session, due_only=True)))
        self._tell_wait()
        if now - self.last_move > STALL_SECONDS or self.queue.held():
            self._explain(counts, now - self.last_move)

    def _tell_wait(self) -> None:
        """Say what the workers hold back for on purpose (the rate limit, a relay throttling) and until when,
        once per reason (a process's hold said so is not said again by `_explain`)."""
        wait = self.queue.waiting()
        if wait is None:
            self.waited_for = ""
        elif wait.why != self.waited_for:
            self.waited_for = self.explained = wait.why
            self.say(f"Waiting: {wait.line()}")

    def _enqueue(self, find: Callable[[Session], list[int]]) -> None:
        """Enqueue the rows `find` names, once what it changed is committed (it may give rows back)."""

        def found() -> list[int]:
            with database.transaction(self.engine) as session:
                return find(session)

        ids = outages.wait_out(found, say=self.say)
        if ids:  # a broker away is waited out without finding again: rows given back are no longer found
            outages.wait_out(lambda: self.queue.enqueue_batches(self.issue_id, ids), say=self.say)

    def _explain(self, counts: ledger.Counts, idle_seconds: float) -> None:
        """Say once per stall (and again when the reason changes) what the send waits for."""
        why = self.queue.held()
        if why is None and not self.queue.embedded:
            with database.make_sessionmaker(self.engine)() as session:
                reply = ledger.waiting_reply(session, self.issue_id)
            if counts[DeliveryStatus.SENDING] == 0 and idle_seconds >= NO_WORKER_SECONDS:
                settings = self.queue.settings
                why = (
                    f"no worker has taken a delivery for {idle_seconds:.0f} s: is a `newsletter worker` running "
                    f"on {settings.broker_url.split('@')[-1]}, queue {settings.queue_name!r}? Start one with "
                    "`newsletter worker`"
                )
                if reply:
                    why += f" (the last reply held back: {reply})"
            elif reply:
                why = f"the workers wait: {reply}"
        if why and why != self.explained:
            self.explained = why
            self.say(f"Waiting: {why}")


def follow(
    engine: Engine,
    queue: Queue,
    issue_id: int,
    progress: Progress | None = None,
    feeder: Feeder | None = None,
    say: Say | None = None,
) -> ledger.Counts:
    """Report progress from the database until no delivery is unfinished; returns the final counts.

    Rows whose lease ran out (their worker died) are enqueued again at once, and so are those of a process
    of this machine that runs no longer, without waiting for their lease (owners.py); when nothing moved for
    `lease_seconds` while due rows wait (a queue message was lost), those are; claiming makes either
    harmless. `say` hears what the send waits for (no worker, a relay refusing, the database away).
    With a `feeder` (the in-process queue), it keeps the queue topped up between two polls.

    Raises:
        SessionRefused: the in-process worker's relay refused our session (AUTH, TLS certificate); the
            rows it had not sent stay unfinished for the next run.
    """
    tell = say or LOGGER.warning
    watch = Watch(engine, queue, issue_id, tell)
    total: int | None = None  # counted in full once, then only what is not sent yet (ledger.counts_since)
    while True:
        refused = queue.refused()
        if refused is not None:
            raise refused
        counts = outages.wait_out(functools.partial(_poll, engine, issue_id, total), say=tell)
        total = counts.total
        if progress is not None:
            progress(counts)
        if counts.remaining == 0:
            return counts
        watch.saw(counts, feeder)
        _wait(feeder, tell)


def _poll(engine: Engine, issue_id: int, total: int | None) -> ledger.Counts:
    with database.transaction(engine) as session:
        counts = ledger.counts(session, issue_id) if total is None else ledger.counts_since(session, issue_id, total)
        if counts.remaining == 0:
            counts = ledger.counts(session, issue_id)  # the final figures, exact
            ledger.finish_issue(session, issue_id)
        return counts


def _wait(feeder: Feeder | None, say: Say) -> None:
    """Sleep until the next poll, topping the in-process queue up meanwhile."""
    if feeder is None:
        time.sleep(FOLLOW_POLL_SECONDS)
        return
    until = time.monotonic() + FOLLOW_POLL_SECONDS
    while True:
        outages.wait_out(feeder.top_up, say=say)
        left = until - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(FEED_POLL_SECONDS, left))


def send_issue(
    engine: Engine,
    queue: Queue,
    rendered: RenderedIssue,
    force: bool = False,
    progress: Progress | None = None,
    segment: Segment | None = None,
    say: Say | None = None,
) -> ledger.Counts:
    """Send (or resume) an issue and return when it is out.

    Embedded (StubBroker): the worker runs in this process and stops when this returns or is
    interrupted; what is unfinished then goes out on the next run. Distributed: workers do the work and
    this only follows; an interrupt here loses nothing.
    """
    return deliver(engine, queue, start(engine, rendered, force, segment), progress, say)


def resend_failed(
    engine: Engine, queue: Queue, slug: str, progress: Progress | None = None, say: Say | None = None
) -> ledger.Counts:
    """Put the deliveries that exhausted their retries back in the queue, and follow until done."""
    with database.transaction(engine) as session:
        issue = ledger.find_issue(session, slug)
        ledger.retry_failed(session, issue.id)
        issue_id = issue.id
    return deliver(engine, queue, issue_id, progress, say)


def deliver(
    engine: Engine, queue: Queue, issue_id: int, progress: Progress | None = None, say: Say | None = None
) -> ledger.Counts:
    """Enqueue the issue's unfinished deliveries and follow until none is left.

    A real broker gets every batch at once; the in-process queue is fed a few batches at a time by the
    worker that runs here, and stops with this function.
    """
    if not queue.embedded:
        outages.wait_out(lambda: queue.enqueue_unfinished(issue_id), say=say)  # the broker may be away
        return follow(engine, queue, issue_id, progress, say=say)
    queue.start_worker()
    try:
        return follow(engine, queue, issue_id, progress, Feeder(engine, queue, issue_id), say)
    finally:
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
                email=address,
                name=None,
                message_id=make_msgid(f"test.{number}", links.sender_domain(settings)),
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


def dry_run(
    engine: Engine, settings: Settings, rendered: RenderedIssue, force: bool = False, segment: Segment | None = None
) -> DryRun:
    """Everything but the SMTP transaction: store, create deliveries, compose and sign every message; then
    roll all of it back."""
    started = time.monotonic()
    composer = Composer(settings, DkimSigner.from_settings(settings))
    template = MessageTemplate.build(rendered, settings)
    messages = total = 0
    with database.make_sessionmaker(engine)() as session:
        try:
            issue = ledger.store_issue(session, rendered, force)
            issue.segment = (segment or Segment()).as_json()
            ledger.create_deliveries(session, issue)
            rows = session.execute(
                select(Delivery.id, Delivery.subscriber_id, Subscriber.email, Subscriber.name, Subscriber.attributes)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(Delivery.issue_id == issue.id, Delivery.status == DeliveryStatus.PENDING)
                .execution_options(yield_per=ledger.STREAM_ROWS)
            )
            for delivery_id, subscriber_id, email, name, attributes in rows:
                claim = Claim(delivery_id, subscriber_id, email, name, 1, attributes or {})
                composed = composer.compose(template, issue.id, claim)
                messages, total = messages + 1, total + len(composed.message)
        finally:
            session.rollback()
    return DryRun(messages, total, time.monotonic() - started)
