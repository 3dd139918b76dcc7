"""The MIME message of an issue, built once and filled per recipient by joining bytes."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import html
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.header import Header
from email.utils import format_datetime
from typing import Any

from newsletter import links
from newsletter.errors import NewsletterError
from newsletter.fields import shown_value
from newsletter.images import InlineImage
from newsletter.render import RenderedIssue
from newsletter.settings import Settings
from newsletter.slots import Slot, SlotTemplate
from newsletter.smtp import WireReady, is_transparent

CRLF = b"\r\n"
HEADER_LINE_CHARS = 76  # RFC 5322 2.1.1: SHOULD stay within 78 characters
BASE64_LINE_CHARS = 76  # RFC 2045 6.8
BASE64_LINE_OCTETS = 57  # RFC 2045 6.8: 57 octets are 19 groups of 3, one line of 76 characters
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
    fields: Mapping[str, Any] = field(default_factory=dict)  # the subscriber's attributes


def quoted_printable(text: str) -> bytes:
    """UTF-8 text as quoted-printable (RFC 2045 6.7) with CRLF line breaks and lines of at most 76."""
    if (
        len(text) <= QP_SHORT_CHARS
        and text.isascii()
        and text.isprintable()
        and "=" not in text
        and (not text or text[-1] != " ")
    ):
        return text.encode("ascii")  # the common slot value (a URL, an address) is already valid as it is
    encoded = binascii.b2a_qp(canonical_text(text), quotetabs=False, istext=True, header=False)
    # b2a_qp breaks soft lines with LF when its input holds no CRLF; SMTP wants CRLF everywhere.
    return LINE_ENDING_RE.sub(b"\r\n", encoded)


def canonical_text(text: str) -> bytes:
    """UTF-8 text with CRLF line breaks, the canonical form a text part is encoded from (RFC 2045 6.8)."""
    return LINE_ENDING_RE.sub(b"\r\n", text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8"))


def base64_lines(data: bytes) -> bytes:
    """Base64 (RFC 2045 6.8) in lines of 76 characters joined by CRLF, with no line break after the last."""
    encoded = binascii.b2a_base64(data, newline=False)
    if len(encoded) <= BASE64_LINE_CHARS:
        return encoded
    return CRLF.join([encoded[i : i + BASE64_LINE_CHARS] for i in range(0, len(encoded), BASE64_LINE_CHARS)])


def with_soft_break(encoded: bytes) -> bytes:
    """Quoted-printable text ending in a soft line break, its last line kept within 76 characters."""
    start = encoded.rfind(b"\n") + 1
    if len(encoded) - start < QP_LINE_CHARS:
        return encoded + SOFT_BREAK
    cut = start + QP_LINE_CHARS - 3
    while b"=" in encoded[cut - 2 : cut]:  # never split an =XX escape
        cut -= 1
    return encoded[:cut] + SOFT_BREAK + encoded[cut:] + SOFT_BREAK


def dot_safe(encoded: bytes) -> bytes:
    """Quoted-printable with no line that starts with a dot: that dot becomes =2E (RFC 2045 6.7 rule 1 lets
    any octet be encoded), so the message needs no dot-stuffing pass on its way out (RFC 5321 4.5.2)."""
    if encoded[:1] != b"." and b"\n." not in encoded:
        return encoded
    lines: list[bytes] = []
    for line in encoded.split(CRLF):
        while line[:1] == b".":
            line = b"=2E" + line[1:]
            if len(line) <= QP_LINE_CHARS:
                break
            cut = QP_LINE_CHARS - 1  # and the soft break's "=" makes 76
            while b"=" in line[cut - 2 : cut]:  # never split an =XX escape
                cut -= 1
            lines.append(line[:cut] + b"=")
            line = line[cut:]
        lines.append(line)
    return CRLF.join(lines)


class _QuotedPrintableSlots:
    """A text part as fixed quoted-printable segments with slots between them."""

    content_transfer_encoding = b"quoted-printable"

    def __init__(self, fixed: Sequence[str], slots: Sequence[Slot]) -> None:
        # Each piece starts a line (the one before ends in a soft break), so none can start with a dot.
        self.fixed = [dot_safe(with_soft_break(quoted_printable(piece))) for piece in fixed]
        self.slots = tuple(slots)
        self.fixed_bytes = sum(map(len, self.fixed))
        self.keys = frozenset(key for key, _, _ in self.slots)

    def encode(self, values: Mapping[str, str], out: list[bytes]) -> None:
        out.append(self.fixed[0])
        for index, (key, escaped, fallback) in enumerate(self.slots, 1):
            value = values.get(key) or fallback
            out.append(dot_safe(with_soft_break(quoted_printable(html.escape(value) if escaped else value))))
            out.append(self.fixed[index])


class Base64Slots:
    """A text part in base64: every fixed piece encoded once, only the slot values and the few octets around
    them encoded per recipient.

    RFC 2045 6.8: base64 encodes groups of 3 octets, so text encoded apart joins up unchanged when each
    part but the last is a multiple of 3 octets; a line may be shorter than 76 characters, so each part
    ends its own line. A slot value shifts what follows by 0, 1 or 2 octets: each fixed piece is encoded
    once for each of the three shifts, and a recipient's message is joined from the matching ones.
    """

    content_transfer_encoding = b"base64"

    def __init__(self, fixed: Sequence[str], slots: Sequence[Slot]) -> None:
        prefix = canonical_text(fixed[0])
        cut = len(prefix) - len(prefix) % 3
        self.encoded_prefix = base64_lines(prefix[:cut])
        self.leftover = prefix[cut:]
        self.fixed = [canonical_text(piece) for piece in fixed[1:]]
        # For each piece and each count k of octets the bytes before it lack to a multiple of 3: the k
        # octets that complete them, the rest encoded up to a multiple of 3, and the octets left over.
        self.shifted = [tuple(_shifted(piece, lacking) for lacking in range(3)) for piece in self.fixed]
        self.slots = tuple(slots)
        self.keys = frozenset(key for key, _, _ in self.slots)
        octets = len(prefix) + sum(map(len, self.fixed))
        lines = -(-octets // BASE64_LINE_OCTETS) + len(self.slots)
        self.fixed_bytes = -(-octets // 3) * 4 + len(CRLF) * max(lines - 1, 0)

    def encode(self, values: Mapping[str, str], out: list[bytes]) -> None:
        chunks = [self.encoded_prefix] if self.encoded_prefix else []
        carry = self.leftover
        for index, (key, escaped, fallback) in enumerate(self.slots):
            value = values.get(key) or fallback
            value = html.escape(value) if escaped else value
            # A printable value holds no line break, so it is canonical as it is: skip the regex.
            data = carry + (value.encode("utf-8") if value.isprintable() else canonical_text(value))
            shifted = self.shifted[index][-len(data) % 3]
            if shifted is None:  # the piece is too short to complete a group: it all carries over
                carry = data + self.fixed[index]
                continue
            head, encoded, carry = shifted
            data += head
            if data:
                chunks.append(base64_lines(data))
            if encoded:
                chunks.append(encoded)
        if carry or not chunks:
            chunks.append(base64_lines(carry))
        out.append(CRLF.join(chunks))


def _shifted(piece: bytes, lacking: int) -> tuple[bytes, bytes, bytes] | None:
    """`piece` split for bytes before it that lack `lacking` octets to a multiple of 3 (see Base64Slots)."""
    if len(piece) < lacking:
        return None
    whole = lacking + (len(piece) - lacking) // 3 * 3
    return piece[:lacking], base64_lines(piece[lacking:whole]) if whole > lacking else b"", piece[whole:]


def _encoded_part(template: str, issue_values: Mapping[str, str]) -> _QuotedPrintableSlots | Base64Slots:
    """A rendered part in whichever of quoted-printable and base64 is shorter (RFC 2045 6.7, 6.8)."""
    # Quoted-printable keeps ASCII at its size but triples UTF-8 beyond it (a CJK character is 3 octets,
    # each "=XX"); base64 is 4/3 of anything. Slot values are short, so the fixed text decides.
    fixed, slots = _recipient_pieces(template, issue_values)
    quoted = _QuotedPrintableSlots(fixed, slots)
    based = Base64Slots(fixed, slots)
    return based if based.fixed_bytes < quoted.fixed_bytes else quoted


def _recipient_pieces(template: str, issue_values: Mapping[str, str]) -> tuple[list[str], list[Slot]]:
    """The template split at its per-recipient slots, with the slots in `issue_values` filled in."""
    compiled = SlotTemplate(template)
    fixed = [compiled.fixed[0]]
    slots: list[Slot] = []
    for (key, escaped, fallback), piece in zip(compiled.slots, compiled.fixed[1:], strict=True):
        if key in issue_values:
            fixed[-1] += (html.escape(issue_values[key]) if escaped else issue_values[key]) + piece
        else:
            slots.append((key, escaped, fallback))
            fixed.append(piece)
    return fixed, slots


class MessageTemplate:
    """An issue's message with the per-recipient parts left open; `fill` returns RFC 5322 bytes."""

    def __init__(
        self,
        head: bytes,
        text: _QuotedPrintableSlots | Base64Slots,
        html_part: _QuotedPrintableSlots | Base64Slots,
        between: tuple[bytes, bytes, bytes],
        subject: SlotTemplate | None = None,
    ) -> None:
        self._head = head
        # A subject with personal fields is encoded per recipient; any other is in `head` already.
        self._subject = subject
        # The attributes the issue's personal fields name: only those are looked up per recipient.
        builtin = {"email", "name", "unsubscribe_url", "preferences_url", "view_url"}
        keys = set(text.keys) | set(html_part.keys) | (set(subject.names) if subject else set())
        self._attributes = tuple(sorted(keys - builtin))
        self._text = text
        self._html = html_part
        self._before_text, self._before_html, self._tail = between
        self._transparent = all(map(is_transparent, (head, *between)))
        self._date_second = -1
        self._date = b""

    @classmethod
    def build(cls, issue: RenderedIssue, settings: Settings, *, subject_prefix: str = "") -> MessageTemplate:
        """Encode everything that is the same for every recipient, once."""
        settings.require("from_address")
        subject = _clean_header_text(subject_prefix + issue.subject)
        personal_subject = SlotTemplate(subject)
        head = [b"From: " + _address_header(settings.from_name, settings.from_address, len("From: "))]
        if not personal_subject.slots:
            head.append(b"Subject: " + _encode_header_text(subject, "Subject"))
        if settings.reply_to:
            head.append(b"Reply-To: " + _address_header("", settings.reply_to, len("Reply-To: ")))
        head += [
            b"List-Id: " + _list_id(settings),
            b"Precedence: bulk",  # RFC 2076 3.9: keeps vacation responders quiet
            b"Auto-Submitted: auto-generated",  # RFC 3834 5
            b"MIME-Version: 1.0",
        ]
        issue_values = {"view_url": links.issue_url(settings, issue.slug)}
        text, html_part = _encoded_part(issue.text, issue_values), _encoded_part(issue.html, issue_values)
        # RFC 2045 6.7, 6.8: "=_" occurs neither in quoted-printable text nor in base64.
        alternative = f"=_alt_{secrets.token_hex(12)}"
        part_head = b"Content-Type: text/%s; charset=utf-8\r\nContent-Transfer-Encoding: %s\r\n\r\n"
        before_text = f"--{alternative}\r\n".encode() + part_head % (b"plain", text.content_transfer_encoding)
        before_html = f"\r\n--{alternative}\r\n".encode() + part_head % (b"html", html_part.content_transfer_encoding)
        tail = f"\r\n--{alternative}--\r\n".encode()
        if issue.images:
            related = f"=_rel_{secrets.token_hex(12)}"
            head.append(
                f'Content-Type: multipart/related; type="multipart/alternative";\r\n boundary="{related}"'.encode()
            )
            before_text = (
                f'--{related}\r\nContent-Type: multipart/alternative; boundary="{alternative}"\r\n\r\n'.encode()
                + before_text
            )
            tail += b"".join(_image_part(related, image) for image in issue.images) + f"--{related}--\r\n".encode()
        else:
            head.append(f'Content-Type: multipart/alternative;\r\n boundary="{alternative}"'.encode())
        return cls(
            CRLF.join(head) + CRLF + CRLF,
            text,
            html_part,
            (before_text, before_html, tail),
            personal_subject if personal_subject.slots else None,
        )

    def fill(self, recipient: Recipient) -> bytes:
        """The complete message for one recipient, CRLF line endings, ready to sign and send (WireReady
        when no line starts with a dot, as good as always).

        Raises:
            UnsafeHeaderValue: an address, URL or Message-ID that cannot go into a header as it is.
        """
        email = _checked(recipient.email, ADDRESS_FORBIDDEN_RE, "address")
        name = _clean_header_text(recipient.name or "")
        unsubscribe = _checked(recipient.unsubscribe_url, URI_FORBIDDEN_RE, "unsubscribe URL")
        mailto = _checked(recipient.unsubscribe_mailto, URI_FORBIDDEN_RE, "unsubscribe mailto URI")
        message_id = _checked(recipient.message_id.strip().strip("<>"), ADDRESS_FORBIDDEN_RE, "Message-ID")
        values = {
            "email": email,
            "name": shown_value(name),
            "unsubscribe_url": unsubscribe,
            "preferences_url": recipient.preferences_url,
        }
        for attribute in self._attributes:
            values[attribute] = shown_value(recipient.fields.get(attribute))
        out = [
            b"To: ",
            _address_header(name, email, len("To: ")),
            CRLF,
            b"Date: ",
            self._now(),
            CRLF,
            b"Message-ID: <",
            message_id.encode("utf-8"),
            b">",
            CRLF,
            # RFC 2369 3.2 and RFC 8058 3.1: the HTTPS URI is the one-click target; one URI per line.
            b"List-Unsubscribe: <",
            unsubscribe.encode("utf-8"),
            b">,",
            CRLF,
            b" <",
            mailto.encode("utf-8"),
            b">",
            CRLF,
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            CRLF,
        ]
        if self._subject is not None:
            # RFC 5322 2.2: a value holding CR or LF would end the header; each becomes a space.
            subject = _clean_header_text(self._subject.fill(values))
            out += [b"Subject: ", _recipient_subject(subject), CRLF]
        # The parts are transparent by construction (base64, and quoted-printable made dot_safe); the header
        # lines above are short, and checking them costs far less than a pass over the message would.
        header = b"".join(out)
        transparent = self._transparent and is_transparent(header)
        out = [header, self._head, self._before_text]
        self._text.encode(values, out)
        out.append(self._before_html)
        self._html.encode(values, out)
        out.append(self._tail)
        return WireReady(b"".join(out)) if transparent else b"".join(out)

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


def _recipient_subject(subject: str) -> bytes:
    """A subject filled for one recipient, encoded without the `email` package's cost where it can be."""
    if not subject.isascii():
        return encoded_words(subject)  # RFC 2047: encoded-words of at most 75 characters, folded
    if "=?" not in subject and len("Subject: ") + len(subject) <= HEADER_LINE_CHARS:
        return subject.encode("ascii")
    return _encode_header_text(subject, "Subject")


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
    whole = text.encode("utf-8")
    if len(whole) <= ENCODED_WORD_OCTETS:  # the common short name or subject: one word, no loop
        return b"=?utf-8?b?" + binascii.b2a_base64(whole, newline=False) + b"?="
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
    lines = base64_lines(image.data)
    filename = image.filename.replace('"', "")
    if not filename.isascii():
        filename = "image" + (image.filename[image.filename.rfind(".") :] if "." in image.filename else "")
    return (
        (
            f"--{boundary}\r\nContent-Type: {image.content_type}\r\nContent-Transfer-Encoding: base64\r\n"
            f'Content-ID: <{image.cid}>\r\nContent-Disposition: inline; filename="{filename}"\r\n\r\n'
        ).encode()
        + lines
        + CRLF
    )
