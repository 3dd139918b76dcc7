"""A worker process's sending machinery: one template per issue, one SMTP connection per thread."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from dramatiq.rate_limits import RateLimiter
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from newsletter import database, leases, ledger, links, outages, outbox, relays, replies
from newsletter.connections import (
    CONNECTION_IDLE_SECONDS,
    SLOT_RETRY_SECONDS,
    SLOT_WAIT_SECONDS,
    Slot,
    Slots,
)
from newsletter.domainkeys import DkimSigner
from newsletter.errors import ConfigError, NewsletterError
from newsletter.lanes import Lane, next_bucket_at
from newsletter.leases import Claim, Result
from newsletter.mime import MessageTemplate, Recipient
from newsletter.models import Delivery, DeliveryStatus, OutboundMessage, utcnow
from newsletter.render import RenderedIssue
from newsletter.replies import Action, Backoff, Verdict
from newsletter.sendcounts import REPORT_SECONDS, SendCounts
from newsletter.settings import Settings
from newsletter.smtp import PermanentFailure, Reply, SessionRefused, SmtpConnection, TemporaryFailure
from newsletter.tokens import Signer
from newsletter.waits import Wait, Waits, rate_words

RATE_POLL_SECONDS = 0.02
# After the relay refused our session (AUTH, certificate): the wait before any batch tries to connect again.
SESSION_RETRY_SECONDS = 60.0
# How often a process that sends clears refusals another process recorded (its own: at its next message sent).
REFUSAL_CLEAR_SECONDS = 60.0
# What a connection raises when the sender's setup, not a recipient, is at fault: never a bounce.
SESSION_ERRORS = (SessionRefused, ConfigError)
# A stopping worker whose database is away tries this long to record what it sent, then gives up (those
# messages would go out again, as after a crash).
STOP_RECORD_SECONDS = 30.0
LOGGER = logging.getLogger("newsletter.sender")
T = TypeVar("T")


class Held(NewsletterError):
    """Nothing was tried: our side cannot send now (session refused, no slot, the relay paused, stopping).

    The message goes back untried, its try uncounted, to be worked on again from `until`; `why` is empty
    for a stop, which is no news for the editor.
    """

    def __init__(self, why: str, until: dt.datetime) -> None:
        super().__init__(why)
        self.until = until


@dataclass(frozen=True)
class Group:
    """A claimed group after sending: the outcomes of those tried, and why the rest was held back (if so)."""

    claims: list[Claim]
    results: list[Result]
    held: Held | None = None


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
        message = self.signed(template.fill(recipient))
        envelope_from = links.return_path(settings, signer, claim.delivery_id)
        return Composed(envelope_from, claim.email, message_id, message)

    def signed(self, message: bytes) -> bytes:
        """The message with our DKIM signature in front, when a key is configured."""
        return message if self.dkim is None else self.dkim.sign(message)

    def one_off(self, outbound_id: int, message: bytes) -> tuple[str, bytes]:
        """The VERP envelope sender and the DKIM-signed bytes of a stored one-off message, like an issue's."""
        return links.outbound_return_path(self.settings, self.signer, outbound_id), self.signed(message)


