"""SendGrid's signed event webhook: ECDSA P-256 over timestamp and body, then bounces, blocks and spam reports."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key
from sqlalchemy.orm import Session

from newsletter.bounces import Feedback, FeedbackKind
from newsletter.models import EMAIL_MAX_CHARS
from newsletter.settings import Settings
from newsletter.tally import Tally
from newsletter.webhooks import (
    WebhookRejected,
    apply_events,
    check_fresh,
    failure_of,
    json_body,
    lower_keys,
    text,
)

SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"
MAX_EVENTS = 10_000
# docs.sendgrid.com event types: `bounce` is a permanent refusal, `blocked` a temporary one.
KINDS = {
    "bounce": FeedbackKind.HARD_BOUNCE,
    "blocked": FeedbackKind.SOFT_BOUNCE,
    "spamreport": FeedbackKind.COMPLAINT,
    "unsubscribe": FeedbackKind.UNSUBSCRIBE,
    "group_unsubscribe": FeedbackKind.UNSUBSCRIBE,
}


def handle(
    settings: Settings, session: Session, headers: dict[str, str], body: bytes, now: dt.datetime | None = None
) -> Tally:
    """Verify the signature and timestamp, then record the batch of events."""
    verify(settings, headers, body, now)
    events = json_body(body)
    if not isinstance(events, list):
        raise WebhookRejected("a SendGrid webhook is a JSON array of events", 400)
    feedback = [item for event in events[:MAX_EVENTS] if isinstance(event, dict) for item in parse(event)]
    return apply_events(session, settings, feedback, ignored=len(events) - len(feedback))


def verify(settings: Settings, headers: dict[str, str], body: bytes, now: dt.datetime | None = None) -> None:
    """Check the ECDSA signature SendGrid makes over the timestamp header followed by the raw body."""
    if not settings.sendgrid_webhook_public_key:
        raise WebhookRejected("sendgrid_webhook_public_key is not set", 503)
    key = public_key(settings.sendgrid_webhook_public_key)
    lowered = lower_keys(headers)
    timestamp = lowered.get(TIMESTAMP_HEADER, "")
    try:
        signature = base64.b64decode(lowered.get(SIGNATURE_HEADER, ""), validate=True)
        signed_at = dt.datetime.fromtimestamp(int(timestamp), dt.UTC)
    except (binascii.Error, ValueError, OverflowError, OSError):
        raise WebhookRejected("missing or malformed SendGrid signature headers") from None
    try:
        key.verify(signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise WebhookRejected("SendGrid signature does not verify") from None
    check_fresh(signed_at, now)


def public_key(setting: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER), or as PEM."""
    try:
        if "BEGIN PUBLIC KEY" in setting:
            key = load_pem_public_key(setting.encode())
        else:
            key = load_der_public_key(base64.b64decode("".join(setting.split()), validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm):
        raise WebhookRejected("sendgrid_webhook_public_key is not a public key", 503) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise WebhookRejected("sendgrid_webhook_public_key is not an ECDSA P-256 key", 503)
    return key


def parse(event: dict[str, Any]) -> list[Feedback]:
    """The feedback of one event; empty for kinds that change nothing (delivered, open, deferred...)."""
    kind = KINDS.get(text(event.get("event"), 40))
    if kind == FeedbackKind.HARD_BOUNCE and text(event.get("type"), 20) == "blocked":
        kind = FeedbackKind.SOFT_BOUNCE  # older payloads send `bounce` with type `blocked`
    email, event_id = text(event.get("email"), EMAIL_MAX_CHARS), text(event.get("sg_event_id"), 200)
    if kind is None or not email or not event_id:
        return []
    reason = " ".join(filter(None, (text(event.get("status"), 20), text(event.get("reason")))))
    kind, reason_name = failure_of(kind, text(event.get("status"), 20), text(event.get("reason")))
    try:
        at = min(dt.datetime.fromtimestamp(int(event.get("timestamp") or 0), dt.UTC), dt.datetime.now(dt.UTC))
    except (ValueError, TypeError, OverflowError, OSError):
        at = None
    return [
        Feedback(
            kind,
            "sendgrid",
            reason or text(event.get("event")),
            f"sendgrid:{event_id}",
            email=email,
            at=at or None,
            payload={
                "event": text(event.get("event"), 40),
                "status": text(event.get("status"), 20),
                "message_id": text(event.get("smtp-id"), 300),  # the Message-ID header we sent
            },
            reason_name=reason_name,
        )
    ]
