"""The desk's first page: the list by status, joiners and leavers per day, the last issues, what waits."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter import accounts, overview
from newsletter.accounts import SignedIn
from subscribers.context import context_of
from subscribers.desk import charts
from subscribers.desk.guard import DESK_PATH, desk_page, desk_route, signed_in_account
from subscribers.desk.signin import sign_in_form

PERIODS_DAYS = (30, 90, 365)


@dataclass(frozen=True)
class Dashboard:
    statuses: dict[str, int]
    days: list[overview.Day]
    issues: list[overview.IssueSummary]
    attention: list[overview.Attention]


def _dashboard(session: Session, days: int) -> Dashboard:
    return Dashboard(
        overview.status_counts(session),
        overview.joiners_and_leavers(session, days),
        overview.issue_summaries(session),
        overview.needs_attention(session),
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
    data = await context.run(_dashboard, days)
    for slug, waits_for in context.sends.stalled():  # no free slot, a relay failing, seen by this process
        if any(waits_for in item.message for item in data.attention):
            continue  # a refused session is on the list already, from the database
        data.attention.insert(
            0, overview.Attention(f"The send of {slug} waits: {waits_for}", f"{DESK_PATH}/issues/{slug}")
        )
    for slug, problem in context.sends.problems():
        data.attention.insert(
            0, overview.Attention(f"The send of {slug} stopped: {problem}", f"{DESK_PATH}/issues/{slug}")
        )
    labels = [day.day.strftime("%m-%d") for day in data.days]
    chart = charts.bar_chart(
        f"Joined and left per day, last {days} days",
        labels,
        [[day.joined for day in data.days], [day.left for day in data.days]],
        ("joined", "left"),
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
