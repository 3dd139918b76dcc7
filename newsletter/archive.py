"""The archive of sent issues, as the web app lists them, shows them and feeds them (Atom)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.errors import IssueNotFound
from newsletter.models import Issue, IssueStatus
from newsletter.slots import with_fallbacks

FEED_ENTRIES = 20
# The web version marks its content (templates/issue_web.html.j2); an issue stored before that has a body.
CONTENT_RE = re.compile(r"<!--nl-content-->(.*)<!--/nl-content-->", re.DOTALL)
BODY_RE = re.compile(r"<body\b[^>]*>(.*)</body>", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class ArchiveEntry:
    """One line of the archive's list: no content, so a long archive stays a light page."""

    slug: str
    subject: str
    preheader: str
    sent_at: dt.datetime | None


NEWEST_FIRST = (Issue.sent_at.desc(), Issue.id.desc())


def archive_entries(session: Session) -> list[ArchiveEntry]:
    """Every sent issue, newest first, without its content."""
    rows = session.execute(
        select(Issue.slug, Issue.subject, Issue.preheader, Issue.sent_at)
        .where(Issue.status == IssueStatus.SENT)
        .order_by(*NEWEST_FIRST)
    )
    return [
        ArchiveEntry(slug, with_fallbacks(subject), preheader, sent_at) for slug, subject, preheader, sent_at in rows
    ]


def latest_issues(session: Session, limit: int = FEED_ENTRIES) -> Sequence[Issue]:
    """The newest sent issues with their content (the Atom feed)."""
    query = select(Issue).where(Issue.status == IssueStatus.SENT).order_by(*NEWEST_FIRST).limit(limit)
    return session.scalars(query).all()


def sent_issue(session: Session, slug: str) -> Issue:
    """The sent issue with this slug (drafts and issues still sending are not public).

    Raises:
        IssueNotFound: no sent issue has this slug.
    """
    issue = session.scalar(select(Issue).where(Issue.slug == slug, Issue.status == IssueStatus.SENT))
    if issue is None:
        raise IssueNotFound(f"no issue {slug[:80]!r} in the archive")
    return issue


def shown_subject(issue: Issue) -> str:
    """The subject as a list shows it: each personal field as its fallback."""
    return with_fallbacks(issue.subject)


def web_html(issue: Issue) -> str:
    """The issue's web version: the page without per-recipient slots, else the email's HTML."""
    return issue.web_html or issue.html


def feed_content(issue: Issue) -> str:
    """The issue's own content for a feed entry: no <head>, no page around it (RFC 4287 4.1.3)."""
    page = web_html(issue)
    found = CONTENT_RE.search(page) or BODY_RE.search(page)
    return (found.group(1) if found else page).strip()
