"""Mailgun's webhooks: HMAC-SHA256 of timestamp and token with the signing key, fresh, then the event."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Any

from sqlalchemy.orm import Session

from newsletter.bounces import Feedback, FeedbackKind
from newsletter.models import EMAIL_MAX_CHARS
from newsletter.settings import Settings
from newsletter.tally import Tally
from newsletter.webhooks import WebhookRejected, apply_events, check_fresh, failure_of, json_body, text


def handle(
    settings: Settings, session: Session, headers: dict[str, str], body: bytes, now: dt.datetime | None = None
) -> Tally:
    """Verify the signature block, then record the event (a replay within the window is recorded once)."""
    payload = json_body(body)
    if not isinstance(payload, dict):
        raise WebhookRejected("a Mailgun webhook is a JSON object", 400)
    verify(settings, payload.get("signature"), now)
    event = payload.get("event-data")
    feedback = parse(event) if isinstance(event, dict) else []
    return apply_events(session, settings, feedback, ignored=0 if feedback else 1)


def verify(settings: Settings, signature: Any, now: dt.datetime | None = None) -> None:
    """Check `signature` = HMAC-SHA256(signing key, timestamp + token) and that the timestamp is recent."""
    if not settings.mailgun_webhook_signing_key:
        raise WebhookRejected("mailgun_webhook_signing_key is not set", 503)
    if not isinstance(signature, dict):
        raise WebhookRejected("Mailgun webhook without a signature")
    timestamp, token, given = (text(signature.get(name), 200) for name in ("timestamp", "token", "signature"))
    expected = hmac.new(
        settings.mailgun_webhook_signing_key.encode(), (timestamp + token).encode(), hashlib.sha256
    ).hexdigest()
    if not token or not hmac.compare_digest(given.lower().encode(), expected.encode()):
        raise WebhookRejected("Mailgun signature does not verify")
    try:
        signed_at = dt.datetime.fromtimestamp(int(timestamp), dt.UTC)
    except (ValueError, OverflowError, OSError):
        raise WebhookRejected("malformed Mailgun timestamp") from None
    check_fresh(signed_at, now)


def parse(event: dict[str, Any]) -> list[Feedback]:
    """The feedback of one event: permanent and temporary failures, complaints and unsubscribes."""
    name, email, event_id = (
        text(event.get("event"), 40),
        text(event.get("recipient"), EMAIL_MAX_CHARS),
        text(event.get("id"), 200),
    )
    if not email or not event_id:
        return []
    given_status = event.get("delivery-status")
    status: dict[str, Any] = given_status if isinstance(given_status, dict) else {}
    if name == "failed":
        severity = text(event.get("severity"), 20)
        kind = FeedbackKind.HARD_BOUNCE if severity == "permanent" else FeedbackKind.SOFT_BOUNCE
    elif name == "complained":
        kind = FeedbackKind.COMPLAINT
    elif name == "unsubscribed":
        kind = FeedbackKind.UNSUBSCRIBE
    else:
        return []
    reason = " ".join(
        filter(
            None,
            (
                text(status.get("code"), 10),
                text(status.get("description")),
                text(status.get("message")),
                text(event.get("reason"), 60),
            ),
        )
    )
    words = " ".join((text(status.get("description")), text(status.get("message"))))
    kind, reason_name = failure_of(
        kind, text(status.get("enhanced-code"), 20), f"{text(status.get('code'), 10)} {words}"
    )
    try:
        at = min(dt.datetime.fromtimestamp(float(event.get("timestamp") or 0), dt.UTC), dt.datetime.now(dt.UTC))
    except (ValueError, TypeError, OverflowError, OSError):
        at = None
    return [
        Feedback(
            kind,
            "mailgun",
            reason or name,
            f"mailgun:{event_id}",
            email=email,
            at=at,
            payload={
                "event": name,
                "severity": text(event.get("severity"), 20),
                "code": text(status.get("code"), 10),
                "message_id": _message_id(event),
            },
            reason_name=reason_name,
        )
    ]


def _message_id(event: dict[str, Any]) -> str:
    """The Message-ID header we sent, as Mailgun keeps it (without its angle brackets)."""
    message = event.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    return text(headers.get("message-id"), 300) if isinstance(headers, dict) else ""
