"""Personal fields: `{{ name }}` and attributes with a fallback, as slots filled per recipient, with hostile values."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage

import pytest
from sqlalchemy import Engine

from newsletter import campaign, database, fields
from newsletter.errors import IssueFormatError
from newsletter.fields import UnknownField
from newsletter.mime import MessageTemplate, Recipient
from newsletter.queue import Queue
from newsletter.render import render_issue
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber
from tests.mailserver import MailSink

ISSUE = """---
subject: "{{ name | default('朋友') }}，本周 AI 简报"
preheader: 给 {{ name | default("朋友") }} 的一周
---

# 本周要闻

{{ name | default("朋友") }}，你好！你在 {{ city | default("地球") }}。

写给 {{ email }} 的信。代码里的 `{{ name }}` 不是字段。

```jinja
{{ name }} stays text in a fenced block
```
"""


def recipient(name: str | None = "Ann", attributes: dict[str, object] | None = None) -> Recipient:
    return Recipient(
        email="ann@example.org",
        name=name,
        message_id="m1@example.org",
        unsubscribe_url="https://news.example.org/unsubscribe/T",
        unsubscribe_mailto="mailto:unsubscribe+T@example.org",
        preferences_url="https://news.example.org/preferences/T",
        fields=attributes or {},
    )


def parsed(message: bytes) -> EmailMessage:
    result = email.message_from_bytes(message, policy=email.policy.default)
    assert isinstance(result, EmailMessage)
    return result


def parts(message: bytes) -> tuple[str, str, str]:
    mail = parsed(message)
    html_part, text_part = mail.get_body(("html",)), mail.get_body(("plain",))
    assert html_part is not None and text_part is not None
    return str(mail["Subject"]), html_part.get_content(), text_part.get_content()


def test_fields_are_found_with_their_fallbacks_and_lines() -> None:
    _, table = fields.extract(ISSUE)
    assert [(field.name, field.fallback, field.line) for field in table.fields] == [
        ("name", "朋友", 2),
        ("name", "朋友", 3),
        ("name", "朋友", 8),
        ("city", "地球", 8),
        ("email", "", 10),
    ]


@pytest.mark.parametrize(
    ("line", "wrong"),
    [
        ("{{ name | upper }}", "name | upper"),
        ("{{ name | default(朋友) }}", "default(朋友)"),
        ("{{ }}", "{{  }}"),
        ("{{ first name }}", "first name"),
        ("{{ unsubscribe_url }}", "unsubscribe_url"),
        ('{{ name | default("a" }}', "default"),
    ],
)
def test_a_wrong_field_is_one_line_naming_its_line(settings: Settings, line: str, wrong: str) -> None:
    source = f"# Title\n\nText.\n\n{line}\n"
    with pytest.raises(IssueFormatError) as raised:
        render_issue(source, settings)
    message = str(raised.value)
    assert message.startswith("line 5: ") and "\n" not in message


def test_fields_fill_every_part(settings: Settings) -> None:
    issue = render_issue(ISSUE, settings)
    subject, html, text = parts(MessageTemplate.build(issue, settings).fill(recipient("Ann", {"city": "上海"})))
    assert subject == "Ann，本周 AI 简报"
    assert "Ann，你好！你在 上海。" in html and "Ann，你好！你在 上海。" in text
    assert "给 Ann 的一周" in html  # the preheader
    assert "写给 ann@example.org 的信" in text
    assert re.search(r"<code[^>]*>{{ name }}</code>", html) and "{{ name }} stays text" in html
    assert 'lang="zh-CN"' in html


def test_fallbacks_fill_in_for_missing_values(settings: Settings) -> None:
    issue = render_issue(ISSUE, settings)
    subject, html, text = parts(MessageTemplate.build(issue, settings).fill(recipient(None)))
    assert subject == "朋友，本周 AI 简报"
    assert "朋友，你好！你在 地球。" in text and "朋友，你好！你在 地球。" in html


def test_the_archive_and_the_stored_subject_show_the_fallback(settings: Settings) -> None:
    issue = render_issue(ISSUE, settings)
    assert "朋友，你好！你在 地球。" in issue.web_html
    assert "nlfield" not in issue.web_html and "nlfield" not in issue.html and "nlfield" not in issue.text
    assert issue.slug == "朋友-本周-ai-简报"


def test_script_in_a_name_is_escaped_in_html_and_plain_in_text(settings: Settings) -> None:
    issue = render_issue(ISSUE, settings)
    hostile = '<script>alert("x")</script>'
    _, html, text = parts(MessageTemplate.build(issue, settings).fill(recipient(hostile, {"city": "<b>&</b>"})))
    assert "<script>" not in html and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in html
    assert hostile in text


def test_line_breaks_cannot_inject_a_header(settings: Settings) -> None:
    issue = render_issue(ISSUE, settings)
    message = MessageTemplate.build(issue, settings).fill(recipient("Ann\r\nBcc: victim@example.org\r\n\r\nbody"))
    mail = parsed(message)
    assert mail["Bcc"] is None
    assert "\n" not in str(mail["Subject"]) and "Bcc: victim@example.org" in str(mail["Subject"])
    head = message.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    assert not any(line.startswith(b"Bcc") for line in head.split(b"\r\n"))


def test_a_ten_thousand_character_value_is_cut_and_stays_valid(settings: Settings) -> None:
    issue = render_issue(ISSUE, settings)
    message = MessageTemplate.build(issue, settings).fill(recipient("名" * 10_000, {"city": "x" * 10_000}))
    subject, html, text = parts(message)
    assert subject.startswith("名" * 100) and len(subject) < 1_100
    assert "x" * fields.FIELD_VALUE_MAX_CHARS in text and "x" * (fields.FIELD_VALUE_MAX_CHARS + 1) not in text
    assert all(len(line) <= 998 for line in message.split(b"\r\n"))


def test_a_right_to_left_name_is_isolated(settings: Settings) -> None:
    issue = render_issue(ISSUE, settings)
    subject, html, text = parts(MessageTemplate.build(issue, settings).fill(recipient("محمد")))
    isolated = f"{fields.FIRST_STRONG_ISOLATE}محمد{fields.POP_DIRECTIONAL_ISOLATE}"
    assert subject.startswith(isolated) and isolated in html and isolated in text


def test_an_issue_without_fields_encodes_its_subject_once(settings: Settings) -> None:
    issue = render_issue("# Plain subject\n\nNo fields here.\n", settings)
    template = MessageTemplate.build(issue, settings)
    assert template._subject is None
    assert parsed(template.fill(recipient()))["Subject"] == "Plain subject"


def test_an_unknown_field_stops_the_send_before_anything_is_stored(engine: Engine, settings: Settings) -> None:
    issue = render_issue(ISSUE, settings)
    with database.transaction(engine) as session:
        add_subscriber(session, "ann@example.org", name="Ann")
    with pytest.raises(UnknownField, match=r"^line 8: \{\{ city \}\}"):
        campaign.plan(engine, issue)
    with pytest.raises(UnknownField):
        campaign.start(engine, issue)
    with database.transaction(engine) as session:
        add_subscriber(session, "bo@example.org", attributes={"city": "北京"})
    assert campaign.plan(engine, issue).new_recipients == 2


def test_a_send_fills_each_reader_s_fields(engine: Engine, settings: Settings, smtpd: MailSink) -> None:
    with database.transaction(engine) as session:
        add_subscriber(session, "ann@example.org", name="<Ann>", attributes={"city": "上海"})
        add_subscriber(session, "bo@example.org")
    smtp = settings.replace(smtp_host="127.0.0.1", smtp_port=smtpd.port, smtp_connections=1)
    counts = campaign.send_issue(engine, Queue(smtp, engine), render_issue(ISSUE, smtp))
    assert counts["sent"] == 2
    ann_subject, ann_html, _ = parts(smtpd.to("ann@example.org")[0].data)
    bo_subject, _, bo_text = parts(smtpd.to("bo@example.org")[0].data)
    assert ann_subject == "<Ann>，本周 AI 简报" and "&lt;Ann&gt;，你好！你在 上海。" in ann_html
    assert bo_subject == "朋友，本周 AI 简报" and "朋友，你好！你在 地球。" in bo_text
