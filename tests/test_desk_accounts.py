"""Accounts and sessions of the editor's desk: the CLI, signing in, cookies, CSRF, limits, roles."""

from __future__ import annotations

import datetime as dt

import pytest
from click.testing import CliRunner
from httpx import AsyncClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from newsletter import accounts, database
from newsletter.cli import main
from newsletter.models import Account, AccountRole
from newsletter.settings import Settings
from tests.deskflow import EDITOR, PASSWORD, VIEWER, make_account, post_form, sign_in
from tests.webflow import hidden

pytestmark = pytest.mark.anyio


def test_add_account_hashes_with_argon2(session: Session) -> None:
    accounts.add_account(session, "Editor@Example.org", PASSWORD)
    stored = session.query(Account).one()
    assert stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash


def test_short_password_is_refused(session: Session) -> None:
    with pytest.raises(accounts.WeakPassword):
        accounts.add_account(session, EDITOR, "short")


def test_second_account_with_same_address_is_refused(session: Session) -> None:
    accounts.add_account(session, EDITOR, PASSWORD)
    with pytest.raises(accounts.AccountExists):
        accounts.add_account(session, "EDITOR@example.org", PASSWORD)


def test_sign_in_matches_password(session: Session, settings: Settings) -> None:
    accounts.add_account(session, EDITOR, PASSWORD)
    assert accounts.sign_in(session, settings.secret_key, EDITOR, PASSWORD, "10.0.0.1") is not None
    assert accounts.sign_in(session, settings.secret_key, EDITOR, "wrong password!", "10.0.0.1") is None
    assert accounts.sign_in(session, settings.secret_key, "nobody@example.org", PASSWORD, "10.0.0.1") is None


def test_failed_sign_ins_are_limited_per_account(session: Session, settings: Settings) -> None:
    accounts.add_account(session, EDITOR, PASSWORD)
    for number in range(accounts.SIGN_IN_FAILURES_PER_ACCOUNT):
        accounts.sign_in(session, settings.secret_key, EDITOR, "wrong password!", f"10.0.0.{number}")
    with pytest.raises(accounts.TooManySignIns):
        accounts.sign_in(session, settings.secret_key, EDITOR, PASSWORD, "10.0.1.1")


def test_failed_sign_ins_are_limited_per_ip(session: Session, settings: Settings) -> None:
    for number in range(accounts.SIGN_IN_FAILURES_PER_IP):
        accounts.sign_in(session, settings.secret_key, f"guess{number}@example.org", "wrong password!", "10.0.0.9")
    accounts.add_account(session, EDITOR, PASSWORD)
    with pytest.raises(accounts.TooManySignIns):
        accounts.sign_in(session, settings.secret_key, EDITOR, PASSWORD, "10.0.0.9")
    assert accounts.sign_in(session, settings.secret_key, EDITOR, PASSWORD, "10.0.0.10") is not None


def test_new_password_ends_sessions(session: Session) -> None:
    account = accounts.add_account(session, EDITOR, PASSWORD)
    accounts.set_password(session, EDITOR, "another long password")
    assert accounts.session_account(session, account.id, account.session_version) is None


def test_token_names_its_account(session: Session) -> None:
    accounts.add_account(session, EDITOR, PASSWORD, AccountRole.VIEWER)
    token = accounts.new_token(session, EDITOR)
    found = accounts.token_account(session, token)
    assert found is not None and found.email == EDITOR and not found.is_editor
    assert accounts.token_account(session, token + "x") is None
    assert accounts.revoke_tokens(session, EDITOR) == 1
    assert accounts.token_account(session, token) is None


def _cli(settings: Settings, *args: str, stdin: str = "") -> tuple[int, str]:
    env = {"NEWSLETTER_DATABASE_URL": settings.database_url, "NEWSLETTER_SECRET_KEY": settings.secret_key}
    result = CliRunner().invoke(main, list(args), input=stdin, env=env)
    return result.exit_code, result.output


