"""A worker process's sending machinery: one template per issue, one SMTP connection per thread."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from dramatiq.rate_limits import BucketRateLimiter, RateLimiter
from dramatiq.rate_limits.backends import RedisBackend, StubBackend
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from newsletter import database, leases, ledger, links, replies
from newsletter.connections import (
    CONNECTION_IDLE_SECONDS,
    SLOT_RETRY_SECONDS,
    SLOT_WAIT_SECONDS,
    Slot,
    Slots,
)
from newsletter.domainkeys import DkimSigner
from newsletter.errors import ConfigError, NewsletterError
from newsletter.leases import Claim, Result
from newsletter.mime import MessageTemplate, Recipient
from newsletter.models import utcnow
from newsletter.render import RenderedIssue
from newsletter.replies import Action, Backoff, Verdict
from newsletter.settings import Settings
from newsletter.smtp import (
    PermanentFailure,
    Reply,
    SessionRefused,
    SmtpConnection,
    TemporaryFailure,
    is_throttling,
)
from newsletter.tokens import Signer

THROTTLE_FIRST_PAUSE_SECONDS = 0.5
THROTTLE_MAX_PAUSE_SECONDS = 60.0
RATE_POLL_SECONDS = 0.02
# After the relay refused our session (AUTH, certificate): the wait before any batch tries to connect again.
SESSION_RETRY_SECONDS = 60.0
# What a connection raises when the sender's setup, not a recipient, is at fault: never a bounce.
SESSION_ERRORS = (SessionRefused, ConfigError)
LOGGER = logging.getLogger("newsletter.sender")


class Held(NewsletterError):
    """Nothing was tried: our side cannot send now (session refused, no slot, the relay paused, stopping).

    The message goes back untried, its try uncounted, to be worked on again from `until`.
    """

    def __init__(self, why: str, until: dt.datetime) -> None:
        super().__init__(why)
        self.until = until


class Template(Protocol):
    def fill(self, recipient: Recipient) -> bytes: ...


TemplateFactory = Callable[[RenderedIssue, Settings], Template]


def build_template(issue: RenderedIssue, settings: Settings) -> Template:
    return MessageTemplate.build(issue, settings)


@dataclass(frozen=True)
class Composed:
    """One message ready for the SMTP transaction."""

    envelope_from: str
    recipient: str
    message_id: str
    message: bytes


class Composer:
    """Fills an issue's template for one subscriber and signs the result."""

    def __init__(self, settings: Settings, dkim: DkimSigner | None) -> None:
        self.settings = settings
        self.signer = Signer(settings.secret_key)
        self.dkim = dkim

    def compose(self, template: Template, issue_id: int, claim: Claim) -> Composed:
        settings, signer = self.settings, self.signer
        message_id = links.message_id(settings, issue_id, claim.subscriber_id)
        recipient = Recipient(
            email=claim.email,
            name=claim.name,
            message_id=message_id,
            unsubscribe_url=links.unsubscribe_url(settings, signer, claim.subscriber_id),
            unsubscribe_mailto=links.unsubscribe_mailto(settings, signer, claim.subscriber_id),
            preferences_url=links.preferences_url(settings, signer, claim.subscriber_id),
            fields=claim.attributes,
        )
        message = template.fill(recipient)
        if self.dkim is not None:
            message = self.dkim.sign(message)
        envelope_from = links.return_path(settings, signer, claim.delivery_id)
        return Composed(envelope_from, claim.email, message_id, message)


def make_rate_limiter(settings: Settings) -> RateLimiter | None:
    """Dramatiq's bucket limiter for `rate_limit`, counted in Redis when workers are distributed."""
    if settings.rate_limit <= 0:
        return None
    url = settings.rate_limit_url or (settings.broker_url if settings.broker_url.startswith("redis") else "")
    if settings.broker_url and not url:
        raise ConfigError("rate_limit with a RabbitMQ broker needs rate_limit_url (a redis:// URL) to count in")
    backend = RedisBackend(url=url) if url else StubBackend()  # type: ignore[no-untyped-call]
    limit = max(1, round(settings.rate_limit))
    bucket_ms = max(1, round(1000 * limit / settings.rate_limit))
    key = f"newsletter:{settings.queue_name}:rate"
    return BucketRateLimiter(backend, key, limit=limit, bucket=bucket_ms)  # type: ignore[no-untyped-call]


