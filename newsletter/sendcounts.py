"""A worker process's own counts of what it sent, for the one log line it writes every few seconds."""

from __future__ import annotations

import threading
import time
from collections import Counter

REPORT_SECONDS = 5.0


class SendCounts:
    """Counts of outcomes (sent, retry, bounced, failed, given back) since the process started."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._reported: Counter[str] = Counter()
        self._reported_at = time.monotonic()

    def add(self, outcome: str, number: int = 1) -> None:
        if number:
            with self._lock:
                self._counts[outcome] += number

    def report(self) -> str | None:
        """A line with the totals and the rate since the last report, or None when nothing happened since."""
        with self._lock:
            counts = Counter(self._counts)
        now = time.monotonic()
        if counts == self._reported:
            self._reported_at = now
            return None
        sent_since = counts["sent"] - self._reported["sent"]
        rate = sent_since / max(now - self._reported_at, 1e-6)
        self._reported, self._reported_at = counts, now
        others = ", ".join(f"{counts[name]:,} {name}" for name in ("retry", "bounced", "failed", "given back"))
        return f"sent {counts['sent']:,} (+{sent_since:,}, {rate:,.0f} msg/s), {others}"
