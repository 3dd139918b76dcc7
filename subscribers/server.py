"""`newsletter serve`: the web app under uvicorn, with the queue that sends its confirmation mails."""

from __future__ import annotations

import uvicorn

from newsletter import database, outbox
from newsletter.queue import Queue
from newsletter.schedule import Scheduler
from newsletter.settings import Settings
from subscribers.app import create_app
from subscribers.deadlines import http_protocol
from subscribers.logs import log_config


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve until interrupted; without broker_url a worker in this process sends the confirmation mails."""
    settings.require("secret_key", "from_address")
    engine = database.make_engine(settings)
    database.require_current(engine)
    queue = Queue(settings, engine)
    if queue.embedded:
        queue.start_worker()
    # A confirmation stored just before the last stop may never have reached the queue (the embedded
    # one lived in memory): every unsent one goes to the queue again, and claiming sends it once.
    outbox.requeue_unsent(engine, settings.lease_seconds, queue.send_message)
    app = create_app(settings, engine, enqueue=queue.send_message)
    # Scheduled sends start from whichever long-running process is up (worker or serve): each exactly once.
    scheduler = Scheduler(engine, settings, queue)
    scheduler.start()
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_config=log_config(),
            proxy_headers=True,
            forwarded_allow_ips=settings.trusted_proxies,
            server_header=False,
            http=http_protocol(settings.request_header_timeout_seconds),
        )
    finally:
        scheduler.stop()
        queue.stop()
        engine.dispose()
