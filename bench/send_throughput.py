"""Benchmark: send the sample issue to N subscribers (default 20,000; --large: 100,000).

Sends to Postfix's `smtp-sink` (aiosmtpd when it is not installed) in the embedded mode (SQLite, the
in-process worker) and in the distributed mode (PostgreSQL, Redis, two `newsletter worker` processes),
and measures in the same run the raw baseline: one pre-built message sent N times over one smtplib
connection to the same sink. Prints messages per second, the ratio to the baseline, peak memory, and
the CPU seconds per 1,000 messages of each kind of process (workers, the PostgreSQL backends of the
bench database, Redis, the sink, `send` itself), so a change shows where it saved. Redis serves every
user of the machine: its figure counts their commands too. `--profile` samples a worker (the `send`
process in the embedded mode) with py-spy and prints its top functions; it slows what it samples, so
take rates from a run without it. `--dkim` signs every message (a fresh key) and prints what a
signature costs beside composing.

The baseline is what a naive loop does: `smtplib.sendmail` per message, which dot-stuffs the bytes with
a regular expression (about 0.6 ms of CPU for the 77 kB sample) and waits for each of MAIL, RCPT, DATA
and the final dot in turn (no PIPELINING): four round trips a message, each needing the sink scheduled,
so it is the figure that suffers most on a busy machine, and the sink spends more per message on it
than on our pipelined sends. It is measured before the modes and again after them; the ratios at the
end are taken against the faster of the two. With `smtp-source` installed, the run ends with the wire's
limit: Postfix's C client sending the same bytes over 1, 2 and 4 sessions to the same sink.

Targets on a 2-core machine: distributed (2 workers x 2 threads) at least 1.3x the raw baseline,
embedded at least 1.6x; peak memory at 100,000 subscribers within 10% of that at 10,000.

    python bench/send_throughput.py [--subscribers N | --large] [--mode both|embedded|distributed]
                                    [--threads T] [--profile] [--dkim]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from processes import CpuMeter, Profile, backend_pids, load_average, top_functions  # bench/processes.py
from sqlalchemy import create_engine, insert, text

from newsletter import campaign, database
from newsletter.demo import SAMPLE_ISSUE
from newsletter.domainkeys import DkimSigner
from newsletter.leases import Claim
from newsletter.mime import MessageTemplate, Recipient
from newsletter.models import Subscriber, SubscriberStatus, utcnow
from newsletter.queue import Queue
from newsletter.render import render_issue_file
from newsletter.sender import Composer
from newsletter.settings import Settings

POSTGRES_ADMIN_URL = os.environ.get("NEWSLETTER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("NEWSLETTER_BENCH_REDIS", "redis://127.0.0.1:6379/14")
DKIM_KEY_VARIABLE = "NEWSLETTER_BENCH_DKIM_KEY"  # set by --dkim for the child processes
DKIM_SAMPLE_SIGNATURES = 200
INSERT_CHUNK_ROWS = 10_000
WORKER_START_LIMIT_SECONDS = 120
WORKER_PROCESSES = 2
WIRE_SESSIONS = (1, 2, 4)
WIRE_MESSAGES = 20_000  # per session count: enough for a steady rate, even in a --large run


def bench_settings(port: int, **changes: Any) -> Settings:
    dkim_key = os.environ.get(DKIM_KEY_VARIABLE, "")
    if dkim_key:
        changes |= {"dkim_private_key_path": dkim_key, "dkim_selector": "bench"}
    return Settings(
        secret_key="bench-secret-key-bench-secret-key",
        from_address="editor@example.org",
        from_name="Bench",
        postal_address="1 Bench Street",
        base_url="https://news.example.org",
        smtp_host="127.0.0.1",
        smtp_port=port,
        **changes,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_sink(port: int) -> tuple[subprocess.Popen[bytes], str]:
    """smtp-sink when installed, else aiosmtpd in its own process; returns the process and its name."""
    sink = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None)
    if sink:
        as_user = ["-u", "postfix"] if os.geteuid() == 0 else []  # smtp-sink refuses to keep root privileges
        process = subprocess.Popen([sink, *as_user, f"127.0.0.1:{port}", "1000"])
        name = "smtp-sink"
    else:
        code = (
            "import time\nfrom aiosmtpd.controller import Controller\nclass Sink:\n"
            "    async def handle_DATA(self, server, session, envelope):\n        return '250 OK'\n"
            f"Controller(Sink(), hostname='127.0.0.1', port={port}).start()\nwhile True: time.sleep(60)\n"
        )
        process = subprocess.Popen([sys.executable, "-c", code])
        name = "aiosmtpd"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, name
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the SMTP sink did not start")


def add_subscribers(settings: Settings, count: int) -> None:
    """Fill the list in a separate process, so the peak memory measured is the send's alone."""
    subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "populate",
            "--database-url",
            settings.database_url,
            "--subscribers",
            str(count),
        ],
        check=True,
    )


