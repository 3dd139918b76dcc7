"""Real bounces nobody on the project wrote: flufl.bounce's test corpus (Apache-2.0, tests/corpus/flufl).

Each sample names the addresses flufl.bounce's own tests expect, and whether it says the address is gone
(hard), may pass (temporary: a full mailbox, a delay, a loop, a message too large), or neither clearly.
"""

from __future__ import annotations

import json
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
# sample: the addresses it reports, and what it says about them (hard, temporary or other)
EXPECTED = json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))
SAMPLES: dict[str, tuple[tuple[str, ...], str]] = {
    name: (tuple(entry["addresses"]), entry["nature"]) for name, entry in EXPECTED.items()
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
