"""Who a report may change: only a reader tied to a delivery of ours, and only as far as its reason allows.

Hand-made samples for each rule: forged DSN and ARF with and without our token, DMARC reports, Microsoft
JMRP, forwarded mail, a delay series, non-standard Action values, Exim's X-Failed-Recipients.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from newsletter import database, links
from newsletter.cli import main
from newsletter.inbound import Verdict, apply_kept, ingest
from newsletter.models import Event, SubscriberStatus, UnrecognizedMessage
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber, find_subscriber
from newsletter.suppressions import ReactivationRefused, reactivate
from tests.inbound_mail import Sent, arf, dsn, failed, make_sent, more_verps

FORGED_DSN = b"""From: MAILER-DAEMON@mx.example.com
To: bounces@example.org
Subject: Undelivered Mail Returned to Sender
Content-Type: multipart/report; report-type=delivery-status; boundary=b

--b
Content-Type: message/delivery-status

Final-Recipient: rfc822; ann@example.com
Action: failed
Status: 5.1.1
--b--
"""


@pytest.fixture
def sent(session: Session, settings: Settings) -> Sent:
    return make_sent(session, settings)


def statuses(sent: Sent) -> dict[str, str]:
    return {email: subscriber.status for email, subscriber in sent.subscribers.items()}


def kinds(session: Session) -> list[str]:
    return list(session.scalars(select(Event.kind).where(Event.kind != "created").order_by(Event.id)))


def test_a_forged_dsn_without_a_token_changes_nothing(session: Session, sent: Sent) -> None:
    result = ingest(session, sent.settings, FORGED_DSN, source="stdin")
    assert result.verdict == Verdict.UNVERIFIED
    assert set(statuses(sent).values()) == {"active"} and kinds(session) == []


def test_a_forged_arf_without_a_token_changes_nothing(session: Session, sent: Sent) -> None:
    result = ingest(session, sent.settings, arf("bounces@example.org", rcpt_to="bob@example.net"), source="stdin")
    assert result.verdict == Verdict.UNVERIFIED
    assert set(statuses(sent).values()) == {"active"} and kinds(session) == []


def test_a_forged_arf_with_an_altered_token_changes_nothing(session: Session, sent: Sent) -> None:
    genuine = sent.verp("bob@example.net")
    altered = genuine[:-4] + ("0000" if not genuine.endswith("0000") else "1111")
    ingest(session, sent.settings, arf("fbl@example.org", original_mail_from=altered), source="stdin")
    assert set(statuses(sent).values()) == {"active"}


def test_our_message_id_in_the_returned_headers_ties_the_report(session: Session, sent: Sent) -> None:
    delivery = sent.deliveries["bob@example.net"]
    returned = f"Message-ID: {delivery.message_id}\n"
    ingest(
        session, sent.settings, dsn("bounces@example.org", [failed("bob@example.net")], returned=returned), source="x"
    )
    assert statuses(sent)["bob@example.net"] == SubscriberStatus.BOUNCED
    [bounce] = session.scalars(select(Event).where(Event.kind == "hard_bounce"))
    assert bounce.delivery_id == delivery.id and bounce.payload is not None and bounce.payload["tie"] == "message-id"


def test_a_message_id_with_a_wrong_mac_ties_nothing(session: Session, sent: Sent) -> None:
    delivery = sent.deliveries["bob@example.net"]
    forged = delivery.message_id.replace(delivery.message_id.split(".")[2][:4], "ffff")
    raw = dsn("bounces@example.org", [failed("bob@example.net")], returned=f"Message-ID: {forged}\n")
    assert ingest(session, sent.settings, raw, source="x").verdict == Verdict.UNVERIFIED
    assert statuses(sent)["bob@example.net"] == SubscriberStatus.ACTIVE


def test_message_ids_are_verifiable(settings: Settings) -> None:
    assert links.read_message_id(settings, links.message_id(settings, 12, 345)) == (12, 345)
    assert links.read_message_id(settings, "<12.345.0123456789abcdef@example.org>") is None
    assert links.read_message_id(settings, links.message_id(settings, 12, 345).replace("12.", "13.", 1)) is None


def test_our_return_path_in_the_returned_headers_ties_the_report(session: Session, sent: Sent) -> None:
    returned = f"Return-Path: <{sent.verp('cho@example.com')}>\n"
    ingest(
        session, sent.settings, dsn("bounces@example.org", [failed("cho@example.com")], returned=returned), source="x"
    )
    assert statuses(sent)["cho@example.com"] == SubscriberStatus.BOUNCED


@pytest.mark.parametrize("feedback_type", ["auth-failure", "not-spam", "virus", "other"])
def test_a_report_that_is_no_complaint_never_suppresses(session: Session, sent: Sent, feedback_type: str) -> None:
    raw = arf("dmarc@example.org", feedback_type=feedback_type, original_mail_from=sent.verp("ann@example.com"))
    assert ingest(session, sent.settings, raw, source="imap").verdict == Verdict.FEEDBACK
    assert statuses(sent)["ann@example.com"] == SubscriberStatus.ACTIVE


@pytest.mark.parametrize("feedback_type", ["abuse", "fraud"])
def test_abuse_and_fraud_are_complaints(session: Session, sent: Sent, feedback_type: str) -> None:
    raw = arf("fbl@example.org", feedback_type=feedback_type, original_mail_from=sent.verp("ann@example.com"))
    assert ingest(session, sent.settings, raw, source="imap").verdict == Verdict.COMPLAINT
    assert statuses(sent)["ann@example.com"] == SubscriberStatus.COMPLAINED


def test_an_arf_opt_out_unsubscribes(session: Session, sent: Sent) -> None:
    raw = arf("fbl@example.org", feedback_type="opt-out", original_mail_from=sent.verp("ann@example.com"))
    assert ingest(session, sent.settings, raw, source="imap").verdict == Verdict.UNSUBSCRIBE
    assert statuses(sent)["ann@example.com"] == SubscriberStatus.UNSUBSCRIBED


def jmrp(original: str) -> bytes:
    """A Microsoft JMRP complaint: the reported mail attached as message/rfc822, no feedback-report part."""
    return f"""From: staff@hotmail.com
