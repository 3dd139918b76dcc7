"""Amazon SES bounce and complaint notifications, delivered by Amazon SNS and verified by its signature."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
import re
import urllib.request
from collections.abc import Callable
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy.orm import Session

from newsletter.bounces import Feedback, FeedbackKind
from newsletter.links import bounce_base
from newsletter.models import EMAIL_MAX_CHARS
from newsletter.provenance import addressee_of
from newsletter.reports import COMPLAINT_TYPES
from newsletter.settings import Settings
from newsletter.tally import Tally
from newsletter.tokens import Signer
from newsletter.webhooks import WebhookRejected, apply_events, event_time, failure_of, json_body, recipient_id, text

Fetch = Callable[[str], bytes]
FETCH_TIMEOUT_SECONDS = 10
MAX_FETCH_BYTES = 64 * 1024
CERTIFICATES_KEPT = 16  # SNS signs with one certificate a region at a time
# Only Amazon's SNS endpoints may serve the signing certificate or confirm a subscription.
SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
# docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html: the fields signed, in this order.
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
SIGNATURE_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
HARD_BOUNCE_TYPES = frozenset({"Permanent"})  # Transient and Undetermined may deliver next time


def handle(
    settings: Settings, session: Session, headers: dict[str, str], body: bytes, fetch: Fetch | None = None
) -> Tally:
    """Verify an SNS request, confirm a subscription or record the SES events it carries."""
    fetch = fetch or fetch_https
    envelope = json_body(body)
    if not isinstance(envelope, dict):
        raise WebhookRejected("an SNS message is a JSON object", 400)
    allowed = {arn.strip() for arn in settings.ses_topic_arns.split(",") if arn.strip()}
    if not allowed:
        raise WebhookRejected("ses_topic_arns is not set: SES notifications are not accepted", 503)
    verify(envelope, fetch)
    if text(envelope.get("TopicArn"), 200) not in allowed:
        raise WebhookRejected(f"topic {text(envelope.get('TopicArn'), 200)!r} is not in ses_topic_arns")
    kind = text(envelope.get("Type"), 40)
    if kind == "SubscriptionConfirmation":
        fetch(sns_url(text(envelope.get("SubscribeURL"), 2000)))
        return Tally(note="subscription confirmed")
    if kind != "Notification":
        return Tally(ignored=1, note=f"{kind} ignored")
    feedback, ignored = parse(envelope, Signer(settings.secret_key), bounce_base(settings))
    return apply_events(session, settings, feedback, ignored)


def verify(envelope: dict[str, Any], fetch: Fetch) -> None:
    """Check an SNS message's signature with the certificate SNS names (only from an SNS host).

    Raises:
        WebhookRejected: the certificate URL is not SNS's, or the signature does not verify.
    """
    kind, version = text(envelope.get("Type"), 40), text(envelope.get("SignatureVersion"), 10)
    if kind not in SIGNED_FIELDS or version not in SIGNATURE_HASHES:
        raise WebhookRejected(f"unknown SNS message type {text(kind, 40)!r} or signature version", 400)
    certificate_url = sns_url(text(envelope.get("SigningCertURL"), 2000))
    if not certificate_url.endswith(".pem"):
        raise WebhookRejected("SigningCertURL is not a .pem certificate")
    try:
        certificate = _certificate(fetch, certificate_url)
        signature = base64.b64decode(text(envelope.get("Signature"), 4000), validate=True)
    except (ValueError, binascii.Error):
        raise WebhookRejected("unreadable SNS certificate or signature") from None
    now = dt.datetime.now(dt.UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise WebhookRejected("the SNS signing certificate has expired")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise WebhookRejected("the SNS signing certificate has no RSA key")
    try:
        key.verify(signature, signed_text(envelope).encode(), padding.PKCS1v15(), SIGNATURE_HASHES[version]())
    except InvalidSignature:
        raise WebhookRejected("SNS signature does not verify") from None


@lru_cache(maxsize=CERTIFICATES_KEPT)
def _certificate(fetch: Fetch, url: str) -> x509.Certificate:
    """The certificate at `url`, fetched once a process: SNS names a new URL for a new certificate, and a burst
    of bounces would otherwise fetch it for each. What cannot be read is not kept (the next message tries again)."""
    return x509.load_pem_x509_certificate(fetch(url))


def signed_text(envelope: dict[str, Any]) -> str:
    """The string SNS signs: each present field's name and value on their own lines, in a fixed order."""
    fields = SIGNED_FIELDS[envelope["Type"]]
    return "".join(f"{name}\n{envelope[name]}\n" for name in fields if envelope.get(name) is not None)


