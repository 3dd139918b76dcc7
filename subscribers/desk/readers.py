"""The desk's subscriber pages: search and pages, a reader's record, add, edit, unsubscribe, forget, import, export."""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from newsletter import directory, language, roster, subscriptions, suppressions
from newsletter.accounts import SignedIn
from newsletter.errors import ImportFileError, InvalidAddress
from newsletter.models import SubscriberSource, SubscriberStatus
from newsletter.subscriptions import SubscriberExists
from newsletter.topics import InvalidTopic
from subscribers.context import context_of, gettext, reader_language
from subscribers.desk.guard import DESK_PATH, back_to, desk_page, desk_route, posted, posted_list
from subscribers.fields import BadInput, language_of, refuse_line_breaks, search_of, tags_of_text

BASE = f"{DESK_PATH}/subscribers"
DESK_SOURCE = "desk"
EXPORT_CHUNK_BYTES = 64 * 1024
N_ = language.N_

# How the list names its orders, where a reader came from and what their history says happened, in the
# editor's language (the database and the URLs keep the keys; a key missing here shows as itself).
SORT_NAMES = {"newest": N_("newest"), "oldest": N_("oldest"), "email": N_("email")}
SOURCE_NAMES = {
    "import": N_("import"),
    "form": N_("form"),
    "cli": N_("cli"),
    "api": N_("api"),
    "desk": N_("desk"),
    "invite": N_("invite"),
    "confirm-link": N_("confirm-link"),
    "unsubscribe-link": N_("unsubscribe-link"),
    "one-click": N_("one-click"),
    "preferences-page": N_("preferences-page"),
    "smtp": N_("smtp"),
}
# An event's kind as the history shows it in English: the key with its underscores as spaces.
EVENT_KINDS = {
    "created": N_("created"),
    "status": N_("status"),
    "confirmation-requested": N_("confirmation-requested"),
    "preferences": N_("preferences"),
    "edited": N_("edited"),
    "forgotten": N_("forgotten"),
    "reactivated": N_("reactivated"),
    "hard_bounce": N_("hard bounce"),
    "soft_bounce": N_("soft bounce"),
    "sender_side": N_("sender side"),
    "delay": N_("delay"),
    "complaint": N_("complaint"),
    "feedback_report": N_("feedback report"),
    "unsubscribe_request": N_("unsubscribe request"),
}

# The encodings the import form offers besides detection (its <select> in templates/web/desk/import.html).
IMPORT_ENCODINGS = frozenset({"gb18030", "big5", "shift_jis", "cp949", "cp1252"})


@desk_route
async def listing(request: Request, account: SignedIn) -> Response:
    params = dict(request.query_params)
    wanted = search_of(params)
    cursor = params.get("after") or None
    try:
        found = await context_of(request).run(directory.search, wanted, cursor)
    except directory.BadCursor as error:
        values = {**_listing(request, params, wanted), "error": str(error)}
        return desk_page(request, account, "desk/subscribers.html", 400, **values)
    values = _listing(request, params, wanted)
    values["page"] = found
    values["next_params"] = {**{k: v for k, v in params.items() if v and k != "notice"}, "after": found.next_cursor}
    return desk_page(request, account, "desk/subscribers.html", **values)


def _listing(request: Request, params: dict[str, str], wanted: directory.Search) -> dict[str, Any]:
    return {
        "section": "subscribers",
        "params": params,
        "wanted": wanted,
        "statuses": [str(status) for status in SubscriberStatus],
        "sorts": [str(sort) for sort in directory.Sort],
        "sort_names": language.names(reader_language(request), SORT_NAMES),
        "source_names": language.names(reader_language(request), SOURCE_NAMES),
        "page": None,
        "next_params": {},
        "error": "",
        "first_page": "after" in params,
    }


@desk_route
async def new_form(request: Request, account: SignedIn) -> Response:
    return desk_page(request, account, "desk/subscriber_new.html", section="subscribers", error="", email="", name="")


