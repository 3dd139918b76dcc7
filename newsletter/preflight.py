"""Checks an editor wants before sending: size, subject and title, alt text, links, placeholders."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from newsletter.fields import Field
from newsletter.plaintext import display_width
from newsletter.remote import LinkStatus
from newsletter.render import RenderedIssue
from newsletter.settings import Settings
from newsletter.slots import with_fallbacks

GMAIL_CLIP_BYTES = 102 * 1024  # Gmail shows "[Message clipped]" once the HTML part passes 102 KB
GROUP_LINES_SHOWN = 5  # a warning repeated on many lines is printed once, with its first few lines
DEFAULT_NEWSLETTER_NAME = Settings.__dataclass_fields__["newsletter_name"].default
LONG_SUBJECT_COLUMNS = 70  # inbox lists cut subjects around 60-70 columns (CJK counts double)
PLACEHOLDER_RE = re.compile(r"\bTK\b|\bTODO\b|\bFIXME\b|\bXXX\b|lorem ipsum|\blorem\b|待补充|待定", re.IGNORECASE)
CASE_SENSITIVE_PLACEHOLDERS = frozenset({"TK", "TODO", "FIXME", "XXX"})
URL_TAIL_RE = re.compile(r":\s+\S+$")
STYLE_ATTRIBUTE_RE = re.compile(r"""\sstyle=("[^"]*"|'[^']*')""", re.IGNORECASE)


@dataclass(frozen=True)
class Warning:
    """One thing the editor should look at; `line` is 1-based in the issue file, 0 when not tied to one."""

    code: str
    message: str
    line: int = 0


@dataclass(frozen=True)
class PreflightReport:
    subject: str
    preheader: str
    html_bytes: int
    text_bytes: int
    message_bytes: int
    links: tuple[str, ...]
    images: tuple[str, ...]
    warnings: tuple[Warning, ...]
    html_part_bytes: int = 0  # the HTML part as sent (transfer-encoded): what Gmail measures
    inline_style_share: float = 0.0
    fields: tuple[str, ...] = ()  # the personal fields, as `name (default "朋友", line 3)`

    def as_json(self) -> dict[str, Any]:
        """The report as plain JSON values."""
        data = asdict(self)
        data["links"], data["images"] = list(self.links), list(self.images)
        data["warnings"] = [asdict(warning) for warning in self.warnings]
        data["warning_groups"] = [asdict(group) for group in group_warnings(self.warnings)]
        data["fields"] = list(self.fields)
        return data


@dataclass(frozen=True)
class WarningGroup:
    """Warnings of one code and one wording, told once: how many, and on which lines."""

    code: str
    message: str
    count: int
    lines: tuple[int, ...]

    @property
    def where(self) -> str:
        """ "line 12: ", or "94 times, lines 3, 5, 9, 14, 20, ...: " for a warning repeated across the issue."""
        numbered = [str(line) for line in dict.fromkeys(self.lines) if line]
        shown = ", ".join(numbered[:GROUP_LINES_SHOWN]) + (", ..." if len(numbered) > GROUP_LINES_SHOWN else "")
        if self.count == 1:
            return f"line {shown}: " if shown else ""
        return f"{self.count} times, lines {shown}: " if shown else f"{self.count} times: "


def preflight(issue: RenderedIssue, message: bytes, link_statuses: Sequence[LinkStatus] = ()) -> PreflightReport:
    """The report on a rendered issue; `message` is one encoded message of it, `link_statuses` a link check."""
    html_bytes = len(issue.html.encode("utf-8"))
    part_bytes = html_part_bytes(message)
    warnings = [*_size_warnings(part_bytes), *_subject_warnings(issue), *_title_warnings(issue)]
    warnings += _reference_warnings(issue)
    warnings += _link_status_warnings(issue, link_statuses)
    warnings += _placeholder_warnings(issue.source_text)
    images = tuple(dict.fromkeys(ref.url for ref in issue.references if ref.kind == "image"))
    return PreflightReport(
        with_fallbacks(issue.subject),
        issue.preheader,
        html_bytes,
        len(issue.text.encode("utf-8")),
        len(message),
        issue.links,
        images,
        tuple(warnings),
        part_bytes,
        round(inline_style_share(issue.html), 3),
        tuple(_field_line(field) for field in issue.fields),
    )


def _field_line(field: Field) -> str:
    fallback = f'default "{field.fallback}", ' if field.fallback else ""
    return f"{{{{ {field.name} }}}} ({fallback}line {field.line})"


def group_warnings(warnings: Sequence[Warning]) -> list[WarningGroup]:
    """Warnings grouped by code and wording (the link or image they name aside), in order of first sight."""
    groups: dict[tuple[str, str], list[Warning]] = {}
    for warning in warnings:
        groups.setdefault((warning.code, _wording(warning)), []).append(warning)
    return [
        WarningGroup(code, items[0].message if len(items) == 1 else wording, len(items), tuple(w.line for w in items))
        for (code, wording), items in groups.items()
    ]


def _wording(warning: Warning) -> str:
    # "image without alt text: https://..." and the same on another image are one kind of problem.
    return URL_TAIL_RE.sub("", warning.message)