def populate(database_url: str, count: int) -> None:
    engine = database.make_engine(Settings(database_url=database_url))
    database.upgrade(engine)
    now = utcnow()
    with database.transaction(engine) as session:
        for start in range(0, count, INSERT_CHUNK_ROWS):
            session.execute(
                insert(Subscriber),
                [
                    {
                        "email": f"reader{n}@example.com",
                        "email_key": f"reader{n}@example.com",
                        "name": f"Reader {n}",
                        "status": SubscriberStatus.ACTIVE,
                        "source": "import",
                        "bounce_score": 0.0,
                        "attributes": {},
                        "created_at": now,
                        "confirmed_at": now,
                    }
                    for n in range(start, min(start + INSERT_CHUNK_ROWS, count))
                ],
            )
    engine.dispose()


def sample_message(port: int) -> bytes:
    """The sample issue filled for one reader: the bytes the baseline and the wire's limit send."""
    settings = bench_settings(port)
    template = MessageTemplate.build(render_issue_file(SAMPLE_ISSUE, settings), settings)
    return template.fill(
        Recipient(
            "reader0@example.com",
            "Reader 0",
            "<1.1.bench@example.org>",
            "https://news.example.org/unsubscribe/x",
            "mailto:unsubscribe@example.org",
            "https://news.example.org/preferences/x",
        )
    )


def raw_baseline(port: int, count: int, sink_pid: int) -> dict[str, Any]:
    """One pre-built message sent `count` times over one smtplib connection: its time and CPU."""
    message = sample_message(port)
    smtp = smtplib.SMTP("127.0.0.1", port)
    meter = CpuMeter({"smtplib loop": lambda: [os.getpid()], "sink": lambda: [sink_pid]})
    meter.start()
    started = time.perf_counter()
    for number in range(count):
        smtp.sendmail("bounces@example.org", [f"reader{number}@example.com"], message)
    seconds = time.perf_counter() - started
    cpu = meter.stop()
    smtp.quit()
    return {"seconds": seconds, "cpu": cpu}


def wire_limit(port: int, count: int, sink_pid: int, sessions: int) -> dict[str, Any] | None:
    """Postfix's `smtp-source` sending the sample message `count` times over `sessions` sessions, or None
    when it is not installed."""
    source = shutil.which("smtp-source") or (
        "/usr/sbin/smtp-source" if Path("/usr/sbin/smtp-source").exists() else None
    )
    if source is None:
        return None
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "sample.eml"
        path.write_bytes(sample_message(port))
        command = [source, "-s", str(sessions), "-m", str(count), "-f", "bounces@example.org"]
        command += ["-t", "reader@example.com", "-F", str(path), f"127.0.0.1:{port}"]
        meter = CpuMeter({"sink": lambda: [sink_pid]})
        before = os.times()
        meter.start()
        started = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - started
        cpu = meter.stop()
        after = os.times()
    own = after.children_user + after.children_system - before.children_user - before.children_system
    return {"seconds": seconds, "cpu": {"smtp-source": own, **cpu}}


