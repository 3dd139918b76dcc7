"""Which delivery of ours a received report is about, proved by something only we could have written.

A report changes a reader's state only when it is tied to a delivery we made: the VERP token of its
envelope recipient, the same token or the List-Unsubscribe token of ours in the message it returns, or a
Message-ID of ours whose MAC verifies. Addresses a report merely names prove nothing: anyone can write them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from newsletter.links import read_message_id
from newsletter.received import MAX_TEXT_CHARS, parts, text_of
from newsletter.settings import Settings
from newsletter.tokens import Purpose, Signer, TokenInvalid

UNSUBSCRIBE_LOCAL_PART = "unsubscribe"  # links.unsubscribe_mailto: unsubscribe+TOKEN@bounce domain
MAX_SCANNED_CHARS = 2 * MAX_TEXT_CHARS  # the head of a report: the returned headers come first


@dataclass(frozen=True)
class Addressee:
    """Whom a message is about, from a verified token or Message-ID of ours."""

    delivery_id: int | None = None  # bounces+TOKEN: the VERP return path of one delivery
    outbound_id: int | None = None  # bounces+TOKEN of a one-off message (a confirmation mail)
    subscriber_id: int | None = None  # unsubscribe+TOKEN, or the subscriber of a Message-ID of ours
    issue_id: int | None = None  # with subscriber_id: from a Message-ID of ours, naming one delivery
    how: str = ""  # what proved it: "verp", "returned verp", "message-id", "unsubscribe token"
    problem: str = ""  # a token was there but did not verify: never fall back to guessing

    @property
    def has_token(self) -> bool:
        return self.tied or bool(self.problem)

    @property
    def tied(self) -> bool:
        """True when something only we could write names the delivery or the subscriber."""
        return self.delivery_id is not None or self.subscriber_id is not None or self.outbound_id is not None

    def named(self) -> dict[str, int | None]:
        """What a Feedback needs to find the delivery and the subscriber."""
        return {
            "delivery_id": self.delivery_id,
            "subscriber_id": self.subscriber_id,
            "issue_id": self.issue_id,
            "outbound_id": self.outbound_id,
        }


def addressee_of(recipients: list[str], signer: Signer, bounce_address: tuple[str, str]) -> Addressee:
    """The delivery or subscriber named by the first of `recipients` that carries one of our tokens."""
    bounce_local, bounce_domain = (part.lower() for part in bounce_address)
    for recipient in recipients:
        local, _, domain = recipient.strip().lower().rpartition("@")
        base, plus, token = local.partition("+")
        if domain != bounce_domain or not plus:
            continue
        purpose = {bounce_local: Purpose.BOUNCE, UNSUBSCRIBE_LOCAL_PART: Purpose.MAILTO_UNSUBSCRIBE}.get(base)
        if purpose is None:
            continue
        if purpose == Purpose.BOUNCE:
            return bounce_token(signer, token, "verp") or Addressee(problem=f"{recipient[:100]}: bad signature")
        try:
            number = signer.read_address_token(purpose, token)
        except TokenInvalid as error:
            return Addressee(problem=f"{recipient[:100]}: {error}")
        return Addressee(subscriber_id=number, how="unsubscribe token")
    return Addressee()


def bounce_token(signer: Signer, token: str, how: str) -> Addressee | None:
    """The delivery, or the one-off message, a bounces+TOKEN names; None when the token does not verify."""
    for purpose in (Purpose.BOUNCE, Purpose.OUTBOUND_BOUNCE):
        try:
            number = signer.read_address_token(purpose, token)
        except TokenInvalid:
            continue
        if purpose == Purpose.BOUNCE:
            return Addressee(delivery_id=number, how=how)
        return Addressee(outbound_id=number, how=how)
    return None


def returned_tie(message: Message, settings: Settings, signer: Signer, bounce_address: tuple[str, str]) -> Addressee:
    """What the message a report returns (or quotes) proves: our VERP token, Message-ID or unsubscribe token.

    Forged or altered tokens are skipped, not trusted: only a token whose MAC verifies ties a report.
    """
    text = scanned_text(message)
    bounce_local, bounce_domain = (re.escape(part.lower()) for part in bounce_address)
    for token in re.findall(rf"{bounce_local}\+([0-9a-f]{{1,16}}-[0-9a-f]{{20}})@{bounce_domain}", text):
        found = bounce_token(signer, token, "returned verp")
        if found is not None:
            return found
    for candidate in re.findall(r"<?(\d{1,18}\.\d{1,18}\.[0-9a-f]{16}@[a-z0-9.-]+)>?", text):
        named = read_message_id(settings, candidate)
        if named is not None:
            return Addressee(issue_id=named[0], subscriber_id=named[1], how="message-id")
    for token in re.findall(rf"{UNSUBSCRIBE_LOCAL_PART}\+([0-9a-f]{{1,16}}-[0-9a-f]{{20}})@{bounce_domain}", text):
        try:
            number = signer.read_address_token(Purpose.MAILTO_UNSUBSCRIBE, token)
        except TokenInvalid:
            continue
        return Addressee(subscriber_id=number, how="unsubscribe token")
    return Addressee()


def scanned_text(message: Message) -> str:
    """Every part's headers and text, lower-cased, up to MAX_SCANNED_CHARS: where returned headers hide."""
    pieces: list[str] = []
    size = 0
    for part in parts(message):
        piece = "\n".join(f"{name}: {value}" for name, value in part.items()) + "\n" + text_of(part)
        pieces.append(piece)
        size += len(piece)
        if size > MAX_SCANNED_CHARS:
            break
    return "\n".join(pieces)[:MAX_SCANNED_CHARS].lower()