def inline_style_share(html: str) -> float:
    """The share of the HTML's bytes that are inline `style` attributes (name and value)."""
    total = len(html.encode("utf-8"))
    styles = sum(len(match.group(0).encode("utf-8")) for match in STYLE_ATTRIBUTE_RE.finditer(html))
    return styles / total if total else 0.0


def html_part_bytes(message: bytes) -> int:
    """The size of the message's text/html part as sent (transfer-encoded), which is what Gmail clips on."""
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    for part in parsed.walk():
        if part.get_content_type() == "text/html":
            payload = part.get_payload()
            return len(payload.encode("ascii", "replace")) if isinstance(payload, str) else 0
    return 0


def _size_warnings(part_bytes: int) -> list[Warning]:
    # Gmail measures the HTML part alone, as sent; the text part and the headers do not count.
    if part_bytes <= GMAIL_CLIP_BYTES:
        return []
    return [
        Warning(
            "gmail-clip",
            f"the HTML part is {part_bytes / 1024:.1f} KB encoded; Gmail clips it past "
            f"{GMAIL_CLIP_BYTES // 1024} KB and hides the rest, unsubscribe link included",
        )
    ]


def _title_warnings(issue: RenderedIssue) -> list[Warning]:
    warnings = []
    if issue.subject_origin == "heading" and not issue.opens_with_h1:
        heading = next((h for h in issue.headings if h.text == issue.subject), None)
        warnings.append(
            Warning(
                "subject-from-heading",
                f"the subject {issue.subject!r} is the first section heading, not a title: "
                "add `subject:` front matter or pass --subject",
                heading.line if heading else 0,
            )
        )
    if not issue.shows_title and not issue.opens_with_h1:
        warnings.append(
            Warning("no-title", "the body shows no title: it opens without a `#` heading and the subject is not shown")
        )
    return warnings


def setting_warnings(settings: Settings) -> list[Warning]:
    """Settings a reader would notice unset: the sender's address, the postal address, the default name."""
    warnings = []
    if not settings.from_address:
        warnings.append(Warning("missing-setting", "from_address is not set; the preview uses a made-up address"))
    if not settings.postal_address:
        warnings.append(
            Warning(
                "missing-postal-address", "postal_address is not set; laws such as CAN-SPAM require it in the footer"
            )
        )
    if settings.newsletter_name == DEFAULT_NEWSLETTER_NAME:
        warnings.append(
            Warning(
                "default-name",
                f"newsletter_name is still {DEFAULT_NEWSLETTER_NAME!r}; readers see it atop every issue and in "
                "the footer",
            )
        )
    return warnings


def _link_status_warnings(issue: RenderedIssue, statuses: Sequence[LinkStatus]) -> list[Warning]:
    broken = {status.url: status for status in statuses if status.broken}
    warnings = []
    for ref in issue.references:
        status = broken.pop(ref.url, None)  # each URL reported once, at its first line
        if status is not None:
            answer = f"answers HTTP {status.status}" if status.status else f"is unreachable ({status.problem})"
            warnings.append(Warning("broken-link", f"{ref.kind} {answer}: {ref.url}", ref.line))
    return warnings


def _subject_warnings(issue: RenderedIssue) -> list[Warning]:
    width = display_width(issue.subject)
    if width <= LONG_SUBJECT_COLUMNS:
        return []
    return [
        Warning(
            "long-subject",
            f"the subject is {width} columns wide; inboxes show about {LONG_SUBJECT_COLUMNS}, the rest is cut",
        )
    ]


def _reference_warnings(issue: RenderedIssue) -> list[Warning]:
    warnings: list[Warning] = []
    problems = {problem.src: problem.problem for problem in issue.image_problems}
    for ref in issue.references:
        url = ref.url.strip()
        scheme = urlsplit(url).scheme.lower()
        if ref.kind == "link" and (not url or not ref.text):
            what = "has no URL" if not url else "has no text to click"
            warnings.append(Warning("empty-link", f"a link {what}: {url or ref.text!r}", ref.line))
        if scheme == "http":
            warnings.append(Warning("insecure-url", f"{ref.kind} uses http://, not https://: {url}", ref.line))
        if ref.kind != "image":
            continue
        if not ref.text:
            warnings.append(Warning("missing-alt", f"image without alt text: {url}", ref.line))
        if url in problems:
            warnings.append(Warning("relative-image", f"local image {url}: {problems[url]}", ref.line))
        extension = urlsplit(url).path.lower().rsplit(".", 1)[-1]
        if extension == "webp":
            warnings.append(Warning("webp-image", f"Outlook does not show WebP images: {url}", ref.line))
        elif extension == "svg":
            warnings.append(Warning("svg-image", f"Gmail and Outlook do not show SVG images: {url}", ref.line))
    return warnings


def _placeholder_warnings(source: str) -> list[Warning]:
    warnings = []
    for number, line in enumerate(source.splitlines(), 1):
        for match in PLACEHOLDER_RE.finditer(line):
            word = match.group(0)
            if word.upper() in CASE_SENSITIVE_PLACEHOLDERS and word != word.upper():
                continue  # "todo" in prose is a word; "TODO" is a note to self
            if "://" in line[max(0, match.start() - 60) : match.start()]:
                continue  # inside a URL
            warnings.append(Warning("placeholder", f"placeholder text {word!r} left in the issue", number))
    return warnings
