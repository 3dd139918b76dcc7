"""Benchmark: a send of 3,000 readers (PostgreSQL + Redis, two workers) through faults, each on its own issue.

A TCP proxy (tests/tcpproxy.py) stands in front of every link: PostgreSQL, Redis, RabbitMQ and the relay
(aiosmtpd, tests/mailserver.py, which counts what it accepts per recipient). `newsletter send` runs as a
user runs it; two `newsletter worker` processes do the work. The faults, mid-send (once a fifth is sent)
unless said otherwise: SIGTERM to one of the two workers; SIGKILL to one; PostgreSQL cut 10 s; Redis cut
10 s; RabbitMQ cut 10 s (RabbitMQ as the broker, Redis still counting the connections); the relay
resetting every connection every 2 s for 20 s; the relay down for the first 20 s of the send; the relay
answering 421 to every recipient for 30 s.

A send without a fault comes first, for comparison. For each fault it prints the seconds from the fault's
end to the send's completion (the issue's target: about 30 s after the link is back; a fault mid-send
leaves four fifths of the send still to go then, which the undisturbed send's time puts in scale), the
whole send's seconds, and checks that nobody is missing and nobody got two messages, printing FAIL when
one is: beyond what the README allows after a SIGKILL (20 per thread of the killed worker) or a reset
after the final dot (one per try it cost), or any traceback or failed exit of `send`.

    python bench/faults.py [--subscribers 3000] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from processes import load_average  # bench/processes.py
from send_throughput import POSTGRES_ADMIN_URL, add_subscribers, bench_settings  # bench/send_throughput.py
from sqlalchemy import Engine, Select, create_engine, func, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter import leases  # noqa: E402
from newsletter.models import Delivery, DeliveryStatus, Issue  # noqa: E402
from newsletter.settings import Settings  # noqa: E402
from tests.mailserver import EVERYONE, MailSink, running_sink  # noqa: E402
from tests.tcpproxy import TcpProxy, proxy_to  # noqa: E402
from tests.test_crash import environment  # noqa: E402
from tests.test_stops import THREADS_PER_WORKER, Workers  # noqa: E402

REDIS_URL = os.environ.get("NEWSLETTER_BENCH_REDIS", "redis://127.0.0.1:6379/14")
RABBITMQ_URL = os.environ.get("NEWSLETTER_BENCH_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/%2F")
WORKER_PROCESSES = 2
MID_SEND_SHARE = 0.2  # a fault "mid-send" starts once this share of the readers has the issue
SEND_LIMIT_SECONDS = 900.0
WORKER_START_LIMIT_SECONDS = 120.0
TRACEBACK_LINES = 30  # of the first traceback, printed with a FAIL


@dataclass
class Links:
    """The proxies in front of each server, and the settings that reach the servers through them."""

    postgres: TcpProxy
    redis: TcpProxy
    rabbitmq: TcpProxy
    relay: TcpProxy
    sink: MailSink

    def settings(self, database_url: str, broker: str, queue_name: str) -> Settings:
        redis_url = self.redis.url_for(REDIS_URL, 6379)
        broker_url = redis_url if broker == "redis" else self.rabbitmq.url_for(RABBITMQ_URL, 5672)
        return bench_settings(
            self.relay.port,
            database_url=self.postgres.url_for(database_url, 5432),
            broker_url=broker_url,
            rate_limit_url=redis_url,
            queue_name=queue_name,
        )

    def restore(self) -> None:
        for proxy in (self.postgres, self.redis, self.rabbitmq, self.relay):
            proxy.restore()
        self.sink.faults.clear()


@dataclass
class Run:
    """One send under way: its workers, the `send` process, and when the fault ended."""

    settings: Settings
    engine: Engine  # straight to PostgreSQL, never through the proxy
    issue_slug: str
    workers: Workers
    directory: Path
    fault_ended: float | None = None

    def sent(self) -> int:
        query = select(func.count()).select_from(Delivery).where(Delivery.status == DeliveryStatus.SENT)
        return self.scalar(query)

    def scalar(self, query: Select[tuple[int]]) -> int:
        """`query` over this send's deliveries, its one number."""
        query = query.join(Issue, Issue.id == Delivery.issue_id).where(Issue.slug == self.issue_slug)
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def wait_for_share(self, share: float, readers: int) -> None:
        while self.sent() < share * readers:
            time.sleep(0.05)

    def ended(self) -> None:
        self.fault_ended = time.monotonic()


