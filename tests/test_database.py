"""SQLite's one writer: transactions of several threads and processes take turns; on SQLite and PostgreSQL,
concurrent works share a transaction (group commit) without one caller's error spoiling another's."""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, event, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from newsletter import database
from newsletter.errors import InvalidAddress
from newsletter.models import Event, Subscriber, SubscriberStatus
from newsletter.settings import Settings

WRITER_SCRIPT = """
import sys
from sqlalchemy import text
from newsletter import database
from newsletter.settings import Settings

engine = database.make_engine(Settings(database_url=sys.argv[1]))
for _ in range(int(sys.argv[2])):
    with database.transaction(engine) as session:
        value = session.execute(text("SELECT value FROM counter")).scalar_one()
        session.execute(text("UPDATE counter SET value = :value"), {"value": value + 1})
"""


def add_reader(session: Session, email: str) -> int:
    subscriber = Subscriber(email=email, email_key=email.lower(), status=SubscriberStatus.PENDING)
    session.add(subscriber)
    session.flush()
    return subscriber.id


def started_threads(target: Callable[[int], None], count: int) -> list[threading.Thread]:
    """`count` threads running target(0) ... target(count - 1), started."""
    threads = [threading.Thread(target=target, args=(number,)) for number in range(count)]
    for thread in threads:
        thread.start()
    return threads


def emails_by_id(engine: Engine) -> dict[int, str]:
    with database.transaction(engine) as session:
        return {row[0]: row[1] for row in session.execute(select(Subscriber.id, Subscriber.email))}


