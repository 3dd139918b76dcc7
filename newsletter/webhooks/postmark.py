"""Postmark bounce, spam complaint and unsubscribe webhooks, believed only with the configured basic auth."""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

from sqlalchemy.orm import Session

from newsletter.bounces import Feedback, FeedbackKind
from newsletter.models import EMAIL_MAX_CHARS
from newsletter.settings import Settings
from newsletter.tally import Tally
from newsletter.webhooks import WebhookRejected, apply_events, event_time, failure_of, json_body, lower_keys, text

# postmarkapp.com/developer/api/bounce-api#bounce-types: which types say the address is gone for good.
HARD_TYPES = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
SOFT_TYPES = frozenset({"SoftBounce", "Transient", "DnsError", "Blocked", "SMTPApiError"})
COMPLAINT_TYPES = frozenset({"SpamComplaint", "SpamNotification"})


def handle(settings: Settings, session: Session, headers: dict[str, str], body: bytes) -> Tally:
    """Check the basic-auth credentials, then record the bounce or complaint the request carries."""
    verify(settings, headers)
    event = json_body(body)
    if not isinstance(event, dict):
        raise WebhookRejected("a Postmark webhook is a JSON object", 400)
    feedback = parse(event)
    return apply_events(session, settings, feedback, ignored=0 if feedback else 1)


def verify(settings: Settings, headers: dict[str, str]) -> None:
    """Postmark signs nothing: the webhook URL carries basic-auth credentials only Postmark knows (RFC 7617)."""
    if not settings.postmark_webhook_username or not settings.postmark_webhook_password:
        raise WebhookRejected("postmark_webhook_username and _password are not set", 503)
    scheme, _, encoded = lower_keys(headers).get("authorization", "").partition(" ")
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        given = b""
    expected = f"{settings.postmark_webhook_username}:{settings.postmark_webhook_password}".encode()
    if scheme.lower() != "basic" or not hmac.compare_digest(given, expected):
        raise WebhookRejected("wrong Postmark webhook credentials", 401)


def parse(event: dict[str, Any]) -> list[Feedback]:
    """The feedback of one Postmark event; an empty list for events that change nothing."""
    record_type = text(event.get("RecordType"), 40)
    email = text(event.get("Email") or event.get("Recipient"), EMAIL_MAX_CHARS)
    event_id = text(event.get("ID") or event.get("MessageID"), 100)
    if not email or not event_id:
        return []
    if record_type == "SpamComplaint":
        kind = FeedbackKind.COMPLAINT
        at = event.get("BouncedAt")
    elif record_type == "SubscriptionChange":
        if not event.get("SuppressSending") or text(event.get("SuppressionReason")) != "ManualSuppression":
            return []
        kind, at = FeedbackKind.UNSUBSCRIBE, event.get("ChangedAt")
    elif record_type == "Bounce":
        bounce_type = text(event.get("Type"), 40)
        kinds = {
            **dict.fromkeys(HARD_TYPES, FeedbackKind.HARD_BOUNCE),
            **dict.fromkeys(SOFT_TYPES, FeedbackKind.SOFT_BOUNCE),
            **dict.fromkeys(COMPLAINT_TYPES, FeedbackKind.COMPLAINT),
        }
        if bounce_type not in kinds:
            return []  # AutoResponder, Subscribe, OpenRelayTest...: nothing to do
        kind, at = kinds[bounce_type], event.get("BouncedAt")
    else:
        return []
    reason = " ".join(
        filter(None, (text(event.get("Type"), 40), text(event.get("Description")), text(event.get("Details"))))
    )
    kind, reason_name = failure_of(kind, "", " ".join((text(event.get("Description")), text(event.get("Details")))))
    return [
        Feedback(
            kind,
            "postmark",
            reason or record_type,
            f"postmark:{record_type}:{event_id}",
            email=email,
            at=event_time(at),
            payload={"type": text(event.get("Type"), 40), "type_code": event.get("TypeCode")},
            reason_name=reason_name,
        )
    ]
