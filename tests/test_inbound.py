"""Inbound mail: DSNs in the shapes real MTAs send, ARF reports, auto-replies, unsubscribe mail, hostile input."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.inbound import DISMISSED, KeptMessageNotFound, Verdict, apply_kept, dismiss_kept, ingest
from newsletter.models import Event, SubscriberStatus, UnrecognizedMessage
from newsletter.overview import unrecognized_messages
from newsletter.settings import Settings
from tests.inbound_mail import Sent, arf, dsn, failed, make_sent


@pytest.fixture
def sent(session: Session, settings: Settings) -> Sent:
    """Three subscribers, each with a delivery of one issue."""
    return make_sent(session, settings)


def events(session: Session, kind: str) -> list[Event]:
    return list(session.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))


def unrecognized(session: Session) -> list[UnrecognizedMessage]:
    return list(session.scalars(select(UnrecognizedMessage)))


# Shapes of real DSNs: who sends them, the human part, the recipient block's wording.
MTA_SHAPES = {
    "postfix": dict(
        sender="MAILER-DAEMON@mx.example.com (Mail Delivery System)",
        reporting_mta="dns; mx.example.com",
        diagnostic="smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table",
        human="This is the mail system at host mx.example.com.\n\nI'm sorry to have to inform you that your "
        "message could not\nbe delivered to one or more recipients.",
        status="5.1.1",
    ),
    "exim": dict(
        sender="Mail Delivery System <Mailer-Daemon@mail.example.net>",
        reporting_mta="dns; mail.example.net",
        diagnostic="smtp; 550 5.1.1 <{rcpt}>... No such user",
        status="5.0.0",
        human="This message was created automatically by mail delivery software.\n\nA message that you sent "
        "could not be delivered to one or more of its\nrecipients. This is a permanent error.",
    ),
    "gmail": dict(
        sender="Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
        reporting_mta="dns; googlemail.com",
        diagnostic="smtp; 550-5.1.1 The email account that you tried to reach does not exist. Please try\n"
        " 550-5.1.1 double-checking the recipient's email address for typos or\n"
        " 550 5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser",
        status="5.1.1",
        human="<html><body><h2>Address not found</h2></body></html>",
        human_type="text/html",
    ),
    "outlook": dict(
        sender="Microsoft Outlook <postmaster@outlook.com>",
        reporting_mta="dns;DM6PR01MB1234.prod.outlook.com",
        diagnostic="smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient {rcpt} not found by SMTP address lookup",
        status="5.1.10",
        human="<html><body><b>Your message to {rcpt} couldn't be delivered.</b></body></html>",
        human_type="text/html",
    ),
    "ses": dict(
        sender="MAILER-DAEMON@amazonses.com",
        reporting_mta="dns; a8-30.smtp-out.amazonses.com",
        diagnostic="smtp; 550 5.1.1 user unknown",
        status="5.1.1",
        human="An error occurred while trying to deliver the mail to the following recipients:\n{rcpt}",
    ),
}


def shaped_dsn(shape: str, to: str, rcpt: str, *, action: str = "failed", status: str | None = None) -> bytes:
    spec = dict(MTA_SHAPES[shape])
    block = failed(rcpt, status or spec.pop("status"), spec.pop("diagnostic").format(rcpt=rcpt), action)
    spec.pop("status", None)
    spec["human"] = spec["human"].format(rcpt=rcpt)
    return dsn(to, [block], message_id=f"<{shape}.{action}.{rcpt}@dsn.example>", **spec)


@pytest.mark.parametrize("shape", sorted(MTA_SHAPES))
def test_hard_bounce_with_verp_bounces_the_delivery(session: Session, sent: Sent, shape: str) -> None:
    raw = shaped_dsn(shape, sent.verp("ann@example.com"), "ann@example.com")
    result = ingest(session, sent.settings, raw, source="stdin")
    assert (result.verdict, result.recorded, result.suppressed) == (Verdict.BOUNCE, 1, 1)
    assert sent.subscribers["ann@example.com"].status == SubscriberStatus.BOUNCED
    [bounce] = events(session, "hard_bounce")
    assert bounce.delivery_id == sent.deliveries["ann@example.com"].id
    assert bounce.issue_id == sent.deliveries["ann@example.com"].issue_id
    assert bounce.source == "dsn/stdin"
    assert bounce.reason is not None and bounce.reason.startswith(MTA_SHAPES[shape]["status"])
    assert {s.status for s in sent.subscribers.values()} == {"bounced", "active"}


@pytest.mark.parametrize("shape", sorted(MTA_SHAPES))
def test_hard_bounce_without_a_tie_is_kept_unverified_until_applied(session: Session, sent: Sent, shape: str) -> None:
    # Anyone can mail a report naming any address: without our token or Message-ID it changes nothing.
    raw = shaped_dsn(shape, "bounces@example.org", "Bob@Example.net")
    result = ingest(session, sent.settings, raw, source="maildir")
    assert (result.verdict, result.suppressed) == (Verdict.UNVERIFIED, 0)
    assert sent.subscribers["bob@example.net"].status == SubscriberStatus.ACTIVE
    [kept] = unrecognized(session)
    assert kept.kind == "unverified" and "bob@example.net userunknown" in kept.note
    applied = apply_kept(session, sent.settings, kept.id)
    assert (applied.verdict, applied.suppressed) == (Verdict.BOUNCE, 1)
    assert sent.subscribers["bob@example.net"].status == SubscriberStatus.BOUNCED
    assert events(session, "hard_bounce")[0].delivery_id is None
    with pytest.raises(KeptMessageNotFound):
        apply_kept(session, sent.settings, kept.id)


@pytest.mark.parametrize("shape", ["postfix", "exim", "outlook"])
def test_a_delay_report_is_logged_and_never_scores(session: Session, sent: Sent, shape: str) -> None:
    raw = shaped_dsn(shape, sent.verp("cho@example.com"), "cho@example.com", action="delayed", status="4.4.1")
    result = ingest(session, sent.settings, raw, source="stdin")
    assert (result.verdict, result.recorded, result.suppressed) == (Verdict.BOUNCE, 1, 0)
    cho = sent.subscribers["cho@example.com"]
    assert cho.status == SubscriberStatus.ACTIVE and cho.bounce_score == 0
    assert len(events(session, "delay")) == 1


def test_a_4xx_status_with_action_failed_is_soft(session: Session, sent: Sent) -> None:
    # RFC 3463 3.1: class 4 is a persistent transient failure; the MTA gave up, the address may be fine.
    raw = dsn(sent.verp("ann@example.com"), [failed("ann@example.com", "4.4.7", "smtp; 421 timed out")])
    ingest(session, sent.settings, raw, source="stdin")
    ann = sent.subscribers["ann@example.com"]
    assert ann.status == SubscriberStatus.ACTIVE and ann.bounce_score == pytest.approx(1.0)
    assert events(session, "soft_bounce")[0].reason_name == "expired"


def test_multi_recipient_dsn_without_verp(session: Session, sent: Sent) -> None:
    raw = dsn(
        "bounces@example.org",
        [
            failed("ann@example.com"),
            failed("bob@example.net", "4.2.2", "smtp; 452 4.2.2 Mailbox full", action="delayed"),
            {"Final-Recipient": "rfc822; cho@example.com", "Action": "delivered", "Status": "2.0.0"},
            failed("stranger@example.org"),
        ],
    )
    result = ingest(session, sent.settings, raw, source="mbox")
    assert (result.verdict, result.recorded) == (Verdict.UNVERIFIED, 1)
    assert {subscriber.status for subscriber in sent.subscribers.values()} == {"active"}
    [kept] = unrecognized(session)
    applied = apply_kept(session, sent.settings, kept.id)
    assert (applied.verdict, applied.recorded, applied.suppressed) == (Verdict.BOUNCE, 2, 1)
    statuses = {email: subscriber.status for email, subscriber in sent.subscribers.items()}
    assert statuses == {"ann@example.com": "bounced", "bob@example.net": "active", "cho@example.com": "active"}
    assert sent.subscribers["bob@example.net"].bounce_score == 0  # a delay never scores
    again = ingest(session, sent.settings, raw, source="mbox")
    assert (again.recorded, again.duplicates) == (0, 1)


def test_the_verp_delivery_wins_over_the_address_in_the_report(session: Session, sent: Sent) -> None:
    # Forwarded mail: the final recipient is an address we never had, the VERP token says who it was.
    raw = dsn(sent.verp("bob@example.net"), [failed("bob.forwarded@elsewhere.example")])
    ingest(session, sent.settings, raw, source="stdin")
    assert sent.subscribers["bob@example.net"].status == SubscriberStatus.BOUNCED


def test_a_forged_verp_token_is_kept_unrecognized_and_bounces_nobody(session: Session, sent: Sent) -> None:
    genuine = sent.verp("ann@example.com")
    forged = genuine.replace(genuine.split("-")[1][:4], "0000")
    other_delivery = "bounces+" + format(sent.deliveries["bob@example.net"].id, "x") + genuine[genuine.index("-") :]
    for to in (forged, other_delivery):
        result = ingest(
            session, sent.settings, dsn(to, [failed("ann@example.com")], message_id=f"<{to}>"), source="stdin"
        )
        assert result.verdict == Verdict.UNRECOGNIZED and "bad signature" in result.note
    assert {s.status for s in sent.subscribers.values()} == {"active"}
    assert len(unrecognized(session)) == 2


def test_the_envelope_recipient_from_the_mta(session: Session, sent: Sent) -> None:
    raw = dsn("undisclosed-recipients:;", [failed("ann@example.com")])
    result = ingest(session, sent.settings, raw, source="stdin", envelope_recipient=sent.verp("cho@example.com"))
    assert result.verdict == Verdict.BOUNCE
    assert sent.subscribers["cho@example.com"].status == SubscriberStatus.BOUNCED
    assert sent.subscribers["ann@example.com"].status == SubscriberStatus.ACTIVE


def test_verp_in_delivered_to_header(session: Session, sent: Sent) -> None:
    raw = dsn(
        "bounces@example.org",
        [failed("x@example.com")],
        extra_headers=f"Delivered-To: {sent.verp('cho@example.com').upper()}\n",
    )
    ingest(session, sent.settings, raw, source="maildir")
    assert sent.subscribers["cho@example.com"].status == SubscriberStatus.BOUNCED


def test_the_same_dsn_seen_twice_through_two_paths_is_recorded_once(session: Session, sent: Sent) -> None:
    raw = shaped_dsn("postfix", sent.verp("cho@example.com"), "cho@example.com", status="4.4.7")
    first = ingest(session, sent.settings, raw, source="stdin")
    second = ingest(session, sent.settings, b"Received: from relay by mx; Mon, 5 Jan 2026\r\n" + raw, source="imap")
    assert (first.recorded, second.recorded, second.duplicates) == (1, 0, 1)
    assert sent.subscribers["cho@example.com"].bounce_score == pytest.approx(1.0)


def test_success_reports_are_ignored(session: Session, sent: Sent) -> None:
    raw = dsn(
        sent.verp("ann@example.com"),
        [{"Final-Recipient": "rfc822; ann@example.com", "Action": "relayed", "Status": "2.0.0"}],
    )
    assert ingest(session, sent.settings, raw, source="stdin").verdict == Verdict.IGNORED
    assert session.scalar(select(func.count()).select_from(Event).where(Event.kind.like("%bounce"))) == 0


def test_exim_plain_text_bounce_found_by_flufl(session: Session, sent: Sent) -> None:
    raw = b"""From: Mail Delivery System <Mailer-Daemon@mail.example.net>