class Sender:
    """Sends the deliveries a queue message names: claim, compose, SMTP, record, in small groups."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        template_factory: TemplateFactory = build_template,
        rate_limiter: RateLimiter | None = None,
        slots: Slots | None = None,
        waits: Waits | None = None,
    ) -> None:
        self.settings = settings
        self.waits = waits or Waits("", "")
        self.engine = engine
        self.composer = Composer(settings, DkimSigner.from_settings(settings))
        self.rate_limiter = rate_limiter
        self.slots = slots
        self.stopping = threading.Event()
        self._template_factory = template_factory
        self._templates: dict[tuple[int, str], Template] = {}
        self._lock = threading.Lock()
        self._told: set[str] = set()  # reasons of our side's failures of one-off mails, logged once
        self._local = threading.local()
        self._lanes: list[Lane] = []
        self._closed = threading.Event()
        self.heartbeat = leases.Heartbeat(engine, settings.lease_seconds)
        self.counts = SendCounts()
        self._keeper = threading.Thread(target=self._keep, name="newsletter-keeper", daemon=True)
        self._keeper.start()
        self.refused: NewsletterError | None = None  # the last SessionRefused (or unreadable smtp_ca_file)
        self._holding = ""  # why nothing goes out until _held_until (a refused session, a relay that fails)
        self._held_until: dt.datetime | None = None
        self._link = Backoff()
        self._clear_refusals_at = 0.0  # monotonic: when a message sent next clears the recorded refusals

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
        template = outages.wait_out(lambda: self.template(issue_id), self.stopping)
        sent = Group([], [])  # the last group's outcomes, committed with what follows
        for start in range(0, len(delivery_ids), leases.GROUP_SIZE):
            if self.stopping.is_set() or sent.held is not None:
                break
            group = delivery_ids[start : start + leases.GROUP_SIZE]
            # One transaction records the group just sent and claims the next: the outcomes still commit
            # before another message goes out, so the duplicate window stays one group per thread. When the
            # commit fails (the database went away), the outcomes stay here and the commit is tried again.
            tries: list[dt.datetime] = []  # the claim times of the attempts, should a commit fail unseen
            record_and_claim = functools.partial(self._record_and_claim, issue_id=issue_id, sent=sent, group=group)
            claims = self.commit(functools.partial(record_and_claim, tries=tries))
            claimed = time.monotonic()
            self.heartbeat.hold(Delivery, [claim.delivery_id for claim in claims])
            sent = self._send_group(template, issue_id, claims, claimed)
        left = self.commit(
            functools.partial(self._record_and_finish, issue_id=issue_id, sent=sent, delivery_ids=delivery_ids)
        )
        if sent.held is not None and left.ids:
            resume_at = sent.held.until
            return leases.Unfinished(left.ids, max(resume_at, left.ready_at or resume_at))
        return left

    def send_messages(self, outbound_ids: Sequence[int]) -> list[leases.Unfinished]:
        """Send the stored one-off messages of `outbound_ids` that are ours to send; returns those still to go:
        the ones held back (with when our side may try again) and the retries (with the latest one's time).

        A group at a time, as a batch's deliveries: one statement claims the group and one records its
        outcomes, so the duplicate window stays one group per thread (GROUP_SIZE, as the README says).
        """
        held: Held | None = None
        untried: list[int] = []
        retries: list[int] = []
        retry_at: dt.datetime | None = None
        for start in range(0, len(outbound_ids), leases.GROUP_SIZE):
            group = list(outbound_ids[start : start + leases.GROUP_SIZE])
            if held is None:
                try:
                    self._check_hold()
                except Held as holding:
                    held = holding
            if held is not None:
                untried.extend(group)
                continue
            retry_seconds, given_back, held = self._send_message_group(group)
            untried.extend(given_back)
            for outbound_id, seconds in retry_seconds.items():
                if seconds is not None:
                    retries.append(outbound_id)
                    at = utcnow() + dt.timedelta(seconds=seconds)
                    retry_at = at if retry_at is None else max(retry_at, at)
        left: list[leases.Unfinished] = []
        if untried:
            left.append(leases.Unfinished(untried, held.until if held is not None else utcnow()))
        if retries:
            left.append(leases.Unfinished(retries, retry_at))
        return left

    def _send_message_group(self, group: list[int]) -> tuple[dict[int, float | None], list[int], Held | None]:
        """Claim, send and record one group of one-off messages; returns the seconds before each tried one's
        next try (None: final), the claimed ones given back untried, and why (if our side held them back)."""
        lease = self.settings.lease_seconds
        claimed = self.commit_statement(
            functools.partial(outbox.claim_messages, outbound_ids=group, lease_seconds=lease)
        )
        sent, held = self._send_claimed_messages(claimed)
        given_back = [message.outbound_id for message in claimed[len(sent) :]]
        if given_back:
            self.commit_statement(functools.partial(outbox.release_messages, outbound_ids=given_back))
        if not sent:
            return {}, given_back, held
        retry_seconds = self.commit_statement(
            functools.partial(outbox.record_messages, settings=self.settings, sent=sent)
        )
        for _message, verdict in sent:
            self.tell_once(verdict)  # the relay lacks SMTPUTF8, refuses our MAIL FROM...: once, not per reader
        tried = {message.outbound_id: seconds for (message, _verdict), seconds in zip(sent, retry_seconds, strict=True)}
        return tried, given_back, held

    def _send_claimed_messages(self, claimed: list[outbox.Prepared]) -> tuple[list[outbox.Sent], Held | None]:
        """Send claimed one-off messages in order, as _send_group an issue's deliveries; returns the tried
        ones with their verdicts, and why the rest was held back (if it was by our side)."""
        started = time.monotonic()
        ids = [message.outbound_id for message in claimed]
        # Renewed like a batch's rows: a rate-limit wait and a slow server never let a lease run out under it.
        self.heartbeat.hold(OutboundMessage, ids)
        sent: list[outbox.Sent] = []
        try:
            for message in claimed:
                if sent and not self._may_go_on(started):
                    break
                # Signed and given its VERP sender here, not when stored: the web app holds no key, and a
                # bounce of the mail names the message it is about.
                envelope_from, signed = self.composer.one_off(message.outbound_id, message.message)
                try:
                    sent.append((message, self.send_bytes(envelope_from, message.recipient, signed)))
                except Held as held:  # no try spent: given back
                    return sent, held
        finally:
            # Dropped before the record: a beat after it would find the rows final, one before it renews them.
            self.heartbeat.drop(OutboundMessage, ids)
        return sent, None

    def _may_go_on(self, claimed: float) -> bool:
        """Whether the next message of a group claimed at monotonic `claimed` may start: not while stopping,
        nor when it could outlive half the lease (see _send_group)."""
        if self.stopping.is_set():
            return False
        return self.heartbeat.lease_left(claimed) - self._pause_ahead() >= self.settings.lease_seconds / 2

    def commit(self, work: Callable[[Session], T]) -> T:
        """`work` in one transaction, tried again while the database is unreachable (outages.wait_out)."""

        def attempt() -> T:
            with database.transaction(self.engine) as session:
                return work(session)

        return outages.wait_out(attempt, self.stopping, give_up_seconds=STOP_RECORD_SECONDS)

    def commit_statement(self, work: Callable[[Connection], T]) -> T:
        """`work` of one statement (database.run_statement), tried again while the database is unreachable."""
        return outages.wait_out(
            lambda: database.run_statement(self.engine, work), self.stopping, give_up_seconds=STOP_RECORD_SECONDS
        )

    def _record_and_claim(
        self, session: Session, issue_id: int, sent: Group, group: Sequence[int], tries: list[dt.datetime]
    ) -> list[Claim]:
        self._record(session, issue_id, sent)
        for claimed_at in tries:  # an earlier attempt's COMMIT may have gone through unseen
            leases.unclaim(session, group, claimed_at)
        tries.append(utcnow())
        return leases.claim(session, issue_id, group, self.settings.lease_seconds, now=tries[-1])

    def _record_and_finish(
        self, session: Session, issue_id: int, sent: Group, delivery_ids: Sequence[int]
    ) -> leases.Unfinished:
        self._record(session, issue_id, sent)
        left = leases.unfinished(session, delivery_ids, self.settings.lease_seconds)
        ledger.finish_issue(session, issue_id)
        return left

    def _record(self, session: Session, issue_id: int, sent: Group) -> None:
        """Record a sent group's outcomes and give back the claimed rows it did not try (with why, if held)."""
        statuses = leases.record(session, self.settings, issue_id, sent.results)
        for status in statuses:
            self.counts.add("retry" if status == DeliveryStatus.PENDING else str(status))
        if DeliveryStatus.SENT in statuses and time.monotonic() >= self._clear_refusals_at:
            relays.record_accepted(session)  # the relay takes our mail again: a refusal on the dashboard is past
            self._clear_refusals_at = time.monotonic() + REFUSAL_CLEAR_SECONDS
        untried = [claim.delivery_id for claim in sent.claims[len(sent.results) :]]
        leases.release(session, untried, str(sent.held) if sent.held is not None else "")
        self.counts.add("given back", len(untried))
        # Dropped before the commit: a beat after it would find the rows final, one before it renews them.
        self.heartbeat.drop(Delivery, [claim.delivery_id for claim in sent.claims])

    def _send_group(self, template: Template, issue_id: int, claims: list[Claim], claimed: float) -> Group:
        """Send the claimed group in order, stopping before a message that could outlive half the lease.

        The heartbeat renews the lease while this runs; but should it fail to (the database away), a slow
        server (long throttling pauses, timeouts) must never let a lease run out while its rows are still
        being sent: another worker would take them and send them a second time. Returns the results
        and, when the group was cut short by our side (no slot, session refused, relay paused), why and until when.
        """
        results: list[Result] = []
        for claim in claims:
            if results and not self._may_go_on(claimed):
                break
            composed = self.composer.compose(template, issue_id, claim)
            try:
                verdict = self.send_bytes(composed.envelope_from, composed.recipient, composed.message)
            except Held as held:  # the rows from this one on are given back, their try uncounted
                return Group(claims, results, held)
            results.append(Result(claim, verdict, composed.message_id))
        return Group(claims, results)

    def refuse(self, refused: NewsletterError) -> dt.datetime:
        """Remember that the relay refused our session: no batch tries again for SESSION_RETRY_SECONDS.

        The refusal goes in the database too, where the desk shows it whichever process sends.
        """
        self.refused = refused
        self._clear_refusals_at = 0.0  # the next message sent says at once that it is over
        relay = relays.relay_of(self.settings)
        try:
            self.commit(lambda session: relays.record_refusal(session, relay, str(refused)))
        except Exception as error:  # stopping with the database away: the hold matters, the note can wait
            if outages.link_of(error) is None:
                raise
            LOGGER.warning("the refusal is not on the desk's dashboard: %s", outages.describe(error))
        return self._hold(str(refused), SESSION_RETRY_SECONDS)

    def _hold(self, why: str, seconds: float) -> dt.datetime:
        """Send nothing from this process for `seconds`: every message meanwhile is given back untried."""
        with self._lock:
            until = utcnow() + dt.timedelta(seconds=seconds)
            if self._held_until is None or self._held_until < until:
                LOGGER.warning("%s; trying again in %.0f s", why, seconds)
                self._held_until, self._holding = until, why
            held_until = self._held_until
        self.waits.tell(Wait(self._holding, held_until.timestamp()))
        return held_until

    def tell_once(self, verdict: Verdict) -> None:
        """Log, once per process and reason, that a one-off mail failed on our side (its reader is untouched)."""
        if verdict.action != Action.FAIL or verdict.reason is None:
            return
        with self._lock:
            if verdict.reason.name in self._told:
                return
            self._told.add(verdict.reason.name)
        LOGGER.warning(
            "a one-off mail failed on our side (%s): %s; its reader is untouched, fix the relay or the mail",
            verdict.reason.name,
            verdict.reply,
        )

    def held(self) -> str | None:
        """Why this process sends nothing right now (a refused session, a failing relay), or None."""
        with self._lock:
            if self._held_until is not None and self._held_until > utcnow():
                return self._holding
        return None

    def _check_hold(self) -> None:
        """Raise Held while the process holds back (a refused session, a failing relay) or is stopping."""
        if self.stopping.is_set():
            raise Held("", utcnow())
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
                lane.slot = self._take_slot()
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
            raise Held(str(reply), self._hold(f"{self._relay_words()} failed: {reply}", self._link.next_seconds()))
        self._link.reset()
        return verdict

    def _send_paced(self, lane: Lane, envelope_from: str, recipient: str, message: bytes) -> Reply:
        pause = lane.pace.pause_seconds
        if pause:
            self.waits.tell(Wait(f"{self._relay_words()} slows us down ({lane.pace.reply})", time.time() + pause))
            self.stopping.wait(pause)
        self._wait_for_rate()
        if self.stopping.is_set():
            raise Held("", utcnow())  # finish the message in flight, never start one while stopping
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
                lane.slot = self._take_slot()
            lane.used = time.monotonic()
            return lane.slot is not None

    def _take_slot(self) -> Slot | None:
        """A free connection slot within SLOT_WAIT_SECONDS, or None; Redis away is waited out where we are.

        Waiting here rather than giving the batch back matters when Redis is also the broker: a batch could
        not be re-enqueued while it is down.

        Raises:
            Held: the worker is stopping while Redis is away.
        """
        assert self.slots is not None
        slots = self.slots
        try:
            return outages.wait_out(lambda: slots.wait(self.stopping, SLOT_WAIT_SECONDS), self.stopping)
        except Exception as error:
            if outages.link_of(error) is None:
                raise
            raise Held(outages.describe(error), utcnow()) from None

    def _wait_for_rate(self) -> None:
        if self.rate_limiter is None:
            return
        limiter = self.rate_limiter

        def acquire() -> bool:
            with limiter.acquire(raise_on_failure=False) as acquired:
                return bool(acquired)

        while not self.stopping.is_set():
            try:
                if outages.wait_out(acquire, self.stopping):  # the count lives in Redis: its outage is waited out
                    return
            except Exception as error:
                if outages.link_of(error) is None:
                    raise
                return  # stopping: _send_paced sees it and sends nothing
            now = time.time()
            rate = rate_words(self.settings.rate_limit)
            self.waits.tell(Wait(f"the rate limit allows {rate} (rate_limit)", next_bucket_at(self.settings, now)))
            self.stopping.wait(RATE_POLL_SECONDS)

    def _relay_words(self) -> str:
        return f"the SMTP server {self.settings.smtp_host}:{self.settings.smtp_port}"

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

    def _keep(self) -> None:
        """Renew the leases of the rows this process holds; renew its connection slots and close idle connections."""
        interval = self.heartbeat.interval_seconds
        if self.slots is not None:
            interval = min(interval, min(self.slots.ttl_seconds, CONNECTION_IDLE_SECONDS) / 3)
        interval = min(interval, REPORT_SECONDS)
        next_beat = next_report = time.monotonic()
        while not self._closed.wait(interval):
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + self.heartbeat.interval_seconds
                self.heartbeat.beat()
            if now >= next_report:
                next_report = now + REPORT_SECONDS
                line = self.counts.report()
                if line:
                    LOGGER.info("%s", line)
            with self._lock:
                lanes = list(self._lanes)
            for lane in lanes:
                try:
                    lane.tend()
                except Exception as error:  # Redis away for a moment: the next round tries again, the ttl allows it
                    if outages.link_of(error) is None:
                        raise
                    LOGGER.warning("cannot renew an SMTP connection slot: %s", outages.describe(error))

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
