"""The queue: the Dramatiq broker, the sending actors, and the worker that runs them in this process.

Messages carry ids only; the database is the truth (see ledger.py). Without `broker_url` the broker is
Dramatiq's StubBroker and the worker runs inside the process that sends (`newsletter send`, the web app);
with `redis://` or `amqp://` any number of `newsletter worker` processes share the work.

Sending a one-off message (a confirmation mail) through the same queue and SMTP path as issues:

    queue = Queue(settings, engine)          # once per process; Queue.start_worker() when embedded
    with database.transaction(engine) as session:
        outbound_id = outbox.store_message(session, "confirm", envelope_from, recipient, message_bytes)
    queue.send_messages([outbound_id])       # after the commit: the worker reads the rows by id

The message is sent once it is accepted (2xx), retried with backoff on temporary failures and marked
`bounced` on a permanent one; `outbound_messages` holds its state and the server's last reply.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence

import dramatiq
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine

from newsletter import brokers, database, leases, ledger, outages
from newsletter.brokers import make_broker
from newsletter.connections import make_slots
from newsletter.errors import NewsletterError
from newsletter.lanes import make_rate_limiter
from newsletter.models import utcnow
from newsletter.sender import Sender
from newsletter.settings import Settings
from newsletter.waits import Wait, make_waits

LOGGER = logging.getLogger("newsletter.queue")
DELIVERIES_ACTOR = "send_deliveries"
MESSAGE_ACTOR = "send_message"
ACTOR_MAX_RETRIES = 20  # the actor failed as a whole (database unreachable): Dramatiq retries with backoff
ACTOR_MIN_BACKOFF_MS = 1_000
ACTOR_MAX_BACKOFF_MS = 300_000
BATCH_TIME_LIMIT_MS = 30 * 60 * 1000
MESSAGE_TIME_LIMIT_MS = 5 * 60 * 1000
WORKER_STOP_TIMEOUT_MS = 60_000
# A batch a stopping worker hands back: the broker may be away, it is tried this long (then `send` finds it).
REQUEUE_ON_STOP_SECONDS = 10.0


class Queue:
    """The broker and the actors of this process; the Sender is made on first use, in workers only."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        broker: dramatiq.Broker | None = None,
        sender_factory: Callable[[], Sender] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.broker = broker if broker is not None else make_broker(settings)
        self.waits = make_waits(settings)
        self._sender_factory = sender_factory or (
            lambda: Sender(
                settings, engine, rate_limiter=make_rate_limiter(settings), slots=make_slots(settings), waits=self.waits
            )
        )
        self._sender: Sender | None = None
        self._lock = threading.Lock()
        self._worker: dramatiq.Worker | None = None
        self._requeue_pending = False  # a re-enqueue after an outage is about to run
        self.deliveries_actor, self.message_actor = self._declare_actors()

    @property
    def embedded(self) -> bool:
        return isinstance(self.broker, StubBroker)

    def backlog(self) -> int:
        """Messages waiting in the in-process queue (retries waiting for their time not counted)."""
        if not isinstance(self.broker, StubBroker):
            raise TypeError("only the in-process queue can be counted; a real broker is shared")
        return int(self.broker.queues[self.settings.queue_name].qsize())

    def refused(self) -> NewsletterError | None:
        """Why the relay refused this process's SMTP session, if it did (None before any Sender exists)."""
        return self._sender.refused if self._sender is not None else None

    def held(self) -> str | None:
        """Why this process's worker sends nothing right now (a refused session, a failing relay), or None."""
        return self._sender.held() if self._sender is not None else None

    def waiting(self) -> Wait | None:
        """What the workers hold back for on purpose right now (the rate limit, a relay throttling), or None."""
        try:
            return self.waits.current()
        except Exception as error:  # Redis away: `send` says so where it polls the broker, not here
            if outages.link_of(error) is None:
                raise
            return None

    def sender(self) -> Sender:
        with self._lock:
            if self._sender is None:
                self._sender = self._sender_factory()
            return self._sender

    def _declare_actors(
        self,
    ) -> tuple[dramatiq.Actor[[int, list[int]], None], dramatiq.Actor[[list[int] | int], None]]:
        queue_name = self.settings.queue_name

        @dramatiq.actor(
            broker=self.broker,
            actor_name=DELIVERIES_ACTOR,
            queue_name=queue_name,
            max_retries=ACTOR_MAX_RETRIES,
            time_limit=BATCH_TIME_LIMIT_MS,
            min_backoff=ACTOR_MIN_BACKOFF_MS,
            max_backoff=ACTOR_MAX_BACKOFF_MS,
        )
        def send_deliveries(issue_id: int, delivery_ids: list[int]) -> None:
            """Send a batch of deliveries by id; idempotent, since only claimed rows are sent."""
            sender = self.sender()
            left = sender.send_deliveries(issue_id, delivery_ids)
            if left.ids:
                LOGGER.debug(
                    "%d deliveries of issue %d back in the queue for %s",
                    len(left.ids),
                    issue_id,
                    left.ready_at,
                )
                # Retries, held rows, and on a stop the rows given back: queued again at once for another worker.
                outages.wait_out(
                    lambda: self.send_deliveries(issue_id, left.ids, at=left.ready_at),
                    sender.stopping,
                    give_up_seconds=REQUEUE_ON_STOP_SECONDS,
                )

        @dramatiq.actor(
            broker=self.broker,
            actor_name=MESSAGE_ACTOR,
            queue_name=queue_name,
            max_retries=ACTOR_MAX_RETRIES,
            time_limit=MESSAGE_TIME_LIMIT_MS,
            min_backoff=ACTOR_MIN_BACKOFF_MS,
            max_backoff=ACTOR_MAX_BACKOFF_MS,
        )
        def send_message(outbound_ids: list[int] | int) -> None:
            """Send stored one-off messages by id (one bare id: a queue message of an earlier version);
            idempotent, since only claimed rows are sent."""
            sender = self.sender()
            for left in sender.send_messages([outbound_ids] if isinstance(outbound_ids, int) else outbound_ids):
                # Retries, and on a stop the messages given back: queued again at once for another worker.
                outages.wait_out(
                    functools.partial(self.send_messages, left.ids, at=left.ready_at),
                    sender.stopping,
                    give_up_seconds=REQUEUE_ON_STOP_SECONDS,
                )

        return send_deliveries, send_message

    def send_deliveries(self, issue_id: int, delivery_ids: list[int], at: dt.datetime | None = None) -> None:
        """Enqueue one batch of delivery ids, to be worked on from `at` (now when None)."""
        self.deliveries_actor.send_with_options(args=(issue_id, delivery_ids), delay=_delay_ms(at))

    def send_messages(self, outbound_ids: Sequence[int], at: dt.datetime | None = None) -> None:
        """Enqueue stored one-off messages (outbox.store_message) by id, a group (GROUP_SIZE) a queue message:
        what a worker claims and records at once, and many of them (invitations) spread over the threads."""
        for group in _chunks(outbound_ids, leases.GROUP_SIZE):
            self.message_actor.send_with_options(args=(group,), delay=_delay_ms(at))

    def send_message(self, outbound_id: int, at: dt.datetime | None = None) -> None:
        """Enqueue one stored one-off message by id."""
        self.send_messages([outbound_id], at)

    def enqueue_batches(self, issue_id: int, delivery_ids: Iterable[int]) -> int:
        """Enqueue `delivery_ids` in messages of `batch_size` ids; returns the number of messages."""
        messages = 0
        for batch in _chunks(delivery_ids, self.settings.batch_size):
            self.send_deliveries(issue_id, batch)
            messages += 1
        return messages

    def enqueue_unfinished(self, issue_id: int) -> int:
        """Enqueue every unfinished delivery of the issue no live worker holds; returns the number of messages."""
        with database.make_sessionmaker(self.engine)() as session:
            return self.enqueue_batches(issue_id, ledger.claimable_ids(session, issue_id, self.settings.lease_seconds))

    def _enqueue_after_outage(self) -> None:
        """The broker answers again after an outage, which may have lost queue messages (see brokers.py):
        enqueue again the unfinished deliveries of every issue being sent, in a thread of their own."""
        with self._lock:
            if self._requeue_pending:
                return
            self._requeue_pending = True

        def requeue() -> None:
            with self._lock:
                self._requeue_pending = False
            with database.make_sessionmaker(self.engine)() as session:
                issue_ids = ledger.sending_issue_ids(session)
            messages = sum(self.enqueue_unfinished(issue_id) for issue_id in issue_ids)
            if messages:
                LOGGER.info("the broker is back: %d batches enqueued again, in case the outage lost one", messages)

        def run() -> None:
            try:
                outages.wait_out(requeue, self.sender().stopping, give_up_seconds=REQUEUE_ON_STOP_SECONDS)
            except Exception as error:  # stopping while the link is away again: `send`'s sweeps remain
                if outages.link_of(error) is None:
                    raise
                LOGGER.warning("could not enqueue again after the outage: %s", outages.describe(error))

        threading.Thread(target=run, name="newsletter-requeue", daemon=True).start()

    def start_worker(self, threads: int | None = None) -> dramatiq.Worker:
        """Run a Dramatiq worker in this process: one thread, and one SMTP connection, per `threads`.

        Raises:
            ConfigError: the workers have no Redis to share their rate limit or connection count in.
        """
        if not self.embedded:
            self.sender()  # a worker that cannot share smtp_connections says so now, not at its first message
        link = brokers.link_of(self.broker)
        if link is not None:
            link.on_back(self._enqueue_after_outage)
        worker = dramatiq.Worker(
            self.broker,
            worker_threads=threads or self.settings.smtp_connections,
            worker_timeout=100 if self.embedded else 1000,
        )
        worker.start()
        self._worker = worker
        return worker

    def stop(self) -> None:
        """Let the worker threads finish their current group, stop the worker, close SMTP and the broker."""
        if self._sender is not None:
            self._sender.stopping.set()
        if self._worker is not None:
            self._worker.stop(timeout=WORKER_STOP_TIMEOUT_MS)
            self._worker = None
        if self._sender is not None:
            self._sender.close()
        self.broker.close()


def _chunks(ids: Iterable[int], size: int) -> Iterator[list[int]]:
    """`ids` in lists of `size` (the last one shorter)."""
    chunk: list[int] = []
    for one in ids:
        chunk.append(one)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _delay_ms(at: dt.datetime | None) -> int | None:
    if at is None:
        return None
    milliseconds = int((at - utcnow()).total_seconds() * 1000)
    return milliseconds if milliseconds > 0 else None