def run_embedded(port: int, count: int, threads: int, sink_pid: int, profile: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        settings = bench_settings(port, database_url=f"sqlite:///{directory}/bench.db", smtp_connections=threads)
        add_subscribers(settings, count)
        engine = database.make_engine(settings)
        issue = render_issue_file(SAMPLE_ISSUE, settings)
        meter = CpuMeter({"send (its workers, SQLite)": lambda: [os.getpid()], "sink": lambda: [sink_pid]})
        profiler = Profile(os.getpid(), Path(directory) / "profile.txt") if profile else None
        meter.start()
        started = time.perf_counter()
        counts = campaign.send_issue(engine, Queue(settings, engine), issue)
        seconds = time.perf_counter() - started
        cpu = meter.stop()
        top = _stop_profile(profiler)
    assert counts["sent"] == count, counts.by_status
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mb": peak_mb, "cpu": cpu, "profile": top}


def _stop_profile(profiler: Profile | None) -> list[str]:
    if profiler is None:
        return []
    profiler.stop()
    return top_functions(profiler.output)


def run_distributed(port: int, count: int, threads: int, sink_pid: int, profile: bool) -> dict[str, Any]:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    settings = bench_settings(
        port, database_url=url, broker_url=REDIS_URL, queue_name=name, smtp_connections=threads * WORKER_PROCESSES
    )
    try:
        add_subscribers(settings, count)
        workers = start_workers(settings, threads)
        engine = database.make_engine(settings)
        issue = render_issue_file(SAMPLE_ISSUE, settings)
        queue = Queue(settings, engine)
        meter = CpuMeter(
            {
                "workers": lambda: [worker.pid for worker in workers],
                "PostgreSQL backends": lambda: backend_pids(admin, name),
                "Redis (shared)": lambda: [redis_pid()],
                "sink": lambda: [sink_pid],
                "send": lambda: [os.getpid()],
            }
        )
        with tempfile.TemporaryDirectory() as directory:
            profiler = Profile(workers[0].pid, Path(directory) / "profile.txt") if profile else None
            meter.start()
            started = time.perf_counter()
            counts = campaign.send_issue(engine, queue, issue)
            seconds = time.perf_counter() - started
            cpu = meter.stop()
            top = _stop_profile(profiler)
        queue.stop()
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=120)
        engine.dispose()
        assert counts["sent"] == count, counts.by_status
        return {
            "seconds": seconds,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "cpu": cpu,
            "profile": top,
        }
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def start_workers(settings: Settings, threads: int) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        **{
            f"NEWSLETTER_{field.name.upper()}": str(getattr(settings, field.name))
            for field in dataclasses.fields(settings)
        },
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", "from newsletter.cli import main; main()", "worker", "--threads", str(threads)],
            env=env,
            stderr=subprocess.PIPE,
        )
        for _ in range(WORKER_PROCESSES)
    ]
    for worker in workers:
        wait_until_ready(worker)
    return workers


def wait_until_ready(worker: subprocess.Popen[bytes]) -> None:
    """Read the worker's messages until it says it runs (a busy machine takes seconds to import), then
    keep passing them on, so that the clock starts on a fleet that is working."""
    assert worker.stderr is not None
    deadline = time.monotonic() + WORKER_START_LIMIT_SECONDS
    for line in worker.stderr:
        sys.stderr.buffer.write(line)
        if line.startswith(b"Worker on "):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("a worker did not start")
    else:
        raise RuntimeError(f"a worker stopped at start (exit status {worker.wait()})")
    stream = worker.stderr
    threading.Thread(target=lambda: shutil.copyfileobj(stream, sys.stderr.buffer), daemon=True).start()


def redis_pid() -> int:
    return int(redis.Redis.from_url(REDIS_URL).info("server")["process_id"])


