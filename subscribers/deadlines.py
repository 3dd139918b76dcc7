"""Slow clients: a request's line and headers must arrive in time and within a size, or the connection ends.

uvicorn bounds the idle time between requests (keep-alive) but not the time a client may take to send a
request's head: 300 sockets each trickling a header a second (slowloris) would hold 300 connections for
as long as they like. The body's own deadline is `security.SecurityHeaders`' (it is an ASGI matter).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from newsletter.settings import Settings

MAX_HEAD_BYTES = 64 * 1024  # a request line and headers; browsers send a few KiB at most
TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
TOO_LARGE_RESPONSE = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline and a size cap on every request's head."""

    # The setting's default; http_protocol makes a subclass with another, `serve --workers` sets it per process.
    head_timeout_seconds: float = Settings.request_header_timeout_seconds
    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0
    _reading_head = False

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._begin_head()  # a socket opened and left silent is a slow head too

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._end_connection(TOO_LARGE_RESPONSE)
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._reading_head:  # the next request on a kept-alive connection
            self._begin_head()

    def on_headers_complete(self) -> None:
        self._end_head()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_head()
        super().connection_lost(exc)

    def _begin_head(self) -> None:
        self._end_head()
        self._reading_head, self._head_bytes = True, 0
        self._head_timer = self.loop.call_later(self.head_timeout_seconds, self._end_connection, TIMEOUT_RESPONSE)

    def _end_head(self) -> None:
        self._reading_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _end_connection(self, response: bytes) -> None:
        self._end_head()
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()


def http_protocol(header_timeout_seconds: float) -> type[asyncio.Protocol]:
    """DeadlineProtocol with `header_timeout_seconds` for a request's head."""
    return type("DeadlineProtocol", (DeadlineProtocol,), {"head_timeout_seconds": header_timeout_seconds})
