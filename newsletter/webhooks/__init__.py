"""ESP webhooks (Amazon SES via SNS, Postmark, SendGrid, Mailgun): each verified, then fed to the bounce policy.

Every provider module has the same shape: pure functions that verify a request and parse its events into
`Feedback`, and `handle(settings, session, headers, body)` that the web app's route calls.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from newsletter import links
from newsletter.bounces import BouncePolicy, Feedback, FeedbackKind, apply_all, bounce_kind
from newsletter.errors import NewsletterError
from newsletter.reasons import classify
from newsletter.settings import Settings
from newsletter.tally import Tally

# ESP webhooks batch events: SendGrid posts up to thousands per request, an SNS message may be 256 KiB.
# The web app's routes take this much too (subscribers.security).
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_CLOCK_SKEW_SECONDS = 10 * 60  # a signed timestamp older (or newer) than this is a replay, not a retry


class WebhookRejected(NewsletterError):
    """A webhook request that is not believed: bad signature or credentials, stale, malformed, or unknown."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


def apply_events(session: Session, settings: Settings, feedback: list[Feedback], ignored: int = 0) -> Tally:
    """Record each verified event through the same policy as inbound mail.

    An event that quotes our Message-ID (providers keep the header we sent) names the delivery, so the event
    and a DSN about the same message count once, and a forwarded address still finds its reader.
    """
    policy = BouncePolicy.from_settings(settings)
    results = apply_all(session, [_tied(settings, item) for item in feedback], policy)
    return Tally.of(results, ignored=ignored)


def _tied(settings: Settings, feedback: Feedback) -> Feedback:
    if feedback.delivery_id is not None:
        return feedback
    named = links.read_message_id(settings, str(feedback.payload.get("message_id") or ""))
    if named is None:
        return feedback
    return dataclasses.replace(feedback, issue_id=named[0], subscriber_id=named[1])


def failure_of(labelled: FeedbackKind, status: str, words: str) -> tuple[FeedbackKind, str]:
    """The kind and reason name of a provider's bounce event, by the one classifier of failures.

    The status code and the remote server's words are trusted over the provider's own hard/soft label
    (SES calls a full mailbox "Permanent"); the label decides only when they name no reason, and a
    provider's "temporary" is never made permanent.
    """
    if labelled not in (FeedbackKind.HARD_BOUNCE, FeedbackKind.SOFT_BOUNCE):
        return labelled, ""
    diagnosis = classify(status=status if status[:1] in "245" and "." in status else "", text=f"{status} {words}")
    if diagnosis.evidence == "action":
        return labelled, "undefined"
    kind = bounce_kind(diagnosis)
    if kind == FeedbackKind.HARD_BOUNCE and labelled == FeedbackKind.SOFT_BOUNCE:
        kind = FeedbackKind.SOFT_BOUNCE  # the provider will try again: not the final word on the address
    return kind, diagnosis.reason


def lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def json_body(body: bytes) -> Any:
    """The request body as JSON; too large or not JSON is a 400."""
    if len(body) > MAX_BODY_BYTES:
        raise WebhookRejected("request body too large", 413)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected("request body is not JSON", 400) from None
    except RecursionError:  # nested deeper than any provider's event; the decoder gives up, cleanly
        raise WebhookRejected("request body is nested too deeply", 400) from None


def check_fresh(timestamp: dt.datetime, now: dt.datetime | None = None) -> None:
    """Reject a signed timestamp too far from now: a captured request replayed later is refused."""
    now = now or dt.datetime.now(dt.UTC)
    if abs((now - timestamp).total_seconds()) > MAX_CLOCK_SKEW_SECONDS:
        raise WebhookRejected(f"stale timestamp {timestamp.isoformat()}")


def recipient_id(provider: str, event_id: str, recipient: str) -> str:
    """The external id of one recipient of one provider event (an event may name several recipients)."""
    return f"{provider}:{event_id[:150]}:{hashlib.sha256(recipient.encode()).hexdigest()[:16]}"


def text(value: Any, limit: int = 500) -> str:
    """A JSON value as a short string (providers put numbers, nulls or objects where text is expected)."""
    return ("" if value is None else str(value))[:limit]


def event_time(value: Any) -> dt.datetime | None:
    """An ISO 8601 time from a provider's event, in UTC and never in the future; None when unreadable."""
    try:
        parsed = dt.datetime.fromisoformat(text(value, 40).replace("Z", "+00:00"))
    except ValueError:
        return None
    return min(parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC), dt.datetime.now(dt.UTC))
