"""The archive of sent issues, as the web app lists them, shows them and feeds them (Atom)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.errors import NewsletterError
from newsletter.models import Issue, IssueStatus

FEED_ENTRIES = 20


class IssueNotFound(NewsletterError):
    """No sent issue has this slug."""


def sent_issues(session: Session, limit: int | None = None) -> Sequence[Issue]:
    """The sent issues, newest first."""
    query = select(Issue).where(Issue.status == IssueStatus.SENT).order_by(Issue.sent_at.desc(), Issue.id.desc())
    if limit is not None:
        query = query.limit(limit)
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


def web_html(issue: Issue) -> str:
    """The issue's web version: the page without per-recipient slots, else the email's HTML."""
    return str(getattr(issue, "web_html", None) or issue.html)
