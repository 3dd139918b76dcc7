"""The preview use case: render an issue, write its HTML, text and .eml, and run the preflight checks."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import make_msgid
from pathlib import Path

from newsletter import links
from newsletter.mime import MessageTemplate, Recipient
from newsletter.preflight import PreflightReport, Warning, preflight
from newsletter.remote import image_sizes_for
from newsletter.render import RenderedIssue, fill_slots, render_issue_file
from newsletter.settings import Settings

PREVIEW_FROM_ADDRESS = "newsletter@example.invalid"  # RFC 2606: a domain that can never receive mail
SAMPLE_EMAIL = "reader@example.com"
SAMPLE_NAME = "Sample Reader"


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


def preview_issue(path: Path, settings: Settings, out_dir: Path, *, subject: str | None = None) -> Preview:
    """Render `path` and write <slug>.html, <slug>.txt and <slug>.eml into `out_dir`.

    Raises:
        IssueFormatError: the issue cannot be rendered.
    """
    setting_warnings = []
    if not settings.from_address:
        setting_warnings.append(
            Warning("missing-setting", f"from_address is not set; the preview uses {PREVIEW_FROM_ADDRESS}")
        )
        settings = settings.replace(from_address=PREVIEW_FROM_ADDRESS)
    if not settings.postal_address:
        setting_warnings.append(
            Warning(
                "missing-postal-address", "postal_address is not set; laws such as CAN-SPAM require it in the footer"
            )
        )
    issue = render_issue_file(path, settings, subject=subject, image_sizes=image_sizes_for(settings))
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
    for image in issue.images:  # a browser opening the file cannot resolve cid: URLs
        html = html.replace(f'src="cid:{image.cid}"', f'src="{image.data_uri}"')
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, text_path, eml_path = (out_dir / f"{issue.slug}{suffix}" for suffix in (".html", ".txt", ".eml"))
    html_path.write_text(html, encoding="utf-8")
    text_path.write_text(fill_slots(issue.text, values), encoding="utf-8")
    eml_path.write_bytes(message)
    report = preflight(issue, len(message))
    report = PreflightReport(**{**report.__dict__, "warnings": tuple(setting_warnings) + report.warnings})
    return Preview(issue, report, html_path, text_path, eml_path)
