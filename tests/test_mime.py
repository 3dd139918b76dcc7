"""The per-recipient message: valid RFC 5322 that the email package parses, with every slot value intact."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import email
import email.policy
import email.utils
import json
import re
from collections.abc import Callable
from email.header import decode_header, make_header
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from newsletter.cli import main
from newsletter.links import issue_url, list_id
from newsletter.mime import (
    MessageTemplate,
    UnsafeHeaderValue,
    dot_safe,
    quoted_printable,
    with_soft_break,
)
from newsletter.preflight import GMAIL_CLIP_BYTES
from newsletter.render import RenderedIssue, render_issue, render_issue_file
from newsletter.settings import Settings
from newsletter.slots import SlotTemplate, fill_slots, html_slot, text_slot
from tests.conftest import SAMPLE_FILES, SAMPLES, recipient


def parse(message: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


@pytest.fixture
def issue(settings: Settings) -> RenderedIssue:
    return render_issue("# 第一期\n\n你好，**读者**。见 https://example.org/a 。", settings, slug="first")


def test_headers(issue: RenderedIssue, settings: Settings) -> None:
    settings = settings.replace(reply_to="replies@example.org")
    message = parse(MessageTemplate.build(issue, settings, subject_prefix="[AI] ").fill(recipient()))
    assert message["Subject"] == "[AI] 第一期"
    assert message["From"] == "The Editor <editor@example.org>"
    assert message["To"] == "Zhang San <reader@example.com>"
    assert message["Reply-To"] == "replies@example.org"
    assert message["Message-ID"] == "<7.42.abcdef@example.org>"
    assert message["Date"] is not None and message["Date"].datetime.tzinfo is not None
    assert message["List-Id"] == list_id(settings).replace('"', "")
    assert message["List-Unsubscribe"] == (
        "<https://news.example.org/unsubscribe/eyJpZCI6NDJ9.abc-DEF_123>, "
        "<mailto:unsubscribe+2a-0123456789abcdef0123@example.org?subject=unsubscribe>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Precedence"] == "bulk"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]


def test_wire_format(issue: RenderedIssue, settings: Settings) -> None:
    raw = MessageTemplate.build(issue, settings).fill(recipient(name="张三"))
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert raw.isascii()
    # RFC 5322 2.1.1: 998 octets is the limit (a long unsubscribe URI cannot be folded inside its <>);
    # RFC 2045 6.7 keeps quoted-printable body lines within 76.
    head, _, body = raw.partition(b"\r\n\r\n")
    assert max(len(line) for line in head.split(b"\r\n")) <= 998
    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    assert b"=?utf-8?" in raw.split(b"\r\n\r\n")[0]  # RFC 2047 for the non-ASCII name and subject


def test_slot_values_round_trip(issue: RenderedIssue, settings: Settings) -> None:
    unsubscribe = "https://news.example.org/unsubscribe/" + "a1b2c3d4" * 20 + "?x=1&y=2"
    message = parse(MessageTemplate.build(issue, settings).fill(recipient(unsubscribe_url=unsubscribe)))
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    assert text_part is not None and html_part is not None
    text, page = text_part.get_content(), html_part.get_content()
    assert unsubscribe in text
    assert unsubscribe.replace("&", "&amp;") in page
    assert "reader@example.com" in text and "reader@example.com" in page
    assert issue_url(settings, "first") in text and issue_url(settings, "first") in page
    assert "https://news.example.org/preferences/eyJpZCI6NDJ9.xyz" in page
    assert re.search("<strong[^>]*>读者</strong>", page)


@pytest.mark.parametrize("name", ["Eve\r\nBcc: victim@example.com", "Eve\nBcc: x@y", "Eve\rX-Evil: 1", "\x00Eve"])
def test_no_header_injection_through_the_name(issue: RenderedIssue, settings: Settings, name: str) -> None:
    raw = MessageTemplate.build(issue, settings).fill(recipient(name=name))
    message = parse(raw)
    assert message["Bcc"] is None and message["X-Evil"] is None
    assert message["To"].addresses[0].addr_spec == "reader@example.com"


def test_no_header_injection_through_the_subject(settings: Settings) -> None:
    issue = render_issue('---\nsubject: "Hi\\r\\nBcc: victim@example.com"\n---\nbody', settings)
    message = parse(MessageTemplate.build(issue, settings).fill(recipient()))
    assert message["Bcc"] is None
    assert "Bcc" in message["Subject"]


@pytest.mark.parametrize(
    "changes",
    [
        {"email": "reader@example.com\r\nBcc: x@y"},
        {"email": ""},
        {"unsubscribe_url": "https://x/\r\nBcc: y"},
        {"unsubscribe_url": "https://x/>, <mailto:evil@example.com"},
        {"message_id": "<a@b>\r\nX: y"},
    ],
)
def test_unsafe_header_values_are_refused(issue: RenderedIssue, settings: Settings, changes: dict[str, str]) -> None:
    template = MessageTemplate.build(issue, settings)
    with pytest.raises(UnsafeHeaderValue):
        template.fill(recipient(**changes))


def test_inline_images_make_multipart_related(settings: Settings, tmp_path: Path) -> None:
    png = (
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
        b"\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00\x00\x00IEND"
        b"\xaeB`\x82"
    )
    (tmp_path / "dot.png").write_bytes(png)
    path = tmp_path / "issue.md"
    path.write_text("# T\n\n![a dot](dot.png)\n", encoding="utf-8")
    issue = render_issue_file(path, settings)
    message = parse(MessageTemplate.build(issue, settings).fill(recipient()))
    assert message.get_content_type() == "multipart/related"
    parts = list(message.walk())
    images = [part for part in parts if part.get_content_type() == "image/png"]
    assert len(images) == 1
    assert images[0]["Content-ID"] == f"<{issue.images[0].cid}>"
    assert images[0].get_payload(decode=True) == png
    html_part = message.get_body(("html",))
    assert html_part is not None and f"cid:{issue.images[0].cid}" in html_part.get_content()


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda path: path.stem)
def test_sample_message_parses_with_both_alternatives(path: Path, settings: Settings) -> None:
    issue = render_issue_file(path, settings)
    message = parse(MessageTemplate.build(issue, settings).fill(recipient()))
    assert message.get_body(("plain",)) is not None and message.get_body(("html",)) is not None
    assert not message.defects


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.text(max_size=80),
    path=st.text(
        st.characters(
            min_codepoint=33, max_codepoint=0x2FFF, exclude_characters='<>"', exclude_categories=("Cc", "Cs")
        ),
        max_size=150,
    ),
)
def test_any_name_and_url_round_trip(issue: RenderedIssue, settings: Settings, name: str, path: str) -> None:
    unsubscribe = "https://news.example.org/u/" + path
    raw = MessageTemplate.build(issue, settings).fill(recipient(name=name, unsubscribe_url=unsubscribe))
    message = parse(raw)
    text_part = message.get_body(("plain",))
    assert text_part is not None and unsubscribe.strip() in text_part.get_content()
    assert message["To"].addresses[0].addr_spec == "reader@example.com"
    # RFC 2047 6.2: space between adjacent encoded-words is dropped; decode_header does that (the
    # default policy's parser keeps it, a known CPython deviation), so the name is read with it.
    raw_to = email.message_from_bytes(raw, policy=email.policy.compat32)["To"]
    shown = str(make_header(decode_header(str(raw_to).rpartition("<")[0].strip())))
    expected = " ".join("".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in name).split())
    if expected.isascii() and re.search(r'[()<>\[\]:;@\\,."]', expected):
        shown = email.utils.parseaddr(str(raw_to))[0]
    assert shown == expected


@given(st.text(max_size=400))
def test_quoted_printable_round_trips(text: str) -> None:
    import quopri

    encoded = with_soft_break(quoted_printable(text))
    assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))
    expected = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n").encode()
    assert quopri.decodestring(encoded) == expected


def text_and_html(message: EmailMessage) -> tuple[EmailMessage, EmailMessage]:
    text_part, html_part = message.get_body(("plain",)), message.get_body(("html",))
    assert isinstance(text_part, EmailMessage) and isinstance(html_part, EmailMessage)
    return text_part, html_part


def test_cjk_issue_gets_base64_parts(settings: Settings) -> None:
    issue = render_issue_file(SAMPLES / "ai-briefing-2020-11-06.md", settings)
    raw = MessageTemplate.build(issue, settings).fill(recipient())
    assert [part["Content-Transfer-Encoding"] for part in text_and_html(parse(raw))] == ["base64", "base64"]
    assert len(raw) < GMAIL_CLIP_BYTES


def test_ascii_issue_keeps_quoted_printable(settings: Settings) -> None:
    settings = settings.replace(newsletter_name="AI Briefing")
    issue = render_issue("# First issue\n\nHello, **reader**. See https://example.org/a and more.\n" * 3, settings)
    message = parse(MessageTemplate.build(issue, settings).fill(recipient()))
    assert [part["Content-Transfer-Encoding"] for part in text_and_html(message)] == ["quoted-printable"] * 2


def test_preview_of_the_cjk_sample_is_not_clipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no newsletter.toml here: the defaults apply
    sample = SAMPLES / "ai-briefing-2020-11-06.md"
    result = CliRunner().invoke(main, ["preview", str(sample), "-o", str(tmp_path), "--json"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    eml = (tmp_path / "ai-briefing-2020-11-06.eml").read_bytes()
    assert report["message_bytes"] == len(eml) < GMAIL_CLIP_BYTES  # the encoded message, not its text
    assert b"Content-Transfer-Encoding: base64" in eml
    assert "gmail-clip" not in {warning["code"] for warning in report["warnings"]}


# 57 octets make one 76-character base64 line: the slot-free prefix ends on, just after and just before one.
PREFIX_OFFSETS = (0, 1, 2, 56, 57, 58)
NAMES = st.text(
    st.sampled_from(list("张三李 \"'<>&;\\éß"))
    | st.characters(min_codepoint=0x1F300, max_codepoint=0x1F64F)  # emoji, 4 UTF-8 octets each
    | st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
    max_size=40,
)


def cjk_octets(octets: int) -> str:
    """Text of exactly `octets` UTF-8 octets, CJK where it can be."""
    return "读" * (octets // 3) + "x" * (octets % 3)


def slotted(prefix: str, slot: Callable[[str], str]) -> str:
    body = "\n".join(f"第{i}段：人工智能与机器学习的新进展。" for i in range(60))
    return (
        f"{prefix}{slot('name')}，你好！\n{body}\n{slot('email')}\n{slot('view_url')}\n"
        f"{slot('unsubscribe_url')} {slot('preferences_url')}\n"
    )


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.integers(0, 30), offset=st.sampled_from(PREFIX_OFFSETS), name=NAMES)
def test_base64_parts_decode_to_the_filled_template(
    issue: RenderedIssue, settings: Settings, lines: int, offset: int, name: str
) -> None:
    prefix = cjk_octets(57 * lines + offset)
    issue = dataclasses.replace(issue, text=slotted(prefix, text_slot), html=slotted(prefix, html_slot), images=())
    reader = recipient(name=name, unsubscribe_url="https://news.example.org/u/x?a=1&b=2")
    raw = MessageTemplate.build(issue, settings).fill(reader)
    values = {
        "email": reader.email,
        "name": " ".join(name.split()),
        "unsubscribe_url": reader.unsubscribe_url,
        "preferences_url": reader.preferences_url,
        "view_url": issue_url(settings, issue.slug),
    }
    assert_wire_lines(raw)
    for part, template in zip(text_and_html(parse(raw)), (issue.text, issue.html), strict=True):
        assert part["Content-Transfer-Encoding"] == "base64"
        assert part.get_content().replace("\r\n", "\n") == fill_slots(template, values)
        # The prefix encoded at build time and the rest encoded per recipient join as one encoding would.
        lines_on_wire = str(part.get_payload()).splitlines()
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes) and b"\n" not in payload.replace(b"\r\n", b"")
        assert "".join(lines_on_wire) == base64.b64encode(payload).decode("ascii")
        # RFC 2045 6.8: lines of at most 76; a slot value, and the fixed text before it, may end a line short.
        assert all(0 < len(line) <= 76 for line in lines_on_wire)
        short = [line for line in lines_on_wire[:-1] if len(line) < 76]
        assert len(short) <= 2 * len(SlotTemplate(template).slots) + 1


def assert_wire_lines(raw: bytes) -> None:
    """CRLF everywhere, body lines within 76 characters (RFC 2045 6.7, 6.8), headers within 78 (RFC 5322 2.1.1)."""
    assert raw.endswith(b"\r\n")
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert all(len(line) <= 78 for line in head.split(b"\r\n") if not line.startswith(b"List-Unsubscribe: <"))
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))


@pytest.mark.parametrize(
    "text", [".", ".hidden", "." * 300, ".é" * 60, "a\n.b\n..c", " ." + "x" * 74 + "\n." + "=" * 40, "..\n"]
)
def test_dot_safe_quoted_printable_starts_no_line_with_a_dot_and_decodes_the_same(text: str) -> None:
    encoded = dot_safe(with_soft_break(quoted_printable(text)))
    assert encoded[:1] != b"." and b"\n." not in encoded
    assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))
    assert binascii.a2b_qp(encoded).decode("utf-8") == text.replace("\n", "\r\n")
