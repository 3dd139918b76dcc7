"""The preview use case: render an issue, write its HTML, text and .eml, and run the preflight checks."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import make_msgid
from pathlib import Path

from newsletter import links, remote
from newsletter.mime import MessageTemplate, Recipient
from newsletter.preflight import PreflightReport, preflight, setting_warnings
from newsletter.remote import image_sizes_for
from newsletter.render import RenderedIssue, fill_slots, render_issue_file
from newsletter.settings import Settings

PREVIEW_FROM_ADDRESS = "newsletter@example.invalid"  # RFC 2606: a domain that can never receive mail
SAMPLE_EMAIL = "reader@example.com"
SAMPLE_NAME = "Sample Reader"
LINK_TIMEOUT_SECONDS = 10.0  # per link of `preview --check-links`; slower than that is broken for a reader


@dataclass(frozen=True)
class Preview:
    issue: RenderedIssue
    report: PreflightReport
    html_path: Path
    text_path: Path
    eml_path: Path


def sample_recipient(settings: Settings) -> Recipient:
    """A made-up recipient whose links show where real ones go."""
    base = settings.base_url.rstrip("/")
    domain = links.domain_of(settings.from_address or PREVIEW_FROM_ADDRESS)
    return Recipient(
        email=SAMPLE_EMAIL,
        name=SAMPLE_NAME,
        message_id=make_msgid("preview", domain),
        unsubscribe_url=f"{base}/unsubscribe/SAMPLE-TOKEN",
        preferences_url=f"{base}/preferences/SAMPLE-TOKEN",
        unsubscribe_mailto=f"mailto:unsubscribe@{domain}?subject=unsubscribe",
    )


@dataclass(frozen=True)
class SampleParts:
    """An issue as the sample reader gets it: the HTML a browser can show, the text part, the whole message."""

    html: str
    text: str
    message: bytes


def sample_parts(issue: RenderedIssue, settings: Settings) -> SampleParts:
    """The issue filled in for the sample reader; inline images as data: URIs (a browser cannot resolve cid:)."""
    recipient = sample_recipient(settings)
    message = MessageTemplate.build(issue, settings).fill(recipient)
    values = {
        "email": recipient.email,
        "name": recipient.name or "",
        "unsubscribe_url": recipient.unsubscribe_url,
        "preferences_url": recipient.preferences_url,
        "view_url": links.issue_url(settings, issue.slug),
    }
    html = fill_slots(issue.html, values)
    for image in issue.images:
        html = html.replace(f'src="cid:{image.cid}"', f'src="{image.data_uri}"')
    return SampleParts(html, fill_slots(issue.text, values), message)


def preview_issue(
    path: Path, settings: Settings, out_dir: Path, *, subject: str | None = None, check_links: bool = False
) -> Preview:
    """Render `path` and write <slug>.html, <slug>.txt and <slug>.eml into `out_dir`.

    Parameters:
        check_links: fetch every link and remote image once and warn about those that fail.

    Raises:
        IssueFormatError: the issue cannot be rendered.
    """
    warnings = setting_warnings(settings)
    if not settings.from_address:
        settings = settings.replace(from_address=PREVIEW_FROM_ADDRESS)
    issue = render_issue_file(path, settings, subject=subject, image_sizes=image_sizes_for(settings))
    sample = sample_parts(issue, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, text_path, eml_path = (out_dir / f"{issue.slug}{suffix}" for suffix in (".html", ".txt", ".eml"))
    html_path.write_text(sample.html, encoding="utf-8")
    text_path.write_text(sample.text, encoding="utf-8")
    eml_path.write_bytes(sample.message)
    message = sample.message
    statuses = remote.check_links([*issue.links, *_image_urls(issue)], LINK_TIMEOUT_SECONDS) if check_links else []
    report = preflight(issue, message, statuses)
    report = PreflightReport(**{**report.__dict__, "warnings": tuple(warnings) + report.warnings})
    return Preview(issue, report, html_path, text_path, eml_path)


def _image_urls(issue: RenderedIssue) -> list[str]:
    return [ref.url for ref in issue.references if ref.kind == "image"]
