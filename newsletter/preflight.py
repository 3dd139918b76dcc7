"""Checks an editor wants before sending: size, alt text, insecure or empty links, placeholders."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from newsletter.plaintext import display_width
from newsletter.render import RenderedIssue

GMAIL_CLIP_BYTES = 102 * 1024  # Gmail shows "[Message clipped]" past 102 KB of message
LONG_SUBJECT_COLUMNS = 70  # inbox lists cut subjects around 60-70 columns (CJK counts double)
PLACEHOLDER_RE = re.compile(r"\bTK\b|\bTODO\b|\bFIXME\b|\bXXX\b|lorem ipsum|\blorem\b|待补充|待定", re.IGNORECASE)
CASE_SENSITIVE_PLACEHOLDERS = frozenset({"TK", "TODO", "FIXME", "XXX"})
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

    def as_json(self) -> dict[str, Any]:
        """The report as plain JSON values."""
        data = asdict(self)
        data["links"], data["images"] = list(self.links), list(self.images)
        data["warnings"] = [asdict(warning) for warning in self.warnings]
        return data


def preflight(issue: RenderedIssue, message_bytes: int) -> PreflightReport:
    """The report on a rendered issue; `message_bytes` is the size of one encoded message."""
    html_bytes = len(issue.html.encode("utf-8"))
    warnings = [*_size_warnings(html_bytes, message_bytes), *_subject_warnings(issue)]
    warnings += _reference_warnings(issue)
    warnings += _placeholder_warnings(issue.source_text)
    images = tuple(dict.fromkeys(ref.url for ref in issue.references if ref.kind == "image"))
    return PreflightReport(
        issue.subject,
        issue.preheader,
        html_bytes,
        len(issue.text.encode("utf-8")),
        message_bytes,
        issue.links,
        images,
        tuple(warnings),
    )


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


def _size_warnings(html_bytes: int, message_bytes: int) -> list[Warning]:
    largest = max(html_bytes, message_bytes)
    if largest <= GMAIL_CLIP_BYTES:
        return []
    return [
        Warning(
            "gmail-clip",
            f"the message is {largest / 1024:.0f} KB encoded; Gmail clips messages over "
            f"{GMAIL_CLIP_BYTES // 1024} KB and hides the rest, unsubscribe link included",
        )
    ]


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
