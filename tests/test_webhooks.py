"""ESP webhooks, each with keys generated here: SES through SNS, Postmark, SendGrid and Mailgun."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from newsletter.inbound import ingest
from newsletter.models import Event, SubscriberStatus
from newsletter.settings import Settings
from newsletter.webhooks import WebhookRejected, mailgun, postmark, sendgrid, ses
from subscribers.app import create_app
from tests.inbound_mail import Sent, dsn, failed, make_sent
from tests.webflow import client_for

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"


@pytest.fixture
def sent(session: Session, settings: Settings) -> Sent:
    """Three subscribers, each with a delivery of one issue."""
    return make_sent(session, settings)


def statuses(sent: Sent) -> dict[str, str]:
    return {email: subscriber.status for email, subscriber in sent.subscribers.items()}


class FakeSns:
    """Our own RSA key and certificate standing in for Amazon's; `fetch` serves it and logs every URL asked."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = dt.datetime.now(dt.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )
        self.fetched: list[str] = []

    def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def signed(self, envelope: dict[str, Any], version: str = "1") -> bytes:
        envelope = {
            "SignatureVersion": version,
            "SigningCertURL": CERT_URL,
            "TopicArn": TOPIC,
            "Timestamp": "2026-01-05T09:00:00.000Z",
            **envelope,
        }
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(ses.signed_text(envelope).encode(), padding.PKCS1v15(), algorithm)
        envelope["Signature"] = base64.b64encode(signature).decode()
        return json.dumps(envelope).encode()


def ses_notification(
    kind: str, recipients: list[str], source: str = "bounces@example.org", feedback_id: str = "0100018c-feedback"
) -> dict[str, Any]:
    mail = {"source": source, "messageId": "0100018c-mail", "destination": recipients}
    if kind == "Bounce":
        detail: dict[str, Any] = {
            "bounce": {
                "bounceType": "Permanent",
                "bounceSubType": "General",
                "feedbackId": feedback_id,
                "timestamp": "2026-01-05T09:00:00.000Z",
                "bouncedRecipients": [
                    {
                        "emailAddress": r,
                        "action": "failed",
                        "status": "5.1.1",
                        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                    }
                    for r in recipients
                ],
            }
        }
    else:
        detail = {
            "complaint": {
                "feedbackId": feedback_id,
                "complaintFeedbackType": "abuse",
                "userAgent": "Yahoo!-Mail-Feedback/2.0",
                "timestamp": "2026-01-05T10:00:00Z",
                "complainedRecipients": [{"emailAddress": r} for r in recipients],
            }
        }
    return {
        "Type": "Notification",
        "MessageId": f"sns-{feedback_id}",
        "Message": json.dumps({"notificationType": kind, "mail": mail, **detail}),
    }


@pytest.fixture
def sns() -> FakeSns:
    return FakeSns()


@pytest.fixture
def ses_settings(sent: Sent) -> Settings:
    return sent.settings.replace(ses_topic_arns=f"arn:aws:sns:us-east-1:1:other, {TOPIC}")


@pytest.mark.parametrize("version", ["1", "2"])
def test_ses_bounce_through_sns(
    session: Session, sent: Sent, sns: FakeSns, ses_settings: Settings, version: str
) -> None:
    body = sns.signed(ses_notification("Bounce", ["ann@example.com", "bob@example.net"]), version)
    result = ses.handle(ses_settings, session, {}, body, fetch=sns.fetch)
    assert (result.recorded, result.suppressed) == (2, 2)
    assert statuses(sent) == {"ann@example.com": "bounced", "bob@example.net": "bounced", "cho@example.com": "active"}
    assert sns.fetched == [CERT_URL]
    again = ses.handle(ses_settings, session, {}, body, fetch=sns.fetch)
    assert (again.recorded, again.duplicates) == (0, 2)
    assert sns.fetched == [CERT_URL], "the certificate is fetched once, not for every notification"


def test_ses_complaint_names_the_delivery_by_its_verp_source(
    session: Session, sent: Sent, sns: FakeSns, ses_settings: Settings
) -> None:
    notification = ses_notification("Complaint", ["forwarded@elsewhere.example"], source=sent.verp("cho@example.com"))
    ses.handle(ses_settings, session, {}, sns.signed(notification), fetch=sns.fetch)
    assert sent.subscribers["cho@example.com"].status == SubscriberStatus.COMPLAINED
    [complaint] = session.scalars(select(Event).where(Event.kind == "complaint"))
    assert complaint.delivery_id == sent.deliveries["cho@example.com"].id