To: fbl@example.org
Subject: complaint about message from 192.0.2.1
Date: Mon, 05 Jan 2026 10:00:00 +0000
Message-ID: <jmrp.1@hotmail.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="jmrp"

--jmrp
Content-Type: text/plain

This is an email abuse report for an email message received from IP 192.0.2.1.

--jmrp
Content-Type: message/rfc822
Content-Disposition: attachment

X-HmXmrOriginalRecipient: <reader@hotmail.com>
{original}From: The Editor <editor@example.org>
To: reader@hotmail.com
Subject: First

Hello.
--jmrp--
""".replace("\n", "\r\n").encode()


def test_a_jmrp_complaint_with_our_message_id_is_a_complaint(session: Session, sent: Sent) -> None:
    raw = jmrp(f"Message-ID: {sent.deliveries['cho@example.com'].message_id}\n")
    assert ingest(session, sent.settings, raw, source="imap").verdict == Verdict.COMPLAINT
    assert statuses(sent)["cho@example.com"] == SubscriberStatus.COMPLAINED


def forwarded(to: str) -> bytes:
    block = failed("ann.new@elsewhere.example") | {"Original-Recipient": "rfc822; ann@example.com"}
    return dsn(to, [block])


def test_a_forwarded_bounce_names_the_original_recipient(session: Session, sent: Sent) -> None:
    forward = add_subscriber(session, "ann.new@elsewhere.example")
    result = ingest(session, sent.settings, forwarded("bounces@example.org"), source="x")
    assert result.verdict == Verdict.UNVERIFIED and "ann@example.com" in result.note
    [kept] = session.scalars(select(UnrecognizedMessage))
    apply_kept(session, sent.settings, kept.id)
    assert statuses(sent)["ann@example.com"] == SubscriberStatus.BOUNCED
    assert forward.status == SubscriberStatus.ACTIVE


def test_a_forwarded_bounce_with_verp_hits_the_reader(session: Session, sent: Sent) -> None:
    ingest(session, sent.settings, forwarded(sent.verp("ann@example.com")), source="x")
    assert statuses(sent)["ann@example.com"] == SubscriberStatus.BOUNCED


def test_a_delay_series_then_the_final_failure_counts_once(session: Session, sent: Sent) -> None:
    verp = sent.verp("bob@example.net")
    for day in range(4):  # "still retrying" every day for one message
        delay = failed("bob@example.net", "4.4.1", "smtp; 451 4.4.1 try again later", "delayed")
        ingest(session, sent.settings, dsn(verp, [delay], message_id=f"<delay.{day}@mx.example.com>"), source="x")
    bob = sent.subscribers["bob@example.net"]
    assert (bob.status, bob.bounce_score) == (SubscriberStatus.ACTIVE, 0)
    final = failed("bob@example.net", "4.4.7", "smtp; 451 4.4.7 gave up after retrying")
    ingest(session, sent.settings, dsn(verp, [final], message_id="<final@mx.example.com>"), source="x")
    again = dsn(verp, [final], message_id="<final-again@mx.example.com>")  # a second report of the same delivery
    ingest(session, sent.settings, again, source="x")
    assert (bob.status, bob.bounce_score) == (SubscriberStatus.ACTIVE, pytest.approx(1.0))
    assert kinds(session) == ["delay"] * 4 + ["soft_bounce"] * 2


@pytest.mark.parametrize("action", ["fail", "failure", "Failed (permanent)", "FAILED"])
def test_non_standard_action_values_are_failures(session: Session, sent: Sent, action: str) -> None:
    raw = dsn(sent.verp("ann@example.com"), [failed("ann@example.com", action=action)])
    assert ingest(session, sent.settings, raw, source="x").verdict == Verdict.BOUNCE
    assert statuses(sent)["ann@example.com"] == SubscriberStatus.BOUNCED


def test_a_dsn_with_precedence_bulk_is_not_an_auto_reply(session: Session, sent: Sent) -> None:
    raw = dsn(
        sent.verp("ann@example.com"),
        [failed("ann@example.com")],
        extra_headers="Precedence: bulk\nX-Autogenerated: Reply\n",
    )
    assert ingest(session, sent.settings, raw, source="x").verdict == Verdict.BOUNCE


def test_exim_x_failed_recipients(session: Session, sent: Sent) -> None:
    raw = f"""From: Mail Delivery System <Mailer-Daemon@mail.example.net>
