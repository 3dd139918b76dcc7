"""The archive: the list of sent issues, each issue's web version, and an Atom feed."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from newsletter import archive, links
from newsletter.models import utcnow
from subscribers.context import context_of, page
from subscribers.security import ISSUE_POLICY

ARCHIVE_CACHE = "public, max-age=300"


async def issue_list(request: Request) -> Response:
    context = context_of(request)
    entries = await context.run(archive.archive_entries)
    urls = {entry.slug: links.issue_url(context.settings, entry.slug) for entry in entries}
    return page(request, "issues.html", headers={"cache-control": ARCHIVE_CACHE}, entries=entries, urls=urls)


async def issue_page(request: Request) -> Response:
    """The web version of one issue (the email's view-in-browser link)."""
    context = context_of(request)
    issue = await context.run(archive.sent_issue, request.path_params["slug"])
    headers = {"content-security-policy": ISSUE_POLICY, "cache-control": ARCHIVE_CACHE}
    return HTMLResponse(archive.web_html(issue), headers=headers)


async def feed(request: Request) -> Response:
    """An Atom feed (RFC 4287) of the newest issues, each with its content (not the page around it)."""
    context = context_of(request)
    issues = await context.run(archive.latest_issues)
    entries = [
        {
            "url": links.issue_url(context.settings, issue.slug),
            "subject": archive.shown_subject(issue),
            "summary": issue.preheader,
            "updated": (issue.sent_at or issue.created_at).isoformat(),
            "content": archive.feed_content(issue),
        }
        for issue in issues
    ]
    updated = entries[0]["updated"] if entries else utcnow().isoformat()
    body = context.pages.render("feed.xml", entries=entries, updated=updated)
    return Response(body, media_type="application/atom+xml; charset=utf-8", headers={"cache-control": ARCHIVE_CACHE})


routes = [
    Route("/issues/", issue_list, methods=["GET"]),
    Route("/issues/feed.xml", feed, methods=["GET"]),
    Route("/issues/{slug}", issue_page, methods=["GET"]),
]
