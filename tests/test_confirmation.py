"""The confirmation mail: MJML template and text part, through the same queue and SMTP path as issues."""

from __future__ import annotations

import re
import time

from sqlalchemy import Engine

from newsletter import confirmation, database, optin
from newsletter.inbound import Verdict, ingest
from newsletter.models import DeliveryStatus, OutboundMessage, SubscriberStatus
from newsletter.queue import Queue
from newsletter.settings import Settings
from newsletter.subscriptions import find_subscriber
from newsletter.tokens import Signer
from tests.inbound_mail import dsn, failed
from tests.mailserver import MailSink
from tests.webflow import LINK, confirm_link


def wait_for(condition: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_confirmation_goes_through_the_queue_to_smtp(settings: Settings, engine: Engine, smtpd: MailSink) -> None:
    settings = settings.replace(smtp_host="127.0.0.1", smtp_port=smtpd.port, smtp_connections=1)
    signer = Signer(settings.secret_key)
    queue = Queue(settings, engine)
    queue.start_worker()
    try:
        with database.transaction(engine) as session:
            request = optin.subscribe(session, settings, "Ann@Example.org", "Ann <script>")
            outbound_id = confirmation.store_confirmation(session, settings, signer, request)
        assert outbound_id is not None
        queue.send_message(outbound_id)
        wait_for(lambda: smtpd.to("Ann@Example.org"))
    finally:
        queue.stop()
    [received] = smtpd.to("Ann@Example.org")
    assert re.fullmatch(r"bounces\+[0-9a-f]+-[0-9a-f]{20}@example\.org", received.mail_from)  # VERP, like issues
    message = received.message
    assert message["Subject"] == f"Confirm your subscription to {settings.newsletter_name}"
    assert message["From"] == f"The Editor <{settings.from_address}>"
    html_part = message.get_body(("html",))
    assert html_part is not None
    html = html_part.get_content()
    assert "<mj-" not in html and "Confirm my subscription" in html
    assert "Ann &lt;script&gt;" in html and "<script>" not in html  # the template autoescapes
    # The hidden preheader is not white-on-white text (SpamAssassin's HTML_FONT_LOW_CONTRAST).
    hidden = re.search(r'<div class="nl-preheader" style="([^"]*)">One click', html)
    assert hidden and "display:none" in hidden.group(1) and "color" not in hidden.group(1)
    link = confirm_link(message)
    assert LINK.fullmatch(link)
    with database.transaction(engine) as session:
        row = session.get(OutboundMessage, outbound_id)
        assert row is not None and row.status == DeliveryStatus.SENT and row.kind == confirmation.OUTBOUND_KIND
    with database.transaction(engine) as session:
        subscriber = optin.confirm(session, signer, link.rsplit("/", 1)[1], settings.confirm_max_age_seconds)
        assert subscriber.status == "active"


def test_no_confirmation_without_a_request(settings: Settings, engine: Engine) -> None:
    with database.transaction(engine) as session:
        assert confirmation.store_confirmation(session, settings, Signer(settings.secret_key), None) is None


def test_a_bounce_of_the_confirmation_mail_finds_its_reader(
    settings: Settings, engine: Engine, smtpd: MailSink
) -> None:
    settings = settings.replace(smtp_host="127.0.0.1", smtp_port=smtpd.port, smtp_connections=1)
    signer = Signer(settings.secret_key)
    queue = Queue(settings, engine)
    queue.start_worker()
    try:
        with database.transaction(engine) as session:
            request = optin.subscribe(session, settings, "typo@example.org", None)
            outbound_id = confirmation.store_confirmation(session, settings, signer, request)
        assert outbound_id is not None
        queue.send_message(outbound_id)
        wait_for(lambda: smtpd.to("typo@example.org"))
    finally:
        queue.stop()
    [received] = smtpd.to("typo@example.org")
    report = dsn(received.mail_from, [failed("typo@example.org")])
    with database.transaction(engine) as session:
        assert ingest(session, settings, report, source="stdin").verdict == Verdict.BOUNCE
        reader = find_subscriber(session, "typo@example.org")
        assert reader is not None and reader.status == SubscriberStatus.BOUNCED