@desk_route
async def add(request: Request, account: SignedIn) -> Response:
    form = await posted(request)
    email, name = form.get("email", "").strip()[:400], form.get("name", "").strip()[:400]
    status = SubscriberStatus.PENDING if form.get("status") == "pending" else SubscriberStatus.ACTIVE
    try:
        subscriber = await context_of(request).run(_add, email, name or None, status, account.email)
    except (InvalidAddress, SubscriberExists, BadInput) as error:
        reason = error.reason if isinstance(error, InvalidAddress) else str(error)
        return desk_page(
            request,
            account,
            "desk/subscriber_new.html",
            422,
            section="subscribers",
            error=reason,
            email=email,
            name=name,
        )
    return back_to(request, f"{BASE}/{subscriber}", gettext(request, N_("Added to the list.")))


def _add(session: Session, email: str, name: str | None, status: SubscriberStatus, actor: str) -> int:
    refuse_line_breaks(name or "")
    subscriber = subscriptions.add_subscriber(session, email, name, status, SubscriberSource.DESK, actor=actor)
    return subscriber.id


@desk_route
async def record(request: Request, account: SignedIn) -> Response:
    return await _record_page(request, account)


async def _record_page(request: Request, account: SignedIn, error: str = "") -> Response:
    """A reader's page; with `error`, the answer to a post it refused (422)."""
    found = await context_of(request).run(directory.reader, request.path_params["id"])
    return desk_page(
        request,
        account,
        "desk/subscriber.html",
        422 if error else 200,
        section="subscribers",
        record=found,
        forgotten=subscriptions.is_forgotten(found.subscriber),
        error=error,
        source_names=language.names(reader_language(request), SOURCE_NAMES),
        kind_names=language.names(reader_language(request), EVENT_KINDS),
    )


@desk_route
async def edit(request: Request, account: SignedIn) -> Response:
    form = await posted(request)
    subscriber_id = request.path_params["id"]
    # The form ticks topics only when the editor defined some; without the box, the topics stay as they are.
    topics = await posted_list(request, "topics") if form.get("topics_shown") else None
    try:
        name = form.get("name", "").strip()
        refuse_line_breaks(name, form.get("tags", ""), form.get("language", ""))
        language = language_of(form.get("language", "").strip())
        tags = tags_of_text(form.get("tags", ""))
        await context_of(request).run(
            lambda session: directory.edit(
                session,
                subscriber_id,
                name=name,
                language=language,
                tags=tags,
                topics=topics,
                source=DESK_SOURCE,
                actor=account.email,
            )
        )
    except (BadInput, InvalidTopic) as error:
        return await _record_page(request, account, str(error))
    return back_to(request, f"{BASE}/{subscriber_id}", gettext(request, N_("Saved.")))


@desk_route
async def unsubscribe(request: Request, account: SignedIn) -> Response:
    subscriber_id = request.path_params["id"]

    def _unsubscribe(session: Session) -> None:
        subscriber = directory.get_by_id(session, subscriber_id)
        if not subscriptions.is_forgotten(subscriber):
            subscriptions.unsubscribe(session, subscriber.email, DESK_SOURCE, actor=account.email)

    await context_of(request).run(_unsubscribe)
    notice = gettext(request, N_("Unsubscribed: no issue goes to this address any more."))
    return back_to(request, f"{BASE}/{subscriber_id}", notice)


@desk_route
async def reactivate(request: Request, account: SignedIn) -> Response:
    form = await posted(request)
    subscriber_id = request.path_params["id"]
    reason, force = form.get("reason", "").strip(), form.get("force") == "1"

    def _reactivate(session: Session) -> None:
        subscriber = directory.get_by_id(session, subscriber_id)
        suppressions.reactivate(session, subscriber.email, reason, force=force, source=DESK_SOURCE, actor=account.email)

    try:
        await context_of(request).run(_reactivate)
    except suppressions.ReactivationRefused as error:
        words = str(error).replace("with --reason", "in the box").replace("needs --force", "needs the box ticked")
        return await _record_page(request, account, words)
    notice = gettext(request, N_("Active again: the next issue goes to this address."))
    return back_to(request, f"{BASE}/{subscriber_id}", notice)


@desk_route
async def forget_form(request: Request, account: SignedIn) -> Response:
    found = await context_of(request).run(directory.get_by_id, request.path_params["id"])
    return desk_page(request, account, "desk/forget.html", section="subscribers", subscriber=found)