def test_processes_take_turns_at_a_sqlite_database(settings: Settings, tmp_path: Path) -> None:
    # Read and write in one transaction, in three processes at once: a lost update or a "database is
    # locked" would show in the count. Without the lock file two processes read the same value.
    engine = database.make_engine(settings)
    with database.transaction(engine) as session:
        session.execute(text("CREATE TABLE counter (value INTEGER NOT NULL)"))
        session.execute(text("INSERT INTO counter VALUES (0)"))
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT, encoding="utf-8")
    writers = [
        subprocess.Popen([sys.executable, str(script), settings.database_url, "150"], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    errors = [writer.communicate(timeout=120)[1].decode() for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0, 0], errors
    with engine.connect() as connection:
        assert connection.execute(text("SELECT value FROM counter")).scalar_one() == 450
    assert Path(settings.database_url.removeprefix("sqlite:///") + database.SQLITE_LOCK_SUFFIX).exists()
    engine.dispose()


def test_a_lock_file_that_cannot_be_made_leaves_sqlites_own_locking(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Where the lock file cannot be created (here a link into a folder that does not exist), transactions
    # still commit, with a warning that names the file, not an error in every one.
    lock = Path(settings.database_url.removeprefix("sqlite:///") + database.SQLITE_LOCK_SUFFIX)
    lock.symlink_to(tmp_path / "missing" / "lock")
    engine = database.make_engine(settings)
    with caplog.at_level("WARNING", logger="newsletter.database"):
        for value in range(3):
            with database.transaction(engine) as session:
                if value == 0:
                    session.execute(text("CREATE TABLE counter (value INTEGER NOT NULL)"))
                session.execute(text("INSERT INTO counter VALUES (:value)"), {"value": value})
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM counter")).scalar_one() == 3
    assert [record.getMessage() for record in caplog.records if str(lock) in record.getMessage()] != []
    assert len(caplog.records) == 1  # said once, not per transaction
    engine.dispose()


def test_a_nested_transaction_does_not_wait_for_itself(engine: Engine) -> None:
    # The outer transaction writes after the inner one committed (SQLite lets one connection write at a time).
    with database.transaction(engine) as outer:
        with database.transaction(engine) as inner:
            add_reader(inner, "inner@example.org")
        add_reader(outer, "outer@example.org")
    with database.transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 2


def test_a_work_started_inside_a_transaction_runs_at_once_while_others_wait(engine: Engine) -> None:
    # Inside a transaction the thread holds the writer lock: joining another thread's group would wait for
    # a leader that waits for that lock. It commits its work alone instead.
    other_started, other_done = threading.Event(), threading.Event()

    def other() -> None:
        other_started.set()
        database.run_in_transaction(engine, functools.partial(add_reader, email="other@example.org"))
        other_done.set()

    with database.transaction(engine) as outer:
        thread = threading.Thread(target=other)
        thread.start()
        other_started.wait(5)
        time.sleep(0.2)  # the other thread leads a group and waits for the writer lock this thread holds
        inner_id = database.run_in_transaction(engine, functools.partial(add_reader, email="inner@example.org"))
        assert not other_done.is_set()
        add_reader(outer, "outer@example.org")
    thread.join(10)
    assert other_done.is_set()
    with database.transaction(engine) as session:
        emails = set(session.scalars(select(Subscriber.email)))
        assert session.get(Subscriber, inner_id) is not None
    assert emails == {"inner@example.org", "outer@example.org", "other@example.org"}


def test_concurrent_works_share_transactions_and_each_gets_its_own_result(any_engine: Engine) -> None:
    transactions: list[int] = []
    database_commits = threading.Lock()

    def count_commit(_connection: object) -> None:
        with database_commits:
            transactions.append(1)

    event.listen(any_engine, "commit", count_commit)
    results: dict[int, int] = {}
    start = threading.Barrier(40)

    def sign_up(number: int) -> None:
        start.wait()
        for round_ in range(5):
            work = functools.partial(add_reader, email=f"reader{number}-{round_}@example.org")
            results[number * 10 + round_] = database.run_in_transaction(any_engine, work)

    threads = started_threads(sign_up, 40)
    for thread in threads:
        thread.join(timeout=60)
    rows = emails_by_id(any_engine)
    assert len(rows) == 200
    for key, subscriber_id in results.items():  # each caller got the id of the row it added, not another's
        assert rows[subscriber_id] == f"reader{key // 10}-{key % 10}@example.org"
    assert len(transactions) < 200  # shared: fewer commits than works


def test_an_error_reaches_its_own_caller_and_the_rest_of_the_group_commits(any_engine: Engine) -> None:
    start = threading.Barrier(20)
    outcomes: dict[int, object] = {}

    def work(session: Session, number: int) -> int:
        if number % 5 == 0:
            add_reader(session, f"half-done{number}@example.org")  # written, then rolled back
            raise InvalidAddress("not an address", f"bad{number}")
        return add_reader(session, f"reader{number}@example.org")

    def caller(number: int) -> None:
        start.wait()
        try:
            outcomes[number] = database.run_in_transaction(any_engine, lambda s: work(s, number))
        except InvalidAddress as error:
            outcomes[number] = error

    threads = started_threads(caller, 20)
    for thread in threads:
        thread.join(timeout=60)
    failed = sorted(number for number, outcome in outcomes.items() if isinstance(outcome, InvalidAddress))
    assert failed == [0, 5, 10, 15]
    with database.transaction(any_engine) as session:
        emails = set(session.scalars(select(Subscriber.email)))
    assert emails == {f"reader{number}@example.org" for number in range(20) if number % 5}


def test_a_lone_work_commits_at_once_and_its_error_rolls_it_back(any_engine: Engine) -> None:
    subscriber_id = database.run_in_transaction(any_engine, lambda s: add_reader(s, "one@example.org"))

    def fails(session: Session) -> None:
        session.add(Event(subscriber_id=subscriber_id, kind="note", source="test"))
        session.flush()
        raise RuntimeError("the work failed")

    with pytest.raises(RuntimeError, match="the work failed"):
        database.run_in_transaction(any_engine, fails)
    with database.transaction(any_engine) as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 0
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 1


@pytest.mark.anyio
async def test_works_awaited_on_a_loop_share_transactions_without_a_thread_each(any_engine: Engine) -> None:
    # The web app's sign-ups: 60 callers on one event loop, none holding a thread while it waits.
    transactions: list[int] = []
    event.listen(any_engine, "commit", lambda _connection: transactions.append(1))
    committed_before_then: list[bool] = []
    calls: list[list[int]] = []
    threads_before = threading.active_count()
    most_threads = 0

    def then(subscriber_ids: list[int]) -> None:
        # After the commit, once a group: another connection sees the rows.
        calls.append(subscriber_ids)
        with any_engine.connect() as connection:
            seen = set(connection.scalars(select(Subscriber.id).where(Subscriber.id.in_(subscriber_ids))))
        committed_before_then.extend(subscriber_id in seen for subscriber_id in subscriber_ids)

    async def sign_up(number: int) -> int:
        nonlocal most_threads
        most_threads = max(most_threads, threading.active_count())
        work = functools.partial(add_reader, email=f"reader{number}@example.org")
        return await database.run_awaited(any_engine, work, then)

    ids = await asyncio.gather(*(sign_up(number) for number in range(60)))
    rows = emails_by_id(any_engine)
    assert [rows[subscriber_id] for subscriber_id in ids] == [f"reader{n}@example.org" for n in range(60)]
    assert committed_before_then == [True] * 60
    assert len(transactions) < 60  # shared
    assert sorted(sum(calls, [])) == sorted(ids), "each value once"
    assert len(calls) < 60 and max(map(len, calls)) <= database.GROUP_COMMIT_MOST, "one call a group"
    leaders = 1 if any_engine.dialect.name == "sqlite" else database.GROUP_COMMIT_LEADERS
    assert most_threads <= threads_before + leaders  # a thread a group being committed, not one a caller


@pytest.mark.anyio
async def test_an_awaited_error_reaches_its_own_caller_alone(any_engine: Engine) -> None:
    def work(session: Session, number: int) -> int:
        if number % 4 == 0:
            add_reader(session, f"half-done{number}@example.org")
            raise InvalidAddress("not an address", f"bad{number}")
        return add_reader(session, f"reader{number}@example.org")

    def then(subscriber_ids: list[int]) -> None:
        if any(subscriber_id % 7 == 0 for subscriber_id in subscriber_ids):  # after the commit: the rows stay
            raise RuntimeError(f"could not queue {subscriber_ids}")

    def fine(subscriber_ids: list[int]) -> None:
        pass

    outcomes = await asyncio.gather(
        *(
            database.run_awaited(any_engine, functools.partial(work, number=n), then if n < 16 else fine)
            for n in range(20)
        ),
        return_exceptions=True,
    )
    assert [n for n, outcome in enumerate(outcomes) if isinstance(outcome, InvalidAddress)] == [0, 4, 8, 12, 16]
    queued = [outcome for outcome in outcomes if isinstance(outcome, RuntimeError)]
    assert queued and all(str(error).startswith("could not queue") for error in queued)
    # Each caller of the failed call hears of it; those of another `then` do not.
    failed_ids = {int(number) for error in queued for number in str(error).split("[")[1].rstrip("]").split(", ")}
    assert all(isinstance(outcomes[n], int) for n in (17, 18, 19))
    assert not any(outcomes[n] in failed_ids for n in (17, 18, 19) if isinstance(outcomes[n], int))
    with database.transaction(any_engine) as session:
        emails = set(session.scalars(select(Subscriber.email)))
    assert emails == {f"reader{n}@example.org" for n in range(20) if n % 4}


@pytest.mark.anyio
async def test_awaited_and_blocking_callers_hand_the_group_over_to_each_other(any_engine: Engine) -> None:
    # Threads block in run_in_transaction while coroutines await: whichever leads, nobody is left waiting.
    start = threading.Barrier(9)
    blocking: dict[int, int] = {}

    def on_thread(number: int) -> None:
        start.wait()
        for round_ in range(10):
            work = functools.partial(add_reader, email=f"thread{number}-{round_}@example.org")
            blocking[number * 100 + round_] = database.run_in_transaction(any_engine, work)

    threads = started_threads(on_thread, 8)
    start.wait()

    async def on_loop(number: int) -> int:
        await asyncio.sleep(0.001 * (number % 10))
        return await database.run_awaited(any_engine, functools.partial(add_reader, email=f"loop{number}@example.org"))

    awaited = await asyncio.wait_for(asyncio.gather(*(on_loop(number) for number in range(80))), timeout=60)
    for thread in threads:
        thread.join(timeout=60)
    rows = emails_by_id(any_engine)
    assert len(rows) == 160
    assert [rows[subscriber_id] for subscriber_id in awaited] == [f"loop{n}@example.org" for n in range(80)]
    assert all(rows[i] == f"thread{key // 100}-{key % 100}@example.org" for key, i in blocking.items())


@pytest.mark.anyio
async def test_a_blocking_leader_hands_an_awaited_work_to_a_thread(any_engine: Engine) -> None:
    # A thread leads a group while a coroutine's work arrives: once the thread's own work is done it goes
    # its way, and the awaited work, which has no thread to lead with, is committed all the same.
    leading, release = threading.Event(), threading.Event()

    def slow(session: Session) -> int:
        leading.set()
        release.wait(10)
        return add_reader(session, "thread@example.org")

    thread = threading.Thread(target=database.run_in_transaction, args=(any_engine, slow))
    thread.start()
    assert await asyncio.to_thread(leading.wait, 10)
    awaited = asyncio.ensure_future(
        database.run_awaited(any_engine, functools.partial(add_reader, email="loop@example.org"))
    )
    await asyncio.sleep(0.05)  # waiting behind the thread's group
    release.set()
    subscriber_id = await asyncio.wait_for(awaited, timeout=10)
    thread.join(10)
    with database.transaction(any_engine) as session:
        assert session.get(Subscriber, subscriber_id).email == "loop@example.org"  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_postgresql_commits_several_groups_at_once(postgres_engine: Engine) -> None:
    # A group waiting on its round trips leaves the next group free to commit on another connection.
    second_committed = threading.Event()

    def first(session: Session) -> bool:
        add_reader(session, "first@example.org")
        return second_committed.wait(10)  # a lone leader would wait here for a group that never starts

    def second(session: Session) -> int:
        return add_reader(session, "second@example.org")

    waiting_for_second = asyncio.ensure_future(database.run_awaited(postgres_engine, first))
    await asyncio.sleep(0.1)
    await database.run_awaited(postgres_engine, second, lambda _ids: second_committed.set())
    assert await waiting_for_second


def backend_of(engine: Engine) -> int:
    with engine.connect() as connection:
        pid: int = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        return pid


def end_backend(postgres_url: str, pid: int) -> None:
    other = database.make_engine(Settings(database_url=postgres_url))
    with other.connect() as connection:
        assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    other.dispose()
    time.sleep(0.2)


def test_a_connection_that_died_while_idle_is_replaced_before_use(
    postgres_engine: Engine, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a connection idle longer than PING_IDLE_SECONDS is tried first: one back in the pool a moment ago
    is used as it is (here, one whose server process has gone fails), one idle longer is replaced."""
    monkeypatch.setattr(database, "PING_IDLE_SECONDS", 3600.0)
    end_backend(postgres_url, backend_of(postgres_engine))
    with pytest.raises(OperationalError):
        backend_of(postgres_engine)
    monkeypatch.setattr(database, "PING_IDLE_SECONDS", 0.1)
    first = backend_of(postgres_engine)
    end_backend(postgres_url, first)
    assert backend_of(postgres_engine) != first


def test_a_statement_runs_alone_on_postgresql_and_commits(postgres_engine: Engine) -> None:
    def insert(connection: Connection) -> None:
        assert connection.connection.driver_connection.autocommit  # no BEGIN, no COMMIT around the statement
        connection.execute(text("INSERT INTO throttles (key, window_start, hits) VALUES ('k', now(), 1)"))

    database.run_statement(postgres_engine, insert)
    with postgres_engine.connect() as connection:
        assert connection.execute(text("SELECT hits FROM throttles WHERE key = 'k'")).scalar_one() == 1
