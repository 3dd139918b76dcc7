"""Reading RFC 5322 messages that may be hostile: sizes capped, headers and text decoded without raising."""

from __future__ import annotations

import email
import email.policy
import hashlib
from collections import deque
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses

MAX_MESSAGE_BYTES = 10 * 1024 * 1024  # a DSN returns the original message; ours are far smaller
MAX_PARTS = 500  # a report has a handful of parts; thousands are an attack on the parser
MAX_HEADER_CHARS = 4_000
MAX_TEXT_CHARS = 200_000
_CONTROL = dict.fromkeys(range(32), " ") | {127: " "}


def parse(raw: bytes) -> Message:
    """A message from bytes, cut at MAX_MESSAGE_BYTES (the head of a report carries what matters)."""
    # compat32 keeps malformed headers as raw strings instead of raising when they are read.
    return email.message_from_bytes(raw[:MAX_MESSAGE_BYTES], policy=email.policy.compat32)


def header(message: Message, name: str) -> str:
    """One header's value: RFC 2047 words decoded, folding and control characters turned to spaces."""
    value = message.get(name)
    return "" if value is None else decoded(str(value))


def decoded(value: str) -> str:
    """A raw header value decoded (RFC 2047) and unfolded; an unknown charset leaves it raw."""
    text = value[:MAX_HEADER_CHARS]
    try:
        text = str(make_header(decode_header(text)))
    except (LookupError, ValueError, UnicodeError, AssertionError):
        pass  # an unknown charset or a broken encoded word: keep the raw text
    return " ".join(text.translate(_CONTROL).split())


def addresses(message: Message, *names: str) -> list[str]:
    """The bare addresses in the named headers, in order, lower-cased, without empty ones."""
    values = [decoded(str(value)) for name in names for value in message.get_all(name, [])[:20]]
    return [address.strip().lower() for _, address in getaddresses(values) if "@" in address]


def plausible_address(address: str) -> bool:
    """An address a mailbox can have (RFC 5322 3.4.1 dot-atom local part): not a redacted `david...@gmail.com`."""
    local, at, domain = address.rpartition("@")
    if not (at and local and "." in domain) or ".." in local or local.startswith(".") or len(address) > 320:
        return False
    return not any(character in address for character in ' \t"{}[]\\,;:<>()') and "@" not in local


def parts(message: Message) -> Iterator[Message]:
    """Every part of a message, breadth first, at most MAX_PARTS (no recursion: nesting cannot overflow)."""
    queue: deque[Message] = deque([message])
    seen = 0
    while queue and seen < MAX_PARTS:
        part = queue.popleft()
        seen += 1
        yield part
        payload = part.get_payload()
        if isinstance(payload, list):
            queue.extend(child for child in payload if isinstance(child, Message))


def find_part(message: Message, *content_types: str) -> Message | None:
    """The first part whose content type is one of `content_types`."""
    return next((part for part in parts(message) if part.get_content_type() in content_types), None)


def text_of(part: Message) -> str:
    """The decoded text of a leaf part, in its declared charset when Python knows it, else UTF-8."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return ""
    try:
        data = part.get_payload(decode=True)
    except (ValueError, TypeError, AssertionError):
        data = None
    if not isinstance(data, bytes):
        return str(payload)[:MAX_TEXT_CHARS]
    charset = part.get_content_charset() or "utf-8"
    try:
        return data[: MAX_TEXT_CHARS * 4].decode(charset, errors="replace")[:MAX_TEXT_CHARS]
    except LookupError:
        return data[: MAX_TEXT_CHARS * 4].decode("utf-8", errors="replace")[:MAX_TEXT_CHARS]


def header_blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    # A report part sent with a transfer encoding the parser left alone: read it as text.
    blocks = text_of(part).replace("\r\n", "\n").split("\n\n")
    return [
        email.message_from_string(block.strip() + "\n", policy=email.policy.compat32)
        for block in blocks
        if block.strip()
    ][:MAX_PARTS]


def original_headers(message: Message) -> Message | None:
    """The headers of the message a report returns: its message/rfc822 or text/rfc822-headers part."""
    for part in parts(message):
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global") and isinstance(part.get_payload(), list):
            inner = part.get_payload(0)
            if isinstance(inner, Message):
                return inner
        if kind in ("text/rfc822-headers", "message/global-headers"):
            return email.message_from_string(text_of(part).lstrip(), policy=email.policy.compat32)
    return None


def message_digest(message: Message, raw: bytes) -> str:
    """A stable name for a message: from Message-ID, Date and From when it has one, else from its bytes.

    The same report delivered twice (to a Maildir and a pipe, or fetched again) gains Received lines but
    keeps these headers, so it is recognised as the same.
    """
    message_id = header(message, "Message-ID")
    if message_id:
        identity = "\n".join((message_id, header(message, "Date"), header(message, "From"))).encode()
    else:
        identity = raw[:MAX_MESSAGE_BYTES]
    return hashlib.sha256(identity).hexdigest()
