"""Issues written on the desk: a pasted or uploaded Markdown text and its images, stored as a draft and checked."""

from __future__ import annotations

import datetime as dt
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter import ledger, topics
from newsletter.errors import IssueFormatError
from newsletter.models import Delivery, DeliveryStatus, Event, Issue, IssueStatus
from newsletter.preflight import PreflightReport, preflight, setting_warnings
from newsletter.preview import PREVIEW_FROM_ADDRESS, SampleParts, sample_parts
from newsletter.remote import image_sizes_for
from newsletter.render import MAX_ISSUE_BYTES, render_issue
from newsletter.segments import Segment, from_json
from newsletter.settings import Settings
from newsletter.subscriptions import record_event

SAVED_KIND = "issue_saved"  # its event's payload keeps the preflight report of what was saved
SEND_KIND = "issue_send"
# Where an issue's Markdown or HTML names a local image: ![alt](path "title") and <img src="path">.
_IMAGE_SRC = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)|<img\b[^>]*?\bsrc\s*=\s*[\"']([^\"']+)", re.IGNORECASE)


@dataclass(frozen=True)
class Draft:
    """What the desk shows of a stored issue before (and while) it is sent."""

    issue: Issue
    sample: SampleParts
    report: dict[str, Any] | None  # the preflight report made when it was saved on the desk
    recipients: int  # eligible subscribers of `segment` without a delivery of it yet
    segment: Segment


def store_draft(
    session: Session,
    settings: Settings,
    source_text: str,
    images: dict[str, bytes],
    *,
    subject: str | None = None,
    actor: str | None = None,
) -> Issue:
    """Render the text with its uploaded images and keep it as a draft (replacing a draft of the same slug).

    Raises:
        IssueFormatError: the text cannot be rendered, or is too long.
        IssueChanged: an issue that is being or was sent has this slug and another text.
    """
    if len(source_text.encode("utf-8")) > MAX_ISSUE_BYTES:
        raise IssueFormatError(f"an issue is at most {MAX_ISSUE_BYTES // 1_048_576} MiB of Markdown")
    if not settings.from_address:
        settings = settings.replace(from_address=PREVIEW_FROM_ADDRESS)
    with tempfile.TemporaryDirectory(prefix="newsletter-draft-") as directory:
        _place_images(Path(directory), source_text, images)
        rendered = render_issue(
            source_text, settings, base_dir=Path(directory), subject=subject, image_sizes=image_sizes_for(settings)
        )
    stored = session.scalar(select(Issue).where(Issue.slug == rendered.slug))
    issue = ledger.store_issue(session, rendered, force=stored is not None and stored.status == IssueStatus.DRAFT)
    sample = sample_parts(rendered, settings)
    report = preflight(rendered, sample.message, [])
    report = PreflightReport(**{**report.__dict__, "warnings": tuple(setting_warnings(settings)) + report.warnings})
    record_event(session, None, SAVED_KIND, "desk", issue_id=issue.id, payload=report.as_json(), actor=actor)
    return issue


def _place_images(directory: Path, source_text: str, images: dict[str, bytes]) -> None:
    """Put each uploaded image where the text looks for it (matched by file name), never outside `directory`."""
    by_name = {PurePosixPath(name.replace("\\", "/")).name: data for name, data in images.items()}
    for match in _IMAGE_SRC.finditer(source_text):
        src = (match.group(1) or match.group(2) or "").split("?")[0].split("#")[0]
        relative = PurePosixPath(src.replace("\\", "/"))
        if relative.is_absolute() or ".." in relative.parts or ":" in src or relative.name not in by_name:
            continue
        target = directory.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(by_name[relative.name])


def draft(session: Session, settings: Settings, slug: str, segment: Segment | None = None) -> Draft:
    """A stored issue as the sample reader gets it, with its last preflight report and how many it would reach
    (among `segment`, else the segment stored with it).

    Raises:
        IssueNotFound: no issue has this slug.
    """
    issue = ledger.find_issue(session, slug)
    if not settings.from_address:
        settings = settings.replace(from_address=PREVIEW_FROM_ADDRESS)
    sample = sample_parts(ledger.rendered_issue(session, issue.id), settings)
    report = session.scalar(
        select(Event.payload)
        .where(Event.issue_id == issue.id, Event.kind == SAVED_KIND)
        .order_by(Event.id.desc())
        .limit(1)
    )
    segment = segment if segment is not None else from_json(issue.segment)
    recipients = 0 if issue.status == IssueStatus.SENT else ledger.count_recipients(session, issue.id, segment)
    return Draft(issue, sample, report, recipients, segment)


def choose_segment(session: Session, slug: str, segment: Segment) -> None:
    """Who a draft goes to, set before its send starts (a send already started keeps its segment).

    Raises:
        InvalidTopic: a topic of the segment is not defined.
    """
    issue = ledger.find_issue(session, slug)
    topics.topic_ids(session, segment.topics)
    if issue.status == IssueStatus.DRAFT:
        issue.segment = segment.as_json()


def record_send(session: Session, slug: str, what: str, actor: str | None) -> int:
    """Log that an account started (or retried) the send of an issue; returns the issue's id."""
    issue = ledger.find_issue(session, slug)
    record_event(session, None, SEND_KIND, "desk", issue_id=issue.id, reason=what, actor=actor)
    return issue.id


def sent_per_minute(session: Session, issue_id: int) -> list[tuple[dt.datetime, int]]:
    """Messages accepted per minute while the issue went out, oldest first (minutes with none included)."""
    minute = (
        func.date_trunc("minute", Delivery.sent_at)
        if session.get_bind().dialect.name == "postgresql"
        else func.strftime("%Y-%m-%d %H:%M:00", Delivery.sent_at)
    )
    rows = session.execute(
        select(minute, func.count())
        .where(Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.SENT, Delivery.sent_at.is_not(None))
        .group_by(minute)
        .order_by(minute)
    ).all()
    counts: dict[dt.datetime, int] = {}
    for at, number in rows:
        when = at if isinstance(at, dt.datetime) else dt.datetime.fromisoformat(str(at))
        counts[when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)] = number
    if not counts:
        return []
    first, last = min(counts), max(counts)
    series: list[tuple[dt.datetime, int]] = []
    at = first
    while at <= last and len(series) < 24 * 60:
        series.append((at, counts.get(at, 0)))
        at += dt.timedelta(minutes=1)
    return series