def sns_url(url: str) -> str:
    """`url` when it is https on an SNS host; anything else is refused (it would let a forger pick the key)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not SNS_HOST.match(parts.hostname or "") or parts.port not in (None, 443):
        raise WebhookRejected(f"URL {url[:100]!r} is not on an Amazon SNS host")
    return url


def parse(envelope: dict[str, Any], signer: Signer, bounce_address: tuple[str, str]) -> tuple[list[Feedback], int]:
    """The bounces and complaints of an SES notification (events it does not act on are counted as ignored)."""
    try:
        notification = json.loads(text(envelope.get("Message"), 300_000))
    except ValueError:
        raise WebhookRejected("SES notification Message is not JSON", 400) from None
    if not isinstance(notification, dict):
        raise WebhookRejected("SES notification Message is not a JSON object", 400)
    kind = notification.get("notificationType") or notification.get("eventType")
    given_mail = notification.get("mail")
    mail: dict[str, Any] = given_mail if isinstance(given_mail, dict) else {}
    # mail.source is the envelope sender: our VERP address names the delivery when SES kept it.
    delivery_id = addressee_of([text(mail.get("source"), 400).lower()], signer, bounce_address).delivery_id
    given_headers = mail.get("commonHeaders")
    message_id = text(given_headers.get("messageId"), 300) if isinstance(given_headers, dict) else ""
    if kind == "Bounce":
        found = _bounces(notification.get("bounce"), delivery_id)
    elif kind == "Complaint":
        found = _complaints(notification.get("complaint"), delivery_id)
    else:
        return [], 1
    # Our Message-ID, as SES kept it: names the delivery when the envelope sender was rewritten.
    return [dataclasses.replace(item, payload={**item.payload, "message_id": message_id}) for item in found], 0


def _bounces(bounce: Any, delivery_id: int | None) -> list[Feedback]:
    if not isinstance(bounce, dict):
        raise WebhookRejected("SES bounce without details", 400)
    hard = bounce.get("bounceType") in HARD_BOUNCE_TYPES
    labelled = FeedbackKind.HARD_BOUNCE if hard else FeedbackKind.SOFT_BOUNCE
    feedback_id = text(bounce.get("feedbackId"), 200)
    recipients = [item for item in bounce.get("bouncedRecipients") or [] if isinstance(item, dict)][:100]
    named = delivery_id if len(recipients) == 1 else None
    return [_bounce(item, bounce, labelled, feedback_id, named) for item in recipients]


def _bounce(
    item: dict[str, Any], bounce: dict[str, Any], labelled: FeedbackKind, feedback_id: str, delivery_id: int | None
) -> Feedback:
    # bounceSubType names the cause in CamelCase ("MailboxFull", "MessageTooLarge"): read it as words.
    subtype = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text(bounce.get("bounceSubType"), 40))
    words = f"{subtype} {text(item.get('diagnosticCode'))}"
    kind, reason_name = failure_of(labelled, text(item.get("status"), 20), words)
    return Feedback(
        kind,
        "ses",
        " ".join(filter(None, (text(item.get("status")), text(item.get("diagnosticCode")))))
        or text(bounce.get("bounceSubType")),
        recipient_id("ses", feedback_id, text(item.get("emailAddress"))),
        email=text(item.get("emailAddress"), EMAIL_MAX_CHARS),
        delivery_id=delivery_id,
        at=event_time(bounce.get("timestamp")),
        payload={
            "status": text(item.get("status"), 20),
            "bounce_type": text(bounce.get("bounceType"), 40),
            "bounce_subtype": text(bounce.get("bounceSubType"), 40),
        },
        reason_name=reason_name,
    )


def _complaints(complaint: Any, delivery_id: int | None) -> list[Feedback]:
    if not isinstance(complaint, dict):
        raise WebhookRejected("SES complaint without details", 400)
    feedback_id = text(complaint.get("feedbackId"), 200)
    feedback_type = text(complaint.get("complaintFeedbackType"), 40) or "abuse"
    recipients = [item for item in complaint.get("complainedRecipients") or [] if isinstance(item, dict)][:100]
    # RFC 5965 feedback types: only abuse and fraud are complaints (not-spam, auth-failure, virus are not).
    kind = FeedbackKind.COMPLAINT if feedback_type in COMPLAINT_TYPES else FeedbackKind.FEEDBACK_REPORT
    return [
        Feedback(
            kind,
            "ses",
            f"{feedback_type} report from {text(complaint.get('userAgent'), 200)}",
            recipient_id("ses", feedback_id, text(item.get("emailAddress"))),
            email=text(item.get("emailAddress"), EMAIL_MAX_CHARS),
            delivery_id=delivery_id if len(recipients) == 1 else None,
            at=event_time(complaint.get("timestamp")),
            payload={"feedback_type": feedback_type},
            reason_name=feedback_type,
        )
        for item in recipients
    ]


def fetch_https(url: str) -> bytes:
    """GET an https URL (already checked to be SNS's), at most MAX_FETCH_BYTES."""
    request = urllib.request.Request(sns_url(url), headers={"User-Agent": "newsletter"})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_SECONDS) as response:  # noqa: S310 - https only
        data: bytes = response.read(MAX_FETCH_BYTES)
    return data
