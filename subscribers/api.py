"""The JSON API under /api/v1: subscribers, tags and issues for scripts, with per-account bearer tokens."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from newsletter import accounts, directory, ledger, optin, overview, subscriptions, tags, topics
from newsletter.accounts import SignedIn
from newsletter.confirmation import store_confirmation
from newsletter.errors import NewsletterError
from newsletter.models import Subscriber, SubscriberSource, SubscriberStatus
from subscribers.context import client_ip, context_of
from subscribers.fields import BadInput, language_of, search_of
from subscribers.openapi import LIST_PARAMETERS, check_value, document, validate_body

API_PATH = "/api/v1"
API_SOURCE = "api"
BEARER = "bearer "
API_ISSUES = 100

Handler = Callable[[Request, SignedIn], Awaitable[Response]]


class NotAuthenticated(NewsletterError):
    """A request without a valid bearer token."""


class NotAnEditor(NewsletterError):
    """A viewer's token asked for a change."""


def api_route(handler: Handler, *, change: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """An API endpoint: the bearer token's account; a change needs an editor's."""

    async def endpoint(request: Request) -> Response:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith(BEARER):
            raise NotAuthenticated("send an API token as `Authorization: Bearer TOKEN` (`newsletter users token`)")
        account = await context_of(request).run(accounts.token_account, header[len(BEARER) :].strip())
        if account is None:
            raise NotAuthenticated("this API token is not valid (revoked, or mistyped)")
        if change and not account.is_editor:
            raise NotAnEditor("this token belongs to a viewer: it can read everything but change nothing")
        return await handler(request, account)

    return endpoint


async def openapi(request: Request) -> Response:
    return JSONResponse(document(context_of(request).settings.base_url))


def subscriber_json(session: Session, subscriber: Subscriber) -> dict[str, Any]:
    return {
        "id": subscriber.id,
        "email": subscriber.email,
        "name": subscriber.name,
        "status": subscriber.status,
        "source": subscriber.source,
        "language": subscriber.language,
        "tags": tags.tags_of(session, subscriber.id),
        "topics": topics.chosen_topics(session, subscriber.id),
        "created_at": subscriber.created_at.isoformat(),
        "confirmed_at": subscriber.confirmed_at.isoformat() if subscriber.confirmed_at else None,
        "unsubscribed_at": subscriber.unsubscribed_at.isoformat() if subscriber.unsubscribed_at else None,
    }


async def _body(request: Request, schema: str) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadInput("the body is not JSON") from None
    except RecursionError:  # nested deeper than any subscriber could be; the decoder gives up, cleanly
        raise BadInput("the body is nested too deeply") from None
    validate_body(schema, data)
    assert isinstance(data, dict)
    return data


def summary_json(summary: overview.IssueSummary) -> dict[str, Any]:
    return {
        "slug": summary.slug,
        "subject": summary.subject,
        "status": summary.status,
        "sent_at": summary.sent_at.isoformat() if summary.sent_at else None,
        "deliveries": {
            "sent": summary.sent,
            "unfinished": summary.unfinished,
            "failed": summary.failed,
            "bounced": summary.bounced,
        },
        "complained": summary.complained,
        "unsubscribed_after": summary.unsubscribed_after,
    }


def _checked_query(params: dict[str, str]) -> dict[str, str]:
    """The list's query parameters, each checked against the OpenAPI document (the desk forgives; the API says)."""
    for parameter in LIST_PARAMETERS:
        name, schema = parameter["name"], parameter["schema"]
        if name not in params:
            continue
        value = params[name]
        if schema["type"] == "integer":
            if not value.isdigit() or not schema["minimum"] <= int(value) <= schema["maximum"]:
                raise BadInput(f"{name!r} must be a whole number from {schema['minimum']} to {schema['maximum']}")
        elif schema.get("format") == "date":
            try:
                dt.date.fromisoformat(value)
            except ValueError:
                raise BadInput(f"{name!r} must be a date as YYYY-MM-DD") from None
        else:
            check_value(schema, value, repr(name))
    return params


async def list_subscribers(request: Request, account: SignedIn) -> Response:
    params = _checked_query(dict(request.query_params))
    wanted = search_of(params)
    found = await context_of(request).run(directory.search, wanted, params.get("after") or None)
    items = [
        {
            "id": row.id,
            "email": row.email,
            "name": row.name,
            "status": row.status,
            "source": row.source,
            "created_at": row.created_at.isoformat(),
        }
        for row in found.rows
    ]
    return JSONResponse({"items": items, "next": found.next_cursor})


async def create_subscriber(request: Request, account: SignedIn) -> Response:
    context = context_of(request)
    body = await _body(request, "SubscriberCreate")
    new_tags = _tags(body.get("tags", []))
    language = _language(body.get("language"))
    if body.get("double_opt_in", False):
        ip = client_ip(request)

        def _invite(session: Session) -> tuple[dict[str, Any], int | None]:
            confirmation = optin.subscribe(
                session, context.settings, body["email"], body.get("name"), ip, language=language or None
            )
            outbound = store_confirmation(session, context.settings, context.signer, confirmation)
            subscriber = subscriptions.get_subscriber(session, body["email"])
            tags.add_tags(session, [subscriber.id], new_tags)
            return subscriber_json(session, subscriber), outbound

        created, outbound_id = await context.run(_invite)
        await context.send(outbound_id)
        return JSONResponse(created, status_code=202)

    def _add(session: Session) -> dict[str, Any]:
        subscriber = subscriptions.add_subscriber(
            session,
            body["email"],
            body.get("name"),
            SubscriberStatus(body.get("status", "active")),
            SubscriberSource.API,
            actor=account.email,
        )
        subscriber.language = language or None
        tags.add_tags(session, [subscriber.id], new_tags)
        return subscriber_json(session, subscriber)

    return JSONResponse(await context.run(_add), status_code=201)


def _tags(values: list[str]) -> list[str]:
    try:
        return [tags.clean_tag(value) for value in values]
    except tags.InvalidTag as error:
        raise BadInput(str(error)) from None


def _language(value: str | None) -> str:
    return language_of(value or "")


async def get_subscriber(request: Request, account: SignedIn) -> Response:
    subscriber_id = request.path_params["id"]
    return JSONResponse(
        await context_of(request).run(
            lambda session: subscriber_json(session, directory.get_by_id(session, subscriber_id))
        )
    )


async def update_subscriber(request: Request, account: SignedIn) -> Response:
    subscriber_id = request.path_params["id"]
    body = await _body(request, "SubscriberUpdate")
    new_tags = _tags(body["tags"]) if "tags" in body else None
    language = _language(body["language"]) if "language" in body else None
    new_topics = list(body["topics"]) if "topics" in body else None

    def _update(session: Session) -> dict[str, Any]:
        subscriber = directory.edit(
            session,
            subscriber_id,
            name=(body.get("name") or "") if "name" in body else None,
            language=language,
            tags=new_tags,
            topics=new_topics,
            source=API_SOURCE,
            actor=account.email,
        )
        return subscriber_json(session, subscriber)

    return JSONResponse(await context_of(request).run(_update))


async def unsubscribe_subscriber(request: Request, account: SignedIn) -> Response:
    subscriber_id = request.path_params["id"]

    def _unsubscribe(session: Session) -> dict[str, Any]:
        subscriber = directory.get_by_id(session, subscriber_id)
        if not subscriptions.is_forgotten(subscriber):  # an erased row is unsubscribed for good already
            subscriptions.unsubscribe(session, subscriber.email, API_SOURCE, actor=account.email)
        return subscriber_json(session, subscriber)

    return JSONResponse(await context_of(request).run(_unsubscribe))


async def delete_subscriber(request: Request, account: SignedIn) -> Response:
    subscriber_id = request.path_params["id"]

    def _forget(session: Session) -> None:
        subscriber = directory.get_by_id(session, subscriber_id)
        if not subscriptions.is_forgotten(subscriber):
            subscriptions.forget(session, subscriber.email, API_SOURCE, actor=account.email)

    await context_of(request).run(_forget)
    return Response(status_code=204)


async def list_tags(request: Request, account: SignedIn) -> Response:
    counts = await context_of(request).run(tags.tag_counts)
    return JSONResponse({"items": [{"tag": tag, "subscribers": count} for tag, count in counts]})


async def create_tag(request: Request, account: SignedIn) -> Response:
    body = await _body(request, "TagCreate")
    [tag] = _tags([body["tag"]])
    carrying = await context_of(request).run(
        lambda session: tags.tag_subscribers(session, body["subscribers"], tag, source=API_SOURCE, actor=account.email)
    )
    return JSONResponse({"tag": tag, "subscribers": carrying}, status_code=201)


async def delete_tag(request: Request, account: SignedIn) -> Response:
    [tag] = _tags([request.path_params["tag"]])
    await context_of(request).run(lambda session: tags.remove_tag(session, tag, source=API_SOURCE, actor=account.email))
    return Response(status_code=204)


def topic_json(topic: topics.TopicView, readers: int) -> dict[str, Any]:
    return {"key": topic.key, "name": topic.name, "description": topic.description, "subscribers": readers}


async def list_topics(request: Request, account: SignedIn) -> Response:
    found = await context_of(request).run(topics.topic_counts)
    return JSONResponse({"items": [topic_json(topic, readers) for topic, readers in found]})


async def define_topic(request: Request, account: SignedIn) -> Response:
    key = request.path_params["key"]
    body = await _body(request, "TopicDefine")

    def _define(session: Session) -> dict[str, Any]:
        topic = topics.define_topic(
            session, key, body["name"], body.get("description", ""), source=API_SOURCE, actor=account.email
        )
        readers = dict((view.key, count) for view, count in topics.topic_counts(session))
        return topic_json(topic, readers[topic.key])

    return JSONResponse(await context_of(request).run(_define))


async def delete_topic(request: Request, account: SignedIn) -> Response:
    key = request.path_params["key"]
    await context_of(request).run(
        lambda session: topics.remove_topic(session, key, source=API_SOURCE, actor=account.email)
    )
    return Response(status_code=204)


async def list_issues(request: Request, account: SignedIn) -> Response:
    found = await context_of(request).run(overview.issue_summaries, API_ISSUES)
    return JSONResponse({"items": [summary_json(summary) for summary in found]})


async def get_issue(request: Request, account: SignedIn) -> Response:
    slug = request.path_params["slug"]

    def _issue(session: Session) -> dict[str, Any]:
        issue = ledger.find_issue(session, slug)
        return summary_json(overview.summary(session, issue))

    return JSONResponse(await context_of(request).run(_issue))


routes = [
    Route(f"{API_PATH}/openapi.json", openapi, methods=["GET"]),
    Route(f"{API_PATH}/subscribers", api_route(list_subscribers), methods=["GET"]),
    Route(f"{API_PATH}/subscribers", api_route(create_subscriber, change=True), methods=["POST"]),
    Route(API_PATH + "/subscribers/{id:int}", api_route(get_subscriber), methods=["GET"]),
    Route(API_PATH + "/subscribers/{id:int}", api_route(update_subscriber, change=True), methods=["PATCH"]),
    Route(API_PATH + "/subscribers/{id:int}", api_route(delete_subscriber, change=True), methods=["DELETE"]),
    Route(
        API_PATH + "/subscribers/{id:int}/unsubscribe", api_route(unsubscribe_subscriber, change=True), methods=["POST"]
    ),
    Route(f"{API_PATH}/tags", api_route(list_tags), methods=["GET"]),
    Route(f"{API_PATH}/tags", api_route(create_tag, change=True), methods=["POST"]),
    Route(API_PATH + "/tags/{tag:path}", api_route(delete_tag, change=True), methods=["DELETE"]),
    Route(f"{API_PATH}/topics", api_route(list_topics), methods=["GET"]),
    Route(API_PATH + "/topics/{key}", api_route(define_topic, change=True), methods=["PUT"]),
    Route(API_PATH + "/topics/{key}", api_route(delete_topic, change=True), methods=["DELETE"]),
    Route(f"{API_PATH}/issues", api_route(list_issues), methods=["GET"]),
    Route(API_PATH + "/issues/{slug}", api_route(get_issue), methods=["GET"]),
]
