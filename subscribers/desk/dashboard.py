"""The desk's first page: the list by status, joiners and leavers per day, the last issues, what waits."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter import accounts, language, overview
from newsletter.accounts import SignedIn
from subscribers.context import context_of, gettext, reader_language
from subscribers.desk import charts
from subscribers.desk.guard import DESK_PATH, desk_page, desk_route, signed_in_account
from subscribers.desk.signin import sign_in_form

PERIODS_DAYS = (30, 90, 365)
N_ = language.N_


@dataclass(frozen=True)
class Dashboard:
    statuses: dict[str, int]
    days: list[overview.Day]
    issues: list[overview.IssueSummary]
    attention: list[overview.Attention]


def _dashboard(session: Session, days: int, lang: str) -> Dashboard:
    return Dashboard(
        overview.status_counts(session),
        overview.joiners_and_leavers(session, days),
        overview.issue_summaries(session),
        overview.needs_attention(session, lang),
    )


async def home(request: Request) -> Response:
    """/admin: the dashboard when signed in; the sign-in page (or how to make the first account) otherwise."""
    if await signed_in_account(request) is None:
        if not await context_of(request).run(accounts.has_accounts):
            return await sign_in_form(request)
    return await _home(request)


@desk_route
async def _home(request: Request, account: SignedIn) -> Response:
    try:
        days = int(request.query_params.get("days", "30"))
    except ValueError:
        days = 30
    days = days if days in PERIODS_DAYS else PERIODS_DAYS[0]
    context = context_of(request)
    data = await context.run(_dashboard, days, reader_language(request))
    for slug, waits_for in context.sends.stalled():  # no free slot, a relay failing, seen by this process
        if any(waits_for in item.message for item in data.attention):
            continue  # a refused session is on the list already, from the database
        message = gettext(request, N_("The send of %(slug)s waits: %(reason)s")) % {"slug": slug, "reason": waits_for}
        data.attention.insert(0, overview.Attention(message, f"{DESK_PATH}/issues/{slug}"))
    for slug, problem in context.sends.problems():
        # The problem is a message of the catalog (subscribers/desk/sending.py) or an error's own words.
        message = gettext(request, N_("The send of %(slug)s stopped: %(problem)s")) % {
            "slug": slug,
            "problem": gettext(request, problem) if problem else problem,
        }
        data.attention.insert(0, overview.Attention(message, f"{DESK_PATH}/issues/{slug}"))
    labels = [day.day.strftime("%m-%d") for day in data.days]
    chart = charts.bar_chart(
        gettext(request, N_("Joined and left per day, last %(days)s days")) % {"days": days},
        labels,
        [[day.joined for day in data.days], [day.left for day in data.days]],
        (gettext(request, N_("joined")), gettext(request, N_("left"))),
        every=max(len(labels) // 10, 1),
    )
    return desk_page(
        request,
        account,
        "desk/dashboard.html",
        data=data,
        chart=chart,
        days=days,
        periods=PERIODS_DAYS,
        joined=sum(day.joined for day in data.days),
        left=sum(day.left for day in data.days),
    )


routes = [Route(DESK_PATH, home, methods=["GET"]), Route(f"{DESK_PATH}/", home, methods=["GET"])]
