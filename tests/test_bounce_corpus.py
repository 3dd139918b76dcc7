"""Real bounces nobody on the project wrote: flufl.bounce's test corpus (Apache-2.0, tests/corpus/flufl).

Each sample names the addresses flufl.bounce's own tests expect, and whether it says the address is gone
(hard), may pass (temporary: a full mailbox, a delay, a loop, a message too large), or neither clearly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.bounces import FeedbackKind
from newsletter.inbound import Verdict, ingest, read_message
from newsletter.models import Event, SubscriberStatus
from newsletter.received import message_digest, parse
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber
from tests.inbound_mail import make_sent, more_verps

CORPUS = Path(__file__).parent / "corpus" / "flufl"
# sample: (the addresses it reports, what it says about them)
SAMPLES: dict[str, tuple[tuple[str, ...], str]] = {
    "aol_01": (("screenname@aol.com",), "other"),
    "bounce_01": ((), "other"),
    "bounce_02": (("userx@example.com",), "hard"),
    "bounce_03": (("userx@example.uk",), "temporary"),
    "caiwireless_01": (("userx@example.com",), "other"),
    "dsn_01": (("userx@example.com",), "temporary"),
    "dsn_02": (("zzzzz@example.uk",), "temporary"),
    "dsn_03": (("userx@example.be",), "temporary"),
    "dsn_04": (("userx@example.ch",), "other"),
    "dsn_05": (("userx@example.cz",), "temporary"),
    "dsn_06": (("userx@example.com",), "temporary"),
    "dsn_07": (("userx@example.nz",), "temporary"),
    "dsn_08": (("userx@example.de",), "temporary"),
    "dsn_09": (("userx@example.com",), "other"),
    "dsn_10": (("anne.person@dom.ain",), "hard"),
    "dsn_11": (("joem@example.com",), "hard"),
    "dsn_12": (("userx@example.jp",), "hard"),
    "dsn_13": (("userx@example.com",), "hard"),
    "dsn_14": (("userx@example.com.dk",), "hard"),
    "dsn_15": (("userx@example.com",), "hard"),
    "dsn_16": (("userx@example.com",), "hard"),
    "dsn_17": (("userx@example.fi",), "temporary"),
    "dsn_18": (("email@replaced.net",), "other"),
    "dumbass_01": ((), "other"),
    "exim_01": (("userx@its.example.nl",), "hard"),
    "groupwise_01": (("userx@example.edu",), "hard"),
    "groupwise_02": (("userx@example.com",), "hard"),
    "groupwise_03": ((), "other"),
    "hotpop_01": (("userx@example.com",), "temporary"),
    "llnl_01": (("user1@example.gov",), "other"),
    "microsoft_01": (("userx@example.com",), "hard"),
    "microsoft_02": (("userx@example.com",), "other"),
    "microsoft_03": (("userx@example.com",), "other"),
    "microsoft_04": (("userx@example.com",), "hard"),
    "netscape_01": (("aaaaa@corel.com", "bbbbb@corel.com"), "other"),
    "newmailru_01": (("zzzzz@newmail.ru",), "temporary"),
    "postfix_01": (("xxxxx@local.ie",), "hard"),
    "postfix_02": (("yyyyy@digicool.com",), "temporary"),
    "postfix_03": (("ttttt@ggggg.com",), "other"),
    "postfix_04": (("userx@mail1.example.com",), "temporary"),
    "postfix_05": (("userx@example.net",), "other"),
    "qmail_01": (("userx@example.de",), "other"),
    "qmail_02": (("userx@example.com",), "temporary"),
    "qmail_03": (("userx@example.jp",), "hard"),
    "qmail_04": (("userx@example.au",), "hard"),
    "qmail_05": (("userx@example.com",), "hard"),
    "qmail_06": (("ntl@xxx.com",), "temporary"),
    "qmail_07": (("user@example.net",), "temporary"),
    "qmail_08": ((), "other"),
    "sendmail_01": (("zzzzz@nfg.nl", "zzzzz@shaft.coal.nl"), "temporary"),
    "simple_01": (("bbbsss@example.com",), "other"),
    "simple_02": (("userx@example.net",), "other"),
    "simple_03": (("userx@example.za",), "temporary"),
    "simple_04": (("userx@example.com",), "hard"),
    "simple_05": (("userx@example.net",), "hard"),
    "simple_06": (("userx@example.com",), "hard"),
    "simple_07": (("userx@example.net",), "temporary"),
    "simple_08": (("userx@example.de",), "hard"),
    "simple_09": (("userx@example.de",), "temporary"),
    "simple_10": (("userx@example.com",), "other"),
    "simple_11": (("userx@example.com",), "hard"),
    "simple_12": (("userx@example.ac.jp",), "hard"),
    "simple_13": (("userx@example.fr",), "hard"),
    "simple_14": (("userx@example.com", "usery@example.com"), "temporary"),
    "simple_15": (("userx@example.be",), "hard"),
    "simple_16": (("userx@example.com",), "other"),
    "simple_17": (("userx@example.com",), "other"),
    "simple_18": (("userx@example.com",), "temporary"),
    "simple_19": (("userx@example.com.ar",), "hard"),
    "simple_20": (("userx@example.com",), "other"),
    "simple_21": (("userx@example.com",), "temporary"),
    "simple_22": (("user@example.org",), "temporary"),
    "simple_23": (("userx@example.it",), "hard"),
    "simple_24": (("userx@example.com",), "other"),
    "simple_25": (("userx@example.com",), "hard"),
    "simple_26": (("userx@example.it",), "hard"),
    "simple_27": (("userx@example.net.py",), "hard"),
    "simple_28": (("userx@example.com",), "temporary"),
    "simple_29": (("userx@example.com",), "hard"),
    "simple_30": (("userx@example.com",), "hard"),
    "simple_31": (("userx@example.fr",), "other"),
    "simple_32": (("userx@example.com",), "temporary"),
    "simple_33": (("userx@example.com",), "hard"),
    "simple_34": (("roland@example.com",), "hard"),
    "simple_35": (("calvin@example.com",), "temporary"),
    "simple_36": (("userx@example.com",), "hard"),
    "simple_37": (("user@example.edu",), "hard"),
    "simple_38": (("userx@example.com",), "temporary"),
    "simple_39": (("userx@example.ru",), "hard"),
    "simple_40": (("user@example.com",), "temporary"),
    "simple_41": (("userx@example.com",), "hard"),
    "simple_42": ((), "other"),
    "simple_43": ((), "other"),
    "simple_44": (("user@example.com",), "temporary"),
    "simple_45": (("subscriber@earthlink.net",), "temporary"),
    "sina_01": (("userx@sina.com", "usery@sina.com"), "other"),
    "smtp32_01": (("userx@example.ph",), "other"),
    "smtp32_02": (("userx@example.com",), "other"),
    "smtp32_03": (("userx@example.com",), "other"),
    "smtp32_04": (("after_another@example.net", "one_bad_address@example.net"), "hard"),
    "smtp32_05": (("userx@example.com",), "other"),
    "smtp32_06": (("absolute_garbage_addr@example.net",), "hard"),
    "smtp32_07": (("userx@example.com",), "hard"),
    "yahoo_01": (("userx@example.com",), "temporary"),
    "yahoo_02": (("userx@example.es",), "temporary"),
    "yahoo_03": (("userx@example.com",), "hard"),
    "yahoo_04": (("userx@example.es", "usery@example.uk"), "temporary"),
    "yahoo_05": (("userx@example.com", "usery@example.com"), "hard"),
    "yahoo_06": (("usera@example.com", "userx@example.com", "usery@example.com", "userz@example.com"), "hard"),
    "yahoo_07": (("userw@example.com", "userx@example.com", "usery@example.com", "userz@example.com"), "hard"),
    "yahoo_08": (
        (
            "usera@example.com",
            "userb@example.com",
            "userc@example.com",
            "userd@example.com",
            "usere@example.com",
            "userf@example.com",
        ),
        "hard",
    ),
    "yahoo_09": (("userx@example.com", "usery@example.com"), "hard"),
    "yahoo_10": (("userx@example.com", "usery@example.com", "userz@example.com"), "hard"),
    "yahoo_11": (("bad_user@aol.com",), "hard"),
    "yahoo_12": (("user@yahoo.com",), "other"),
    "yahoo_13": (("bogus-address@example.net",), "hard"),
    "yale_01": (("userx@cs.yale.edu", "userx@yale.edu"), "hard"),
}


def reading(name: str, settings: Settings) -> dict[str, FeedbackKind]:
    raw = (CORPUS / f"{name}.txt").read_bytes()
    message = parse(raw)
    found = read_message(message, settings, message_digest(message, raw)).feedback
    return {feedback.email or "": feedback.kind for feedback in found}


def test_the_corpus_is_all_there() -> None:
    assert sorted(path.stem for path in CORPUS.glob("*.txt")) == sorted(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_expected_address_is_found_and_no_other(name: str, settings: Settings) -> None:
    expected, _ = SAMPLES[name]
    assert set(reading(name, settings)) == set(expected)


@pytest.mark.parametrize("name", sorted(name for name, (_, nature) in SAMPLES.items() if nature == "hard"))
def test_a_gone_address_is_a_hard_bounce(name: str, settings: Settings) -> None:
    assert set(reading(name, settings).values()) == {FeedbackKind.HARD_BOUNCE}


@pytest.mark.parametrize("name", sorted(name for name, (_, nature) in SAMPLES.items() if nature != "hard"))
def test_nothing_else_is_a_hard_bounce(name: str, settings: Settings) -> None:
    assert FeedbackKind.HARD_BOUNCE not in reading(name, settings).values()


def test_without_our_token_no_sample_changes_a_reader(session: Session, settings: Settings) -> None:
    readers = {address for addresses, _ in SAMPLES.values() for address in addresses}
    for address in sorted(readers):
        add_subscriber(session, address)
    for name in sorted(SAMPLES):
        result = ingest(session, settings, (CORPUS / f"{name}.txt").read_bytes(), source="corpus")
        assert result.verdict in (Verdict.UNVERIFIED, Verdict.UNRECOGNIZED, Verdict.AUTO_REPLY, Verdict.IGNORED)
    assert session.scalars(select(Event.kind).where(Event.kind == "status")).all() == []


@pytest.mark.parametrize("nature", ["hard", "temporary"])
def test_with_our_token_only_a_gone_address_is_suppressed(session: Session, settings: Settings, nature: str) -> None:
    sent = make_sent(session, settings)
    names = sorted(name for name, (addresses, kind) in SAMPLES.items() if kind == nature and addresses)
    sent.subscribers["reader@example.com"] = add_subscriber(session, "reader@example.com")
    verps = more_verps(session, sent, "reader@example.com", len(names))
    for name, verp in zip(names, verps, strict=True):
        raw = (CORPUS / f"{name}.txt").read_bytes()
        ingest(session, settings, raw, source="corpus", envelope_recipient=verp)
        reader = sent.subscribers["reader@example.com"]
        if nature == "hard":
            assert reader.status == SubscriberStatus.BOUNCED, name
            reader.status = SubscriberStatus.ACTIVE
        else:
            assert reader.status == SubscriberStatus.ACTIVE, name
            reader.bounce_score = 0.0
