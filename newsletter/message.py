"""The MIME message of an issue, built once and filled per recipient by joining bytes."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import html
import re
import secrets
import time
from dataclasses import dataclass
from email.header import Header
from email.utils import format_datetime

from newsletter import links
from newsletter.errors import NewsletterError
from newsletter.images import InlineImage
from newsletter.render import RenderedIssue
from newsletter.settings import Settings
from newsletter.slots import SlotTemplate

CRLF = b"\r\n"
HEADER_LINE_CHARS = 76  # RFC 5322 2.1.1: SHOULD stay within 78 characters
BASE64_LINE_CHARS = 76  # RFC 2045 6.8
SOFT_BREAK = b"=\r\n"  # RFC 2045 6.7 rule 5: a soft line break joins the lines around it
QP_LINE_CHARS = 76  # RFC 2045 6.7 rule 5, the "=" of a soft break included
QP_SHORT_CHARS = 72
ENCODED_WORD_OCTETS = 45  # RFC 2047 2: an encoded-word is at most 75 characters
LINE_ENDING_RE = re.compile(rb"\r?\n")
UNSAFE_HEADER_CHARS_RE = re.compile(r"[\x00-\x1f\x7f]")
ADDRESS_FORBIDDEN_RE = re.compile(r"[\x00-\x20\x7f<>,;\"()\[\]\\]")
URI_FORBIDDEN_RE = re.compile(r"[\x00-\x20\x7f<>\"]")
# RFC 5322 3.2.3 specials: a display name holding any of them must be a quoted string.
NEEDS_QUOTING_RE = re.compile(r"[()<>\[\]:;@\\,.\"]")


class UnsafeHeaderValue(NewsletterError):
    """A recipient value that would break the message header (a line break, a `>` in a URL ...)."""


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str | None
    message_id: str
    unsubscribe_url: str
    unsubscribe_mailto: str
    preferences_url: str


def quoted_printable(text: str) -> bytes:
    """UTF-8 text as quoted-printable (RFC 2045 6.7) with CRLF line breaks and lines of at most 76."""
    if len(text) <= QP_SHORT_CHARS and text.isascii() and text.isprintable() and "=" not in text and (
        not text or text[-1] != " "
    ):
        return text.encode("ascii")  # the common slot value (a URL, an address) is already valid as it is
    data = LINE_ENDING_RE.sub(b"\r\n", text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8"))
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    # b2a_qp breaks soft lines with LF when its input holds no CRLF; SMTP wants CRLF everywhere.
    return LINE_ENDING_RE.sub(b"\r\n", encoded)


def with_soft_break(encoded: bytes) -> bytes:
    """Quoted-printable text ending in a soft line break, its last line kept within 76 characters."""
    start = encoded.rfind(b"\n") + 1
    if len(encoded) - start < QP_LINE_CHARS:
        return encoded + SOFT_BREAK
    cut = start + QP_LINE_CHARS - 3
    while b"=" in encoded[cut - 2 : cut]:  # never split an =XX escape
        cut -= 1
    return encoded[:cut] + SOFT_BREAK + encoded[cut:] + SOFT_BREAK


class _QuotedPrintableSlots:
    """A text part as fixed quoted-printable segments with slots between them."""

    def __init__(self, template: str) -> None:
        compiled = SlotTemplate(template)
        self.fixed = [with_soft_break(quoted_printable(piece)) for piece in compiled.fixed]
        self.slots = compiled.slots

    def encode(self, values: dict[str, str], out: list[bytes], cache: dict[tuple[str, bool], bytes]) -> None:
        out.append(self.fixed[0])
        for index, key in enumerate(self.slots, 1):
            encoded = cache.get(key)
            if encoded is None:
                value = values.get(key[0], "")
                encoded = cache[key] = with_soft_break(quoted_printable(html.escape(value) if key[1] else value))
            out.append(encoded)
            out.append(self.fixed[index])


class MessageTemplate:
    """An issue's message with the per-recipient parts left open; `fill` returns RFC 5322 bytes."""

    def __init__(self, head: bytes, text: _QuotedPrintableSlots, html_part: _QuotedPrintableSlots,
                 between: tuple[bytes, bytes, bytes], view_url: str) -> None:
        self._head = head
        self._text = text
        self._html = html_part
        self._before_text, self._before_html, self._tail = between
        self._view_url = view_url
        self._date_second = -1
        self._date = b""

    @classmethod
    def build(cls, issue: RenderedIssue, settings: Settings, *, subject_prefix: str = "") -> MessageTemplate:
        """Encode everything that is the same for every recipient, once."""
        settings.require("from_address")
        subject = _clean_header_text(subject_prefix + issue.subject)
        head = [
            b"From: " + _address_header(settings.from_name, settings.from_address, len("From: ")),
            b"Subject: " + _encode_header_text(subject, "Subject"),
        ]
        if settings.reply_to:
            head.append(b"Reply-To: " + _address_header("", settings.reply_to, len("Reply-To: ")))
        head += [
            b"List-Id: " + _list_id(settings),
            b"Precedence: bulk",  # RFC 2076 3.9: keeps vacation responders quiet
            b"Auto-Submitted: auto-generated",  # RFC 3834 5
            b"MIME-Version: 1.0",
        ]
        alternative = f"=_alt_{secrets.token_hex(12)}"  # "=_" never occurs in quoted-printable text
        part_head = b"Content-Type: text/%s; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        before_text = f"--{alternative}\r\n".encode() + part_head % b"plain"
        before_html = f"\r\n--{alternative}\r\n".encode() + part_head % b"html"
        tail = f"\r\n--{alternative}--\r\n".encode()
        if issue.images:
            related = f"=_rel_{secrets.token_hex(12)}"
            head.append(f'Content-Type: multipart/related; type="multipart/alternative";\r\n boundary="{related}"'
                        .encode())
            before_text = (f"--{related}\r\nContent-Type: multipart/alternative; boundary=\"{alternative}\"\r\n\r\n"
                           .encode() + before_text)
            tail += b"".join(_image_part(related, image) for image in issue.images) + f"--{related}--\r\n".encode()
        else:
            head.append(f'Content-Type: multipart/alternative;\r\n boundary="{alternative}"'.encode())
        return cls(CRLF.join(head) + CRLF + CRLF, _QuotedPrintableSlots(issue.text),
                   _QuotedPrintableSlots(issue.html), (before_text, before_html, tail),
                   links.issue_url(settings, issue.slug))

    def fill(self, recipient: Recipient) -> bytes:
        """The complete message for one recipient, CRLF line endings, ready to sign and send.

        Raises:
            UnsafeHeaderValue: an address, URL or Message-ID that cannot go into a header as it is.
        """
        email = _checked(recipient.email, ADDRESS_FORBIDDEN_RE, "address")
        name = _clean_header_text(recipient.name or "")
        unsubscribe = _checked(recipient.unsubscribe_url, URI_FORBIDDEN_RE, "unsubscribe URL")
        mailto = _checked(recipient.unsubscribe_mailto, URI_FORBIDDEN_RE, "unsubscribe mailto URI")
        message_id = _checked(recipient.message_id.strip().strip("<>"), ADDRESS_FORBIDDEN_RE, "Message-ID")
        values = {"email": email, "name": name, "unsubscribe_url": unsubscribe,
                  "preferences_url": recipient.preferences_url, "view_url": self._view_url}
        out = [
            b"To: ", _address_header(name, email, len("To: ")), CRLF,
            b"Date: ", self._now(), CRLF,
            b"Message-ID: <", message_id.encode("utf-8"), b">", CRLF,
            # RFC 2369 3.2 and RFC 8058 3.1: the HTTPS URI is the one-click target; one URI per line.
            b"List-Unsubscribe: <", unsubscribe.encode("utf-8"), b">,", CRLF, b" <", mailto.encode("utf-8"), b">", CRLF,
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", CRLF,
            self._head, self._before_text,
        ]
        cache: dict[tuple[str, bool], bytes] = {}
        self._text.encode(values, out, cache)
        out.append(self._before_html)
        self._html.encode(values, out, cache)
        out.append(self._tail)
        return b"".join(out)

    def _now(self) -> bytes:
        second = int(time.time())
        if second != self._date_second:
            self._date = format_datetime(dt.datetime.fromtimestamp(second, dt.UTC)).encode("ascii")
            self._date_second = second
        return self._date


