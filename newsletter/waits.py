"""What slows a send down on purpose (the rate limit, a relay that throttles), told by the workers to `send`.

A worker thread about to wait for its turn tells `Waits` why and until when; `send` reads the latest and
says it on its own line ("Waiting: the rate limit allows 12 messages a minute; next in 4 s"). In one
process the note stays in memory; across a fleet it lives in the Redis the workers already share
(`rate_limit_url`), for as long as the wait lasts, so a worker that died leaves no stale note behind.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

from newsletter import outages
from newsletter.settings import Settings

# A thread waits for the rate limit before every message: one note a second per process is plenty to read.
TELL_EVERY_SECONDS = 1.0
# The note in Redis outlives its wait a little: a wait that is over is only read as over.
NOTE_GRACE_SECONDS = 2.0


@dataclass(frozen=True)
class Wait:
    """Why the workers hold back, and until when (a Unix time)."""

    why: str
    until: float

    def line(self, now: float | None = None) -> str:
        left = max(0.0, self.until - (time.time() if now is None else now))
        return f"{self.why}; next in {left:.0f} s" if left >= 1 else f"{self.why}; next in {left:.1f} s"


def rate_words(per_second: float) -> str:
    """A rate as the editor would say it: "2 messages a second", "12 messages a minute", "30 messages an hour"."""
    count, unit = per_second * 3600, "an hour"
    for unit_here, seconds in (("a second", 1), ("a minute", 60)):
        if per_second * seconds >= 1:
            count, unit = per_second * seconds, unit_here
            break
    return f"{count:.3g} message{'' if count == 1 else 's'} {unit}"


class Waits:
    """The latest Wait of the workers: in memory in one process, in Redis when `url` names one."""

    def __init__(self, url: str, key: str) -> None:
        self._client = outages.redis_client(url) if url else None
        self._key = key
        self._lock = threading.Lock()
        self._latest: Wait | None = None
        self._told = 0.0  # when the note was last written to Redis, monotonic

    def tell(self, wait: Wait) -> None:
        """Note that a thread waits; written to Redis at most once per TELL_EVERY_SECONDS (or a new reason)."""
        with self._lock:
            previous, self._latest = self._latest, wait
            now = time.monotonic()
            fresh = previous is None or previous.why != wait.why or now - self._told >= TELL_EVERY_SECONDS
            if self._client is None or not fresh:
                return
            self._told = now
        ttl_ms = max(1, round((wait.until - time.time() + NOTE_GRACE_SECONDS) * 1000))
        try:
            self._client.set(self._key, json.dumps({"why": wait.why, "until": wait.until}), px=ttl_ms)
        except Exception as error:  # Redis away: the wait itself goes on, only the note is missing
            if outages.link_of(error) is None:
                raise

    def current(self) -> Wait | None:
        """The latest wait still running, or None."""
        if self._client is None:
            with self._lock:
                wait = self._latest
        else:
            stored = self._client.get(self._key)
            note = json.loads(stored) if stored else None
            wait = Wait(str(note["why"]), float(note["until"])) if note else None
        return wait if wait is not None and wait.until > time.time() else None


def make_waits(settings: Settings) -> Waits:
    """The Waits of the fleet on `settings`' shared Redis, or of this process alone."""
    url = settings.shared_redis_url if settings.broker_url else ""
    return Waits(url, f"newsletter:{settings.queue_name}:waiting")