@desk_route
async def forget(request: Request, account: SignedIn) -> Response:
    form = await posted(request)
    subscriber_id = request.path_params["id"]
    found = await context_of(request).run(directory.get_by_id, subscriber_id)
    if form.get("confirm_email", "").strip().lower() != found.email_key:
        return desk_page(
            request,
            account,
            "desk/forget.html",
            422,
            section="subscribers",
            subscriber=found,
            error=gettext(request, N_("Type the address exactly as shown to confirm.")),
        )

    def _forget(session: Session) -> None:
        subscriber = directory.get_by_id(session, subscriber_id)
        if not subscriptions.is_forgotten(subscriber):
            subscriptions.forget(session, subscriber.email, DESK_SOURCE, actor=account.email)

    await context_of(request).run(_forget)
    notice = gettext(request, N_("Erased: only an anonymous row is left, so the counts stay true."))
    return back_to(request, f"{BASE}/{subscriber_id}", notice)


@desk_route
async def import_form(request: Request, account: SignedIn) -> Response:
    return desk_page(request, account, "desk/import.html", section="subscribers", report=None, error="", filename="")


@desk_route
async def import_upload(request: Request, account: SignedIn) -> Response:
    form = await request.form()
    upload = form.get("file")
    status = SubscriberStatus.PENDING if form.get("status") == "pending" else SubscriberStatus.ACTIVE
    encoding = form.get("encoding")
    encoding = encoding if isinstance(encoding, str) and encoding in IMPORT_ENCODINGS else None
    if not isinstance(upload, UploadFile) or not upload.filename:
        return desk_page(
            request,
            account,
            "desk/import.html",
            422,
            section="subscribers",
            report=None,
            error=gettext(request, N_("Choose a CSV file to upload.")),
            filename="",
        )
    filename = Path(upload.filename).name[:200]
    with tempfile.TemporaryDirectory(prefix="newsletter-import-") as directory_name:
        path = Path(directory_name) / "upload.csv"
        path.write_bytes(await upload.read())
        try:
            report = await context_of(request).run(
                lambda session: roster.import_csv(
                    session, path, status, SubscriberSource.IMPORT, encoding, shown_name=filename, actor=account.email
                )
            )
        except ImportFileError as error:
            return desk_page(
                request,
                account,
                "desk/import.html",
                422,
                section="subscribers",
                report=None,
                error=str(error),
                filename=filename,
            )
    return desk_page(
        request, account, "desk/import.html", section="subscribers", report=report, error="", filename=filename
    )


@desk_route
async def export(request: Request, account: SignedIn) -> Response:
    status_value = request.query_params.get("status", "")
    status = SubscriberStatus(status_value) if status_value in set(SubscriberStatus) else None
    spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024, mode="w+", encoding="utf-8", newline="")
    await context_of(request).run(lambda session: roster.export_csv(session, spool, status))
    spool.seek(0)

    def chunks() -> Iterator[str]:
        with spool:
            while chunk := spool.read(EXPORT_CHUNK_BYTES):
                yield chunk

    name = f"subscribers-{status or 'all'}-{dt.date.today().isoformat()}.csv"
    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


routes = [
    Route(BASE, listing, methods=["GET"]),
    Route(f"{BASE}/new", new_form, methods=["GET"]),
    Route(f"{BASE}/new", add, methods=["POST"]),
    Route(f"{BASE}/import", import_form, methods=["GET"]),
    Route(f"{BASE}/import", import_upload, methods=["POST"]),
    Route(f"{BASE}/export.csv", export, methods=["GET"]),
    Route(BASE + "/{id:int}", record, methods=["GET"]),
    Route(BASE + "/{id:int}/edit", edit, methods=["POST"]),
    Route(BASE + "/{id:int}/unsubscribe", unsubscribe, methods=["POST"]),
    Route(BASE + "/{id:int}/reactivate", reactivate, methods=["POST"]),
    Route(BASE + "/{id:int}/forget", forget_form, methods=["GET"]),
    Route(BASE + "/{id:int}/forget", forget, methods=["POST"]),
]
