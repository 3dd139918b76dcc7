"""The web app under abuse: no input to any route gives a 5xx, and a vanished client logs no traceback."""

from __future__ import annotations

import base64
import itertools
import logging
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import anyio
import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Message, Receive

from newsletter import database, links
from newsletter.models import SubscriberStatus
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber, get_subscriber
from newsletter.tokens import Purpose, Signer
from newsletter.webhooks import json_body
from subscribers.app import create_app
from subscribers.deadlines import http_protocol
from tests.deskflow import api_token, make_account, sign_in
from tests.mailserver import free_port

pytestmark = pytest.mark.anyio

DEPTH = 20_000  # far past Python's recursion limit: a recursive parser must not meet it
NESTED_LIST = b"[" * DEPTH + b"]" * DEPTH
NESTED_OBJECT = b'{"a":' * DEPTH + b"1" + b"}" * DEPTH
FORM = "application/x-www-form-urlencoded"
BODIES: list[tuple[str | None, bytes]] = [
    (None, b""),
    (FORM, b"email=%00%ff&name=" + b"x" * 5000 + b"&csrf_token=forged&List-Unsubscribe=One-Clic"),
    (FORM, b"\xff\xfe\x00\x00=\xc3"),
    ("application/json", NESTED_LIST),
    ("application/json", NESTED_OBJECT),
    ("application/json", b'{"Type": [], "Message": {"a": 1}, "email": 5, "tags": "x", "signature": null, "id": 1e999}'),
    ("application/json", b'["\\ud800", NaN, -Infinity, 1e999999]'),
    ("application/json", b"\xff\xfe not json"),
    ("multipart/form-data; boundary=", b"--\r\n\r\n"),
    ("multipart/form-data", b"garbage"),
    (
        "multipart/form-data; boundary=x",
        b"--x\r\nContent-Disposition: form-data; name=file; filename=a.csv\r\n\r\nhi\r\n--x--",
    ),
    ("text/plain", b"List-Unsubscribe=One-Click"),
    (FORM, b"email=reader%40example.org&name=a%00b&city=%00&q=%00&tag=%00&subject=%00&password=%00"),
    (
        "application/json",
        b'{"email": "nul@example.org", "name": "a\\u0000b", "attributes": {"k\\u0000": "\\u0000"}, '
        b'"tags": ["\\u0000"]}',
    ),
    ("application/x-www-form-urlencoded; charset=klingon", b"a=b"),
]
QUERY = "?cursor=%00%ff&status=weird&q=" + "a" * 3000 + "&limit=99999999999999999999&page=-1&since=never&next=//evil"
HUGE_ID = "9" * 30


def hostile_tokens(signer: Signer) -> list[str]:
    """Tokens cut short or altered, and tokens signed with our key around data of the wrong shape."""
    tokens = ["x", "a" * 3000, "%00", "..%2F..%2Fetc%2Fpasswd", ".eJzT0yMAAGTvBe8", "e30.e30.e30"]
    for purpose, data in itertools.product(
        (Purpose.CONFIRM, Purpose.UNSUBSCRIBE, Purpose.PREFERENCES), ("text", [1, 10**30], 10**30, None)
    ):
        tokens += [signer.dumps(purpose, data), signer.dumps_permanent(purpose, data)]
    return tokens


def hostile_params(route: Route, signer: Signer) -> Iterator[dict[str, str]]:
    names = list(route.param_convertors)
    if not names:
        yield {}
        return
    values: dict[str, list[str]] = {
        "token": hostile_tokens(signer),
        "id": ["0", HUGE_ID],
        "slug": ["x", "%00", "a" * 3000, "..%2F.."],
        "provider": ["ses", "postmark", "sendgrid", "mailgun", "nope"],
    }
    for combination in itertools.product(*(values.get(name, ["x"]) for name in names)):
        yield dict(zip(names, combination, strict=True))


def every_route(routes: list[BaseRoute], prefix: str = "") -> Iterator[Route]:
    for route in routes:
        if isinstance(route, Mount):
            yield from every_route(list(route.routes or []), prefix + route.path)
        elif isinstance(route, Route):
            yield route


def fill(path: str, params: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda match: params[match.group(1)], path)