def test_ses_permanent_mailbox_full_is_a_soft_bounce(
    session: Session, sent: Sent, sns: FakeSns, ses_settings: Settings
) -> None:
    # SES labels a full mailbox "Permanent"; the status code and the words say it may pass.
    notification = ses_notification("Bounce", ["ann@example.com"])
    message = json.loads(notification["Message"])
    message["bounce"]["bounceSubType"] = "MailboxFull"
    message["bounce"]["bouncedRecipients"][0] |= {"status": "5.2.2", "diagnosticCode": "smtp; 552 5.2.2 Mailbox full"}
    notification["Message"] = json.dumps(message)
    ses.handle(ses_settings, session, {}, sns.signed(notification), fetch=sns.fetch)
    assert sent.subscribers["ann@example.com"].status == SubscriberStatus.ACTIVE
    [bounce] = session.scalars(select(Event).where(Event.kind == "soft_bounce"))
    assert bounce.reason_name == "mailboxfull"


def test_ses_names_the_delivery_by_our_message_id_and_it_counts_once(
    session: Session, sent: Sent, sns: FakeSns, ses_settings: Settings
) -> None:
    delivery = sent.deliveries["bob@example.net"]
    notification = ses_notification("Bounce", ["bob.forwarded@elsewhere.example"])
    message = json.loads(notification["Message"])
    message["mail"]["commonHeaders"] = {"messageId": delivery.message_id}
    message["bounce"]["bouncedRecipients"][0] |= {"status": "4.2.2", "diagnosticCode": "smtp; 452 4.2.2 Mailbox full"}
    message["bounce"]["bounceType"] = "Transient"
    notification["Message"] = json.dumps(message)
    ses.handle(ses_settings, session, {}, sns.signed(notification), fetch=sns.fetch)
    bob = sent.subscribers["bob@example.net"]
    assert (bob.status, bob.bounce_score) == (SubscriberStatus.ACTIVE, pytest.approx(1.0))
    # The DSN of the same message, mailed back as well, adds nothing: one delivery counts once.
    dsn_again = dsn(sent.verp("bob@example.net"), [failed("bob@example.net", "4.2.2", "smtp; 452 4.2.2 Mailbox full")])
    ingest(session, ses_settings, dsn_again, source="stdin")
    assert bob.bounce_score == pytest.approx(1.0)


def test_ses_not_spam_feedback_is_no_complaint(
    session: Session, sent: Sent, sns: FakeSns, ses_settings: Settings
) -> None:
    notification = ses_notification("Complaint", ["ann@example.com"], source=sent.verp("ann@example.com"))
    message = json.loads(notification["Message"])
    message["complaint"]["complaintFeedbackType"] = "not-spam"
    notification["Message"] = json.dumps(message)
    ses.handle(ses_settings, session, {}, sns.signed(notification), fetch=sns.fetch)
    assert sent.subscribers["ann@example.com"].status == SubscriberStatus.ACTIVE


def test_ses_forged_signature_is_rejected(session: Session, sent: Sent, sns: FakeSns, ses_settings: Settings) -> None:
    envelope = json.loads(sns.signed(ses_notification("Bounce", ["ann@example.com"])))
    envelope["Message"] = envelope["Message"].replace("ann@example.com", "bob@example.net")
    with pytest.raises(WebhookRejected, match="does not verify"):
        ses.handle(ses_settings, session, {}, json.dumps(envelope).encode(), fetch=sns.fetch)
    forger = FakeSns()  # a valid signature by a key that is not the one the certificate URL serves
    with pytest.raises(WebhookRejected, match="does not verify"):
        ses.handle(
            ses_settings, session, {}, forger.signed(ses_notification("Bounce", ["ann@example.com"])), fetch=sns.fetch
        )
    assert set(statuses(sent).values()) == {"active"}


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/cert.pem",
        "http://sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/cert.pem",
        "https://evil.example@sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
        "https://s3.amazonaws.com/cert.pem",
    ],
)
def test_certificate_url_outside_sns_is_never_fetched(
    session: Session, sent: Sent, sns: FakeSns, ses_settings: Settings, url: str
) -> None:
    body = sns.signed({**ses_notification("Bounce", ["ann@example.com"]), "SigningCertURL": url})
    with pytest.raises(WebhookRejected, match="not on an Amazon SNS host"):
        ses.handle(ses_settings, session, {}, body, fetch=sns.fetch)
    assert sns.fetched == []


