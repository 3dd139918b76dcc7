"""Distributed sending: PostgreSQL holds the ledger, Redis or RabbitMQ carries the ids, workers send."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine, select

from newsletter import campaign, database
from newsletter.models import DeliveryStatus, Subscriber, SubscriberStatus
from newsletter.queue import Queue
from newsletter.render import render_issue
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber
from tests.conftest import RABBITMQ_URL, REDIS_URL, require_service
from tests.mailserver import DROP, MailSink

ISSUE = "---\nsubject: Distributed notes\nslug: distributed-1\n---\n\n# Distributed notes\n\nHello from a worker.\n"
BACKENDS = [
    pytest.param("redis", marks=[pytest.mark.postgres, pytest.mark.redis], id="redis"),
    # Workers share their smtp_connections slots in Redis whatever the broker (rate_limit_url).
    pytest.param("rabbitmq", marks=[pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.redis], id="rabbitmq"),
]


def cleanup_broker(settings: Settings) -> None:
    """Remove the test's queues and connection slots, so runs never see each other's messages."""
    slots_url = settings.shared_redis_url
    if slots_url:
        client = redis.Redis.from_url(slots_url)
        for key in client.scan_iter(f"newsletter:{settings.queue_name}:*"):
            client.delete(key)
        client.close()
    if settings.broker_url.startswith("redis"):
        client = redis.Redis.from_url(settings.broker_url)
        for key in client.scan_iter(f"dramatiq:{settings.queue_name}*"):
            client.delete(key)
        client.close()
        return
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    channel = connection.channel()
    for name in (settings.queue_name, f"{settings.queue_name}.DQ", f"{settings.queue_name}.XQ"):
        channel.queue_delete(name)
    connection.close()


@pytest.fixture(params=BACKENDS)
def distributed_settings(
    request: pytest.FixtureRequest, postgres_settings: Settings, smtpd: MailSink
) -> Iterator[Settings]:
    """PostgreSQL settings with a broker and a queue name of this test's own."""
    require_service(request.param)
    require_service("redis")
    url = REDIS_URL if request.param == "redis" else RABBITMQ_URL
    settings = postgres_settings.replace(
        broker_url=url,
        rate_limit_url=REDIS_URL,
        queue_name=f"test_{uuid.uuid4().hex[:12]}",
        smtp_host="127.0.0.1",
        smtp_port=smtpd.port,
        retry_delay_seconds=0.05,
        max_attempts=3,
        lease_seconds=3,
        smtp_connections=2,
        batch_size=4,
    )
    yield settings
    cleanup_broker(settings)


@pytest.fixture
def worker(distributed_settings: Settings, postgres_engine: Engine) -> Iterator[Queue]:
    """A worker with its own broker connection and engine, as a `newsletter worker` process has."""
    engine = database.make_engine(distributed_settings)
    queue = Queue(distributed_settings, engine)
    queue.start_worker(2)
    yield queue
    queue.stop()
    engine.dispose()


@pytest.mark.timeout(120)
def test_faults_on_rcpt_and_data_through_a_real_broker(
    distributed_settings: Settings, postgres_engine: Engine, worker: Queue, smtpd: MailSink
) -> None:
    addresses = [f"reader{number}@example.com" for number in range(10)]
    with database.transaction(postgres_engine) as session:
        for address in addresses:
            add_subscriber(session, address)
    smtpd.fail(addresses[0], "RCPT", "451 4.7.1 greylisted", times=1)
    smtpd.fail(addresses[1], "DATA", "421 4.7.0 slow down", times=1)
    smtpd.fail(addresses[2], "DATA", DROP, times=1)
    smtpd.fail(addresses[3], "RCPT", "550 5.1.1 unknown user")
    smtpd.fail(addresses[4], "DATA", "554 5.7.1 refused")
    sender = Queue(distributed_settings, postgres_engine)
    assert not sender.embedded
    counts = campaign.send_issue(postgres_engine, sender, render_issue(ISSUE, distributed_settings))
    sender.stop()
    # 5.7.1 at DATA is a policy refusal of the message: failed, its reader untouched (newsletter.reasons).
    assert (counts[DeliveryStatus.SENT], counts[DeliveryStatus.BOUNCED], counts[DeliveryStatus.FAILED]) == (8, 1, 1)
    assert counts.remaining == 0
    for address in addresses[:3] + addresses[5:]:
        assert len(smtpd.to(address)) == 1, address
    assert smtpd.attempts[addresses[0]] == 2 and smtpd.attempts[addresses[3]] == 1
    with database.transaction(postgres_engine) as session:
        bounced = session.scalars(select(Subscriber.email).where(Subscriber.status == SubscriberStatus.BOUNCED))
        assert list(bounced) == [addresses[3]]
