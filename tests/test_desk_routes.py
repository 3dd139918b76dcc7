"""Every route of the desk and the API: refused without a session or token, refused to viewers when it changes
something, refused without the CSRF token; found by walking the app's routes, so a new route is covered."""

from __future__ import annotations

import re

import pytest
from httpx import AsyncClient
from sqlalchemy import Engine
from starlette.routing import Route

from newsletter import database
from newsletter.models import AccountRole, Issue, IssueStatus
from newsletter.subscriptions import add_subscriber
from tests.deskflow import VIEWER, api_token, make_account, sign_in
from tests.webflow import hidden

pytestmark = pytest.mark.anyio
PUBLIC = {"/admin/sign-in", "/api/v1/openapi.json"}
VALUES = {"id": "1", "slug": "spring", "tag": "vip", "key": "weekly"}


def desk_routes(client: AsyncClient) -> list[tuple[str, str]]:
    """(method, path) of every desk and API route, with its parameters filled in."""
    app = client._transport.app  # type: ignore[attr-defined]
    found = []
    for route in app.routes:
        if isinstance(route, Route) and route.path.startswith(("/admin", "/api")) and route.path not in PUBLIC:
            path = re.sub(r"\{(\w+)(:\w+)?\}", lambda match: VALUES[match.group(1)], route.path)
            found += [(method, path) for method in sorted(route.methods or ()) if method != "HEAD"]
    return found


@pytest.fixture
def stored(engine: Engine) -> None:
    make_account(engine)
    with database.transaction(engine) as session:
        add_subscriber(session, "reader@example.org")
        session.add(
            Issue(
                slug="spring",
                subject="Spring",
                source_text="# Spring",
                source_hash="0" * 64,
                html="<p>x</p>",
                text="x",
                status=IssueStatus.DRAFT,
                web_html="<p>x</p>",
            )
        )


async def test_routes_are_found(client: AsyncClient) -> None:
    methods = {method for method, _path in desk_routes(client)}
    assert len(desk_routes(client)) > 30 and methods >= {"GET", "POST", "PATCH", "DELETE"}


async def test_nothing_without_a_session_or_token(client: AsyncClient, stored: None) -> None:
    for method, path in desk_routes(client):
        answer = await client.request(method, path)
        if path.startswith("/api"):
            assert answer.status_code == 401, (method, path)
        elif method == "GET":
            assert answer.status_code == 303 and answer.headers["location"].startswith("/admin/sign-in"), path
        else:  # signing out needs no session, only the form's token
            assert answer.status_code == (403 if path == "/admin/sign-out" else 401), (method, path)


async def test_no_post_without_the_csrf_token(client: AsyncClient, stored: None) -> None:
    await sign_in(client)
    for method, path in desk_routes(client):
        if method == "POST" and path.startswith("/admin"):
            assert (await client.post(path, data={"csrf_token": "forged"})).status_code == 403, path


async def test_a_viewer_changes_nothing(client: AsyncClient, engine: Engine, stored: None) -> None:
    make_account(engine, VIEWER, AccountRole.VIEWER)
    token = api_token(engine, VIEWER)
    await sign_in(client, VIEWER)
    csrf = hidden((await client.get("/admin")).text, "csrf_token")
    for method, path in desk_routes(client):
        if method == "GET":
            assert (await client.get(path, headers={"authorization": f"Bearer {token}"})).status_code < 500, path
        elif path.startswith("/api"):
            answer = await client.request(method, path, json={}, headers={"authorization": f"Bearer {token}"})
            assert answer.status_code == 403, (method, path)
        elif path != "/admin/sign-out":
            assert (await client.post(path, data={"csrf_token": csrf})).status_code == 403, path


DESK_NAVIGATION = '<nav aria-label="Desk">'


async def test_desk_errors_keep_the_desk_around_them(client: AsyncClient, stored: None, engine: Engine) -> None:
    await sign_in(client)
    cases = [("GET", "/admin/nothing", 404), ("GET", "/admin/subscribers/999", 404), ("DELETE", "/admin/sign-in", 405)]
    for method, path, status in cases:
        answer = await client.request(method, path)
        assert answer.status_code == status, path
        assert DESK_NAVIGATION in answer.text and "editor@example.org" in answer.text, path
        assert '<a href="/admin">Back to the dashboard</a>' in answer.text, path
        assert '<html lang="en">' in answer.text and answer.headers["content-language"] == "en", path
        chinese = await client.request(method, path, headers={"accept-language": "zh-CN"})
        assert chinese.status_code == status, path
        assert '<nav aria-label="编辑台">' in chinese.text and "editor@example.org" in chinese.text, path
        assert '<a href="/admin">返回概览</a>' in chinese.text, path  # the editor's language, as every desk page
        assert '<html lang="zh-CN">' in chinese.text and chinese.headers["content-language"] == "zh-CN", path
    assert "这个地址没有页面" in (await client.get("/admin/nothing", headers={"accept-language": "zh-CN"})).text


async def test_a_viewer_refused_sees_the_desk(client: AsyncClient, stored: None, engine: Engine) -> None:
    make_account(engine, VIEWER, AccountRole.VIEWER)
    await sign_in(client, VIEWER)
    page = await client.get("/admin/subscribers/1")
    answer = await client.post("/admin/subscribers/1/unsubscribe", data={"csrf_token": hidden(page.text, "csrf_token")})
    assert answer.status_code == 403 and DESK_NAVIGATION in answer.text and VIEWER in answer.text


async def test_a_desk_error_without_a_session_points_to_sign_in(client: AsyncClient) -> None:
    answer = await client.delete("/admin/sign-in")
    assert answer.status_code == 405 and DESK_NAVIGATION not in answer.text
    assert '<a href="/admin/sign-in">Sign in to the desk</a>' in answer.text


async def test_a_readers_404_stays_the_readers(client: AsyncClient) -> None:
    answer = await client.get("/nothing", headers={"accept-language": "zh-CN"})
    assert answer.status_code == 404 and DESK_NAVIGATION not in answer.text and "页面不存在" in answer.text