class Pace:
    """Slows one connection down while the server throttles (4xx), and speeds back up as it accepts."""

    def __init__(self) -> None:
        self.pause_seconds = 0.0

    def after(self, reply: Reply) -> None:
        if is_throttling(reply.code):
            self.pause_seconds = min(
                THROTTLE_MAX_PAUSE_SECONDS, max(THROTTLE_FIRST_PAUSE_SECONDS, self.pause_seconds * 2)
            )
        elif self.pause_seconds:
            halved = self.pause_seconds / 2
            self.pause_seconds = halved if halved >= THROTTLE_FIRST_PAUSE_SECONDS / 4 else 0.0


class Lane:
    """One worker thread's SMTP connection, its pace, and the slot it holds while the connection may be open."""

    def __init__(self, connection: SmtpConnection) -> None:
        self.connection = connection
        self.pace = Pace()
        self.slot: Slot | None = None
        self.used = time.monotonic()
        self.busy = threading.Lock()  # held by the thread while it sends; the keeper only takes it when free

    @property
    def holds_slot(self) -> bool:
        return self.slot is not None and not self.slot.lost

    def drop_slot(self) -> None:
        """Close the connection, then give the slot back."""
        self.connection.close()
        slot, self.slot = self.slot, None
        if slot is not None:
            slot.give_back()

    def tend(self) -> None:
        """The keeper's round: renew the slot; close the connection if it sat idle or lost its slot."""
        slot = self.slot
        if slot is None:
            return
        slot.renew()
        if not self.busy.acquire(blocking=False):
            return  # sending right now: hardly idle, and a lost slot is seen before the next message
        try:
            if self.slot is not None and (self.slot.lost or time.monotonic() - self.used > CONNECTION_IDLE_SECONDS):
                self.drop_slot()
        finally:
            self.busy.release()


