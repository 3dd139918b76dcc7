"""The desk's topics and tags page: the topics readers choose (define, rename, remove) and the tags in use."""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter import language, tags, topics
from newsletter.accounts import SignedIn
from subscribers.context import context_of, gettext
from subscribers.desk.guard import DESK_PATH, back_to, desk_page, desk_route, posted
from subscribers.desk.readers import DESK_SOURCE
from subscribers.fields import BadInput, refuse_line_breaks

BASE = f"{DESK_PATH}/audience"
N_ = language.N_


def _lists(session: Session) -> tuple[list[tuple[topics.TopicView, int]], list[tuple[str, int]]]:
    return topics.topic_counts(session), tags.tag_counts(session)


async def _page(request: Request, account: SignedIn, error: str = "", form: dict[str, str] | None = None) -> Response:
    found_topics, found_tags = await context_of(request).run(_lists)
    return desk_page(
        request,
        account,
        "desk/audience.html",
        422 if error else 200,
        section="audience",
        topics=found_topics,
        tags=found_tags,
        error=error,
        form=form or {},
    )


@desk_route
async def audience_page(request: Request, account: SignedIn) -> Response:
    return await _page(request, account)


@desk_route
async def define_topic(request: Request, account: SignedIn) -> Response:
    form = await posted(request)
    key, name, description = form.get("key", ""), form.get("name", ""), form.get("description", "")
    try:
        refuse_line_breaks(key, name, description)
        topic = await context_of(request).run(
            lambda session: topics.define_topic(
                session, key, name, description, source=DESK_SOURCE, actor=account.email
            )
        )
    except (BadInput, topics.InvalidTopic) as error:
        return await _page(request, account, str(error), form)
    notice = gettext(request, N_("Topic %(key)s is “%(name)s”.")) % {"key": topic.key, "name": topic.name}
    return back_to(request, BASE, notice)


@desk_route
async def remove_topic(request: Request, account: SignedIn) -> Response:
    key = request.path_params["key"]
    await context_of(request).run(
        lambda session: topics.remove_topic(session, key, source=DESK_SOURCE, actor=account.email)
    )
    notice = gettext(request, N_("Topic %(key)s removed, with every reader's choice of it.")) % {"key": key}
    return back_to(request, BASE, notice)


@desk_route
async def remove_tag(request: Request, account: SignedIn) -> Response:
    tag = (await posted(request)).get("tag", "")
    try:
        carrying = await context_of(request).run(
            lambda session: tags.remove_tag(session, tag, source=DESK_SOURCE, actor=account.email)
        )
    except tags.InvalidTag as error:
        return await _page(request, account, str(error))
    # English has a plural, Chinese none: both messages have the same translation.
    if carrying == 1:
        message = N_("Tag %(tag)s taken off %(count)s subscriber.")
    else:
        message = N_("Tag %(tag)s taken off %(count)s subscribers.")
    return back_to(request, BASE, gettext(request, message) % {"tag": tag, "count": f"{carrying:,}"})


routes = [
    Route(BASE, audience_page, methods=["GET"]),
    Route(f"{BASE}/topics", define_topic, methods=["POST"]),
    Route(BASE + "/topics/{key}/remove", remove_topic, methods=["POST"]),
    Route(f"{BASE}/tags/remove", remove_tag, methods=["POST"]),
]