Fault = Callable[[Run, Links, int], None]


def mid_send(act: Callable[[Run, Links], None]) -> Fault:
    def fault(run: Run, links: Links, readers: int) -> None:
        run.wait_for_share(MID_SEND_SHARE, readers)
        act(run, links)

    return fault


def signal_worker(number: int) -> Callable[[Run, Links], None]:
    def act(run: Run, links: Links) -> None:
        run.workers.processes[0].send_signal(number)
        run.ended()

    return act


def cut(proxy_of: Callable[[Links], TcpProxy], seconds: float) -> Callable[[Run, Links], None]:
    def act(run: Run, links: Links) -> None:
        proxy = proxy_of(links)
        proxy.cut()
        time.sleep(seconds)
        proxy.restore()
        run.ended()

    return act


def relay_resets(run: Run, links: Links) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        links.relay.reset_connections()
        time.sleep(2)
    run.ended()


def relay_answers_421(run: Run, links: Links) -> None:
    links.sink.fail(EVERYONE, "RCPT", "421 4.3.2 too busy, closing")
    time.sleep(30)
    links.sink.faults.clear()
    run.ended()


def relay_down_first(run: Run, links: Links, readers: int) -> None:
    time.sleep(20)  # refused since before the send began
    links.relay.restore()
    run.ended()


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: Fault
    broker: str = "redis"
    before: Callable[[Links], None] | None = None  # set up before the send starts
    duplicates_allowed: Callable[[Run], int] = lambda run: 0


def retried_tries(run: Run) -> int:
    """Tries spent beyond the first: a reset after the final dot may have delivered (RFC 5321 4.1.1.4)."""
    return run.scalar(select(func.coalesce(func.sum(Delivery.attempts - 1), 0)).select_from(Delivery))


def no_fault(run: Run, links: Links, readers: int) -> None:
    """The same send undisturbed: what the others' times compare with."""


NO_FAULT = Scenario("no fault (the same send undisturbed)", no_fault)
SCENARIOS = [
    Scenario("SIGTERM one of two workers", mid_send(signal_worker(signal.SIGTERM))),
    Scenario(
        "SIGKILL one of two workers",
        mid_send(signal_worker(signal.SIGKILL)),
        duplicates_allowed=lambda run: THREADS_PER_WORKER * leases.GROUP_SIZE,
    ),
    Scenario("PostgreSQL cut 10 s", mid_send(cut(lambda links: links.postgres, 10))),
    Scenario("Redis cut 10 s", mid_send(cut(lambda links: links.redis, 10))),
    Scenario("RabbitMQ cut 10 s", mid_send(cut(lambda links: links.rabbitmq, 10)), broker="rabbitmq"),
    Scenario("relay reset every 2 s for 20 s", mid_send(relay_resets), duplicates_allowed=retried_tries),
    Scenario("relay down the first 20 s", relay_down_first, before=lambda links: links.relay.refuse()),
    Scenario("relay answering 421 for 30 s", mid_send(relay_answers_421)),
]


def start_workers(settings: Settings, directory: Path) -> Workers:
    """The fleet, as the tests start it (each worker's log in a file); returns once every worker says it runs."""
    workers = Workers(settings, directory)
    for _ in range(WORKER_PROCESSES):
        workers.start()
    deadline = time.monotonic() + WORKER_START_LIMIT_SECONDS
    while workers.logs().count("Worker on ") < WORKER_PROCESSES:
        if time.monotonic() > deadline or any(worker.poll() is not None for worker in workers.processes):
            raise RuntimeError(f"a worker did not start: {workers.logs()}")
        time.sleep(0.1)
    return workers