class Sender:
    """Sends the deliveries a queue message names: claim, compose, SMTP, record, in small groups."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        template_factory: TemplateFactory = build_template,
        rate_limiter: RateLimiter | None = None,
        slots: Slots | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.composer = Composer(settings, DkimSigner.from_settings(settings))
        self.rate_limiter = rate_limiter
        self.slots = slots
        self.stopping = threading.Event()
        self._template_factory = template_factory
        self._templates: dict[tuple[int, str], Template] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._lanes: list[Lane] = []
        self._closed = threading.Event()
        self._keeper: threading.Thread | None = None
        if slots is not None:
            self._keeper = threading.Thread(target=self._keep_slots, name="newsletter-slots", daemon=True)
            self._keeper.start()
        self.refused: NewsletterError | None = None  # the last SessionRefused (or unreadable smtp_ca_file)
        self._holding = ""  # why nothing goes out until _held_until (a refused session, a relay that fails)
        self._held_until: dt.datetime | None = None
        self._link = Backoff()

    def send_deliveries(self, issue_id: int, delivery_ids: Sequence[int]) -> leases.Unfinished:
        """Send what can be sent now of `delivery_ids`; returns those still to go (retries, held rows)."""
        try:
            self._check_hold()
            if not self.hold_slot():
                raise self._no_slot()
        except Held as held:
            # No slot free, or the relay refused our session or failed a moment ago: the rows stay claimable,
            # untouched, and the batch comes back later (rather than try AUTH again for every batch in the queue).
            return leases.Unfinished(list(delivery_ids), held.until)
        template = self.template(issue_id)
        resume_at: dt.datetime | None = None
        sent: tuple[list[Claim], list[Result]] = ([], [])  # the last group's outcomes, committed with what follows
        for start in range(0, len(delivery_ids), leases.GROUP_SIZE):
            if self.stopping.is_set() or resume_at is not None:
                break
            group = delivery_ids[start : start + leases.GROUP_SIZE]
            # One transaction records the group just sent and claims the next: the outcomes still commit
            # before another message goes out, so the duplicate window stays one group per thread.
            with database.transaction(self.engine) as session:
                self._record(session, issue_id, *sent)
                claims = leases.claim(session, issue_id, group, self.settings.lease_seconds)
            results, resume_at = self._send_group(template, issue_id, claims)
            sent = (claims, results)
        with database.transaction(self.engine) as session:
            self._record(session, issue_id, *sent)
            left = leases.unfinished(session, delivery_ids, self.settings.lease_seconds)
            ledger.finish_issue(session, issue_id)
        if resume_at is not None and left.delivery_ids:
            return leases.Unfinished(left.delivery_ids, max(resume_at, left.ready_at or resume_at))
        return left

    def _record(self, session: Session, issue_id: int, claims: list[Claim], results: list[Result]) -> None:
        """Record a sent group's outcomes and give back the claimed rows it did not try."""
        leases.record(session, self.settings, issue_id, results)
        leases.release(session, [claim.delivery_id for claim in claims[len(results) :]])

    def _send_group(
        self, template: Template, issue_id: int, claims: list[Claim]
    ) -> tuple[list[Result], dt.datetime | None]:
        """Send the claimed group in order, stopping before a message that could outlive half the lease.

        A slow server (long throttling pauses, timeouts) must never let a lease run out while its rows are
        still being sent: another worker would take them and send them a second time. Returns the results
        and, when the group was cut short by our side (no slot, session refused, relay paused), when to resume.
        """
        deadline = time.monotonic() + self.settings.lease_seconds / 2
        results: list[Result] = []
        for claim in claims:
            if results and (self.stopping.is_set() or time.monotonic() + self._pause_ahead() > deadline):
                break
            composed = self.composer.compose(template, issue_id, claim)
            try:
                verdict = self.send_bytes(composed.envelope_from, composed.recipient, composed.message)
            except Held as held:  # the rows from this one on are given back, their try uncounted
                return results, held.until
            results.append(Result(claim, verdict, composed.message_id))
        return results, None

    def refuse(self, refused: NewsletterError) -> dt.datetime:
        """Remember that the relay refused our session: no batch tries again for SESSION_RETRY_SECONDS."""
        self.refused = refused
        return self._hold(str(refused), SESSION_RETRY_SECONDS)

    def _hold(self, why: str, seconds: float) -> dt.datetime:
        """Send nothing from this process for `seconds`: every message meanwhile is given back untried."""
        with self._lock:
            until = utcnow() + dt.timedelta(seconds=seconds)
            if self._held_until is None or self._held_until < until:
                LOGGER.warning("%s; trying again in %.0f s", why, seconds)
                self._held_until, self._holding = until, why
            return self._held_until

    def held(self) -> str | None:
        """Why this process sends nothing right now (a refused session, a failing relay), or None."""
        with self._lock:
            if self._held_until is not None and self._held_until > utcnow():
                return self._holding
        return None

    def _check_hold(self) -> None:
        """Raise Held while the process holds back (a refused session, a failing relay) or is stopping."""
        if self.stopping.is_set():
            raise Held("stopping", utcnow())
        with self._lock:
            until, why = self._held_until, self._holding
        if until is not None and until > utcnow():
            raise Held(why, until)

    def _no_slot(self) -> Held:
        return Held(
            f"all {self.settings.smtp_connections} SMTP connections are open elsewhere",
            utcnow() + dt.timedelta(seconds=SLOT_RETRY_SECONDS),
        )

    def template(self, issue_id: int) -> Template:
        """The issue's message template, built once per process and rebuilt when the stored issue changed."""
        with database.transaction(self.engine) as session:
            source_hash = ledger.issue_hash(session, issue_id)
            with self._lock:
                cached = self._templates.get((issue_id, source_hash))
            if cached is not None:
                return cached
            issue = ledger.rendered_issue(session, issue_id)
        template = self._template_factory(issue, self.settings)
        with self._lock:
            self._templates[(issue_id, source_hash)] = template
        return template

    def send_bytes(self, envelope_from: str, recipient: str, message: bytes) -> Verdict:
        """One SMTP transaction on this thread's connection, paced by the rate limit and by throttling.

        Returns what the reply means (replies.judge) when it is the recipient's business: sent, to retry,
        bounced or failed. A refused session, a relay that cannot be reached or resets the connection, or a
        421 hold the whole process back instead, for a short backoff, and raise Held: nothing was spent.

        Raises:
            Held: nothing was tried (see Held).
        """
        self._check_hold()
        lane = self._lane()
        with lane.busy:
            if lane.slot is not None and lane.slot.lost:  # it expired under us: the connection must not stay open
                lane.drop_slot()
            if self.slots is not None and lane.slot is None:
                lane.slot = self.slots.wait(self.stopping, SLOT_WAIT_SECONDS)
                if lane.slot is None:
                    raise self._no_slot()
            try:
                reply = self._send_paced(lane, envelope_from, recipient, message)
            except SESSION_ERRORS as refused:
                raise Held(str(refused), self.refuse(refused)) from None
            finally:
                lane.used = time.monotonic()
        verdict = replies.judge(reply)
        if verdict.action == Action.HOLD:
            where = f"{self.settings.smtp_host}:{self.settings.smtp_port}"
            raise Held(str(reply), self._hold(f"the SMTP server {where} failed: {reply}", self._link.next_seconds()))
        self._link.reset()
        return verdict

    def _send_paced(self, lane: Lane, envelope_from: str, recipient: str, message: bytes) -> Reply:
        if lane.pace.pause_seconds:
            self.stopping.wait(lane.pace.pause_seconds)
        self._wait_for_rate()
        if self.stopping.is_set():
            raise Held("stopping", utcnow())  # finish the message in flight, never start one while stopping
        try:
            reply = lane.connection.send(envelope_from, recipient, message)
        except (TemporaryFailure, PermanentFailure) as failure:
            reply = failure.reply
        lane.pace.after(reply)
        return reply

    def hold_slot(self) -> bool:
        """Make sure this thread holds one of the fleet's connection slots (always true in-process)."""
        if self.slots is None:
            return True
        lane = self._lane()
        with lane.busy:
            if not lane.holds_slot:
                lane.drop_slot()
                lane.slot = self.slots.wait(self.stopping, SLOT_WAIT_SECONDS)
            lane.used = time.monotonic()
            return lane.slot is not None

    def _wait_for_rate(self) -> None:
        if self.rate_limiter is None:
            return
        while not self.stopping.is_set():
            with self.rate_limiter.acquire(raise_on_failure=False) as acquired:
                if acquired:
                    return
            self.stopping.wait(RATE_POLL_SECONDS)

    def _lane(self) -> Lane:
        lane: Lane | None = getattr(self._local, "lane", None)
        if lane is None:
            lane = self._local.lane = Lane(SmtpConnection(self.settings))
            with self._lock:
                self._lanes.append(lane)
        return lane

    def _pause_ahead(self) -> float:
        lane: Lane | None = getattr(self._local, "lane", None)
        return lane.pace.pause_seconds if lane is not None else 0.0

    def _keep_slots(self) -> None:
        """Renew the slots this process holds, and close the connections that sat idle (giving their slot back)."""
        assert self.slots is not None
        interval = min(self.slots.ttl_seconds, CONNECTION_IDLE_SECONDS) / 3
        while not self._closed.wait(interval):
            with self._lock:
                lanes = list(self._lanes)
            for lane in lanes:
                try:
                    lane.tend()
                except Exception:  # Redis away for a moment: the next round tries again, the ttl allows it
                    LOGGER.exception("could not renew an SMTP connection slot")

    def close(self) -> None:
        """Close every thread's SMTP connection (QUIT) and give its slot back."""
        self.stopping.set()
        self._closed.set()
        if self._keeper is not None:
            self._keeper.join()
        with self._lock:
            lanes, self._lanes = self._lanes, []
        for lane in lanes:
            with lane.busy:
                lane.drop_slot()
