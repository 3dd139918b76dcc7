"""Bounces without an RFC 3464 report (qmail, Exim, Exchange, old Sendmail...): who failed and in which words.

flufl.bounce finds the addresses, and Exim names them in X-Failed-Recipients; the reason is read from the
words the bounce writes next to each address, by the same classifier as every other report.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from email.message import Message

from flufl.bounce import all_failures

from newsletter.provenance import scanned_text
from newsletter.reasons import Diagnosis, classify
from newsletter.received import MAX_PARTS, addresses, header, parts, plausible_address, text_of

FLUFL_PART_CHARS = 256 * 1024
WINDOW_CHARS = 600  # the words after an address: qmail's "remote said", Exim's "SMTP error from remote"
MAX_FAILURES = 100
# A header of the returned message quoted in the text: its From or Message-ID is never a failed recipient.
_HEADER_ADDRESS = re.compile(
    r"(?:^|\s)(?:message-id|from|sender|return-path|reply-to|in-reply-to|references)\s*:[^\n@]{0,80}?<?"
    r"([^\s<>\"'()]+@[^\s<>\"'()]+?)>?(?=[\s,;]|$)",
    re.MULTILINE,
)
_ADDRESS = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~.-]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9-]+)+")
_BOUNCE_SENDER = re.compile(r"mailer-daemon|postmaster|mail delivery|mail system|mailer_daemon")
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (status|fail|notification|problem)|returned mail|failure notice|mail delivery failed"
    r"|could not be delivered|non-?deliver|delivery has failed|unzustellbar|non remis|退信|送信できません",
    re.IGNORECASE,
)
# Where a bounce starts quoting the message it returns: the addresses below are the sender's, not failures.
_RETURNED_COPY = re.compile(
    r"\n\s*(?:-{3,}[^\n]*|[^\n]*(?:copy of (?:the|your)|original message|message headers follow|returned message"
    r"|unsent message|headers of the|below this line)[^\n]*)\n",
    re.IGNORECASE,
)
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
    temporary, permanent = all_failures(_head_of(message))
    failed = {_text(address): True for address in permanent}
    failed |= {_text(address): False for address in temporary if _text(address) not in failed}
    for address in addresses(message, "X-Failed-Recipients"):  # Exim: the addresses, one header
        failed.setdefault(address, True)
    human = human_text(message)
    ours = _sender_side(message, human)
    if not failed and looks_like_a_bounce(message):
        # A format flufl.bounce does not know (OpenSMTPD, DragonFly, v5 Sendmail...): the addresses the
        # bounce's own words name before the copy of the message it returns.
        failed = dict.fromkeys(_named_in(message, human, ours), True)
    named = [address for address in failed if plausible_address(address) and address not in ours]
    found = []
    for address, permanent_failure in sorted(failed.items())[:MAX_FAILURES]:
        if address not in named:
            continue
        excerpt = _window(human, address, named)
        # flufl.bounce's "temporary" are the "still trying" warnings: a delay, never counted.
        action = "failed" if permanent_failure else "delayed"
        diagnosis = classify(text=excerpt, action=action)
        found.append(TextFailure(address, diagnosis, action, " ".join(excerpt.split())[:300]))
    return found


def _head_of(message: Message) -> Message:
    """The message with every part cut to FLUFL_PART_CHARS: flufl.bounce reads each line of each part, and a
    returned original of 10 MB cost it seconds; what a bounce says of its recipients comes first."""
    head = copy.deepcopy(message)  # the parts are copied, their text is shared until it is cut
    for part in parts(head):
        payload = part.get_payload()
        if isinstance(payload, str) and len(payload) > FLUFL_PART_CHARS:
            part.set_payload(payload[:FLUFL_PART_CHARS])
    return head


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


def _window(human: str, address: str, named: list[str]) -> str:
    """The words about one address: from just before it to the next failed address (or the head of the text
    when it does not quote the address). Another address's words never decide this one's reason."""
    at = human.find(address)
    if at < 0:
        return human[: WINDOW_CHARS * 2]
    end = at + len(address) + WINDOW_CHARS
    start = max(0, at - 80)
    for other in named:
        if other == address:
            continue
        before, after = human.rfind(other, 0, at), human.find(other, at + len(address))
        if before >= 0:
            start = max(start, before + len(other))
        if after >= 0:
            end = min(end, after)
    return human[start:end]


def looks_like_a_bounce(message: Message) -> bool:
    """True for a message from a mail system about mail it could not deliver (RFC 3834 3.2's mailer-daemon)."""
    sender = header(message, "From").lower()
    return bool(_BOUNCE_SENDER.search(sender) or _BOUNCE_SUBJECT.search(header(message, "Subject")))


def _named_in(message: Message, human: str, ours: set[str]) -> list[str]:
    """The addresses a bounce's text names before the copy of the returned message (at most a few).

    Only an address the returned message was sent to counts (it appears again, in the copy or in the bounce's
    X-Original-To): "please contact support@..." in the same text is not a failed recipient.
    """
    head = _RETURNED_COPY.split(human, maxsplit=1)[0][: WINDOW_CHARS * 8]
    everything = scanned_text(message)
    found = [match.lower().strip(".") for match in _ADDRESS.findall(head)]
    named = [
        address
        for address in found
        if plausible_address(address) and address not in ours and everything.count(address) > head.count(address)
    ]
    return list(dict.fromkeys(named))[:20]


def _sender_side(message: Message, human: str) -> set[str]:
    """Addresses that are not recipients: the bounce's own sender and recipient (our return path), the returned
    message's From, Sender, Message-ID..."""
    found = set(addresses(message, "From", "Sender", "Return-Path", "Reply-To", "To", "Cc", "Delivered-To"))
    found |= {match.lower() for match in _HEADER_ADDRESS.findall(human)}
    return found


def _text(address: bytes | str) -> str:
    text = address.decode("utf-8", errors="replace") if isinstance(address, bytes) else address
    return text.strip().strip("<>").lower()
