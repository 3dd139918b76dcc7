"""One-off mails to one reader (the confirmation, the welcome): an MJML template in the reader's language,
rendered once per process and language, filled by string replacement, stored for the outbound queue."""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Mapping
from email.header import Header
from email.utils import formataddr, formatdate, make_msgid

import mjml
from jinja2 import Environment, StrictUndefined
from sqlalchemy.orm import Session

from newsletter import language, links, mime, outbox
from newsletter.resources import bytecode_cache, template_loader
from newsletter.settings import Settings


@functools.lru_cache(maxsize=16)
def environment(template_dir: str, lang: str) -> Environment:
    """Jinja2 for the mail templates, `_()` speaking `lang`."""
    templates = Environment(
        loader=template_loader(template_dir),
        bytecode_cache=bytecode_cache(),
        autoescape=True,
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
    )
    templates.install_gettext_translations(language.translations(lang), newstyle=True)  # type: ignore[attr-defined]
    return templates


@functools.lru_cache(maxsize=32)
def html_part(
    template_dir: str,
    lang: str,
    template_name: str,
    values: tuple[tuple[str, object], ...],
    slots: tuple[tuple[str, str], ...],
) -> mime.Base64Slots:
    """A mail template's HTML part: Jinja2 and MJML run once per process, language and values, and its fixed
    text base64-encoded once; each reader's message encodes only its slot values, HTML-escaped (`slots`: each
    value's key and the marker standing for it in `values`)."""
    mjml_text = environment(template_dir, lang).get_template(template_name).render(dict(values), lang=lang)
    html = str(mjml.mjml2html(mjml_text, fonts={}))
    key_of = {marker: key for key, marker in slots}
    pieces = re.split("(" + "|".join(map(re.escape, key_of)) + ")", html) if key_of else [html]
    return mime.Base64Slots(pieces[0::2], [(key_of[marker], True, "") for marker in pieces[1::2]])


# The subject and the sender of a kind of mail are the same for every reader in a language, and the `email`
# package takes a tenth of a millisecond to encode a Chinese one: a sign-up's whole statements cost three.
HEADERS_CACHED = 256


@functools.lru_cache(maxsize=HEADERS_CACHED)
def encoded(value: str) -> str:
    """A header value, RFC 2047-encoded when it is not ASCII."""
    return value if value.isascii() else Header(value, "utf-8").encode()


@functools.lru_cache(maxsize=HEADERS_CACHED)
def mailbox(name: str, address: str) -> str:
    if not address.isascii():  # an internationalized address travels as UTF-8 (RFC 6532)
        return f"{encoded(name)} <{address}>" if name else address
    return formataddr((name, address), charset="utf-8")


def message(
    settings: Settings,
    kind: str,
    to: tuple[str, str],
    subject: str,
    text: str,
    html: mime.Base64Slots,
    html_values: Mapping[str, str],
) -> bytes:
    """The mail as CRLF bytes, written out directly: the `email` package's header objects cost milliseconds
    a message, spent while a sign-up holds the database's write lock."""
    name, address = to
    headers = [
        ("Subject", encoded(" ".join(subject.split()))),
        ("From", mailbox(settings.from_name, settings.from_address)),
        ("To", mailbox(" ".join(name.split()), address)),
        *([("Reply-To", settings.reply_to)] if settings.reply_to else []),
        ("Date", formatdate(localtime=False, usegmt=True)),
        ("Message-ID", make_msgid(idstring=kind, domain=links.sender_domain(settings))),
        ("Auto-Submitted", "auto-generated"),  # RFC 3834: no vacation replies to a mail a machine sent
    ]
    boundary = f"=_{secrets.token_hex(16)}"
    lines = [f"{name}: {value}" for name, value in headers]
    lines += ["MIME-Version: 1.0", f'Content-Type: multipart/alternative; boundary="{boundary}"', ""]
    encoded_html: list[bytes] = []
    html.encode(html_values, encoded_html)
    parts = [
        "\r\n".join(lines).encode("utf-8"),
        # base64 is encoded in C; quoted-printable of 15 kB of HTML costs milliseconds in pure Python.
        _part_head(boundary, "plain") + mime.base64_lines(mime.canonical_text(text)),
        _part_head(boundary, "html") + encoded_html[0],
        f"--{boundary}--\r\n".encode(),
    ]
    return b"\r\n".join(parts)


def _part_head(boundary: str, subtype: str) -> bytes:
    return (
        f"--{boundary}\r\nContent-Type: text/{subtype}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    ).encode()


def store(session: Session, settings: Settings, kind: str, recipient: str, mail: bytes) -> int:
    """Keep the mail in the outbound ledger (the caller's transaction); returns its id."""
    local, domain = links.bounce_base(settings)
    return outbox.store_message(session, kind, f"{local}@{domain}", recipient, mail)


def reader_language(settings: Settings, stored: str | None) -> str:
    """The language of a mail to a reader: their own, else the newsletter's default."""
    return language.choose(stored, default=settings.default_language)