def _checked(value: str, forbidden: re.Pattern[str], what: str) -> str:
    value = value.strip()
    if not value or forbidden.search(value):
        raise UnsafeHeaderValue(f"the {what} {value[:80]!r} cannot be used in a message header")
    return value


def _clean_header_text(text: str) -> str:
    # A line break in a name or subject would start a new header (header injection): make it a space.
    return " ".join(UNSAFE_HEADER_CHARS_RE.sub(" ", text).split())


def _encode_header_text(text: str, header_name: str) -> bytes:
    """Header text, RFC 2047 encoded-words when it is not plain ASCII, folded with CRLF."""
    if text.isascii() and "=?" not in text:
        return Header(text, "us-ascii", header_name=header_name).encode(linesep="\r\n").encode("ascii")
    return Header(text, "utf-8", header_name=header_name).encode(linesep="\r\n").encode("ascii")


def _list_id(settings: Settings) -> bytes:
    # RFC 2919 3: a phrase (RFC 2047 encoded when not ASCII) then the <list-id>.
    phrase, _, identifier = links.list_id(settings).rpartition(" <")
    name = phrase.strip('"')
    shown = phrase.encode("ascii") if name.isascii() else encoded_words(name)
    return shown + f" <{identifier}".encode("ascii")


def _address_header(name: str, address: str, prefix_chars: int) -> bytes:
    """`name <address>`: the name quoted (RFC 5322 3.2.4) or RFC 2047 encoded (5, rule 3)."""
    name = _clean_header_text(name)
    if not name:
        return address.encode("utf-8")
    if name.isascii() and "=?" not in name:
        shown = name
        if NEEDS_QUOTING_RE.search(name):
            shown = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if prefix_chars + len(shown) + len(address) + 3 <= HEADER_LINE_CHARS:
            return f"{shown} <{address}>".encode()
        return f"{shown}\r\n <{address}>".encode()
    return encoded_words(name) + b"\r\n <" + address.encode("utf-8") + b">"


