"""Mail the way MTAs and feedback loops send it back, and an issue sent to three subscribers to be about."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from newsletter import links
from newsletter.models import Delivery, Issue, Subscriber
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber
from newsletter.tokens import Signer

BOUNDARY = "=_report_boundary"


@dataclass
class Sent:
    """Three subscribers and the deliveries of one issue to them."""

    settings: Settings
    signer: Signer
    subscribers: dict[str, Subscriber]
    deliveries: dict[str, Delivery]

    def verp(self, email: str) -> str:
        return links.return_path(self.settings, self.signer, self.deliveries[email].id)

    def mailto(self, email: str) -> str:
        uri = links.unsubscribe_mailto(self.settings, self.signer, self.subscribers[email].id)
        return uri.removeprefix("mailto:").partition("?")[0]


def make_sent(session: Session, settings: Settings) -> Sent:
    issue = Issue(slug="first", subject="First", source_text="", source_hash="0" * 64, html="", text="")
    session.add(issue)
    session.flush()
    subscribers, deliveries = {}, {}
    for email in ("ann@example.com", "bob@example.net", "cho@example.com"):
        subscriber = add_subscriber(session, email)
        delivery = Delivery(
            issue_id=issue.id,
            subscriber_id=subscriber.id,
            status="sent",
            message_id=links.message_id(settings, issue.id, subscriber.id),
        )
        session.add(delivery)
        session.flush()
        subscribers[email], deliveries[email] = subscriber, delivery
    return Sent(settings, Signer(settings.secret_key), subscribers, deliveries)


def more_verps(session: Session, sent: Sent, email: str, count: int) -> list[str]:
    """The VERP addresses of `count` more issues sent to one subscriber (each delivery counts once)."""
    subscriber = sent.subscribers[email]
    verps = []
    for number in range(count):
        issue = Issue(
            slug=f"more-{email}-{number}", subject="More", source_text="", source_hash="0" * 64, html="", text=""
        )
        session.add(issue)
        session.flush()
        delivery = Delivery(
            issue_id=issue.id,
            subscriber_id=subscriber.id,
            status="sent",
            message_id=links.message_id(sent.settings, issue.id, subscriber.id),
        )
        session.add(delivery)
        session.flush()
        verps.append(links.return_path(sent.settings, sent.signer, delivery.id))
    return verps


def dsn(
    to: str,
    blocks: list[dict[str, str]],
    *,
    sender: str = "MAILER-DAEMON@mx.example.com",
    subject: str = "Undelivered Mail Returned to Sender",
    human: str = "Your message could not be delivered.",
    human_type: str = "text/plain",
    extra_headers: str = "",
    message_id: str = "<dsn.1@mx.example.com>",
    reporting_mta: str = "dns; mx.example.com",
    returned: str = "Message-ID: <1.1.abcdef@example.org>\n",
) -> bytes:
    """A DSN as RFC 3464 describes it: human part, delivery-status (message block + recipient blocks), headers."""
    recipient_blocks = "\n".join("".join(f"{name}: {value}\n" for name, value in block.items()) for block in blocks)
    return f"""Return-Path: <>
{extra_headers}From: {sender}
To: {to}
Subject: {subject}
Date: Mon, 05 Jan 2026 09:00:00 +0000
Message-ID: {message_id}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="{BOUNDARY}"

--{BOUNDARY}
Content-Type: {human_type}; charset=utf-8

{human}

--{BOUNDARY}
Content-Type: message/delivery-status

Reporting-MTA: {reporting_mta}
Arrival-Date: Mon, 05 Jan 2026 08:59:58 +0000

{recipient_blocks}
--{BOUNDARY}
Content-Type: text/rfc822-headers

From: The Editor <editor@example.org>
Subject: First
{returned}
--{BOUNDARY}--
""".replace("\n", "\r\n").encode()


def failed(
    recipient: str, status: str = "5.1.1", diagnostic: str = "smtp; 550 5.1.1 User unknown", action: str = "failed"
) -> dict[str, str]:
    return {
        "Final-Recipient": f"rfc822; {recipient}",
        "Action": action,
        "Status": status,
        "Diagnostic-Code": diagnostic,
    }


def arf(
    to: str,
    *,
    feedback_type: str = "abuse",
    original_mail_from: str = "",
    rcpt_to: str = "",
    original: str = "",
    message_id: str = "<arf.1@feedback.example>",
) -> bytes:
    """A feedback report as RFC 5965 describes it."""
    fields = f"Feedback-Type: {feedback_type}\nUser-Agent: ExampleFBL/1.0\nVersion: 1\n"
    if original_mail_from:
        fields += f"Original-Mail-From: <{original_mail_from}>\n"
    if rcpt_to:
        fields += f"Original-Rcpt-To: <{rcpt_to}>\n"
    fields += "Arrival-Date: Mon, 05 Jan 2026 10:00:00 +0000\nReported-Domain: example.org\nSource-IP: 192.0.2.1\n"
    return f"""From: <feedbackloop@feedback.example>
To: {to}
Subject: FW: First
Date: Mon, 05 Jan 2026 10:05:00 +0000
Message-ID: {message_id}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="{BOUNDARY}"

--{BOUNDARY}
Content-Type: text/plain; charset=us-ascii

This is an email abuse report for an email message received from IP 192.0.2.1.

--{BOUNDARY}
Content-Type: message/feedback-report

{fields}
--{BOUNDARY}
Content-Type: message/rfc822
Content-Disposition: inline

{original}From: The Editor <editor@example.org>
Subject: First
Message-ID: <1.1.abcdef@example.org>

Hello.

--{BOUNDARY}--
""".replace("\n", "\r\n").encode()
