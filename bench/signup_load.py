"""Load benchmark: concurrent sign-ups against `newsletter serve` on SQLite (or PostgreSQL), on loopback only.

    python bench/signup_load.py [--clients 100] [--seconds 30] [--postgres] [--workers N]

Starts an aiosmtpd sink and `newsletter serve` (embedded queue: it sends the confirmation mails too),
then has `--clients` concurrent clients post sign-ups with fresh addresses for `--seconds`. Prints
sign-ups per second and latency percentiles, then proves that none was lost or doubled: every
answered sign-up is exactly one subscriber row, one outbound confirmation and one mail at the sink,
and a burst of the clients posting one same address at once leaves exactly one row. The rate limits
and the fill-time check are off for the run (one client IP posts everything), and nothing leaves
127.0.0.1. Also printed: the server's CPU milliseconds per sign-up, a figure that a shared machine
disturbs less than the rate, and the load average. Sign-ups outrun their confirmation mails (the queue
takes a burst and sends it after): the run prints how many mails had gone when the load ended, how long
the rest took, and the sign-ups per second and server CPU per sign-up with their mails counted.

Targets on a quiet 2-core machine, 100 clients: at least 400 sign-ups/s with p99 under 250 ms on SQLite,
and more on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

import httpx
from aiosmtpd.controller import Controller
from processes import CpuMeter, backend_pids, load_average, tree_cpu_seconds  # bench/processes.py
from sqlalchemy import create_engine, func, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.models import OutboundMessage, Subscriber  # noqa: E402

POSTGRES_ADMIN_URL = os.environ.get("NEWSLETTER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
STAMP = re.compile(r'name="stamp" value="([^"]+)"')
DRAIN_LIMIT_SECONDS = 180
STARTUP_LIMIT_SECONDS = 30


class Sink:
    """Counts the messages the SMTP server accepts, per recipient."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        for recipient in envelope.rcpt_tos:  # type: ignore[attr-defined]
            self.received[recipient.lower()] += 1
        return "250 OK"


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Connection:
    """A bare HTTP/1.1 keep-alive connection: the load generator must cost far less CPU than the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, base_url: str) -> Connection:
        url = httpx.URL(base_url)
        reader, writer = await asyncio.open_connection(url.host, url.port)
        return cls(reader, writer, f"{url.host}:{url.port}")

    async def post_form(self, path: str, fields: dict[str, str]) -> tuple[int, bytes]:
        body = urlencode(fields).encode()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def client_loop(
    base_url: str,
    stamp: str,
    number: int,
    stop_at: float,
    latencies: list[float],
    answered: list[str],
    failures: Counter[str],
) -> None:
    connection = await Connection.open(base_url)
    sequence = 0
    try:
        while time.monotonic() < stop_at:
            address = f"load-{number}-{sequence}@example.com"
            sequence += 1
            started = time.perf_counter()
            try:
                status, body = await connection.post_form(
                    "/subscribe", {"email": address, "stamp": stamp, "website": ""}
                )
            except (OSError, asyncio.IncompleteReadError) as error:
                failures[type(error).__name__] += 1
                connection.close()
                connection = await Connection.open(base_url)
                continue
            latencies.append(time.perf_counter() - started)
            if status == 200 and b"Check your inbox" in body:
                answered.append(address)
            else:
                failures[f"HTTP {status}"] += 1
    finally:
        connection.close()


async def load(base_url: str, clients: int, seconds: float) -> tuple[list[float], list[str], Counter[str], float]:
    latencies: list[float] = []
    answered: list[str] = []
    failures: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=base_url) as http:
        stamp = STAMP.search((await http.get("/subscribe")).text)
        assert stamp, "no stamp in the form"
    started = time.monotonic()
    stop_at = started + seconds
    await asyncio.gather(
        *(
            client_loop(base_url, stamp.group(1), number, stop_at, latencies, answered, failures)
            for number in range(clients)
        )
    )
    return latencies, answered, failures, time.monotonic() - started


async def same_address_burst(base_url: str, clients: int) -> int:
    """All clients post one new address at once; returns how many answered normally."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=httpx.Limits(max_connections=clients)) as http:
        stamp = STAMP.search((await http.get("/subscribe")).text)
        assert stamp
        answers = await asyncio.gather(
            *(
                http.post("/subscribe", data={"email": "same@example.com", "stamp": stamp.group(1)})
                for _ in range(clients)
            )
        )
    return sum(1 for answer in answers if answer.status_code == 200)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--postgres", action="store_true", help="a fresh PostgreSQL database instead of SQLite")
    parser.add_argument("--workers", type=int, default=1, help="processes of `newsletter serve --workers`")
    arguments = parser.parse_args()
    print(load_average())
    with tempfile.TemporaryDirectory(prefix="signup-load-") as directory:
        if not arguments.postgres:
            return run(
                Path(directory),
                f"sqlite:///{Path(directory) / 'load.db'}",
                arguments.clients,
                arguments.seconds,
                arguments.workers,
            )
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        name = f"signup_{uuid.uuid4().hex[:10]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = admin.url.set(database=name).render_as_string(hide_password=False)
            backends = CpuMeter({"PostgreSQL": lambda: backend_pids(admin, name)})
            return run(Path(directory), url, arguments.clients, arguments.seconds, arguments.workers, backends)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def run(
    directory: Path, database_url: str, clients: int, seconds: float, workers: int, backends: CpuMeter | None = None
) -> int:
    """The load against one database; `backends` measures the PostgreSQL backends' CPU during it."""
    sink = Sink()
    smtp_port, web_port = free_port(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    base_url = f"http://127.0.0.1:{web_port}"
    config = directory / "newsletter.toml"
    config.write_text(
        f'database_url = "{database_url}"\nsecret_key = "load-benchmark-secret-key-0123456789"\n'
        f'from_address = "editor@example.org"\nbase_url = "{base_url}"\npostal_address = "1 Example Street"\n'
        f'smtp_host = "127.0.0.1"\nsmtp_port = {smtp_port}\nsignup_min_fill_seconds = 0\n'
        "signup_limit_per_ip = 0\nsignup_limit_per_address = 0\n",
        encoding="utf-8",
    )
    command = [sys.executable, "-c", "from newsletter.cli import main; main()", "--config", str(config)]
    subprocess.run([*command, "db", "upgrade"], check=True, capture_output=True, cwd=directory)
    server = subprocess.Popen(
        [*command, "serve", "--host", "127.0.0.1", "--port", str(web_port), "--workers", str(workers)],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_server(base_url)
        cpu_before, server_before = time.process_time(), tree_cpu_seconds(server.pid) or 0.0
        if backends is not None:
            backends.start()
        latencies, answered, failures, elapsed = asyncio.run(load(base_url, clients, seconds))
        cpu = (time.process_time() - cpu_before, (tree_cpu_seconds(server.pid) or 0.0) - server_before)
        backend_cpu = backends.stop()["PostgreSQL"] if backends is not None else None
        mailed_in_load = sum(sink.received.values())
        load_ended = time.monotonic()
        reached = wait_for_mail(sink, len(answered))
        drain_seconds = (reached or time.monotonic()) - load_ended
        drain_cpu = (tree_cpu_seconds(server.pid) or 0.0) - server_before - cpu[1]
        burst_ok = asyncio.run(same_address_burst(base_url, clients))
        drained = reached is not None and wait_for_mail(sink, len(answered) + 1) is not None
    finally:
        server.terminate()
        server.wait(timeout=60)
        controller.stop()
    print(
        f"CPU during the load: server {cpu[1]:.1f} s ({cpu[1] * 1000 / max(1, len(answered)):.1f} ms per sign-up), "
        f"load clients and SMTP sink {cpu[0]:.1f} s, over {elapsed:.1f} s; {load_average()}"
    )
    if backend_cpu is not None:
        print(
            f"CPU of the PostgreSQL backends during the load: {backend_cpu:.1f} s "
            f"({backend_cpu * 1000 / max(1, len(answered)):.1f} ms per sign-up)"
        )
    print(
        f"confirmation mails at the sink when the load ended: {mailed_in_load} of {len(answered)}; the rest "
        f"{drain_seconds:.1f} s later (server CPU {drain_cpu:.1f} s more); with them, "
        f"{len(answered) / (elapsed + drain_seconds):.1f} sign-ups/s and "
        f"{(cpu[1] + drain_cpu) * 1000 / max(1, len(answered)):.1f} ms of server CPU a sign-up"
    )
    return report(database_url, sink, latencies, answered, failures, elapsed, clients, workers, burst_ok, drained)


def wait_for_server(base_url: str) -> None:
    deadline = time.monotonic() + STARTUP_LIMIT_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("newsletter serve did not start")


def wait_for_mail(sink: Sink, expected: int) -> float | None:
    """When (time.monotonic) the sink had `expected` mails, or None if it never did."""
    deadline = time.monotonic() + DRAIN_LIMIT_SECONDS
    while time.monotonic() < deadline:
        if sum(sink.received.values()) >= expected:
            reached = time.monotonic()
            time.sleep(1)  # anything beyond the expected count would be a double: give it a moment
            return reached
        time.sleep(0.05)
    return None


def report(
    database_url: str,
    sink: Sink,
    latencies: list[float],
    answered: list[str],
    failures: Counter[str],
    elapsed: float,
    clients: int,
    workers: int,
    burst_ok: int,
    drained: bool,
) -> int:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.scalar(select(func.count()).select_from(Subscriber)) or 0
        distinct = connection.scalar(select(func.count(func.distinct(Subscriber.email_key)))) or 0
        same_rows = (
            connection.scalar(
                select(func.count()).select_from(Subscriber).where(Subscriber.email_key == "same@example.com")
            )
            or 0
        )
        outbound = connection.scalar(select(func.count()).select_from(OutboundMessage)) or 0
    engine.dispose()
    unique_answered = set(answered)
    load_rows = rows - same_rows
    missing_mail = sum(1 for address in unique_answered if sink.received[address] == 0)
    doubled_mail = sum(1 for address in unique_answered if sink.received[address] > 1)
    lost = len(unique_answered) - load_rows
    kind = "SQLite" if database_url.startswith("sqlite") else "PostgreSQL"
    serving = "one `newsletter serve` process" if workers == 1 else f"`newsletter serve --workers {workers}`"
    print(f"clients {clients}, {elapsed:.1f} s, {kind}, {serving}, each process with its embedded queue")
    print(f"sign-ups answered: {len(answered)}  ({len(answered) / elapsed:.1f} sign-ups/s)")
    if latencies:
        print(
            f"latency: p50 {statistics.median(latencies) * 1000:.0f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
        )
    print(f"failed requests: {sum(failures.values())} {dict(failures) if failures else ''}")
    print(
        f"subscriber rows for the answered addresses: {load_rows} of {len(unique_answered)} "
        f"(lost {lost}, doubled {rows - distinct})"
    )
    print(
        f"confirmation mails queued: {outbound}; received at the SMTP sink: {sum(sink.received.values())} "
        f"(answered sign-ups without a mail: {missing_mail}, with more than one: {doubled_mail}; "
        f"queue drained: {drained})"
    )
    print(
        f"one address posted by {clients} clients at once: {burst_ok} answers, {same_rows} row, "
        f"{sink.received['same@example.com']} mail(s)"
    )
    correct = (
        lost == 0
        and rows == distinct
        and missing_mail == 0
        and doubled_mail == 0
        and same_rows == 1
        and not failures
        and drained
    )
    print("none lost, none doubled" if correct else "MISMATCH: see the counts above")
    return 0 if correct else 1


if __name__ == "__main__":
    raise SystemExit(main())