@pytest.fixture
def hostile_settings(settings: Settings) -> Settings:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return settings.replace(
        signup_min_fill_seconds=0,
        ses_topic_arns="arn:aws:sns:us-east-1:123456789012:bounces",
        postmark_webhook_username="postmark",
        postmark_webhook_password="secret",
        sendgrid_webhook_public_key=base64.b64encode(der).decode(),
        mailgun_webhook_signing_key="mailgun-key",
    )


@pytest.fixture
async def app_client(
    hostile_settings: Settings, any_engine: Engine
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    app = create_app(hostile_settings, any_engine, enqueue=lambda outbound_id: None)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url=hostile_settings.base_url) as client:
        yield app, client


async def answers(client: httpx.AsyncClient, method: str, url: str, content_type: str | None, body: bytes) -> str:
    """ "" when the app answered below 500, else what went wrong."""
    headers = {"content-type": content_type} if content_type else {}
    try:
        response = await client.request(method, url, content=body, headers=headers)
    except Exception as error:  # the app raised: a 500 and a traceback in the server's log
        return f"{method} {url[:120]} [{content_type}]: raised {type(error).__name__}: {str(error)[:200]}"
    if response.status_code >= 500:
        return f"{method} {url[:120]} [{content_type}]: {response.status_code}"
    return ""


async def every_hostile_request(
    app: Starlette, client: httpx.AsyncClient, signer: Signer, headers: dict[str, str]
) -> list[str]:
    client.headers.update(headers)
    problems: list[str] = []
    for route in every_route(list(app.routes)):
        for params in hostile_params(route, signer):
            url = fill(route.path, params)
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                if method == "GET":
                    for suffix in ("", QUERY):
                        problems.append(await answers(client, method, url + suffix, None, b""))
                    continue
                for content_type, body in BODIES:
                    problems.append(await answers(client, method, url, content_type, body))
    return [problem for problem in problems if problem]