def test_subscription_confirmation_visits_the_subscribe_url(
    session: Session, sns: FakeSns, ses_settings: Settings
) -> None:
    subscribe = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=t"
    body = sns.signed(
        {
            "Type": "SubscriptionConfirmation",
            "MessageId": "m1",
            "Token": "t",
            "Message": "confirm",
            "SubscribeURL": subscribe,
        }
    )
    assert ses.handle(ses_settings, session, {}, body, fetch=sns.fetch).note == "subscription confirmed"
    assert sns.fetched == [CERT_URL, subscribe]
    evil = sns.signed(
        {
            "Type": "SubscriptionConfirmation",
            "MessageId": "m2",
            "Token": "t",
            "Message": "confirm",
            "SubscribeURL": "https://evil.example/?Action=ConfirmSubscription",
        }
    )
    with pytest.raises(WebhookRejected, match="not on an Amazon SNS host"):
        ses.handle(ses_settings, session, {}, evil, fetch=sns.fetch)


def test_ses_topic_must_be_configured_and_match(session: Session, sent: Sent, sns: FakeSns) -> None:
    body = sns.signed(ses_notification("Bounce", ["ann@example.com"]))
    with pytest.raises(WebhookRejected) as unset:
        ses.handle(sent.settings, session, {}, body, fetch=sns.fetch)
    assert unset.value.status == 503
    with pytest.raises(WebhookRejected, match="not in ses_topic_arns"):
        ses.handle(
            sent.settings.replace(ses_topic_arns="arn:aws:sns:us-east-1:1:other"), session, {}, body, fetch=sns.fetch
        )


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"Type": "Notification"}', b"{" * 100_000])
def test_malformed_sns_bodies_are_rejected(session: Session, sns: FakeSns, ses_settings: Settings, body: bytes) -> None:
    with pytest.raises(WebhookRejected):
        ses.handle(ses_settings, session, {}, body, fetch=sns.fetch)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


POSTMARK_SETTINGS = {"postmark_webhook_username": "postmark", "postmark_webhook_password": "hook-secret"}


def test_postmark_hard_bounce_and_complaint(session: Session, sent: Sent) -> None:
    settings = sent.settings.replace(**POSTMARK_SETTINGS)
    bounce = {
        "RecordType": "Bounce",
        "ID": 4323372036,
        "Type": "HardBounce",
        "TypeCode": 1,
        "Email": "ann@example.com",
        "Description": "The server was unable to deliver your message",
        "Details": "smtp;550 5.1.1 unknown",
        "BouncedAt": "2026-01-05T09:00:00Z",
    }
    complaint = {
        "RecordType": "SpamComplaint",
        "ID": 42,
        "Type": "SpamComplaint",
        "Email": "bob@example.net",
        "BouncedAt": "2026-01-05T10:00:00Z",
    }
    soft = {**bounce, "ID": 7, "Type": "SoftBounce", "TypeCode": 4096, "Email": "cho@example.com"}
    auto = {**bounce, "ID": 8, "Type": "AutoResponder", "Email": "cho@example.com"}
    for event in (bounce, complaint, soft, auto, bounce):
        postmark.handle(settings, session, basic("postmark", "hook-secret"), json.dumps(event).encode())
    assert statuses(sent) == {
        "ann@example.com": "bounced",
        "bob@example.net": "complained",
        "cho@example.com": "active",
    }
    assert sent.subscribers["cho@example.com"].bounce_score == pytest.approx(1.0, rel=0.01)
    assert session.scalar(select(func.count()).select_from(Event).where(Event.kind == "hard_bounce")) == 1


