"""A worker thread's lane to the relay: its SMTP connection, its pace, the fleet slot it holds, the rate limit."""

from __future__ import annotations

import threading
import time

from dramatiq.rate_limits import BucketRateLimiter, RateLimiter
from dramatiq.rate_limits.backends import RedisBackend, StubBackend

from newsletter import outages
from newsletter.connections import CONNECTION_IDLE_SECONDS, Slot
from newsletter.errors import ConfigError
from newsletter.settings import Settings
from newsletter.smtp import Reply, SmtpConnection, is_throttling

THROTTLE_FIRST_PAUSE_SECONDS = 0.5
THROTTLE_MAX_PAUSE_SECONDS = 60.0


def make_rate_limiter(settings: Settings) -> RateLimiter | None:
    """Dramatiq's bucket limiter for `rate_limit`, counted in Redis when workers are distributed."""
    if settings.rate_limit <= 0:
        return None
    url = settings.shared_redis_url
    if settings.broker_url and not url:
        raise ConfigError("rate_limit with a RabbitMQ broker needs rate_limit_url (a redis:// URL) to count in")
    backend = RedisBackend(client=outages.redis_client(url)) if url else StubBackend()  # type: ignore[no-untyped-call]
    limit, bucket_ms = rate_bucket(settings)
    key = f"newsletter:{settings.queue_name}:rate"
    return BucketRateLimiter(backend, key, limit=limit, bucket=bucket_ms)  # type: ignore[no-untyped-call]


def rate_bucket(settings: Settings) -> tuple[int, int]:
    """`rate_limit` as Dramatiq's buckets count it: messages per bucket, and the bucket's milliseconds."""
    limit = max(1, round(settings.rate_limit))
    return limit, max(1, round(1000 * limit / settings.rate_limit))


def next_bucket_at(settings: Settings, now: float) -> float:
    """The Unix time the rate limit's next bucket opens (buckets start at multiples of their length)."""
    bucket_ms = rate_bucket(settings)[1]
    return (int(now * 1000) // bucket_ms + 1) * bucket_ms / 1000


class Pace:
    """Slows one connection down while the server throttles (4xx), and speeds back up as it accepts."""

    def __init__(self) -> None:
        self.pause_seconds = 0.0
        self.reply: Reply | None = None  # the last throttling reply, while it slows the connection down

    def after(self, reply: Reply) -> None:
        if is_throttling(reply.code):
            self.reply = reply
            self.pause_seconds = min(
                THROTTLE_MAX_PAUSE_SECONDS, max(THROTTLE_FIRST_PAUSE_SECONDS, self.pause_seconds * 2)
            )
        elif self.pause_seconds:
            halved = self.pause_seconds / 2
            self.pause_seconds = halved if halved >= THROTTLE_FIRST_PAUSE_SECONDS / 4 else 0.0
            if not self.pause_seconds:
                self.reply = None


class Lane:
    """One worker thread's SMTP connection, its pace, and the slot it holds while the connection may be open."""

    def __init__(self, connection: SmtpConnection) -> None:
        self.connection = connection
        self.pace = Pace()
        self.slot: Slot | None = None
        self.used = time.monotonic()
        self.busy = threading.Lock()  # held by the thread while it sends; the keeper only takes it when free

    @property
    def holds_slot(self) -> bool:
        return self.slot is not None and not self.slot.lost

    def drop_slot(self) -> None:
        """Close the connection, then give the slot back."""
        self.connection.close()
        slot, self.slot = self.slot, None
        if slot is not None:
            try:
                slot.give_back()
            except Exception as error:  # Redis away: the slot frees itself when its ttl runs out
                if outages.link_of(error) is None:
                    raise

    def tend(self) -> None:
        """The keeper's round: renew the slot; close the connection if it sat idle or lost its slot."""
        slot = self.slot
        if slot is None:
            return
        slot.renew()
        if not self.busy.acquire(blocking=False):
            return  # sending right now: hardly idle, and a lost slot is seen before the next message
        try:
            if self.slot is not None and (self.slot.lost or time.monotonic() - self.used > CONNECTION_IDLE_SECONDS):
                self.drop_slot()
        finally:
            self.busy.release()