def test_cli_users_add_list_passwd_token_remove(settings: Settings, engine: Engine) -> None:
    code, output = _cli(settings, "users", "add", EDITOR, stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert code == 0, output
    code, output = _cli(settings, "users", "add", VIEWER, "--role", "viewer", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert code == 0, output
    code, output = _cli(settings, "users", "list")
    assert EDITOR in output and "viewer" in output
    code, output = _cli(settings, "users", "token", EDITOR)
    assert code == 0 and output.strip().splitlines()[-1].startswith(accounts.TOKEN_PREFIX)
    code, output = _cli(settings, "users", "passwd", EDITOR, stdin="a new long password\na new long password\n")
    assert code == 0, output
    code, output = _cli(settings, "users", "remove", VIEWER)
    assert code == 0
    with database.transaction(engine) as session:
        assert [account.email for account in accounts.list_accounts(session)] == [EDITOR]


def test_cli_password_lines_must_match(settings: Settings, engine: Engine) -> None:
    code, output = _cli(settings, "users", "add", EDITOR, stdin=f"{PASSWORD}\nsomething else entirely\n")
    assert code == 1 and "differ" in output


async def test_admin_without_accounts_says_how_to_make_one(client: AsyncClient) -> None:
    page = await client.get("/admin")
    assert page.status_code == 200
    assert "newsletter users add" in page.text


async def test_admin_redirects_to_sign_in(client: AsyncClient, engine: Engine) -> None:
    make_account(engine)
    page = await client.get("/admin/subscribers")
    assert page.status_code == 303
    assert page.headers["location"].startswith("/admin/sign-in?next=%2Fadmin%2Fsubscribers")


async def test_sign_in_sets_a_safe_session_cookie(client: AsyncClient, engine: Engine) -> None:
    make_account(engine)
    answer = await sign_in(client)
    assert answer.status_code == 303 and answer.headers["location"] == "/admin"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" in cookie and "max-age=43200" in cookie
    dashboard = await client.get("/admin")
    assert dashboard.status_code == 200 and "Dashboard" in dashboard.text and EDITOR in dashboard.text


async def test_wrong_password_is_refused(client: AsyncClient, engine: Engine) -> None:
    make_account(engine)
    answer = await sign_in(client, password="not the password")
    assert answer.status_code == 401 and "do not match" in answer.text


async def test_sign_in_without_csrf_token_is_refused(client: AsyncClient, engine: Engine) -> None:
    make_account(engine)
    answer = await client.post("/admin/sign-in", data={"email": EDITOR, "password": PASSWORD})
    assert answer.status_code == 403


async def test_tampered_session_cookie_is_refused(client: AsyncClient, engine: Engine) -> None:
    make_account(engine)
    await sign_in(client)
    value = client.cookies.get("newsletter_desk", path="/admin")
    assert value
    client.cookies.set("newsletter_desk", value[:-2] + "xx", domain="news.example.org", path="/admin")
    assert (await client.get("/admin")).status_code == 303


async def test_sign_out_ends_the_session(client: AsyncClient, engine: Engine) -> None:
    make_account(engine)
    await sign_in(client)
    answer = await post_form(client, "/admin", "/admin/sign-out")
    assert answer.status_code == 303
    assert (await client.get("/admin")).status_code == 303


async def test_next_never_leaves_the_desk(client: AsyncClient, engine: Engine) -> None:
    make_account(engine)
    form = await client.get("/admin/sign-in")
    for target in ("//evil.example", "https://evil.example/admin", "/admin\\evil", "/\\evil"):
        data = {"email": EDITOR, "password": PASSWORD, "csrf_token": hidden(form.text, "csrf_token"), "next": target}
        answer = await client.post("/admin/sign-in", data=data)
        assert answer.headers["location"] in ("/admin", target) and answer.headers["location"].startswith("/admin")


async def test_too_many_failures_answer_429(client: AsyncClient, engine: Engine) -> None:
    make_account(engine)
    for _ in range(accounts.SIGN_IN_FAILURES_PER_ACCOUNT):
        await sign_in(client, password="not the password")
    answer = await sign_in(client)
    assert answer.status_code == 429
    minutes = accounts.SIGN_IN_WINDOW_SECONDS // 60
    assert f"Too many failed sign-ins: wait {minutes} minutes and try again." in answer.text
    client.headers["accept-language"] = "zh-CN"
    chinese = await sign_in(client)
    assert chinese.status_code == 429 and f"登录失败次数过多：请等待 {minutes} 分钟后再试。" in chinese.text


async def test_viewer_cannot_post(client: AsyncClient, engine: Engine) -> None:
    make_account(engine, VIEWER, AccountRole.VIEWER)
    await sign_in(client, VIEWER)
    assert (await client.get("/admin")).status_code == 200
    answer = await post_form(client, "/admin/subscribers", "/admin/subscribers/new", email="x@example.org")
    assert answer.status_code == 403 and "viewer" in answer.text


def test_session_expires(settings: Settings) -> None:
    from subscribers.desk.guard import DeskSessions

    sessions = DeskSessions(settings.secret_key, 60, True)
    assert sessions.max_age_seconds == 60
    assert dt.timedelta(seconds=sessions.max_age_seconds) < dt.timedelta(hours=1)
