"""Mail to the bounce and unsubscribe addresses: one function decides what a message is and records it.

A report changes a reader's state only when it is tied to a delivery of ours (newsletter.provenance);
one that is not is kept as `unverified` for the editor, who may apply it by hand (`apply_kept`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from email.message import Message
from email.utils import parsedate_to_datetime
from enum import StrEnum

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from newsletter.autoreplies import auto_reply_reason
from newsletter.bounces import BouncePolicy, Feedback, FeedbackKind, apply_all, bounce_kind
from newsletter.errors import NewsletterError
from newsletter.links import bounce_base
from newsletter.models import (
    KEPT_HEADER_MAX_CHARS,
    KEPT_MESSAGE_MAX_BYTES,
    NOTE_MAX_CHARS,
    SOURCE_MAX_CHARS,
    UnrecognizedMessage,
    utcnow,
)
from newsletter.provenance import Addressee, addressee_of, returned_tie
from newsletter.received import addresses, header, message_digest, original_headers, parse
from newsletter.reports import FeedbackReport, RecipientStatus, delivery_statuses, feedback_report
from newsletter.settings import Settings
from newsletter.subscriptions import record_event
from newsletter.tally import Tally
from newsletter.textbounces import text_failures
from newsletter.tokens import Signer

# Where an MTA records the envelope recipient: Postfix (Delivered-To, X-Original-To), Exim (Envelope-To).
RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To", "Cc")
# Feedback loops that send the reported mail as an attachment, not as ARF: Microsoft's JMRP and SNDS,
# and others of its kind. Recognised only when the attachment carries our token or Message-ID.
_FEEDBACK_LOOP = re.compile(r"complain|feedback|\bfbl\b|jmrp|junk|spam report|abuse report|scomp", re.IGNORECASE)
JMRP_RECIPIENT_HEADER = "X-HmXmrOriginalRecipient"  # Microsoft: the mailbox that pressed "junk"
UNVERIFIED = "unverified"
UNRECOGNIZED = "unrecognized"
DISMISSED = "kept_dismissed"  # the kind of the event that says who dropped a kept message


class KeptMessageNotFound(NewsletterError):
    """No kept report has that number, or it was applied already."""


class Verdict(StrEnum):
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    FEEDBACK = "feedback"  # a feedback report that is no complaint: auth-failure, not-spam, virus, other
    UNSUBSCRIBE = "unsubscribe"
    AUTO_REPLY = "auto_reply"
    IGNORED = "ignored"  # a report with nothing to act on: delivered/relayed DSNs
    UNRECOGNIZED = "unrecognized"
    UNVERIFIED = "unverified"  # a report we read but cannot tie to a delivery of ours: kept, changes nothing


@dataclass(frozen=True)
class Reading:
    """What a message is, the reports it carries, and whether it is tied to a delivery of ours."""

    verdict: Verdict
    feedback: tuple[Feedback, ...] = ()
    note: str = ""
    tied: bool = False


def ingest(
    session: Session, settings: Settings, raw: bytes, *, source: str, envelope_recipient: str | None = None
) -> Tally:
    """Read one RFC 5322 message and record what it says; an unreadable message is kept, never raised.

    Raises:
        MissingSetting: no secret_key, or neither bounce_address nor from_address (tokens cannot be read).
    """
    bounce_base(settings)  # the settings tokens need: missing ones are an error, not an unreadable message
    try:
        message = parse(raw)
        digest = message_digest(message, raw)
        reading = read_message(message, settings, digest, envelope_recipient)
    except Exception as error:  # hostile input is kept for the editor; it must never crash the MTA pipe
        message, digest = Message(), hashlib.sha256(raw).hexdigest()
        reading = Reading(Verdict.UNRECOGNIZED, note=f"could not be read: {type(error).__name__}: {error}"[:500])
    if reading.verdict in (Verdict.AUTO_REPLY, Verdict.IGNORED):
        return Tally.message(reading.verdict, note=reading.note)
    kept = _Kept(message, raw, digest, source, envelope_recipient)
    if reading.verdict == Verdict.UNRECOGNIZED:
        return _keep(session, kept, UNRECOGNIZED, reading.note)
    if not reading.tied:
        # Anyone can write an address into a report: without our token or MAC it changes no state.
        return _keep(session, kept, UNVERIFIED, f"{reading.verdict}, not tied to a delivery of ours: {reading.note}")
    result = _apply(session, settings, reading, source)
    if result is None:
        return _keep(session, kept, UNRECOGNIZED, f"{reading.verdict} about no subscriber on the list: {reading.note}")
    return result


def apply_kept(session: Session, settings: Settings, kept_id: int) -> Tally:
    """Apply an unverified report by hand, as the editor decided: its addresses are believed as written.

    Raises:
        KeptMessageNotFound: no unverified report has this number, or it was applied or dismissed already.
    """
    kept = _waiting(session, kept_id)
    if kept is None or kept.kind != UNVERIFIED:
        raise KeptMessageNotFound(f"no unverified report #{kept_id} waiting to be applied")
    message = parse(kept.raw)
    reading = read_message(message, settings, message_digest(message, kept.raw), kept.recipient or None)
    result = _apply(session, settings, dataclasses.replace(reading, tied=True), "manual")
    kept.applied_at = utcnow()
    return result or Tally.message(reading.verdict, note=f"about no subscriber on the list: {reading.note}")


def dismiss_kept(session: Session, kept_id: int, actor: str | None = None) -> None:
    """Put away a kept message the editor has looked at and will not apply; the log says who and what it was.

    The row stays, marked and without the message, so the same mail read again (a mailbox fetched twice)
    is known and not kept again.

    Raises:
        KeptMessageNotFound: no kept message has this number, or it was applied or dismissed already.
    """
    kept = _waiting(session, kept_id)
    if kept is None:
        raise KeptMessageNotFound(f"no kept message #{kept_id} waiting")
    payload = {"kind": kept.kind, "sender": kept.sender[:320], "subject": kept.subject[:200], "note": kept.note[:500]}
    record_event(
        session, None, DISMISSED, "desk", reason=f"kept message #{kept_id} dismissed", payload=payload, actor=actor
    )
    kept.dismissed_at, kept.raw = utcnow(), b""


def _waiting(session: Session, kept_id: int) -> UnrecognizedMessage | None:
    """The kept message with this number, locked, when it is still before the editor."""
    query = select(UnrecognizedMessage).where(UnrecognizedMessage.id == kept_id, UnrecognizedMessage.waiting())
    return session.scalar(query.with_for_update())


def _apply(session: Session, settings: Settings, reading: Reading, source: str) -> Tally | None:
    policy = BouncePolicy.from_settings(settings)
    results = apply_all(session, (_sourced(feedback, source) for feedback in reading.feedback), policy)
    if all(result is None for result in results):
        return None
    return Tally.of(results, verdict=reading.verdict, note=reading.note)


def read_message(message: Message, settings: Settings, digest: str, envelope_recipient: str | None = None) -> Reading:
    """Decide what a message is: ARF complaint, DSN, unsubscribe request, other bounce, auto-reply or none."""
    signer = Signer(settings.secret_key)
    bounce_address = bounce_base(settings)
    recipients = ([envelope_recipient.lower()] if envelope_recipient else []) + addresses(message, *RECIPIENT_HEADERS)
    addressee = addressee_of(recipients, signer, bounce_address)
    if addressee.problem:
        return Reading(Verdict.UNRECOGNIZED, note=addressee.problem)  # a token altered: never guess instead
    if addressee.subscriber_id is not None and addressee.delivery_id is None and not _is_report(message):
        return _unsubscribe_request(message, addressee, digest)
    verp = addressee.delivery_id is not None or addressee.outbound_id is not None
    tie = addressee if verp else returned_tie(message, settings, signer, bounce_address)
    tie = tie if tie.tied else addressee
    at = _date(header(message, "Date"))
    report = feedback_report(message)
    if report is not None:
        return _read_feedback(message, report, tie, digest, at)
    statuses = delivery_statuses(message)
    if statuses:
        return _read_delivery_statuses(statuses, tie, digest, at)
    if _is_feedback_loop(message):
        return _read_feedback_loop(message, tie, digest, at)
    bounce = _read_text_bounce(message, tie, digest, at)
    if bounce is not None:
        return bounce
    if message.get_content_type() == "multipart/report":  # a report cut short or malformed: not a vacation
        return Reading(Verdict.UNRECOGNIZED, note="report without a readable delivery-status or feedback part")
    why = auto_reply_reason(message)
    if why:
        return Reading(Verdict.AUTO_REPLY, note=why)
    return Reading(Verdict.UNRECOGNIZED, note="no delivery report, feedback report or request found")


def _is_report(message: Message) -> bool:
    return message.get_content_type() == "multipart/report" or bool(message.get("X-Failed-Recipients"))


def _unsubscribe_request(message: Message, addressee: Addressee, digest: str) -> Reading:
    request = Feedback(
        FeedbackKind.UNSUBSCRIBE,
        "mailto",
        f"mail to the unsubscribe address: {header(message, 'Subject')[:200]}",
        f"message:{digest}",
        subscriber_id=addressee.subscriber_id,
        at=_date(header(message, "Date")),
    )
    return Reading(Verdict.UNSUBSCRIBE, (request,), tied=True)


def _read_delivery_statuses(
    statuses: list[RecipientStatus], tie: Addressee, digest: str, at: dt.datetime | None
) -> Reading:
    failures = [status for status in statuses if status.is_failure]
    if not failures:
        actions = ", ".join(sorted({status.action or "none" for status in statuses}))
        return Reading(Verdict.IGNORED, note=f"delivery report without failures ({actions})")
    if tie.tied:
        # One delivery is named: the worst of its blocks decides (failed outranks delayed, then the effect).
        worst = max(failures, key=_severity)
        return Reading(Verdict.BOUNCE, (_status_feedback(worst, tie, f"message:{digest}", at),), worst.recipient, True)
    found = tuple(
        _status_feedback(status, Addressee(), _external_id(digest, status.recipient), at)
        for status in failures
        if status.recipient
    )
    return Reading(Verdict.BOUNCE, found, note=_summary(found))


def _status_feedback(status: RecipientStatus, tie: Addressee, external_id: str, at: dt.datetime | None) -> Feedback:
    diagnosis = status.diagnosis
    return Feedback(
        bounce_kind(diagnosis, status.action),
        "dsn",
        status.reason,
        external_id,
        email=status.recipient or None,
        **tie.named(),
        at=at,
        payload={"status": diagnosis.status, "action": status.action, "recipient": status.recipient, "tie": tie.how},
        reason_name=diagnosis.reason,
    )


def _severity(status: RecipientStatus) -> tuple[bool, int]:
    effect_rank = {FeedbackKind.HARD_BOUNCE: 2, FeedbackKind.SOFT_BOUNCE: 1}
    return status.action != "delayed", effect_rank.get(bounce_kind(status.diagnosis, status.action), 0)


def _read_text_bounce(message: Message, tie: Addressee, digest: str, at: dt.datetime | None) -> Reading | None:
    """A bounce in a format older than RFC 3464 (qmail, Exim, Exchange...)."""
    failures = text_failures(message)
    if not failures:
        return None
    if tie.tied:
        order = {FeedbackKind.HARD_BOUNCE: 3, FeedbackKind.SOFT_BOUNCE: 2, FeedbackKind.SENDER_SIDE: 1}
        failures = [max(failures, key=lambda failure: order.get(bounce_kind(failure.diagnosis, failure.action), 0))]
    found = tuple(
        Feedback(
            bounce_kind(failure.diagnosis, failure.action),
            "bounce",
            failure.excerpt or f"failure ({header(message, 'Subject')[:200]})",
            f"message:{digest}" if tie.tied else _external_id(digest, failure.recipient),
            email=failure.recipient,
            **tie.named(),
            at=at,
            payload={"recipient": failure.recipient, "status": failure.diagnosis.status, "tie": tie.how},
            reason_name=failure.diagnosis.reason,
        )
        for failure in failures
    )
    return Reading(Verdict.BOUNCE, found, note=_summary(found), tied=tie.tied)


def _read_feedback(
    message: Message, report: FeedbackReport, tie: Addressee, digest: str, at: dt.datetime | None
) -> Reading:
    original = original_headers(message)
    recipients = list(report.original_rcpt_to) + (addresses(original, "To") if original is not None else [])
    email = next((address for address in recipients if address), None)
    if not tie.tied and email is None:
        return Reading(Verdict.UNRECOGNIZED, note="feedback report that names no recipient")
    kind, verdict = FeedbackKind.FEEDBACK_REPORT, Verdict.FEEDBACK
    if report.is_complaint:
        kind, verdict = FeedbackKind.COMPLAINT, Verdict.COMPLAINT
    elif report.is_opt_out:
        kind, verdict = FeedbackKind.UNSUBSCRIBE, Verdict.UNSUBSCRIBE
    feedback = Feedback(
        kind,
        "arf",
        f"{report.feedback_type} report from {report.user_agent or 'unknown agent'}"[:300],
        f"message:{digest}",
        email=email,
        **tie.named(),
        at=_date(report.arrival_date) or at,
        payload={
            "feedback_type": report.feedback_type,
            "user_agent": report.user_agent,
            "reported_domain": report.reported_domain,
            "source_ip": report.source_ip,
            "tie": tie.how,
        },
        reason_name=report.feedback_type,
    )
    return Reading(verdict, (feedback,), note=f"{report.feedback_type} about {email or tie.how}", tied=tie.tied)


def _is_feedback_loop(message: Message) -> bool:
    """A complaint sent as the reported mail attached (Microsoft JMRP and its kind), not as ARF."""
    original = original_headers(message)
    if original is None:
        return False
    if original.get(JMRP_RECIPIENT_HEADER) is not None:
        return True
    return bool(_FEEDBACK_LOOP.search(header(message, "Subject")) or _FEEDBACK_LOOP.search(header(message, "From")))


def _read_feedback_loop(message: Message, tie: Addressee, digest: str, at: dt.datetime | None) -> Reading:
    original = original_headers(message)
    named = addresses(original, JMRP_RECIPIENT_HEADER, "To") if original is not None else []
    feedback = Feedback(
        FeedbackKind.COMPLAINT,
        "fbl",
        f"complaint by a feedback loop: {header(message, 'Subject')[:200]}",
        f"message:{digest}",
        email=next(iter(named), None),
        **tie.named(),
        at=at,
        payload={"feedback_type": "abuse", "reporter": header(message, "From")[:200], "tie": tie.how},
        reason_name="abuse",
    )
    note = f"feedback loop complaint about {feedback.email or 'an undisclosed reader'} ({tie.how or 'nothing of ours'})"
    return Reading(Verdict.COMPLAINT, (feedback,), note=note, tied=tie.tied)


@dataclass(frozen=True)
class _Kept:
    message: Message
    raw: bytes
    digest: str
    source: str
    envelope_recipient: str | None


def _keep(session: Session, kept: _Kept, kind: str, note: str) -> Tally:
    verdict = Verdict.UNVERIFIED if kind == UNVERIFIED else Verdict.UNRECOGNIZED
    external_id = f"message:{kept.digest}"
    if session.scalar(select(exists().where(UnrecognizedMessage.external_id == external_id))):
        return Tally.message(verdict, duplicates=1, note=note)
    message = kept.message
    recipient = kept.envelope_recipient or ", ".join(addresses(message, *RECIPIENT_HEADERS)[:5])
    session.add(
        UnrecognizedMessage(
            source=kept.source,
            external_id=external_id,
            sender=header(message, "From")[:KEPT_HEADER_MAX_CHARS],
            recipient=recipient[:KEPT_HEADER_MAX_CHARS],
            subject=header(message, "Subject")[:KEPT_HEADER_MAX_CHARS],
            note=note[:NOTE_MAX_CHARS],
            size_bytes=len(kept.raw),
            raw=kept.raw[:KEPT_MESSAGE_MAX_BYTES],
            kind=kind,
        )
    )
    session.flush()
    return Tally.message(verdict, recorded=1, note=note)


def _summary(found: tuple[Feedback, ...]) -> str:
    return ", ".join(f"{item.email} {item.reason_name} ({item.kind})" for item in found)[:500]


def _sourced(feedback: Feedback, source: str) -> Feedback:
    """The feedback with the way it came in appended to its source: "dsn" through a Maildir is "dsn/maildir"."""
    return dataclasses.replace(feedback, source=f"{feedback.source}/{source}"[:SOURCE_MAX_CHARS])


def _external_id(digest: str, recipient: str) -> str:
    return f"message:{digest}:{hashlib.sha256(recipient.encode()).hexdigest()[:16]}"


def _date(value: str) -> dt.datetime | None:
    """A date header as an aware UTC time, never later than now (a forged future date cannot pin a score)."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return min(parsed.astimezone(dt.UTC), utcnow())
