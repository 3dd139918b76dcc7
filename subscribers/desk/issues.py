"""The desk's issue pages: write or upload, preview as readers see it, test, send after confirming, watch it go."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from newsletter import campaign, drafts, language, ledger, overview, schedule, segments
from newsletter.accounts import SignedIn
from newsletter.addresses import normalize_address
from newsletter.errors import InvalidAddress, IssueFormatError, NewsletterError
from newsletter.ledger import IssueChanged
from newsletter.models import DeliveryStatus, IssueStatus
from newsletter.segments import Segment
from subscribers.context import context_of, gettext
from subscribers.desk import charts
from subscribers.desk.guard import DESK_PATH, back_to, desk_page, desk_route, posted
from subscribers.desk.sending import SendRunning

BASE = f"{DESK_PATH}/issues"
PREVIEW_WIDTHS_PX = (375, 600)
MAX_FAILURES_SHOWN = 50
# The email as shown in the desk's preview frame: its own inline styles and images, no script, framed by us only.
PREVIEW_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; font-src data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)
_DARK_QUERY = re.compile(r"\(\s*prefers-color-scheme\s*:\s*dark\s*\)")
N_ = language.N_


@desk_route
async def listing(request: Request, account: SignedIn) -> Response:
    found = await context_of(request).run(overview.issue_summaries, 200)
    return desk_page(request, account, "desk/issues.html", section="issues", issues=found)


@desk_route
async def new_form(request: Request, account: SignedIn) -> Response:
    return desk_page(request, account, "desk/issue_new.html", section="issues", error="", source="", subject="")


@desk_route
async def save(request: Request, account: SignedIn) -> Response:
    form = await request.form()
    source = form.get("source")
    text = source if isinstance(source, str) else ""
    subject = str(form.get("subject") or "").strip() or None
    upload = form.get("file")
    images: dict[str, bytes] = {}
    try:
        if isinstance(upload, UploadFile) and upload.filename:
            text = (await upload.read()).decode("utf-8-sig")
        for item in form.getlist("images"):
            if isinstance(item, UploadFile) and item.filename:
                images[item.filename] = await item.read()
        if not text.strip():
            raise IssueFormatError(gettext(request, N_("paste the issue's Markdown or choose its file")))
        issue = await context_of(request).run(
            lambda session: drafts.store_draft(
                session, context_of(request).settings, text, images, subject=subject, actor=account.email
            )
        )
    except UnicodeDecodeError:
        return _new_again(request, account, gettext(request, N_("the file is not UTF-8 text")), text, subject)
    except (IssueFormatError, IssueChanged) as error:
        return _new_again(request, account, str(error), text, subject)
    notice = gettext(request, N_("Saved as a draft: check it below, then send a test."))
    return back_to(request, f"{BASE}/{issue.slug}", notice)


def _new_again(request: Request, account: SignedIn, error: str, source: str, subject: str | None) -> Response:
    return desk_page(
        request,
        account,
        "desk/issue_new.html",
        422,
        section="issues",
        error=error,
        source=source,
        subject=subject or "",
    )


def _issue_page(session: Session, request: Request, slug: str) -> dict[str, Any]:
    context = context_of(request)
    found = drafts.draft(session, context.settings, slug)
    counts = ledger.counts(session, found.issue.id)
    per_minute = drafts.sent_per_minute(session, found.issue.id)
    chart = None
    if per_minute:
        labels = [at.strftime("%H:%M") for at, _count in per_minute]
        chart = charts.bar_chart(
            gettext(request, N_("Messages accepted per minute")),
            labels,
            [[count for _at, count in per_minute]],
            (gettext(request, N_("sent")),),
            every=max(len(labels) // 10, 1),
        )
    return {
        "draft": found,
        "counts": counts,
        "statuses": [str(status) for status in DeliveryStatus],
        "failures": ledger.failures(session, found.issue.id, MAX_FAILURES_SHOWN),
        "summary": overview.summary(session, found.issue),
        "schedules": [item for item in schedule.list_schedules(session) if item.slug == found.issue.slug],
        "chart": chart,
    }


@desk_route
async def issue_page(request: Request, account: SignedIn) -> Response:
    context = context_of(request)
    values = await context.run(_issue_page, request, request.path_params["slug"])
    issue_id = values["draft"].issue.id
    return desk_page(
        request,
        account,
        "desk/issue.html",
        section="issues",
        widths=PREVIEW_WIDTHS_PX,
        running=context.sends.running(issue_id),
        problem=_problem(request, context.sends.problem(issue_id)),
        waiting=context.sends.waiting(issue_id),
        test_result=None,
        **values,
    )


@desk_route
async def email_html(request: Request, account: SignedIn) -> Response:
    """The email for the preview frame: light, or dark as a client that honours prefers-color-scheme shows it."""
    context = context_of(request)
    found = await context.run(drafts.draft, context.settings, request.path_params["slug"])
    html = found.sample.html
    if request.query_params.get("scheme") == "dark":
        html = _DARK_QUERY.sub("(min-width: 0px)", html)
    return HTMLResponse(html, headers={"content-security-policy": PREVIEW_POLICY, "x-frame-options": "SAMEORIGIN"})


@desk_route
async def send_test(request: Request, account: SignedIn) -> Response:
    context = context_of(request)
    form = await posted(request)
    slug = request.path_params["slug"]
    address = form.get("address", "").strip()
    try:
        normalize_address(address)
    except InvalidAddress as error:
        not_sent = gettext(request, N_("Not sent: %(reason)s")) % {"reason": error.reason}
        return await _page_with_test(request, account, slug, not_sent, False)
    context.settings.require("from_address", "postal_address")

    def _rendered(session: Session) -> Any:
        return ledger.rendered_issue(session, ledger.find_issue(session, slug).id)

    rendered = await context.run(_rendered)
    outcomes = await run_in_threadpool(campaign.send_test, context.settings, rendered, [address])
    outcome = outcomes[0]
    if outcome.accepted:
        message = gettext(request, N_("Test sent to %(address)s: %(reply)s")) % {
            "address": outcome.address,
            "reply": outcome.reply,
        }
    else:
        message = gettext(request, N_("Refused: %(reply)s")) % {"reply": outcome.reply}
    return await _page_with_test(request, account, slug, message, outcome.accepted)


async def _page_with_test(request: Request, account: SignedIn, slug: str, message: str, ok: bool) -> Response:
    context = context_of(request)
    values = await context.run(_issue_page, request, slug)
    issue_id = values["draft"].issue.id
    return desk_page(
        request,
        account,
        "desk/issue.html",
        200 if ok else 422,
        section="issues",
        widths=PREVIEW_WIDTHS_PX,
        running=context.sends.running(issue_id),
        problem=_problem(request, context.sends.problem(issue_id)),
        waiting=context.sends.waiting(issue_id),
        test_result={"message": message, "ok": ok},
        **values,
    )


def _segment(text: str) -> Segment:
    """The segment the send form names (`ai, -old, topic:weekly`, as the front matter's `segment:`)."""
    return segments.parse_segment(text) if text.strip() else Segment()


def segment_text(segment: Segment) -> str:
    """A segment written back as the form takes it."""
    return ", ".join(
        [*segment.tags, *(f"-{tag}" for tag in segment.exclude_tags), *(f"topic:{key}" for key in segment.topics)]
    )


async def _send_page(
    request: Request, account: SignedIn, segment: Segment | None, status_code: int = 200, error: str = ""
) -> Response:
    context = context_of(request)
    found = await context.run(drafts.draft, context.settings, request.path_params["slug"], segment)
    return desk_page(
        request,
        account,
        "desk/issue_send.html",
        status_code,
        section="issues",
        draft=found,
        settings=context.settings,
        error=error,
        segment_text=segment_text(found.segment),
    )


@desk_route
async def send_form(request: Request, account: SignedIn) -> Response:
    """The confirmation: how many the send reaches, for the segment stored with it or the one asked for."""
    text = request.query_params.get("segment")
    try:
        segment = _segment(text) if text is not None else None
    except NewsletterError as error:
        return await _send_page(request, account, None, 422, str(error))
    return await _send_page(request, account, segment)


@desk_route
async def send(request: Request, account: SignedIn) -> Response:
    context = context_of(request)
    slug = request.path_params["slug"]
    form = await posted(request)
    context.settings.require("from_address", "secret_key", "postal_address")
    try:
        segment = _segment(form.get("segment", ""))
        await context.run(drafts.choose_segment, slug, segment)
    except NewsletterError as error:
        return await _send_page(request, account, None, 422, str(error))
    what = f"send to {segment.describe()}"
    issue_id = await context.run(drafts.record_send, slug, what, account.email)
    await _start(request, issue_id, retry=False)
    return back_to(request, f"{BASE}/{slug}", gettext(request, N_("Sending: this page follows it.")))


@desk_route
async def retry(request: Request, account: SignedIn) -> Response:
    context = context_of(request)
    slug = request.path_params["slug"]
    issue_id = await context.run(drafts.record_send, slug, "retry", account.email)
    await _start(request, issue_id, retry=True)
    notice = gettext(request, N_("The deliveries that failed for a temporary reason go out again."))
    return back_to(request, f"{BASE}/{slug}", notice)


async def _start(request: Request, issue_id: int, retry: bool) -> None:
    try:
        await run_in_threadpool(context_of(request).sends.start, issue_id, retry)
    except SendRunning as error:  # sending.py words it in English: the editor reads it in the page's language
        raise SendRunning(gettext(request, str(error))) from error


def _problem(request: Request, problem: str) -> str:
    """Why the last send stopped, in the editor's language where the words are the desk's own (see sending.py);
    a relay's or the core's words stay as they are."""
    return gettext(request, problem) if problem else ""


@desk_route
async def progress(request: Request, account: SignedIn) -> Response:
    """The counts of a send, polled by the issue page's script while it runs."""
    context = context_of(request)

    def _progress(session: Session) -> dict[str, Any]:
        issue = ledger.find_issue(session, request.path_params["slug"])
        counts = ledger.counts(session, issue.id)
        return {
            "status": issue.status,
            "counts": {str(status): counts[status] for status in DeliveryStatus},
            "total": counts.total,
            "done": counts.done,
            "issue_id": issue.id,
        }

    data = await context.run(_progress)
    issue_id = data.pop("issue_id")
    data["running"] = context.sends.running(issue_id)
    data["waiting"] = context.sends.waiting(issue_id)
    data["finished"] = data["status"] == IssueStatus.SENT
    return JSONResponse(data)


@desk_route
async def schedule_send(request: Request, account: SignedIn) -> Response:
    context = context_of(request)
    form = await posted(request)
    slug = request.path_params["slug"]
    zone = form.get("timezone", "").strip()[:64] or context.settings.timezone

    def _schedule(session: Session) -> str:
        due = schedule.parse_at(form.get("at", ""), zone)
        segment = _segment(form.get("segment", ""))
        issue = ledger.find_issue(session, slug)
        # The draft is stored with its images: at its time, the send finds it under the same text and slug.
        rendered = ledger.rendered_issue(session, issue.id)
        row = schedule.schedule_send(session, Path(f"{issue.slug}.md"), rendered, due, zone, segment=segment)
        drafts.record_send(session, slug, f"scheduled for {form.get('at', '')} {zone}", account.email)
        return gettext(request, N_("Scheduled (#%(id)s) for %(due)s %(zone)s.")) % {
            "id": row.id,
            "due": f"{row.due_at.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M}",
            "zone": zone,
        }

    try:
        notice = await context.run(_schedule)
    except NewsletterError as error:
        return await _send_page(request, account, None, 422, str(error))
    return back_to(request, f"{BASE}/{slug}", notice)


@desk_route
async def cancel_schedule(request: Request, account: SignedIn) -> Response:
    slug = request.path_params["slug"]
    await context_of(request).run(schedule.cancel, request.path_params["id"])
    return back_to(request, f"{BASE}/{slug}", gettext(request, N_("The scheduled send is cancelled.")))


routes = [
    Route(BASE + "/{slug}/schedule", schedule_send, methods=["POST"]),
    Route(BASE + "/{slug}/schedule/{id:int}/cancel", cancel_schedule, methods=["POST"]),
    Route(BASE, listing, methods=["GET"]),
    Route(f"{BASE}/new", new_form, methods=["GET"]),
    Route(f"{BASE}/new", save, methods=["POST"]),
    Route(BASE + "/{slug}", issue_page, methods=["GET"]),
    Route(BASE + "/{slug}/email.html", email_html, methods=["GET"]),
    Route(BASE + "/{slug}/progress.json", progress, methods=["GET"]),
    Route(BASE + "/{slug}/test", send_test, methods=["POST"]),
    Route(BASE + "/{slug}/send", send_form, methods=["GET"]),
    Route(BASE + "/{slug}/send", send, methods=["POST"]),
    Route(BASE + "/{slug}/retry", retry, methods=["POST"]),
]
