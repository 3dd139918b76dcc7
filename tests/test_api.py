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


async def test_topics_defined_renamed_listed_and_removed(
    client: AsyncClient, editor_token: str, engine: Engine
) -> None:
    headers = bearer(editor_token)
    created = await client.put("/api/v1/topics/weekly", json={"name": "每周精选"}, headers=headers)
    assert created.status_code == 200, created.text
    assert created.json() == {"key": "weekly", "name": "每周精选", "description": "", "subscribers": 0}
    renamed = await client.put(
        "/api/v1/topics/weekly", json={"name": "Weekly\r\nBcc: x", "description": "Fridays"}, headers=headers
    )
    assert renamed.json()["name"] == "Weekly Bcc: x" and renamed.json()["description"] == "Fridays"
    assert [item["key"] for item in (await client.get("/api/v1/topics", headers=headers)).json()["items"]] == ["weekly"]
    assert (await client.delete("/api/v1/topics/weekly", headers=headers)).status_code == 204
    assert (await client.get("/api/v1/topics", headers=headers)).json() == {"items": []}
    with database.transaction(engine) as session:
        kinds = [event.kind for event in session.query(Event).filter_by(actor=EDITOR).order_by(Event.id)]
    assert kinds == ["topic_defined", "topic_defined", "topic_removed"]


async def test_topic_errors_have_their_status(client: AsyncClient, editor_token: str) -> None:
    headers = bearer(editor_token)
    assert (await client.delete("/api/v1/topics/never", headers=headers)).status_code == 404
    assert (await client.put("/api/v1/topics/Not%20a%20key", json={"name": "x"}, headers=headers)).status_code == 422
    assert (await client.put("/api/v1/topics/weekly", json={"name": "x" * 201}, headers=headers)).status_code == 422
    assert (await client.put("/api/v1/topics/weekly", json={}, headers=headers)).status_code == 422
    unknown = await client.put("/api/v1/topics/weekly", json={"name": "x", "colour": "red"}, headers=headers)
    assert unknown.status_code == 422 and unknown.json()["status"] == 422


async def test_a_subscribers_topics_are_read_and_set(client: AsyncClient, editor_token: str, engine: Engine) -> None:
    headers = bearer(editor_token)
    for key in ("weekly", "daily"):
        await client.put(f"/api/v1/topics/{key}", json={"name": key.title()}, headers=headers)
    created = (await client.post("/api/v1/subscribers", json={"email": "t@example.org"}, headers=headers)).json()
    assert created["topics"] == []
    path = f"/api/v1/subscribers/{created['id']}"
    changed = await client.patch(path, json={"topics": ["daily", "weekly"]}, headers=headers)
    assert changed.status_code == 200 and changed.json()["topics"] == ["weekly", "daily"]
    assert (await client.get(path, headers=headers)).json()["topics"] == ["weekly", "daily"]
    refused = await client.patch(path, json={"topics": ["weekly", "nonesuch"]}, headers=headers)
    assert refused.status_code == 422 and "nonesuch" in refused.json()["error"]
    assert (await client.get(path, headers=headers)).json()["topics"] == ["weekly", "daily"]  # nothing half-done
    counts = {
        item["key"]: item["subscribers"]
        for item in (await client.get("/api/v1/topics", headers=headers)).json()["items"]
    }
    assert counts == {"weekly": 1, "daily": 1}
    with database.transaction(engine) as session:
        [event] = session.query(Event).filter_by(subscriber_id=created["id"], kind="edited").all()
        assert event.actor == EDITOR and event.payload == {"topics": ["weekly", "daily"]}


async def test_tags_created_on_subscribers_and_deleted(client: AsyncClient, editor_token: str, engine: Engine) -> None:
    headers = bearer(editor_token)
    with database.transaction(engine) as session:
        ids = [add_subscriber(session, f"t{number}@example.org").id for number in range(3)]
    created = await client.post("/api/v1/tags", json={"tag": " spring  2027 ", "subscribers": ids[:2]}, headers=headers)
    assert created.status_code == 201 and created.json() == {"tag": "spring 2027", "subscribers": 2}
    again = await client.post("/api/v1/tags", json={"tag": "spring 2027", "subscribers": ids}, headers=headers)
    assert again.json() == {"tag": "spring 2027", "subscribers": 3}
    listed = (await client.get("/api/v1/tags", headers=headers)).json()
    assert listed == {"items": [{"tag": "spring 2027", "subscribers": 3}]}
    assert (await client.delete("/api/v1/tags/spring%202027", headers=headers)).status_code == 204
    assert (await client.get("/api/v1/tags", headers=headers)).json() == {"items": []}
    with database.transaction(engine) as session:
        kinds = [event.kind for event in session.query(Event).filter_by(actor=EDITOR).order_by(Event.id)]
    assert kinds == ["tagged", "tagged", "tag_removed"]


async def test_tag_errors_have_their_status(client: AsyncClient, editor_token: str, engine: Engine) -> None:
    headers = bearer(editor_token)
    with database.transaction(engine) as session:
        subscriber_id = add_subscriber(session, "t@example.org").id
    cases = [
        ({"tag": "a", "subscribers": [subscriber_id, 999]}, 404),
        ({"tag": "a", "subscribers": [2**63]}, 422),
        ({"tag": "a", "subscribers": []}, 422),
        ({"tag": "a,b", "subscribers": [subscriber_id]}, 422),
        ({"tag": " ", "subscribers": [subscriber_id]}, 422),
        ({"tag": "a"}, 422),
    ]
    for body, status in cases:
        answer = await client.post("/api/v1/tags", json=body, headers=headers)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["status"] == status
    assert (await client.get("/api/v1/tags", headers=headers)).json() == {"items": []}  # the 404 tagged nobody
    assert (await client.delete("/api/v1/tags/nobody-has-it", headers=headers)).status_code == 404


async def test_a_viewer_token_cannot_change_topics_or_tags(client: AsyncClient, viewer_token: str) -> None:
    headers = bearer(viewer_token)
    assert (await client.get("/api/v1/topics", headers=headers)).status_code == 200
    assert (await client.put("/api/v1/topics/weekly", json={"name": "W"}, headers=headers)).status_code == 403
    assert (await client.delete("/api/v1/topics/weekly", headers=headers)).status_code == 403
    assert (
        await client.post("/api/v1/tags", json={"tag": "a", "subscribers": [1]}, headers=headers)
    ).status_code == 403
    assert (await client.delete("/api/v1/tags/a", headers=headers)).status_code == 403