To: bounces@example.org
Subject: Mail delivery failed: returning message to sender
Message-ID: <E1abc-0001@mail.example.net>
X-Failed-Recipients: bob@example.net
Auto-Submitted: auto-replied

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  bob@example.net
    SMTP error from remote mail server after RCPT TO:<bob@example.net>:
    550 5.1.1 User unknown

------ This is a copy of the message, including all the headers. ------

From: editor@example.org
Subject: First
"""
    result = ingest(session, sent.settings, raw, source="stdin", envelope_recipient=sent.verp("bob@example.net"))
    assert (result.verdict, result.suppressed) == (Verdict.BOUNCE, 1)
    assert sent.subscribers["bob@example.net"].status == SubscriberStatus.BOUNCED
    assert events(session, "hard_bounce")[0].reason_name == "userunknown"


def test_arf_complaint_with_verp_original_mail_from(session: Session, sent: Sent) -> None:
    raw = arf("fbl@example.org", original_mail_from=sent.verp("bob@example.net"), rcpt_to="redacted@example.com")
    result = ingest(session, sent.settings, raw, source="imap")
    assert (result.verdict, result.suppressed) == (Verdict.COMPLAINT, 1)
    assert sent.subscribers["bob@example.net"].status == SubscriberStatus.COMPLAINED
    [complaint] = events(session, "complaint")
    assert complaint.delivery_id == sent.deliveries["bob@example.net"].id
    assert complaint.payload is not None and complaint.payload["feedback_type"] == "abuse"


def test_arf_complaint_found_by_the_list_unsubscribe_mailto_of_the_original(session: Session, sent: Sent) -> None:
    # Some feedback loops redact the recipient; our List-Unsubscribe header still names the subscriber.
    original = (
        f"List-Unsubscribe: <mailto:{sent.mailto('cho@example.com')}?subject=unsubscribe>, "
        f"<https://news.example.org/unsubscribe/x>\nTo: [redacted]\n"
    )
    raw = arf("fbl@example.org", original=original)
    assert ingest(session, sent.settings, raw, source="imap").verdict == Verdict.COMPLAINT
    assert sent.subscribers["cho@example.com"].status == SubscriberStatus.COMPLAINED


def test_arf_complaint_naming_only_an_address_is_kept_unverified(session: Session, sent: Sent) -> None:
    result = ingest(session, sent.settings, arf("fbl@example.org", rcpt_to="ann@example.com"), source="imap")
    assert result.verdict == Verdict.UNVERIFIED
    assert sent.subscribers["ann@example.com"].status == SubscriberStatus.ACTIVE


@pytest.mark.parametrize("feedback_type", ["not-spam", "auth-failure", "virus", "other"])
def test_feedback_that_is_no_complaint_is_recorded_only(session: Session, sent: Sent, feedback_type: str) -> None:
    raw = arf("fbl@example.org", feedback_type=feedback_type, original_mail_from=sent.verp("ann@example.com"))
    assert ingest(session, sent.settings, raw, source="imap").verdict == Verdict.FEEDBACK
    assert sent.subscribers["ann@example.com"].status == SubscriberStatus.ACTIVE
    [report] = events(session, "feedback_report")
    assert report.reason_name == feedback_type


VACATION_REPLIES = {
    "rfc3834": "Auto-Submitted: auto-replied\nSubject: Re: First\n",
    "x-autoreply": "X-Autoreply: yes\nSubject: Re: First\n",
    "x-autorespond": "X-Autorespond: Re: First\nSubject: Re: First\n",
    "precedence": "Precedence: auto_reply\nSubject: Re: First\n",
    "outlook": "Subject: Automatic reply: First\nX-Auto-Response-Suppress: All\n",
    "subject-only": "Subject: Out of Office: First\n",
    "subject-chinese": "Subject: =?UTF-8?B?6Ieq5Yqo5Zue5aSNOiBGaXJzdA==?=\n",
}


@pytest.mark.parametrize("headers", VACATION_REPLIES.values(), ids=VACATION_REPLIES.keys())
def test_auto_replies_are_ignored(session: Session, sent: Sent, headers: str) -> None:
    raw = (
        f"From: Ann <ann@example.com>\nTo: {sent.verp('ann@example.com')}\n{headers}"
        "Message-ID: <vacation@example.com>\n\nI am away until Monday, back on 12 January. Write to "
        "bob@example.net if it is urgent; your mail will not be forwarded.\n"
    ).encode()
    result = ingest(session, sent.settings, raw, source="stdin")
    assert result.verdict == Verdict.AUTO_REPLY
    assert {s.status for s in sent.subscribers.values()} == {"active"}
    assert session.scalar(select(func.count()).select_from(Event).where(Event.kind != "created")) == 0
    assert unrecognized(session) == []


def test_mail_to_the_unsubscribe_address_unsubscribes(session: Session, sent: Sent) -> None:
    raw = (
        f"From: Bob <bob@example.net>\nTo: {sent.mailto('bob@example.net')}\nSubject: unsubscribe\n"
        "Message-ID: <u1@example.net>\n\n"
    ).encode()
    result = ingest(session, sent.settings, raw, source="stdin")
    assert (result.verdict, result.suppressed) == (Verdict.UNSUBSCRIBE, 1)
    assert sent.subscribers["bob@example.net"].status == SubscriberStatus.UNSUBSCRIBED
    assert ingest(session, sent.settings, raw, source="stdin").duplicates == 1


def test_mail_to_a_forged_unsubscribe_address_unsubscribes_nobody(session: Session, sent: Sent) -> None:
    forged = "unsubscribe+" + format(sent.subscribers["bob@example.net"].id, "x") + "-" + "a" * 20 + "@example.org"
    raw = f"From: x@example.com\nTo: {forged}\nSubject: unsubscribe\n\n".encode()
    assert ingest(session, sent.settings, raw, source="stdin").verdict == Verdict.UNRECOGNIZED
    assert sent.subscribers["bob@example.net"].status == SubscriberStatus.ACTIVE


def test_a_human_reply_is_kept_for_the_editor_once(session: Session, sent: Sent) -> None:
    raw = (
        f"From: Ann <ann@example.com>\nTo: {sent.verp('ann@example.com')}\nSubject: Re: First\n"
        "Message-ID: <reply@example.com>\n\nThanks for the issue!\n"
    ).encode()
    for _ in range(2):
        assert ingest(session, sent.settings, raw, source="imap").verdict == Verdict.UNRECOGNIZED
    [kept] = unrecognized(session)
    assert (kept.subject, kept.source, kept.raw) == ("Re: First", "imap", raw)
    assert kept.recipient == sent.verp("ann@example.com")


def test_a_dismissed_message_read_again_is_not_kept_again(session: Session, sent: Sent) -> None:
    raw = (
        f"From: Ann <ann@example.com>\nTo: {sent.verp('ann@example.com')}\nSubject: Re: First\n"
        "Message-ID: <dismissed@example.com>\nDate: Mon, 7 Dec 2026 05:00:00 +0000\n\nThanks!\n"
    ).encode()
    ingest(session, sent.settings, raw, source="imap")
    [kept] = unrecognized(session)
    dismiss_kept(session, kept.id, actor="editor@example.org")
    # Fetched again, with a Received line more (the same Message-ID, Date and From): known, not kept again.
    again = ingest(session, sent.settings, b"Received: from mx by imap; Mon, 7 Dec 2026\n" + raw, source="imap")
    assert again.duplicates == 1 and again.recorded == 0
    assert [row.id for row in unrecognized(session)] == [kept.id]
    assert unrecognized_messages(session) == []
    assert kept.dismissed_at is not None and kept.raw == b""
    [event] = events(session, DISMISSED)
    assert event.actor == "editor@example.org" and event.payload is not None
    assert event.payload["subject"] == "Re: First"


def test_a_dismissed_report_cannot_be_applied_nor_dismissed_again(session: Session, sent: Sent) -> None:
    ingest(session, sent.settings, dsn("bounces@example.org", [failed("bob@example.net")]), source="stdin")
    [kept] = unrecognized(session)
    dismiss_kept(session, kept.id)
    with pytest.raises(KeptMessageNotFound):
        apply_kept(session, sent.settings, kept.id)
    with pytest.raises(KeptMessageNotFound):
        dismiss_kept(session, kept.id)
    assert sent.subscribers["bob@example.net"].status == SubscriberStatus.ACTIVE


def test_a_bounce_about_nobody_on_the_list_is_kept(session: Session, sent: Sent) -> None:
    result = ingest(session, sent.settings, dsn("bounces@example.org", [failed("nobody@example.com")]), source="x")
    assert result.verdict == Verdict.UNVERIFIED and "nobody@example.com" in result.note
    [kept] = unrecognized(session)
    assert "about no subscriber" in apply_kept(session, sent.settings, kept.id).note


HOSTILE = {
    "empty": b"",
    "garbage": bytes(range(256)) * 64,
    "headers-only": b"From: x@example.com\r\nSubject: hi",
    "truncated-mime": dsn("bounces@example.org", [failed("ann@example.com")])[:400],
    "unknown-charset": b"From: =?x-klingon?Q?Kor?= <k@example.com>\nSubject: =?utf-8?B?////?=\n"
    b"Content-Type: text/plain; charset=x-klingon\n\n\xff\xfe\xfd",
    "wrong-charset-dsn": dsn("bounces@example.org", [failed("ann@example.com", diagnostic="smtp; 550 \xe9\xe8")])
    .replace(b"charset=utf-8", b"charset=iso-2022-jp")
    .replace("\xe9".encode(), b"\xff"),
    "nested": b"Content-Type: multipart/mixed; boundary=b0\n\n"
    + b"".join(f"--b{i}\nContent-Type: multipart/mixed; boundary=b{i + 1}\n\n".encode() for i in range(3000)),
    "many-parts": b"Content-Type: multipart/mixed; boundary=b\n\n"
    + b"--b\nContent-Type: text/plain\n\nx\n" * 20_000
    + b"--b--\n",
    "huge-part": dsn("bounces@example.org", [failed("cho@example.com")]).replace(
        b"Your message could not be delivered.", b"A" * (12 * 1024 * 1024)
    ),
    "base64-report": dsn("bounces@example.org", [failed("ann@example.com")]).replace(
        b"Content-Type: message/delivery-status\r\n",
        b"Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n",
    ),
    "long-header": b"Subject: " + b"x" * 2_000_000 + b"\n\nbody",
}


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_messages_never_raise(session: Session, sent: Sent, raw: bytes) -> None:
    started = time.perf_counter()
    result = ingest(session, sent.settings, raw, source="stdin")
    assert time.perf_counter() - started < 20
    assert result.verdict in set(Verdict)
    session.flush()
    # Nothing hostile may pass for a report about a subscriber, save the readable head of a real DSN.
    assert sent.subscribers["bob@example.net"].status == SubscriberStatus.ACTIVE
    kept = unrecognized(session)
    assert all(len(message.raw) <= 256 * 1024 for message in kept)


def test_a_dsn_cut_before_its_report_is_kept_for_the_editor(session: Session, sent: Sent) -> None:
    result = ingest(session, sent.settings, HOSTILE["huge-part"], source="stdin")
    assert result.verdict == Verdict.UNRECOGNIZED and "delivery-status" in result.note
    [kept] = unrecognized(session)
    assert kept.size_bytes > 12 * 1024 * 1024 and len(kept.raw) == 256 * 1024


def test_a_dsn_returning_a_huge_original_still_bounces(session: Session, sent: Sent) -> None:
    raw = dsn(sent.verp("cho@example.com"), [failed("cho@example.com")]).replace(
        b"Message-ID: <1.1.abcdef@example.org>\r\n",
        b"Message-ID: <1.1.abcdef@example.org>\r\n\r\n" + b"B" * (12 * 1024 * 1024),
    )
    assert ingest(session, sent.settings, raw, source="stdin").verdict == Verdict.BOUNCE
    assert sent.subscribers["cho@example.com"].status == SubscriberStatus.BOUNCED
