"""Flow helpers for the desk tests: make an account, sign in, post a desk form with its CSRF token."""

from __future__ import annotations

import httpx
from httpx import Response
from sqlalchemy import Engine

from newsletter import accounts, database
from newsletter.models import AccountRole
from tests.webflow import hidden

EDITOR = "editor@example.org"
VIEWER = "viewer@example.org"
PASSWORD = "correct horse battery staple"


def make_account(engine: Engine, email: str = EDITOR, role: AccountRole = AccountRole.EDITOR) -> None:
    with database.transaction(engine) as session:
        accounts.add_account(session, email, PASSWORD, role)


def api_token(engine: Engine, email: str = EDITOR) -> str:
    with database.transaction(engine) as session:
        return accounts.new_token(session, email)


async def sign_in(client: httpx.AsyncClient, email: str = EDITOR, password: str = PASSWORD) -> Response:
    """Open the sign-in page and post it, as a person does."""
    form = await client.get("/admin/sign-in")
    assert form.status_code == 200, form.text
    data = {"email": email, "password": password, "csrf_token": hidden(form.text, "csrf_token"), "next": "/admin"}
    return await client.post("/admin/sign-in", data=data)


async def post_form(client: httpx.AsyncClient, page_path: str, action: str, **fields: str) -> Response:
    """GET a desk page, then post `fields` to `action` with the page's CSRF token."""
    page = await client.get(page_path)
    assert page.status_code == 200, page.text
    return await client.post(action, data={"csrf_token": hidden(page.text, "csrf_token"), **fields})