def encoded_words(text: str) -> bytes:
    """RFC 2047 "B" encoded-words of at most 75 characters each, folded onto their own lines."""
    words: list[bytes] = []
    chunk = bytearray()
    for char in text:
        encoded = char.encode("utf-8")
        # 45 octets make 60 base64 characters: with "=?utf-8?b?" and "?=" a 72-character word.
        if len(chunk) + len(encoded) > ENCODED_WORD_OCTETS:
            words.append(b"=?utf-8?b?" + base64.b64encode(chunk) + b"?=")
            chunk = bytearray()
        chunk += encoded
    if chunk:
        words.append(b"=?utf-8?b?" + base64.b64encode(chunk) + b"?=")
    return b"\r\n ".join(words)


def _image_part(boundary: str, image: InlineImage) -> bytes:
    encoded = base64.b64encode(image.data)
    lines = CRLF.join(encoded[i : i + BASE64_LINE_CHARS] for i in range(0, len(encoded), BASE64_LINE_CHARS))
    filename = image.filename.replace('"', "")
    if not filename.isascii():
        filename = "image" + (image.filename[image.filename.rfind("."):] if "." in image.filename else "")
    return (f"--{boundary}\r\nContent-Type: {image.content_type}\r\nContent-Transfer-Encoding: base64\r\n"
            f"Content-ID: <{image.cid}>\r\nContent-Disposition: inline; filename=\"{filename}\"\r\n\r\n"
            ).encode() + lines + CRLF