def test_postmark_credentials(session: Session, sent: Sent) -> None:
    body = json.dumps({"RecordType": "Bounce", "ID": 1, "Type": "HardBounce", "Email": "ann@example.com"}).encode()
    with pytest.raises(WebhookRejected) as unset:
        postmark.handle(sent.settings, session, basic("", ""), body)
    assert unset.value.status == 503
    settings = sent.settings.replace(**POSTMARK_SETTINGS)
    for headers in (basic("postmark", "wrong"), {}, {"Authorization": "Basic !!!"}, {"Authorization": "Bearer x"}):
        with pytest.raises(WebhookRejected) as wrong:
            postmark.handle(settings, session, headers, body)
        assert wrong.value.status == 401
    assert set(statuses(sent).values()) == {"active"}


class SendGridKeys:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public = base64.b64encode(der).decode()

    def headers(self, body: bytes, at: dt.datetime | None = None) -> dict[str, str]:
        timestamp = str(int((at or dt.datetime.now(dt.UTC)).timestamp()))
        signature = self.key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        }


def sendgrid_batch() -> bytes:
    return json.dumps(
        [
            {
                "email": "ann@example.com",
                "event": "bounce",
                "sg_event_id": "e1",
                "timestamp": 1767603600,
                "status": "5.1.1",
                "reason": "550 5.1.1 user unknown",
                "type": "bounce",
            },
            {"email": "bob@example.net", "event": "spamreport", "sg_event_id": "e2", "timestamp": 1767603600},
            {
                "email": "cho@example.com",
                "event": "blocked",
                "sg_event_id": "e3",
                "timestamp": 1767603600,
                "status": "4.7.1",
                "reason": "try again later",
            },
            {"email": "cho@example.com", "event": "delivered", "sg_event_id": "e4", "timestamp": 1767603600},
        ]
    ).encode()


def test_sendgrid_signed_batch(session: Session, sent: Sent) -> None:
    keys = SendGridKeys()
    settings = sent.settings.replace(sendgrid_webhook_public_key=keys.public)
    body = sendgrid_batch()
    result = sendgrid.handle(settings, session, keys.headers(body), body)
    assert (result.recorded, result.suppressed, result.ignored) == (3, 2, 1)
    assert statuses(sent) == {
        "ann@example.com": "bounced",
        "bob@example.net": "complained",
        "cho@example.com": "active",
    }
    replay = sendgrid.handle(settings, session, keys.headers(body), body)  # a retry within the window
    assert (replay.recorded, replay.duplicates) == (0, 3)


def test_sendgrid_forged_tampered_and_stale(session: Session, sent: Sent) -> None:
    keys, forger = SendGridKeys(), SendGridKeys()
    settings = sent.settings.replace(sendgrid_webhook_public_key=keys.public)
    body = sendgrid_batch()
    with pytest.raises(WebhookRejected, match="does not verify"):
        sendgrid.handle(settings, session, forger.headers(body), body)
    with pytest.raises(WebhookRejected, match="does not verify"):
        sendgrid.handle(settings, session, keys.headers(body), body.replace(b"ann@", b"cho@"))
    stale = keys.headers(body, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    with pytest.raises(WebhookRejected, match="stale"):
        sendgrid.handle(settings, session, stale, body)
    with pytest.raises(WebhookRejected, match="malformed"):
        sendgrid.handle(settings, session, {}, body)
    assert set(statuses(sent).values()) == {"active"}


def test_sendgrid_key_setting_must_be_a_p256_key(session: Session, sent: Sent) -> None:
    body = sendgrid_batch()
    for key in (
        "",
        "bm90IGEga2V5",
        base64.b64encode(
            rsa.generate_private_key(65537, 2048)
            .public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        ).decode(),
    ):
        with pytest.raises(WebhookRejected) as rejected:
            sendgrid.handle(sent.settings.replace(sendgrid_webhook_public_key=key), session, {}, body)
        assert rejected.value.status == 503


MAILGUN_KEY = "key-0123456789abcdef"


def mailgun_body(
    event: dict[str, Any], key: str = MAILGUN_KEY, at: dt.datetime | None = None, token: str = "a" * 50
) -> bytes:
    timestamp = str(int((at or dt.datetime.now(dt.UTC)).timestamp()))
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": event}
    ).encode()


FAILED = {
    "event": "failed",
    "id": "mg-1",
    "severity": "permanent",
    "recipient": "ann@example.com",
    "timestamp": 1767603600.5,
    "reason": "bounce",
    "delivery-status": {"code": 550, "message": "5.1.1 The email account does not exist"},
}


