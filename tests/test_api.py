"""The JSON API: bearer tokens, roles, subscribers, tags and issues; errors as JSON with the right status."""

from __future__ import annotations

import pytest
from httpx import AsyncClient
from sqlalchemy import Engine

from newsletter import database
from newsletter.models import AccountRole, Event, Subscriber, SubscriberStatus
from newsletter.subscriptions import add_subscriber
from tests.deskflow import EDITOR, VIEWER, api_token, make_account

pytestmark = pytest.mark.anyio


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
def editor_token(engine: Engine) -> str:
    make_account(engine)
    return api_token(engine)


@pytest.fixture
def viewer_token(engine: Engine) -> str:
    make_account(engine, VIEWER, AccountRole.VIEWER)
    return api_token(engine, VIEWER)


async def test_openapi_document_is_public(client: AsyncClient) -> None:
    answer = await client.get("/api/v1/openapi.json")
    assert answer.status_code == 200 and answer.json()["openapi"].startswith("3.")
    assert "/subscribers/{id}" in answer.json()["paths"]


async def test_no_token_is_401_json(client: AsyncClient, editor_token: str) -> None:
    for headers in ({}, bearer("nl_wrong"), {"authorization": "Basic abc"}):
        answer = await client.get("/api/v1/subscribers", headers=headers)
        assert answer.status_code == 401
        assert answer.json()["status"] == 401 and answer.headers["www-authenticate"].startswith("Bearer")


async def test_create_read_update_unsubscribe_delete(client: AsyncClient, editor_token: str, engine: Engine) -> None:
    headers = bearer(editor_token)
    created = await client.post(
        "/api/v1/subscribers", json={"email": "New@Example.org", "name": "N", "tags": ["vip"]}, headers=headers
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "active" and body["tags"] == ["vip"] and body["source"] == "api"
    path = f"/api/v1/subscribers/{body['id']}"
    assert (await client.get(path, headers=headers)).json()["email"] == "New@Example.org"
    changed = await client.patch(path, json={"name": "Nora", "language": "zh", "tags": []}, headers=headers)
    assert changed.status_code == 200 and changed.json()["name"] == "Nora" and changed.json()["language"] == "zh-CN"
    assert (await client.post(f"{path}/unsubscribe", headers=headers)).json()["status"] == "unsubscribed"
    assert (await client.delete(path, headers=headers)).status_code == 204
    with database.transaction(engine) as session:
        assert session.get_one(Subscriber, body["id"]).name is None
        assert {event.actor for event in session.query(Event).filter_by(subscriber_id=body["id"])} == {EDITOR}


async def test_double_opt_in_mails_a_confirmation(client: AsyncClient, editor_token: str, queued: list[int]) -> None:
    answer = await client.post(
        "/api/v1/subscribers",
        json={"email": "invited@example.org", "double_opt_in": True},
        headers=bearer(editor_token),
    )
    assert answer.status_code == 202 and answer.json()["status"] == "pending"
    assert len(queued) == 1


async def test_errors_have_their_status(client: AsyncClient, editor_token: str, engine: Engine) -> None:
    headers = bearer(editor_token)
    with database.transaction(engine) as session:
        add_subscriber(session, "taken@example.org")
    cases = [
        ({"email": "taken@example.org"}, 409),
        ({"email": "not an address"}, 422),
        ({"email": "a@example.org", "unknown": 1}, 422),
        ({"email": "a@example.org", "tags": ["a,b"]}, 422),
        ({"email": "a@example.org", "language": "xx-nonsense"}, 422),
        ({"name": "no address"}, 422),
        ([], 422),
    ]
    for body, status in cases:
        answer = await client.post("/api/v1/subscribers", json=body, headers=headers)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["status"] == status
    answer = await client.post("/api/v1/subscribers", content=b"{nope", headers=headers)
    assert answer.status_code == 422
    assert (await client.get("/api/v1/subscribers/99999999999999999999999", headers=headers)).status_code == 404
    assert (await client.get("/api/v1/subscribers?limit=0", headers=headers)).status_code == 422
    assert (await client.get("/api/v1/subscribers?status=gone", headers=headers)).status_code == 422
    assert (await client.get("/api/v1/subscribers?after=xyz", headers=headers)).status_code == 400
    assert (await client.get("/api/v1/issues/none", headers=headers)).status_code == 404
    assert (await client.get("/api/v1/nothing", headers=headers)).json()["status"] == 404


async def test_viewer_token_reads_but_cannot_change(client: AsyncClient, viewer_token: str, engine: Engine) -> None:
    headers = bearer(viewer_token)
    with database.transaction(engine) as session:
        subscriber_id = add_subscriber(session, "a@example.org").id
    assert (await client.get("/api/v1/subscribers", headers=headers)).status_code == 200
    assert (
        await client.post("/api/v1/subscribers", json={"email": "b@example.org"}, headers=headers)
    ).status_code == 403
    assert (await client.delete(f"/api/v1/subscribers/{subscriber_id}", headers=headers)).status_code == 403
    with database.transaction(engine) as session:
        assert session.get_one(Subscriber, subscriber_id).status == SubscriberStatus.ACTIVE


async def test_list_pages_with_next(client: AsyncClient, editor_token: str, engine: Engine) -> None:
    with database.transaction(engine) as session:
        for number in range(5):
            add_subscriber(session, f"r{number}@example.org")
    headers = bearer(editor_token)
    first = (await client.get("/api/v1/subscribers?limit=3&sort=oldest", headers=headers)).json()
    second = (
        await client.get(f"/api/v1/subscribers?limit=3&sort=oldest&after={first['next']}", headers=headers)
    ).json()
    assert [item["email"] for item in first["items"] + second["items"]] == [f"r{n}@example.org" for n in range(5)]
    assert second["next"] is None


async def test_tags_and_issues(client: AsyncClient, editor_token: str) -> None:
    headers = bearer(editor_token)
    await client.post("/api/v1/subscribers", json={"email": "a@example.org", "tags": ["vip"]}, headers=headers)
    assert (await client.get("/api/v1/tags", headers=headers)).json() == {"items": [{"tag": "vip", "subscribers": 1}]}
    assert (await client.get("/api/v1/issues", headers=headers)).json() == {"items": []}


async def test_nul_in_the_url_is_a_json_400(client: AsyncClient, editor_token: str) -> None:
    answer = await client.get("/api/v1/subscribers?q=a%00b", headers=bearer(editor_token))
    assert answer.status_code == 400 and answer.json()["status"] == 400
