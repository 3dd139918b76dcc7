"""The queue's broker: Redis, RabbitMQ, or the in-process StubBroker, and the watch on a real broker's link.

A link cut can lose a queue message while every process lives: Redis hands a fetched message to a
worker and the reply is lost on the way, or a worker's Dramatiq consumer drops the delayed messages it
held in memory when its connection breaks. Redis keeps such a message among that worker's unacknowledged
ones until the worker dies, which a live worker never does. So the broker notes every outage it meets
(a consumer's fetch or ack, an enqueue) and, once a call goes through again, tells whoever listens
(`Link.on_back`); the worker then enqueues again what is unfinished, and claiming makes a copy harmless.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from newsletter import outages
from newsletter.errors import ConfigError
from newsletter.settings import Settings

# Redis keeps the messages a worker took until it acks them; a worker silent this long is taken for dead and
# its messages go back to the queue (Dramatiq's maintenance, run on about 1 command in 20).
REDIS_HEARTBEAT_TIMEOUT_MS = 20_000
REDIS_MAINTENANCE_CHANCE = 50_000  # per million commands


class Link:
    """Whether the broker was lost since it last answered; who hears that it answers again."""

    def __init__(self) -> None:
        self._away = False
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def on_back(self, listener: Callable[[], None]) -> None:
        """Call `listener()` each time the broker answers after an outage (in the thread that saw it answer)."""
        self._listeners.append(listener)

    def lost(self) -> None:
        self._away = True

    def reached(self) -> None:
        with self._lock:
            back, self._away = self._away, False
        if back:
            for listener in self._listeners:
                listener()

    def call(self, work: Callable[[], Any]) -> Any:
        """`work()`, noting whether it met an outage of the link or went through."""
        try:
            result = work()
        except Exception as error:
            if outages.link_of(error) is not None:
                self.lost()
            raise
        self.reached()
        return result


class WatchedConsumer(dramatiq.Consumer):
    """A broker's consumer whose calls tell the link when they fail for an outage and when they go through."""

    def __init__(self, consumer: dramatiq.Consumer, link: Link) -> None:
        self._consumer = consumer
        self._link = link

    def __next__(self) -> dramatiq.MessageProxy | None:
        message: dramatiq.MessageProxy | None = self._link.call(lambda: next(self._consumer))
        return message

    def ack(self, message: dramatiq.MessageProxy) -> None:
        self._link.call(lambda: self._consumer.ack(message))

    def nack(self, message: dramatiq.MessageProxy) -> None:
        self._link.call(lambda: self._consumer.nack(message))

    def requeue(self, messages: Iterable[dramatiq.MessageProxy]) -> None:
        self._link.call(lambda: self._consumer.requeue(messages))

    def close(self) -> None:
        self._consumer.close()


class Watched(dramatiq.Broker):
    """A real broker whose link is watched (see the module's docstring); mixed in before Dramatiq's class."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.link = Link()

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> dramatiq.Consumer:
        return WatchedConsumer(super().consume(queue_name, prefetch, timeout), self.link)

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        sent: dramatiq.Message[Any] = self.link.call(lambda: super(Watched, self).enqueue(message, delay=delay))
        return sent


class WatchedRedisBroker(Watched, RedisBroker):
    """Dramatiq's Redis broker, its link watched."""


class WatchedRabbitmqBroker(Watched, RabbitmqBroker):
    """Dramatiq's RabbitMQ broker, its link watched."""


def make_broker(settings: Settings) -> dramatiq.Broker:
    """The broker `broker_url` names: Redis, RabbitMQ, or the in-process StubBroker when it is empty.

    Raises:
        ConfigError: the URL's scheme is neither redis:// nor amqp://.
    """
    url = settings.broker_url
    if not url:
        broker: dramatiq.Broker = StubBroker()
        broker.emit_after("process_boot")
        return broker
    if url.startswith(("redis://", "rediss://", "unix://")):
        return WatchedRedisBroker(
            client=outages.redis_client(url),
            heartbeat_timeout=REDIS_HEARTBEAT_TIMEOUT_MS,
            maintenance_chance=REDIS_MAINTENANCE_CHANCE,
        )
    if url.startswith(("amqp://", "amqps://")):
        # Publisher confirms: `send` only reports a batch enqueued once RabbitMQ has it.
        return WatchedRabbitmqBroker(url=url, confirm_delivery=True)
    raise ConfigError(f"setting 'broker_url' must start with redis:// or amqp://, not {url.split(':')[0]!r}")


def link_of(broker: dramatiq.Broker) -> Link | None:
    """The watch on a real broker's link; None for the in-process broker."""
    return broker.link if isinstance(broker, Watched) else None