@contextmanager
def bench_database(readers: int) -> Iterator[tuple[str, Engine]]:
    """A fresh PostgreSQL database with `readers` active subscribers: its URL and a direct engine."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    try:
        add_subscribers(bench_settings(25, database_url=url), readers)
        yield url, engine
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run_scenario(scenario: Scenario, number: int, links: Links, url: str, engine: Engine, readers: int) -> bool:
    """Send one issue through the scenario's fault; prints its line, returns whether it passed."""
    links.sink.received.clear()
    slug = f"faults-{number}"
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        settings = links.settings(url, scenario.broker, f"bench_{uuid.uuid4().hex[:10]}")
        issue = directory / "issue.md"
        issue.write_text(f"---\nsubject: Faults {number}\nslug: {slug}\n---\n\n# Faults\n\n{scenario.name}.\n")
        workers = start_workers(settings, directory)
        run = Run(settings, engine, slug, workers, directory)
        if scenario.before is not None:
            scenario.before(links)
        command = [sys.executable, "-c", "from newsletter.cli import main; main()", "send", "--yes", str(issue)]
        started = time.monotonic()
        with (directory / "send.log").open("wb") as log:
            send = subprocess.Popen(command, cwd=directory, env=environment(settings), stdout=log, stderr=log)
        threading.Thread(target=scenario.fault, args=(run, links, readers), daemon=True).start()
        try:
            send.wait(timeout=SEND_LIMIT_SECONDS)
        except subprocess.TimeoutExpired:
            send.kill()
            send.wait()
        finished = time.monotonic()
        links.restore()
        workers.stop_all()
        output = (directory / "send.log").read_text(errors="replace")
        logs = workers.logs()
        allowed = scenario.duplicates_allowed(run)
    received = Counter(message.recipient for message in links.sink.received)
    missing = readers - len(received)
    twice = sum(received.values()) - len(received)
    after = f"{finished - run.fault_ended:6.1f} s" if run.fault_ended is not None else "     - s"
    problems = []
    if send.returncode != 0:
        problems.append(f"send exited {send.returncode}: {output.strip().splitlines()[-1:]}")
    for who, text_of in (("send", output), ("a worker", logs)):
        if "Traceback" in text_of:
            trace = text_of[text_of.index("Traceback") :].splitlines()[:TRACEBACK_LINES]
            problems.append(f"a traceback in {who}:\n    " + "\n    ".join(trace))
    if missing:
        problems.append(f"{missing} readers missing")
    if twice > allowed:
        problems.append(f"{twice} mailed twice (allowed {allowed})")
    verdict = "ok" if not problems else "FAIL: " + "; ".join(problems)
    print(
        f"{scenario.name:<34} done {after} after the fault, send {finished - started:6.1f} s, "
        f"missing {missing}, twice {twice}  {verdict}",
        flush=True,
    )
    return not problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=3000)
    parser.add_argument("--only", nargs="*", default=[], help="Run only the scenarios whose name holds one of these.")
    arguments = parser.parse_args()
    wanted = [word.lower() for word in arguments.only]
    chosen = [scenario for scenario in SCENARIOS if not wanted or any(w in scenario.name.lower() for w in wanted)]
    fleet = f"{WORKER_PROCESSES} workers x {THREADS_PER_WORKER} threads"
    print(f"{arguments.subscribers:,} readers, {fleet}; {load_average()}")
    passed = 0
    with ExitStack() as stack:
        sink, sink_port = stack.enter_context(running_sink())
        links = Links(
            postgres=stack.enter_context(proxy_to("127.0.0.1", 5432)),
            redis=stack.enter_context(proxy_to("127.0.0.1", 6379)),
            rabbitmq=stack.enter_context(proxy_to("127.0.0.1", 5672)),
            relay=stack.enter_context(proxy_to("127.0.0.1", sink_port)),
            sink=sink,
        )
        url, engine = stack.enter_context(bench_database(arguments.subscribers))
        for number, scenario in enumerate([NO_FAULT, *chosen]):
            ok = run_scenario(scenario, number, links, url, engine, arguments.subscribers)
            passed += ok and scenario is not NO_FAULT
    print(f"{passed} of {len(chosen)} scenarios passed; {load_average()}")
    if passed < len(chosen):
        sys.exit(1)


if __name__ == "__main__":
    main()