def test_mailgun_failure_complaint_and_replay(session: Session, sent: Sent) -> None:
    settings = sent.settings.replace(mailgun_webhook_signing_key=MAILGUN_KEY)
    body = mailgun_body(FAILED)
    assert mailgun.handle(settings, session, {}, body).suppressed == 1
    assert mailgun.handle(settings, session, {}, body).duplicates == 1  # replayed within the window: once
    temporary = {**FAILED, "id": "mg-2", "severity": "temporary", "recipient": "cho@example.com"}
    complaint = {"event": "complained", "id": "mg-3", "recipient": "bob@example.net", "timestamp": 1767603600}
    for event in (temporary, complaint):
        mailgun.handle(settings, session, {}, mailgun_body(event))
    assert statuses(sent) == {
        "ann@example.com": "bounced",
        "bob@example.net": "complained",
        "cho@example.com": "active",
    }


def test_mailgun_forged_and_stale(session: Session, sent: Sent) -> None:
    settings = sent.settings.replace(mailgun_webhook_signing_key=MAILGUN_KEY)
    with pytest.raises(WebhookRejected, match="does not verify"):
        mailgun.handle(settings, session, {}, mailgun_body(FAILED, key="key-guessed"))
    tampered = json.loads(mailgun_body(FAILED))
    tampered["signature"]["timestamp"] = str(int(tampered["signature"]["timestamp"]) + 1)
    with pytest.raises(WebhookRejected, match="does not verify"):
        mailgun.handle(settings, session, {}, json.dumps(tampered).encode())
    old = mailgun_body(FAILED, at=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))  # a captured request replayed
    with pytest.raises(WebhookRejected, match="stale"):
        mailgun.handle(settings, session, {}, old)
    with pytest.raises(WebhookRejected):
        mailgun.handle(settings, session, {}, json.dumps({"event-data": FAILED}).encode())
    with pytest.raises(WebhookRejected) as unset:
        mailgun.handle(sent.settings, session, {}, mailgun_body(FAILED))
    assert unset.value.status == 503
    assert set(statuses(sent).values()) == {"active"}


@pytest.mark.anyio
async def test_webhook_routes_on_the_web_app(session: Session, sent: Sent, engine: Engine) -> None:
    session.commit()
    settings = sent.settings.replace(mailgun_webhook_signing_key=MAILGUN_KEY, **POSTMARK_SETTINGS)
    async with client_for(create_app(settings, engine), settings.base_url) as client:
        accepted = await client.post("/webhooks/mailgun", content=mailgun_body(FAILED))
        assert accepted.status_code == 200 and accepted.json()["suppressed"] == 1
        forged = await client.post("/webhooks/mailgun", content=mailgun_body(FAILED, key="key-guessed"))
        assert forged.status_code == 403 and "does not verify" in forged.json()["error"]
        unauthorized = await client.post("/webhooks/postmark", content=b"{}", headers=basic("postmark", "no"))
        assert unauthorized.status_code == 401
        unset = await client.post("/webhooks/sendgrid", content=b"[]")
        assert unset.status_code == 503
        assert (await client.post("/webhooks/elsewhere", content=b"{}")).status_code == 404
        assert (await client.get("/webhooks/mailgun")).status_code == 405
    session.expire_all()
    assert sent.subscribers["ann@example.com"].status == SubscriberStatus.BOUNCED


@pytest.mark.anyio
async def test_a_large_signed_batch_passes_the_web_app_body_cap(session: Session, sent: Sent, engine: Engine) -> None:
    session.commit()
    keys = SendGridKeys()
    settings = sent.settings.replace(sendgrid_webhook_public_key=keys.public)
    events = [
        {"email": f"reader{i}@example.org", "event": "delivered", "sg_event_id": f"d{i}", "timestamp": 1767603600}
        for i in range(3000)
    ]  # ~300 KiB, as SendGrid batches
    body = json.dumps(events).encode()
    assert len(body) > 64 * 1024
    async with client_for(create_app(settings, engine), settings.base_url) as client:
        accepted = await client.post("/webhooks/sendgrid", content=body, headers=keys.headers(body))
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["ignored"] == 3000
        too_big = await client.post(
            "/subscribe",
            content=b"email=" + b"a" * 70_000,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert too_big.status_code == 413
