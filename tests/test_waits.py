"""What the workers hold back for on purpose, as `send` reads it: across processes in Redis, in memory in one."""

from __future__ import annotations

import time
import uuid

import pytest

from newsletter.waits import Wait, Waits, rate_words
from tests.conftest import REDIS_URL, require_service


@pytest.mark.redis
def test_a_wait_told_by_a_worker_is_read_by_send_until_it_is_over() -> None:
    require_service("redis")
    key = f"newsletter:test_{uuid.uuid4().hex[:12]}:waiting"
    worker, send = Waits(REDIS_URL, key), Waits(REDIS_URL, key)
    assert send.current() is None
    worker.tell(Wait("the rate limit allows 12 messages a minute (rate_limit)", time.time() + 0.5))
    told = send.current()
    assert told is not None and told.why.startswith("the rate limit allows 12 messages a minute")
    assert told.line().endswith(" s") and "; next in 0." in told.line()
    time.sleep(0.6)
    assert send.current() is None, "a wait that is over is not said"


def test_in_one_process_the_wait_stays_in_memory() -> None:
    waits = Waits("", "")
    waits.tell(Wait("the SMTP server slows us down", time.time() + 5))
    told = waits.current()
    assert told is not None and told.line().startswith("the SMTP server slows us down; next in ")


@pytest.mark.parametrize(
    ("per_second", "words"),
    [
        (2.0, "2 messages a second"),
        (1.0, "1 message a second"),
        (0.2, "12 messages a minute"),
        (0.001, "3.6 messages an hour"),
    ],
)
def test_a_rate_in_the_editor_s_words(per_second: float, words: str) -> None:
    assert rate_words(per_second) == words
