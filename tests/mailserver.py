"""A real SMTP server on loopback (aiosmtpd) that records what it receives and injects faults on request."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

DROP = "drop"  # a fault that closes the connection instead of replying
EVERYONE = "*"  # the address of a fault for every recipient without one of their own


@dataclass(frozen=True)
class Received:
    mail_from: str
    recipient: str
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def header(self, name: str) -> str:
        """A header's raw value from the bytes, unfolded (cheap: no MIME parse)."""
        head = self.data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        value = None
        for line in head.split("\r\n"):
            if line[:1] in (" ", "\t") and value is not None:
                value += " " + line.strip()
            elif value is not None:
                break
            elif line.lower().startswith(name.lower() + ":"):
                value = line.split(":", 1)[1].strip()
        return value or ""


@dataclass
class Fault:
    stage: str  # "RCPT" or "DATA"
    reply: str  # an SMTP reply line, or DROP
    times: int | None  # how many times it fires; None for always


class MailSink:
    """The aiosmtpd handler: keeps every accepted message, answers with the faults set for an address."""

    def __init__(self, pipelining: bool = True) -> None:
        self.pipelining = pipelining
        self.data_delay_seconds = 0.0  # a slow server: each message's final reply waits this long
        self.received: list[Received] = []
        self.faults: dict[str, Fault] = {}
        self.attempts: Counter[str] = Counter()
        self.port = 0
        self.open_connections = 0
        self.peak_connections = 0  # the most connections that were open at the same moment
        self._lock = threading.Lock()
        self._servers: set[SMTP] = set()

    def connected(self, change: int, server: SMTP | None = None) -> None:
        with self._lock:
            self.open_connections += change
            self.peak_connections = max(self.peak_connections, self.open_connections)
            if server is not None:
                (self._servers.add if change > 0 else self._servers.discard)(server)

    def hang_up(self, wait_seconds: float = 2.0) -> None:
        """Close every client connection without a word, and wait until the server has seen them go."""
        with self._lock:
            servers = list(self._servers)
        for server in servers:
            server.loop.call_soon_threadsafe(server.transport.close)
        deadline = time.monotonic() + wait_seconds
        while self.open_connections and time.monotonic() < deadline:
            time.sleep(0.01)

    def fail(self, address: str, stage: str, reply: str, times: int | None = None) -> None:
        self.faults[address.lower()] = Fault(stage, reply, times)

    def _fault(self, address: str, stage: str) -> Fault | None:
        with self._lock:
            fault = self.faults.get(address.lower()) or self.faults.get(EVERYONE)
            if fault is None or fault.stage != stage:
                return None
            if fault.times is not None:
                if fault.times <= 0:
                    return None
                fault.times -= 1
            return fault

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:  # RFC 2920: aiosmtpd reads one command at a time, so it can offer it
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        with self._lock:
            self.attempts[address.lower()] += 1
        fault = self._fault(address, "RCPT")
        if fault is not None:
            if fault.reply == DROP:
                server.transport.close()
                return "421 4.3.0 closing"
            return fault.reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_delay_seconds:
            await asyncio.sleep(self.data_delay_seconds)
        for address in envelope.rcpt_tos:
            fault = self._fault(address, "DATA")
            if fault is not None:
                if fault.reply == DROP:
                    # The whole message arrived but no reply comes: the client cannot know the outcome.
                    server.transport.close()
                    return "421 4.3.0 closing"
                return fault.reply
        with self._lock:
            for address in envelope.rcpt_tos:
                self.received.append(Received(envelope.mail_from, address, bytes(envelope.original_content)))
        return "250 2.0.0 OK"

    def to(self, address: str) -> list[Received]:
        with self._lock:
            return [message for message in self.received if message.recipient.lower() == address.lower()]


class CountingSMTP(SMTP):
    """aiosmtpd's SMTP protocol, telling its MailSink when a client connects and when it is gone."""

    def connection_made(self, transport: Any) -> None:
        if self._original_transport is None:  # a second call is the same connection after STARTTLS
            self.event_handler.connected(+1, self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.event_handler.connected(-1, self)
        super().connection_lost(error)


class CountingController(Controller):
    def factory(self) -> SMTP:
        return CountingSMTP(self.handler, **self.SMTP_kwargs)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_sink(handler: MailSink | None = None, **options: Any) -> Iterator[tuple[MailSink, int]]:
    """An aiosmtpd server on a free loopback port, with `handler` (a fresh MailSink by default).

    `options` go to aiosmtpd's Controller: `ssl_context` for implicit TLS, `tls_context` and
    `require_starttls` for STARTTLS, `authenticator` and `auth_require_tls` for AUTH, `enable_SMTPUTF8`.
    """
    sink = handler or MailSink()
    port = sink.port = free_port()
    options = {"enable_SMTPUTF8": True, **options}  # enable_SMTPUTF8=False: a relay without it
    controller = CountingController(sink, hostname="127.0.0.1", port=port, data_size_limit=50 * 1024 * 1024, **options)
    controller.start()
    sink.peak_connections = sink.open_connections  # the controller's own probe connection is not a client's
    try:
        yield sink, port
    finally:
        controller.stop()