async def test_no_input_to_any_route_is_a_server_error(
    app_client: tuple[Starlette, httpx.AsyncClient], hostile_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app, client = app_client
    with caplog.at_level(logging.ERROR):
        problems = await every_hostile_request(app, client, Signer(hostile_settings.secret_key), {})
    assert not problems, "\n".join(problems)
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []


async def test_no_input_from_a_signed_in_editor_is_a_server_error(
    app_client: tuple[Starlette, httpx.AsyncClient], hostile_settings: Settings, any_engine: Engine
) -> None:
    app, client = app_client
    make_account(any_engine)
    assert (await sign_in(client)).status_code in (200, 303)
    headers = {"authorization": f"Bearer {api_token(any_engine)}"}
    problems = await every_hostile_request(app, client, Signer(hostile_settings.secret_key), headers)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/octet-stream", "application/json"])
async def test_one_click_whatever_the_content_type(
    app_client: tuple[Starlette, httpx.AsyncClient],
    hostile_settings: Settings,
    any_engine: Engine,
    content_type: str | None,
) -> None:
    _app, client = app_client
    with database.transaction(any_engine) as session:
        reader_id = add_subscriber(session, "ann@example.org").id
    url = links.unsubscribe_url(hostile_settings, Signer(hostile_settings.secret_key), reader_id)
    headers = {"content-type": content_type} if content_type else {}
    answer = await client.post(url, content=b"List-Unsubscribe=One-Click\r\n", headers=headers)
    assert answer.status_code == 200
    with database.transaction(any_engine) as session:
        assert get_subscriber(session, "ann@example.org").status == SubscriberStatus.UNSUBSCRIBED


async def test_another_body_without_a_form_type_is_no_one_click(
    app_client: tuple[Starlette, httpx.AsyncClient], hostile_settings: Settings, any_engine: Engine
) -> None:
    _app, client = app_client
    with database.transaction(any_engine) as session:
        reader_id = add_subscriber(session, "ann@example.org").id
    url = links.unsubscribe_url(hostile_settings, Signer(hostile_settings.secret_key), reader_id)
    answer = await client.post(url, content=b"List-Unsubscribe=Two-Clicks", headers={"content-type": "text/plain"})
    assert answer.status_code == 403  # no CSRF token: the one-button form it is not either
    with database.transaction(any_engine) as session:
        assert get_subscriber(session, "ann@example.org").status == SubscriberStatus.ACTIVE


async def call(app: Starlette, method: str, path: str, receive: Receive) -> list[Message]:
    """The messages the app sends for one request whose body comes from `receive`."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"news.example.org"), (b"content-type", FORM.encode()), (b"content-length", b"100")],
        "client": ("127.0.0.1", 5000),
        "server": ("news.example.org", 443),
    }
    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("path", ["/subscribe", "/webhooks/mailgun", "/unsubscribe/x", "/api/v1/subscribers"])
async def test_a_client_gone_mid_body_logs_no_traceback(
    app_client: tuple[Starlette, httpx.AsyncClient], caplog: pytest.LogCaptureFixture, path: str
) -> None:
    app, _client = app_client
    messages = iter([{"type": "http.request", "body": b"email=a", "more_body": True}, {"type": "http.disconnect"}])

    async def receive() -> Message:
        return next(messages, {"type": "http.disconnect"})

    with caplog.at_level(logging.INFO):
        await call(app, "POST", path, receive)  # raises, as a traceback would be logged, if not handled
    assert [record for record in caplog.records if record.levelno >= logging.WARNING or record.exc_info] == []


async def test_a_body_that_does_not_arrive_is_answered_408(hostile_settings: Settings, engine: Engine) -> None:
    app = create_app(hostile_settings.replace(request_body_timeout_seconds=0.3), engine)
    parts = iter([{"type": "http.request", "body": b"email=a", "more_body": True}])

    async def receive() -> Message:
        part = next(parts, None)
        if part is None:
            await anyio.sleep(30)  # a slow client: the rest never comes
        return part or {"type": "http.disconnect"}

    with anyio.fail_after(5):
        sent = await call(app, "POST", "/subscribe", receive)
    start = sent[0]
    assert start["status"] == 408
    assert (b"connection", b"close") in start["headers"]


def serve_in_thread(app: Starlette, header_timeout_seconds: float) -> tuple[uvicorn.Server, threading.Thread, int]:
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=http_protocol(header_timeout_seconds),
        lifespan="off",
        log_config=None,
        loop="asyncio",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    return server, thread, port


def test_slow_headers_are_cut_off_and_others_still_served(hostile_settings: Settings, engine: Engine) -> None:
    server, thread, port = serve_in_thread(create_app(hostile_settings, engine), header_timeout_seconds=0.5)
    sockets: list[socket.socket] = []
    try:
        for number in range(100):  # slowloris: many connections, each with half a request head
            connection = socket.create_connection(("127.0.0.1", port), timeout=5)
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" if number % 2 else b"")
            sockets.append(connection)
        time.sleep(1.0)
        answers = [connection.recv(200) for connection in sockets]
        assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers)
        assert all(connection.recv(200) == b"" for connection in sockets)  # and closed
        with socket.create_connection(("127.0.0.1", port), timeout=5) as healthy:
            healthy.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert healthy.recv(200).startswith(b"HTTP/1.1 200")
    finally:
        for connection in sockets:
            connection.close()
        server.should_exit = True
        thread.join(10)


def test_a_head_larger_than_64_kib_is_refused(hostile_settings: Settings, engine: Engine) -> None:
    server, thread, port = serve_in_thread(create_app(hostile_settings, engine), header_timeout_seconds=5)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Filler: " + b"a" * 70_000 + b"\r\n")
            try:
                answer = connection.recv(200)
            except ConnectionResetError:  # closed while the rest of the head was unread: refused all the same
                answer = b"HTTP/1.1 431"
            assert answer.startswith(b"HTTP/1.1 431")  # a server without the cap waits for the head's end instead
    finally:
        server.should_exit = True
        thread.join(10)


def test_webhook_handlers_take_what_the_routes_take() -> None:
    batch = b"[" + b",".join([b'{"event": "processed", "email": "a@example.org"}'] * 60_000) + b"]"
    assert len(batch) > 2 * 1_048_576
    assert len(json_body(batch)) == 60_000


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("/issues/%00", "text/html"),
        ("/unsubscribe/x?y=%00", "text/html"),
        ("/api/v1/subscribers?q=%00", "application/json"),
    ],
)
async def test_a_nul_in_a_url_is_the_error_page_of_its_part_of_the_site(
    app_client: tuple[Starlette, httpx.AsyncClient], url: str, kind: str
) -> None:
    _app, client = app_client
    answer = await client.get(url)
    assert answer.status_code == 400 and answer.headers["content-type"].startswith(kind)
    assert answer.headers["x-content-type-options"] == "nosniff"
