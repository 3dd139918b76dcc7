"""Links that go away for a while (the database, Redis, RabbitMQ): recognized, and waited out with one clear line.

A worker or `send` that loses a link keeps what it holds (a sent group's outcomes, a batch to re-enqueue)
and tries again with a short jittered backoff until the link is back, saying once what it waits for and
once that it is back. It never turns an outage into a traceback, nor a recipient's try.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import dramatiq.errors
import pika.exceptions  # type: ignore[import-untyped]
import redis.exceptions
from sqlalchemy import exc as sql_errors

from newsletter import replies

T = TypeVar("T")
# A Redis link that dies without a word (no RST: a partition, a stalled proxy) must not hang a worker forever.
SOCKET_TIMEOUT_SECONDS = 15.0
CONNECT_TIMEOUT_SECONDS = 5
FIRST_WAIT_SECONDS = 0.5
MAX_WAIT_SECONDS = 5.0
LOGGER = logging.getLogger("newsletter.outages")
Say = Callable[[str], None]
# What code that talks to a link raises when the link is away.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    sql_errors.OperationalError,
    sql_errors.InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    dramatiq.errors.BrokerConnectionError,
    pika.exceptions.AMQPError,
    ConnectionError,
    TimeoutError,
)


def redis_client(url: str) -> redis.Redis:
    """A Redis client whose commands and connects give up on a silent link instead of waiting forever."""
    return redis.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT_SECONDS, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS
    )


def link_of(error: BaseException) -> str | None:
    """Which link an error says is gone ("the database", "Redis", "the broker"), or None when it is not an outage."""
    if isinstance(error, sql_errors.DBAPIError) and error.connection_invalidated:
        return "the database"
    if not isinstance(error, OUTAGE_ERRORS):
        return None
    if isinstance(error, sql_errors.SQLAlchemyError):
        return "the database"
    if isinstance(error, redis.exceptions.RedisError):
        return "Redis"
    if isinstance(error, dramatiq.errors.BrokerConnectionError | pika.exceptions.AMQPError):
        return "the broker"
    return "a server"


def describe(error: BaseException) -> str:
    """One line: which link is gone and what the driver said, without a traceback."""
    cause = getattr(error, "orig", None) or error
    said = " ".join(str(cause).split())[:200] or type(cause).__name__
    return f"{link_of(error) or 'a link'} is unreachable ({said})"


def wait_out(
    attempt: Callable[[], T],
    stopping: threading.Event | None = None,
    say: Say | None = None,
    give_up_seconds: float | None = None,
) -> T:
    """`attempt()`, tried again while it fails for an outage, until it succeeds.

    `say` hears one line when the wait starts and one when the link is back (the log when None). With
    `stopping` set, the wait lasts at most `give_up_seconds` more, then the last outage error is raised.
    """
    tell = say or LOGGER.warning
    started: float | None = None
    failures = 0
    while True:
        try:
            result = attempt()
        except Exception as error:
            if link_of(error) is None:
                raise
            now = time.monotonic()
            if started is None:
                started = now
                tell(f"{describe(error)}; waiting for it to come back")
            if stopping is not None and stopping.is_set():
                if give_up_seconds is None or now - started >= give_up_seconds:
                    raise
            failures += 1
            pause = replies.backoff_seconds(failures, FIRST_WAIT_SECONDS, MAX_WAIT_SECONDS)
            if stopping is not None:
                stopping.wait(pause)
                if stopping.is_set():
                    time.sleep(min(pause, 0.5))  # a stopping worker still tries a little to record what it sent
            else:
                time.sleep(pause)
            continue
        if started is not None:
            tell(f"reached again after {time.monotonic() - started:.0f} s")
        return result


class OneLine(logging.Filter):
    """Turns a log record's traceback of an outage (Dramatiq's when an actor failed for one, pika's when a
    connection broke) into one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and link_of(error) is not None:
            # pika writes the traceback into the message too ("Caller's stack:" and the lines): its first line only.
            said = record.getMessage().split("\n", 1)[0]
            record.msg, record.args = f"{said}: {describe(error)}", ()
            record.exc_info, record.exc_text = None, None
        return True
