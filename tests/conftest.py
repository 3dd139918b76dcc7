"""Fixtures named for what they return: settings, engine, session, and the real servers on loopback."""

from __future__ import annotations

import http.server
import os
import socket
import struct
import threading
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from newsletter import database
from newsletter.mime import Recipient
from newsletter.settings import Settings
from tests.mailserver import MailSink, running_sink

ROOT = Path(__file__).resolve().parent.parent
# The two real issues the first editor wrote, bundled in the package (the demo sends one of them).
SAMPLES = ROOT / "newsletter" / "samples"
SAMPLE_FILES = sorted(SAMPLES.glob("*.md"))
# A test parametrized over no samples would skip; a checkout without them is broken, so say so.
assert len(SAMPLE_FILES) >= 2, f"the sample issues are missing from {SAMPLES}"
# A link-heavy English weekly (300 links, 5 tables, 3 code blocks, Pelican front matter), the kind of
# issue that meets Gmail's clipping size first.
LINK_HEAVY_ISSUE = ROOT / "tests" / "issues" / "link-heavy-weekly.md"
POSTGRES_ADMIN_URL = os.environ.get("NEWSLETTER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("NEWSLETTER_TEST_REDIS", "redis://127.0.0.1:6379/15")
RABBITMQ_URL = os.environ.get("NEWSLETTER_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
SERVICES = {"postgres": ("127.0.0.1", 5432), "redis": ("127.0.0.1", 6379), "rabbitmq": ("127.0.0.1", 5672)}


def require_service(name: str) -> None:
    """Skip when a server is absent on a developer's machine; fail in CI, where it must be there."""
    host, port = SERVICES[name]
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as error:
        message = f"{name} is not reachable on {host}:{port}: {error}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(autouse=True)
def no_remote_image_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands a test runs (preview, send) read no remote image sizes: tests never reach the network."""
    monkeypatch.setenv("NEWSLETTER_REMOTE_IMAGE_SIZES", "false")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a fresh SQLite database in a temporary directory."""
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'newsletter.db'}",
        secret_key="test-secret-key-that-is-long-enough",
        from_address="editor@example.org",
        from_name="The Editor",
        newsletter_name="AI 简报",
        base_url="https://news.example.org",
        postal_address="1 Example Street, Springfield",
        remote_image_sizes=False,  # tests never reach the network; one serves images on loopback
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    """An engine on the `settings` database, migrated to head."""
    engine = database.make_engine(settings)
    database.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session on the migrated database; the test commits what it wants kept."""
    with database.make_sessionmaker(engine)() as session:
        yield session


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped after the test."""
    require_service("postgres")
    name = f"newsletter_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_settings(settings: Settings, postgres_url: str) -> Settings:
    return settings.replace(database_url=postgres_url)


@pytest.fixture
def postgres_engine(postgres_settings: Settings) -> Iterator[Engine]:
    """An engine on a fresh PostgreSQL database, migrated to head."""
    engine = database.make_engine(postgres_settings)
    database.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_engine(request: pytest.FixtureRequest, engine: Engine) -> Engine:
    """The migrated database on SQLite, then on PostgreSQL (whose drivers refuse other inputs)."""
    return engine if request.param == "sqlite" else request.getfixturevalue("postgres_engine")


@pytest.fixture
def smtpd() -> Iterator[MailSink]:
    """A real SMTP server (aiosmtpd) on a loopback port that keeps what it receives; `fail()` injects faults."""
    with running_sink() as (sink, _port):
        yield sink


@pytest.fixture
def queued() -> list[int]:
    """The ids of the outbound messages (confirmation mails) the web app handed to the queue."""
    return []


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(settings: Settings, engine: Engine, queued: list[int]) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of the web app on `settings` (fill-time check off; tests of it turn it on)."""
    from subscribers.app import create_app

    app = create_app(settings.replace(signup_min_fill_seconds=0), engine, enqueue=queued.extend)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=settings.base_url) as client:
        yield client


def recipient(**changes: str | None) -> Recipient:
    """A reader with a name in Chinese and the real shapes of our links; `changes` replace any of them."""
    values: dict[str, str | None] = {
        "email": "reader@example.com",
        "name": "Zhang San",
        "message_id": "<7.42.abcdef@example.org>",
        "unsubscribe_url": "https://news.example.org/unsubscribe/eyJpZCI6NDJ9.abc-DEF_123",
        "unsubscribe_mailto": "mailto:unsubscribe+2a-0123456789abcdef0123@example.org?subject=unsubscribe",
        "preferences_url": "https://news.example.org/preferences/eyJpZCI6NDJ9.xyz",
    }
    values.update(changes)
    return Recipient(**values)  # type: ignore[arg-type]


def tiny_png(width: int, height: int) -> bytes:
    """A valid PNG of that many pixels, for image size and layout tests."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


class WebServer:
    """A tiny HTTP server on loopback: path -> (status, content type, body, delay in seconds)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, str, bytes, float]] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
                server.requests.append(self.path)
                status, content_type, body, delay = server.routes.get(self.path, (404, "text/plain", b"no", 0.0))
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting, as a timeout test wants

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_port}{path}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def webserver() -> Iterator[WebServer]:
    """A loopback HTTP server whose routes the test sets (images, pages, errors, slow answers)."""
    server = WebServer()
    yield server
    server.close()