def child(mode: str, port: int, count: int, threads: int, sink_pid: int, profile: bool) -> dict[str, Any]:
    """Run one mode in a fresh process, so its peak memory is its own."""
    command = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--port",
        str(port),
        "--subscribers",
        str(count),
        "--threads",
        str(threads),
        "--sink-pid",
        str(sink_pid),
        *(["--profile"] if profile else []),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def cpu_line(cpu: dict[str, float], count: int) -> str:
    per_thousand = {kind: seconds * 1000 / count for kind, seconds in cpu.items()}
    parts = [f"{kind} {seconds:.2f}" for kind, seconds in per_thousand.items()]
    return f"    CPU s per 1,000 messages: {', '.join(parts)}; total {sum(per_thousand.values()):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--large", action="store_true", help="100,000 subscribers")
    parser.add_argument("--mode", choices=["both", "embedded", "distributed"], default="both")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads per process (embedded default 4; distributed default 2 per worker)",
    )
    parser.add_argument("--profile", action="store_true", help="sample a worker with py-spy, print its top functions")
    parser.add_argument("--dkim", action="store_true", help="sign every message with a fresh 2048-bit DKIM key")
    parser.add_argument("--child", choices=["embedded", "distributed", "populate"], help=argparse.SUPPRESS)
    parser.add_argument("--database-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--sink-pid", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    count = 100_000 if args.large else args.subscribers
    if args.child == "populate":
        populate(args.database_url, count)
        return
    if args.child:
        run = run_embedded if args.child == "embedded" else run_distributed
        print(json.dumps(run(args.port, count, args.threads, args.sink_pid, args.profile)))
        return
    with tempfile.TemporaryDirectory() as directory:
        if args.dkim:
            os.environ[DKIM_KEY_VARIABLE] = write_dkim_key(Path(directory))
        compare(args, count)


def write_dkim_key(directory: Path) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = directory / "dkim.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    return str(path)


def dkim_cost(port: int) -> str:
    """CPU per DKIM signature of the sample message, and per composed message, on this core."""
    settings = bench_settings(port)
    composer = Composer(settings, DkimSigner.from_settings(settings))
    template = MessageTemplate.build(render_issue_file(SAMPLE_ISSUE, settings), settings)
    claims = [Claim(n, n, f"reader{n}@example.com", f"Reader {n}", 1) for n in range(DKIM_SAMPLE_SIGNATURES)]
    started = time.process_time()
    for claim in claims:
        composer.compose(template, 1, claim)
    signed = time.process_time() - started
    composer.dkim = None
    started = time.process_time()
    for claim in claims:
        composer.compose(template, 1, claim)
    unsigned = time.process_time() - started
    per = 1000 / DKIM_SAMPLE_SIGNATURES
    return (
        f"DKIM: composing a message costs {unsigned * per:.2f} ms of CPU unsigned, {signed * per:.2f} ms signed "
        f"(the signature {(signed - unsigned) * per:.2f} ms)"
    )


def compare(args: argparse.Namespace, count: int) -> None:
    port = free_port()
    sink, sink_name = start_sink(port)
    try:
        print(f"{count:,} subscribers, sink {sink_name}, sample issue {SAMPLE_ISSUE.name}; {load_average()}")
        raw = raw_baseline(port, count, sink.pid)
        baseline = count / raw["seconds"]
        print(f"raw baseline (one smtplib connection, pre-built bytes): {baseline:,.0f} msg/s")
        print(cpu_line(raw["cpu"], count))
        if args.dkim:
            print(dkim_cost(port))
        modes = ["embedded", "distributed"] if args.mode == "both" else [args.mode]
        rates: dict[str, float] = {}
        for mode in modes:
            threads = args.threads or (4 if mode == "embedded" else 2)
            result = child(mode, port, count, threads, sink.pid, args.profile)
            rate = rates[mode] = count / result["seconds"]
            extra = f", workers {result['worker_peak_mb']:.0f} MB" if "worker_peak_mb" in result else ""
            print(
                f"{mode:<12} {rate:>8,.0f} msg/s  {rate / baseline:.2f}x baseline  "
                f"{result['seconds']:.1f} s  peak memory {result['peak_mb']:.0f} MB{extra}"
            )
            print(cpu_line(result["cpu"], count))
            for line in result["profile"]:
                print(f"    {line}")
        again = count / raw_baseline(port, count, sink.pid)["seconds"]
        best = max(baseline, again)
        ratios = ", ".join(f"{mode} {rate / best:.2f}x" for mode, rate in rates.items())
        print(f"raw baseline again: {again:,.0f} msg/s; against the faster baseline ({best:,.0f}): {ratios}")
        wire_count = min(count, WIRE_MESSAGES)
        for sessions in WIRE_SESSIONS:
            wire = wire_limit(port, wire_count, sink.pid, sessions)
            if wire is None:
                break
            rate = wire_count / wire["seconds"]
            print(f"wire's limit, smtp-source {sessions} session(s): {rate:,.0f} msg/s  {rate / best:.2f}x baseline")
            print(cpu_line(wire["cpu"], wire_count))
        print(f"after the run: {load_average()}")
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    main()