To: {sent.verp("cho@example.com")}
Subject: Mail delivery failed
X-Failed-Recipients: cho@example.com
Precedence: bulk

A message that you sent could not be delivered to one or more of its recipients.

  cho@example.com
    host mx.example.com: 550 5.1.1 <cho@example.com>: Recipient address rejected: User unknown
""".encode()
    assert ingest(session, sent.settings, raw, source="x").verdict == Verdict.BOUNCE
    assert statuses(sent)["cho@example.com"] == SubscriberStatus.BOUNCED


@pytest.mark.parametrize(
    ("status", "diagnostic", "reason"),
    [
        ("5.2.2", "smtp; 552 5.2.2 Mailbox full", "mailboxfull"),
        ("5.7.26", "smtp; 550-5.7.26 This mail is unauthenticated, which poses a security risk", "authfailure"),
        (
            "5.7.1",
            "smtp; 550 5.7.1 Our system has detected that this message is likely unsolicited mail",
            "spamdetected",
        ),
        ("4.3.2", "smtp; 452 4.3.2 Too many recipients", "toomanyconn"),
        ("5.3.4", "smtp; 552 5.3.4 Message size exceeds fixed limit", "mesgtoobig"),
        ("5.7.1", "smtp; 554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org", "blocked"),
    ],
)
def test_what_is_not_about_the_address_never_suppresses(
    session: Session, sent: Sent, status: str, diagnostic: str, reason: str
) -> None:
    raw = dsn(sent.verp("ann@example.com"), [failed("ann@example.com", status, diagnostic)])
    ingest(session, sent.settings, raw, source="x")
    assert statuses(sent)["ann@example.com"] == SubscriberStatus.ACTIVE
    [event] = session.scalars(select(Event).where(Event.kind.in_(("soft_bounce", "sender_side"))))
    assert event.reason_name == reason


def test_soft_bounces_of_different_deliveries_add_up(session: Session, sent: Sent) -> None:
    for number, verp in enumerate(more_verps(session, sent, "ann@example.com", 3)):
        full = failed("ann@example.com", "4.2.2", "smtp; 452 4.2.2 Mailbox full")
        ingest(session, sent.settings, dsn(verp, [full], message_id=f"<full.{number}@mx>"), source="x")
    assert statuses(sent)["ann@example.com"] == SubscriberStatus.BOUNCED


def test_reactivate_a_bounced_reader(session: Session, sent: Sent) -> None:
    ingest(session, sent.settings, dsn(sent.verp("ann@example.com"), [failed("ann@example.com")]), source="x")
    reactivate(session, "ann@example.com", "she fixed her mailbox")
    ann = sent.subscribers["ann@example.com"]
    assert (ann.status, ann.bounce_score) == (SubscriberStatus.ACTIVE, 0)
    [event] = session.scalars(select(Event).where(Event.kind == "reactivated"))
    assert event.reason == "she fixed her mailbox"


def test_reactivating_a_complaint_needs_force(session: Session, sent: Sent) -> None:
    raw = arf("fbl@example.org", original_mail_from=sent.verp("bob@example.net"))
    ingest(session, sent.settings, raw, source="x")
    with pytest.raises(ReactivationRefused, match="--force"):
        reactivate(session, "bob@example.net", "asked by phone")
    reactivate(session, "bob@example.net", "asked by phone", force=True)
    assert statuses(sent)["bob@example.net"] == SubscriberStatus.ACTIVE


def test_an_unsubscribed_reader_is_not_reactivated(session: Session, sent: Sent) -> None:
    sent.subscribers["cho@example.com"].status = SubscriberStatus.UNSUBSCRIBED
    with pytest.raises(ReactivationRefused):
        reactivate(session, "cho@example.com", "oops", force=True)


def config_for(tmp_path: Path, settings: Settings) -> str:
    config = tmp_path / "newsletter.toml"
    config.write_text(
        f'database_url = "{settings.database_url}"\nsecret_key = "{settings.secret_key}"\n'
        f'from_address = "{settings.from_address}"\n',
        encoding="utf-8",
    )
    return str(config)


def test_the_cli_lists_unverified_reports_applies_one_and_reactivates(
    tmp_path: Path, engine: Engine, settings: Settings
) -> None:
    with database.transaction(engine) as session:
        add_subscriber(session, "ann@example.com")
        ingest(session, settings, FORGED_DSN, source="stdin")
        [kept] = session.scalars(select(UnrecognizedMessage.id))
    config = config_for(tmp_path, settings)
    listed = CliRunner().invoke(main, ["--config", config, "bounces", "--unverified"])
    assert listed.exit_code == 0 and "Unverified reports: 1" in listed.output, listed.output
    applied = CliRunner().invoke(main, ["--config", config, "bounces", "apply", str(kept)])
    assert applied.exit_code == 0 and "suppressed 1" in applied.output, applied.output
    twice = CliRunner().invoke(main, ["--config", config, "bounces", "apply", str(kept)])
    assert twice.exit_code == 1 and "no unverified report" in twice.output
    back = CliRunner().invoke(
        main, ["--config", config, "subscribers", "reactivate", "ann@example.com", "--reason", "typo fixed"]
    )
    assert back.exit_code == 0, back.output
    with database.transaction(engine) as session:
        reader = find_subscriber(session, "ann@example.com")
        assert reader is not None and reader.status == SubscriberStatus.ACTIVE


def test_a_jmrp_complaint_without_our_token_is_kept_as_an_unverified_complaint(session: Session, sent: Sent) -> None:
    result = ingest(session, sent.settings, jmrp(""), source="imap")
    assert result.verdict == Verdict.UNVERIFIED and "reader@hotmail.com" in result.note
    assert set(statuses(sent).values()) == {"active"}
