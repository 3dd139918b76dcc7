"""`newsletter serve`: the web app under uvicorn, with the queue that sends its confirmation mails."""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import Engine
from starlette.applications import Starlette

from newsletter import confirmation, database, outbox
from newsletter.queue import Queue
from newsletter.schedule import Scheduler
from newsletter.settings import Settings, load_settings
from subscribers import deadlines
from subscribers.app import create_app
from subscribers.logs import lighten_records, log_config

# Python's cyclic collector runs after every 700 net allocations of containers: under 100 clients signing
# up, 54 collections a second and 5.6% of serve's CPU, each walking the young objects. Reference counting
# frees nearly everything a request makes; a young generation this large is collected a few times a minute.
GC_YOUNG_THRESHOLD = 20_000
# The config file the processes of `serve --workers` read their settings from (the environment they inherit
# holds the rest); uvicorn starts each afresh and makes its app with `worker_app`.
WORKER_CONFIG_VARIABLE = "NEWSLETTER_SERVE_CONFIG"


def serve(settings: Settings, host: str, port: int, workers: int = 1, config_path: Path | None = None) -> None:
    """Serve until interrupted; without broker_url a worker in each process sends the confirmation mails.

    With `workers` above one, uvicorn runs that many processes on the one listening socket (and starts
    again one that dies): each has its own app, queue and scheduler; on SQLite they take turns at the
    database (database.transaction), and claiming keeps a confirmation from going twice.
    """
    settings.require("secret_key", "from_address")
    engine = database.make_engine(settings)
    database.require_current(engine)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": log_config(),
        "proxy_headers": True,
        "forwarded_allow_ips": settings.trusted_proxies,
        "server_header": False,
    }
    if workers > 1:
        engine.dispose()
        os.environ[WORKER_CONFIG_VARIABLE] = str(config_path) if config_path is not None else ""
        protocol = f"{deadlines.__name__}:{deadlines.DeadlineProtocol.__name__}"
        uvicorn.run(f"{__name__}:{worker_app.__name__}", factory=True, workers=workers, http=protocol, **options)
        return
    app, stop = _start(settings, engine)
    try:
        uvicorn.run(app, http=deadlines.http_protocol(settings.request_header_timeout_seconds), **options)
    finally:
        stop()


def worker_app() -> Starlette:
    """The app of one process of `serve --workers`, made in that process; its queue stops with it."""
    config = os.environ.get(WORKER_CONFIG_VARIABLE) or None
    settings = load_settings(config)
    deadlines.DeadlineProtocol.head_timeout_seconds = settings.request_header_timeout_seconds
    app, stop = _start(settings, database.make_engine(settings))
    serving = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[Any]:
        try:
            async with serving(app) as state:
                yield state
        finally:
            stop()

    app.router.lifespan_context = lifespan
    return app


def _start(settings: Settings, engine: Engine) -> tuple[Starlette, Callable[[], None]]:
    """The app, with the queue worker (embedded) and the scheduler running; and what stops them."""
    queue = Queue(settings, engine)
    if queue.embedded:
        queue.start_worker()
    # A confirmation stored just before the last stop may never have reached the queue (the embedded
    # one lived in memory): every unsent one goes to the queue again, and claiming sends it once.
    outbox.requeue_unsent(engine, settings.lease_seconds, queue.send_messages, confirmation.lifetimes(settings))
    app = create_app(settings, engine, enqueue=queue.send_messages)
    # Scheduled sends start from whichever long-running process is up (worker or serve): each exactly once.
    scheduler = Scheduler(engine, settings, queue)
    scheduler.start()
    _collect_less()
    lighten_records()

    def stop() -> None:
        scheduler.stop()
        queue.stop()
        engine.dispose()

    return app, stop


def _collect_less() -> None:
    """What the process made to start (templates, SQLAlchemy's caches, catalogs) lives as long as it: frozen,
    the collector never walks it again; and young objects are collected in larger generations."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
