"""The desk's bounce and deliverability pages: what bounced and why, and the DNS records the mail needs."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter import deliverability, inbound, language, outbox, overview, suppressions
from newsletter.accounts import SignedIn
from newsletter.models import utcnow
from subscribers.context import context_of, gettext, reader_language
from subscribers.desk import charts
from subscribers.desk.guard import DESK_PATH, back_to, desk_page, desk_route

PERIODS_DAYS = (7, 30, 90, 365)
# The columns of the one-off mails' table, as outbox.counts_since names the states.
ONE_OFF_STATES = ("sent", "waiting", "retrying", "sending", "failed", "bounced")
CHART_ROWS = 12
N_ = language.N_
# How the pages name a kind of one-off mail (outbox kinds) and of mail kept for the editor, in the editor's
# language (a kind missing here shows as itself).
MAIL_KINDS = {"confirmation": N_("confirmation"), "welcome": N_("welcome")}
KEPT_KINDS = {"unverified": N_("unverified"), "unrecognized": N_("unrecognized")}


@dataclass(frozen=True)
class BouncePage:
    report: suppressions.BounceReport
    unrecognized: list[overview.Unrecognized]


def _bounce_page(session: Session, days: int) -> BouncePage:
    return BouncePage(
        suppressions.bounce_report(session, utcnow() - dt.timedelta(days=days)), overview.unrecognized_messages(session)
    )


def _total(counts: suppressions.Counts) -> int:
    return counts.total


@desk_route
async def bounce_page(request: Request, account: SignedIn) -> Response:
    value = request.query_params.get("days", "30")
    days = int(value) if value.isdigit() and int(value) in PERIODS_DAYS else 30
    found = await context_of(request).run(_bounce_page, days)
    by_reason = charts.horizontal_counts(
        [(key, _total(counts)) for key, counts in list(found.report.by_reason.items())[:CHART_ROWS]]
    )
    by_domain = charts.horizontal_counts(
        [(key, _total(counts)) for key, counts in list(found.report.by_domain.items())[:CHART_ROWS]]
    )
    return desk_page(
        request,
        account,
        "desk/bounces.html",
        section="bounces",
        data=found,
        days=days,
        periods=PERIODS_DAYS,
        by_reason=by_reason,
        by_domain=by_domain,
        kept_kinds=language.names(reader_language(request), KEPT_KINDS),
    )


@desk_route
async def deliverability_page(request: Request, account: SignedIn) -> Response:
    context = context_of(request)
    lang = reader_language(request)
    checks = await run_in_threadpool(deliverability.checklist, context.settings, lang)
    one_off = await context.run(_one_off_mails, utcnow() - dt.timedelta(days=overview.ONE_OFF_DAYS))
    return desk_page(
        request,
        account,
        "desk/deliverability.html",
        section="deliverability",
        checks=checks,
        verdict_names=deliverability.verdict_names(lang),
        settings_shown=deliverability.settings_in_effect(context.settings, lang),
        one_off=one_off,
        one_off_days=overview.ONE_OFF_DAYS,
        one_off_states=ONE_OFF_STATES,
        mail_kinds=language.names(reader_language(request), MAIL_KINDS),
    )


@dataclass(frozen=True)
class OneOffMails:
    counts: dict[str, dict[str, int]]  # kind -> state -> number (outbox.counts_since)
    failures: list[outbox.Failure]


def _one_off_mails(session: Session, since: dt.datetime) -> OneOffMails:
    return OneOffMails(outbox.counts_since(session, since), outbox.latest_failures(session, since))


@desk_route
async def apply_kept(request: Request, account: SignedIn) -> Response:
    context = context_of(request)
    kept_id = request.path_params["id"]
    tally = await context.run(inbound.apply_kept, context.settings, kept_id)
    notice = gettext(request, N_("Report #%(id)s applied: %(count)s recorded.")) % {
        "id": kept_id,
        "count": tally.recorded,
    }
    return back_to(request, f"{DESK_PATH}/bounces", notice)


@desk_route
async def dismiss_kept(request: Request, account: SignedIn) -> Response:
    kept_id = request.path_params["id"]
    await context_of(request).run(inbound.dismiss_kept, kept_id, account.email)
    notice = gettext(request, N_("Message #%(id)s dismissed: nothing was changed.")) % {"id": kept_id}
    return back_to(request, f"{DESK_PATH}/bounces", notice)


routes = [
    Route(DESK_PATH + "/bounces/kept/{id:int}/apply", apply_kept, methods=["POST"]),
    Route(DESK_PATH + "/bounces/kept/{id:int}/dismiss", dismiss_kept, methods=["POST"]),
    Route(f"{DESK_PATH}/bounces", bounce_page, methods=["GET"]),
    Route(f"{DESK_PATH}/deliverability", deliverability_page, methods=["GET"]),
]
