"""`newsletter demo`: the whole path on one machine, with nothing to install or configure first."""

from __future__ import annotations

import asyncio
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from newsletter import campaign, database
from newsletter.models import DeliveryStatus
from newsletter.queue import Queue
from newsletter.render import render_issue_file
from newsletter.resources import PACKAGE_DIR
from newsletter.settings import CONFIG_FILENAME, load_settings
from newsletter.subscriptions import add_subscriber, find_subscriber

SAMPLE_ISSUE = PACKAGE_DIR / "samples" / "ai-briefing-2020-11-06.md"
# The sample has no front matter and its first heading is a section ("AI"): give it the subject its
# author used, as an editor would with `newsletter send --subject`.
SAMPLE_SUBJECT = "AI 简报 20201106 期"
OUTBOX_DIRNAME = "outbox"
DEMO_SMTP_PORT = 2525  # what the config names; the demo itself listens on a free port for the run
# RFC 2606: example.com and example.org never deliver anywhere.
SAMPLE_SUBSCRIBERS = (
    ("Ada Lovelace", "ada@example.com"),
    ("Alan Turing", "alan@example.com"),
    ("Grace Hopper", "grace@example.com"),
    ("李雷", "lilei@example.com"),
    ("韩梅梅", "hanmeimei@example.com"),
    ("Katherine Johnson", "katherine@example.org"),
    ("Edsger Dijkstra", "edsger@example.org"),
    ("Barbara Liskov", "barbara@example.org"),
)
DEMO_CONFIG = """\
# newsletter settings written by `newsletter demo`; `newsletter init` writes one with every setting.
database_url = "sqlite:///{database}"
secret_key = "{secret}"
from_address = "editor@example.org"
from_name = "AI 简报 (demo)"
newsletter_name = "AI 简报"
postal_address = "1 Example Street, Springfield"
base_url = "http://localhost:8000"
# The demo captures mail in-process; point these at your relay to send for real.
smtp_host = "127.0.0.1"
smtp_port = {port}
"""


@dataclass(frozen=True)
class DemoReport:
    config: Path
    outbox: Path
    slug: str
    subscribers: int
    sent: int
    captured: int


class Capture:
    """An aiosmtpd handler that writes every message it accepts as an .eml file."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self.count = 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = bytes(envelope.original_content)
        for recipient in envelope.rcpt_tos:
            with self._lock:
                self.count += 1
                number = self.count
            name = re.sub(r"[^A-Za-z0-9._-]+", "_", recipient)
            await asyncio.to_thread((self.outbox / f"{number:04d}-{name}.eml").write_bytes, data)
        return "250 2.0.0 captured"


def run_demo(directory: Path, progress: campaign.Progress | None = None) -> DemoReport:
    """Set up DIRECTORY, send the bundled sample issue to sample subscribers through a capture server."""
    directory = directory.resolve()
    outbox = directory / OUTBOX_DIRNAME
    outbox.mkdir(parents=True, exist_ok=True)
    config = directory / CONFIG_FILENAME
    if not config.exists():
        config.write_text(
            DEMO_CONFIG.format(
                database=directory / "newsletter.db", secret=secrets.token_urlsafe(32), port=DEMO_SMTP_PORT
            ),
            encoding="utf-8",
        )
    capture = Capture(outbox)
    controller = Controller(capture, hostname="127.0.0.1", port=_free_port(), enable_SMTPUTF8=True)
    controller.start()
    try:
        settings = load_settings(config, environ={}).replace(smtp_host="127.0.0.1", smtp_port=controller.port)
        engine = database.make_engine(settings)
        database.upgrade(engine)
        with database.transaction(engine) as session:
            for name, email in SAMPLE_SUBSCRIBERS:
                if find_subscriber(session, email) is None:
                    add_subscriber(session, email, name)
        issue = render_issue_file(SAMPLE_ISSUE, settings, subject=SAMPLE_SUBJECT)
        counts = campaign.send_issue(engine, Queue(settings, engine), issue, progress=progress)
        engine.dispose()
    finally:
        controller.stop()
    return DemoReport(config, outbox, issue.slug, len(SAMPLE_SUBSCRIBERS), counts[DeliveryStatus.SENT], capture.count)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
