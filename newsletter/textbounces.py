"""Bounces without an RFC 3464 report (qmail, Exim, Exchange, old Sendmail...): who failed and in which words.

flufl.bounce finds the addresses, and Exim names them in X-Failed-Recipients; the reason is read from the
words the bounce writes next to each address, by the same classifier as every other report.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message

from flufl.bounce import all_failures

from newsletter.reasons import Diagnosis, classify
from newsletter.received import MAX_PARTS, addresses, plausible_address, text_of

WINDOW_CHARS = 600  # the words after an address: qmail's "remote said", Exim's "SMTP error from remote"
MAX_FAILURES = 100
RETURNED_TYPES = ("message/rfc822", "message/global", "text/rfc822-headers", "message/rfc822-headers")


@dataclass(frozen=True)
class TextFailure:
    """One address a non-standard bounce reports, and why it failed."""

    recipient: str
    diagnosis: Diagnosis
    action: str  # failed, or delayed for the "still trying" warnings
    excerpt: str  # the words the reason was read from, for the log


def text_failures(message: Message) -> list[TextFailure]:
    """The failed addresses of a bounce in a pre-RFC 3464 format, each with its diagnosis."""
    temporary, permanent = all_failures(message)
    failed = {_text(address): True for address in permanent}
    failed |= {_text(address): False for address in temporary if _text(address) not in failed}
    for address in addresses(message, "X-Failed-Recipients"):  # Exim: the addresses, one header
        failed.setdefault(address, True)
    human = human_text(message)
    found = []
    for address, permanent_failure in sorted(failed.items())[:MAX_FAILURES]:
        if not plausible_address(address):
            continue
        excerpt = _window(human, address)
        # flufl.bounce's "temporary" are the "still trying" warnings: a delay, never counted.
        action = "failed" if permanent_failure else "delayed"
        diagnosis = classify(text=excerpt, action=action)
        found.append(TextFailure(address, diagnosis, action, " ".join(excerpt.split())[:300]))
    return found


def human_text(message: Message) -> str:
    """The text the bounce itself writes: its text parts, not those of the message it returns."""
    pieces: list[str] = []
    stack = [message]
    seen = 0
    while stack and seen < MAX_PARTS:
        part = stack.pop(0)
        seen += 1
        kind = part.get_content_type()
        if kind in RETURNED_TYPES or kind.startswith("message/"):
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            stack[:0] = [child for child in payload if isinstance(child, Message)]
        elif kind.startswith("text/"):
            pieces.append(text_of(part))
    return "\n".join(pieces).lower()


def _window(human: str, address: str) -> str:
    """The words from the address on (or the head of the text when it does not quote the address)."""
    at = human.find(address)
    if at < 0:
        return human[: WINDOW_CHARS * 2]
    return human[max(0, at - 80) : at + len(address) + WINDOW_CHARS]


def _text(address: bytes | str) -> str:
    text = address.decode("utf-8", errors="replace") if isinstance(address, bytes) else address
    return text.strip().strip("<>").lower()
