"""The fleet's SMTP connection slots: `smtp_connections` in total, however many workers and threads run.

Each slot is one of Dramatiq's ConcurrentRateLimiter with a limit of 1 (a distributed mutex) in Redis,
and a connection is only open while its thread holds one. One mutex per slot, rather than one counter
of `smtp_connections`, is what makes a crash harmless: a counter's expiry is renewed by every worker
that takes or gives back a slot, so the slots of a SIGKILLed worker would stay taken for as long as the
others keep sending; a mutex nobody else touches expires `ttl` after its holder stopped renewing it.
"""

from __future__ import annotations

import random
import threading
import time
from contextlib import ExitStack

from dramatiq.rate_limits import ConcurrentRateLimiter
from dramatiq.rate_limits.backends import RedisBackend

from newsletter import outages
from newsletter.errors import ConfigError
from newsletter.settings import Settings

SLOT_MAX_TTL_SECONDS = 60.0  # a dead worker's slots come free this long after its last renewal, at most
CONNECTION_IDLE_SECONDS = 3.0  # a connection unused this long is closed and its slot given back
SLOT_WAIT_SECONDS = 1.0  # a batch waits this long for a free slot before it goes back to the queue
SLOT_RETRY_SECONDS = 1.0  # and is worked on again this much later
SLOT_POLL_SECONDS = 0.05


class Slot:
    """One slot this process holds, until give_back()."""

    def __init__(self, limiter: ConcurrentRateLimiter, hold: ExitStack) -> None:
        self._limiter = limiter
        self._hold = hold
        self.renewed = time.monotonic()
        self.lost = False  # it expired before it was renewed: its connection must close, its key is not ours

    def renew(self) -> None:
        """Push the slot's expiry back, or mark it lost when it had expired (this process stalled past the ttl)."""
        limiter = self._limiter
        if self.lost or time.monotonic() - self.renewed >= limiter.ttl / 1000:
            self.lost = True  # another worker may hold it now
            return
        # decr by 0 with minimum 1: rewrites the value with a fresh expiry, and refuses when nobody holds it.
        if limiter.backend.decr(limiter.key, 0, minimum=1, ttl=limiter.ttl):
            self.renewed = time.monotonic()
        else:
            self.lost = True

    def give_back(self) -> None:
        """Free the slot; one that was lost is only forgotten, since its key may be another worker's by now."""
        if self.lost:
            self._hold.pop_all()
        else:
            self._hold.close()


class Slots:
    """The `smtp_connections` slots shared by every worker on the same Redis and queue name."""

    def __init__(self, backend: RedisBackend, key: str, count: int, ttl_seconds: float) -> None:
        self.ttl_seconds = ttl_seconds
        ttl_ms = max(1000, round(ttl_seconds * 1000))
        self._limiters = [
            ConcurrentRateLimiter(backend, f"{key}:{number}", limit=1, ttl=ttl_ms)  # type: ignore[no-untyped-call]
            for number in range(count)
        ]

    def take(self) -> Slot | None:
        """A free slot, or None when all are held (the search starts anywhere, so workers rarely collide)."""
        start = random.randrange(len(self._limiters))
        for offset in range(len(self._limiters)):
            limiter = self._limiters[(start + offset) % len(self._limiters)]
            hold = ExitStack()
            if hold.enter_context(limiter.acquire(raise_on_failure=False)):
                return Slot(limiter, hold)
            hold.close()
        return None

    def wait(self, stopping: threading.Event, seconds: float) -> Slot | None:
        """A free slot, waiting up to `seconds` for one."""
        deadline = time.monotonic() + seconds
        while True:
            slot = self.take()
            if slot is not None or time.monotonic() >= deadline or stopping.wait(SLOT_POLL_SECONDS):
                return slot


def make_slots(settings: Settings) -> Slots | None:
    """The fleet's slots when workers are distributed; None in-process, where the thread count bounds them.

    Raises:
        ConfigError: the broker is RabbitMQ and no rate_limit_url names a Redis to share the slots in.
    """
    if not settings.broker_url:
        return None
    url = settings.shared_redis_url
    if not url:
        raise ConfigError(
            "smtp_connections with a RabbitMQ broker needs rate_limit_url (a redis:// URL), "
            "where the workers share their count of open connections"
        )
    ttl_seconds = min(SLOT_MAX_TTL_SECONDS, settings.lease_seconds)
    backend = RedisBackend(client=outages.redis_client(url))
    return Slots(backend, f"newsletter:{settings.queue_name}:connections", settings.smtp_connections, ttl_seconds)
