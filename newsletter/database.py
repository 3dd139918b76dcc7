"""Engines, sessions and migrations of the ledger database."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from newsletter.errors import ConfigError, DatabaseNotReady
from newsletter.resources import resource_path
from newsletter.settings import Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Works in one transaction of a group commit: a group's callers wait for all of it. Measured under 100 clients
# signing up on SQLite: groups of up to 50 gave p99 282-304 ms, of up to 20 p99 248-265 ms at as many sign-ups a
# second (the tail is the wait for the group before one's own).
GROUP_COMMIT_MOST = 20
GROUP_COMMIT_LEADERS = 4  # groups committed at once on a server database (on SQLite, one)
SQLITE_LOCK_SUFFIX = "-writer"  # beside the database, like its -wal and -shm files
# A server database's pool: connections kept, and opened beyond them under load (SQLAlchemy's defaults).
POOL_SIZE = 5
POOL_OVERFLOW = 10
# A pooled connection unused this long is tried (a round trip) before it is handed out: one that came back
# a moment ago is taken as it is, which spares a busy sign-up or send a round trip in every transaction.
PING_IDLE_SECONDS = 1.0
# libpq settings that notice a PostgreSQL link dead without a word (a partition, no RST) within about 15 s,
# so that a worker waits it out (outages.wait_out) instead of hanging in a query forever.
POSTGRES_LINK_CHECKS: dict[str, int | str] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,
    # A transaction whose client vanished unseen (its link cut) must not hold its row locks for hours: the
    # server ends it, and a statement waiting on a lock gives up (and is tried again by outages.wait_out).
    "options": "-c idle_in_transaction_session_timeout=20000 -c lock_timeout=20000",
}
_SESSIONMAKERS: weakref.WeakKeyDictionary[Engine, sessionmaker[Session]] = weakref.WeakKeyDictionary()
_SQLITE_WRITERS: weakref.WeakKeyDictionary[Engine, _SqliteWriter] = weakref.WeakKeyDictionary()
_GROUP_COMMITS: weakref.WeakKeyDictionary[Engine, _GroupCommit] = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()
LOGGER = logging.getLogger("newsletter.database")
T = TypeVar("T")


def make_engine(settings: Settings) -> Engine:
    """An engine for `settings.database_url`; SQLite gets WAL, foreign keys and a busy timeout."""
    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        raise ConfigError(f"setting 'database_url' is not a database URL: {settings.database_url!r}") from None
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    options: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
    else:
        options["pool_size"], options["max_overflow"] = POOL_SIZE, POOL_OVERFLOW
        if url.get_backend_name() == "postgresql":
            options["connect_args"] = dict(POSTGRES_LINK_CHECKS)
    try:
        engine = create_engine(url, **options)
    except ModuleNotFoundError as error:
        raise ConfigError(f"no driver for database_url {settings.database_url!r}: {error}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        event.listen(engine, "checkin", _idle_from)
        event.listen(engine, "checkout", partial(_ping_if_idle, engine))
    return engine


def _idle_from(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(engine: Engine, dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """SQLAlchemy's pre-ping, for connections idle a while only: a dead one is replaced before use."""
    since = record.info.get("idle_since")
    if since is None or time.monotonic() - since < PING_IDLE_SECONDS:
        return
    try:
        engine.dialect.do_ping(dbapi_connection)
    except engine.dialect.loaded_dbapi.Error as error:
        raise DisconnectionError(f"a pooled connection is gone: {error}") from error


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """The engine's session factory, made once per engine."""
    # Each sessionmaker builds a Session subclass and its event dispatch: about 2 ms, more than a whole
    # sign-up transaction on SQLite. Two threads racing here make two equal factories; either does.
    factory = _SESSIONMAKERS.get(engine)
    if factory is None:
        factory = _SESSIONMAKERS[engine] = sessionmaker(engine, expire_on_commit=False)
    return factory


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any exception."""
    with _sqlite_writer(engine), make_sessionmaker(engine).begin() as session:
        yield session


def _sqlite_writer(engine: Engine) -> AbstractContextManager[object]:
    """On SQLite, the lock that lets one transaction at a time hold the database file.

    SQLite has one writer at a time anyway: transactions that queue on a lock (the web app's sign-ups, the
    in-process queue's workers, a command run beside `serve`) take their turn as soon as it is free, where
    SQLite's busy handler would have them sleep and retry (up to 100 ms a try), which is what made latencies
    seconds under load. Within a process, threads take turns on an RLock (so a transaction opened inside
    another on the same thread does not wait for itself); the process holding it takes an exclusive `flock`
    on a file beside the database, which the kernel hands to the next process the moment it is released.
    """
    if engine.dialect.name != "sqlite":
        return nullcontext()
    writer = _SQLITE_WRITERS.get(engine)
    if writer is None:
        with _REGISTRY_LOCK:
            writer = _SQLITE_WRITERS.setdefault(engine, _SqliteWriter(_lock_path(engine)))
    return writer


def _lock_path(engine: Engine) -> Path | None:
    """The file whose flock the processes sharing a SQLite database take turns on; None for one in memory."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:") or engine.url.query.get("mode"):
        return None
    return Path(database + SQLITE_LOCK_SUFFIX)


class _SqliteWriter:
    """One transaction at a time: the threads of this process on an RLock, the processes on a flock."""

    def __init__(self, lock_path: Path | None) -> None:
        self._lock = threading.RLock()
        self._path = lock_path
        self._depth = 0  # transactions of the holding thread, nested
        self._holder: int | None = None  # that thread's id
        self._file: int | None = None
        self._pid = 0  # the process that opened `_file`: a forked child opens its own

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            if self._depth == 0 and self._path is not None and (descriptor := self._descriptor()) is not None:
                fcntl.flock(descriptor, fcntl.LOCK_EX)  # releases the GIL while it waits
        except BaseException:
            self._lock.release()
            raise
        self._depth += 1
        self._holder = threading.get_ident()

    def __exit__(self, *_exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._holder = None
        try:
            if self._depth == 0 and self._file is not None:
                fcntl.flock(self._file, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def held_here(self) -> bool:
        """Whether this thread is inside a transaction already."""
        return self._holder == threading.get_ident()

    def __del__(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            os.close(self._file)

    def _descriptor(self) -> int | None:
        """The lock file, opened once per process; None when it cannot be (then SQLite's own locking serves).

        Opened for reading (a flock needs no more), readable by all: a file another user's command made
        beside the database does not lock this user out.
        """
        if self._path is not None and (self._file is None or self._pid != os.getpid()):
            try:
                self._file = os.open(self._path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as error:
                LOGGER.warning(
                    "cannot open %s (%s): this process's transactions take turns with other processes' "
                    "through SQLite's busy timeout only",
                    self._path,
                    error.strerror,
                )
                self._path = None
                return None
            self._pid = os.getpid()
        return self._file


def run_in_transaction(engine: Engine, work: Callable[[Session], T]) -> T:
    """`work` in a transaction that commits on success and rolls back on any exception, like `transaction`.

    The works of concurrent callers share one transaction (group commit). On SQLite one writer at a time
    holds the database anyway, and a transaction of twenty sign-ups costs little more than one, where twenty
    transactions each pay the begin, the commit and the turn at the writer lock. On PostgreSQL a group spares
    the round trips of twenty BEGINs and COMMITs and the threads' turns at the GIL between them, and several
    groups commit at once (GROUP_COMMIT_LEADERS), each on its connection. A work must touch nothing but the
    session (it may run again, see _GroupCommit), and its error reaches its own caller alone: on PostgreSQL
    that includes the deadlock it breaks when a group and another transaction (another group) wait for each
    other's rows, after which the work runs again alone.
    """
    writer = _sqlite_writer(engine)
    # A thread inside a transaction holds the writer lock a group's leader would wait for: it runs alone.
    if isinstance(writer, _SqliteWriter) and writer.held_here():
        with transaction(engine) as session:
            return work(session)
    return _group_commit(engine).run(work)


def _group_commit(engine: Engine) -> _GroupCommit:
    group = _GROUP_COMMITS.get(engine)
    if group is None:
        with _REGISTRY_LOCK:
            group = _GROUP_COMMITS.setdefault(engine, _GroupCommit(engine))
    return group


Then = Callable[[list[Any]], object]


async def run_awaited(engine: Engine, work: Callable[[Session], T], then: Then | None = None) -> T:
    """`run_in_transaction` for a caller on an event loop: it awaits its group's commit without holding a
    thread. `then(values)` runs on the committing thread after the commit, once a group, with the values of
    the group's works that named it (equal callables share a call): what must follow the commit and may
    block, like handing the group's mails to the broker in one queue message. Its error is each of those
    callers', as a work's is its own caller's."""
    return await _group_commit(engine).run_awaited(work, then)


def run_statement(engine: Engine, work: Callable[[Connection], T]) -> T:
    """`work` that runs one statement (a claim, a record), which is a transaction by itself.

    On PostgreSQL it runs on an autocommit connection: the statement alone, without the BEGIN and COMMIT
    round trips of a transaction around it. On SQLite it joins a group commit (run_in_transaction), where
    the writer lock is the cost.
    """
    if engine.dialect.name == "sqlite":
        return run_in_transaction(engine, lambda session: work(session.connection()))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        return work(connection)


class _Pending(Generic[T]):
    """One caller's work in a group commit, and what came of it."""

    def __init__(self, work: Callable[[Session], T]) -> None:
        self.work = work
        self.woken = threading.Event()
        self.lead = False  # woken to commit the next group, not with a result
        self.settled = threading.Event()
        self.done = False
        self.value: T | None = None
        self.error: BaseException | None = None

    def settle(self, value: T | None = None, error: BaseException | None = None) -> None:
        self.value, self.error, self.done = value, error, True
        self.settled.set()
        self.woken.set()

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class _Awaited(_Pending[T]):
    """A work handed in from an event loop: its caller awaits a future instead of blocking a thread, and
    `then` runs on the committing thread once the work has committed (see run_awaited)."""

    def __init__(self, work: Callable[[Session], T], then: Then | None, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(work)
        self.then, self.loop = then, loop
        self.future: asyncio.Future[T] = loop.create_future()

    def resolve(self) -> None:
        """On the loop: the awaiting caller gets what came of the work (unless it stopped waiting)."""
        if self.future.cancelled():
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.value)  # type: ignore[arg-type]


class _GroupCommit:
    """Leader and followers (as in databases' group commit): a caller finding fewer leaders than the database
    takes (one on SQLite) commits every work waiting, up to GROUP_COMMIT_MOST, in one transaction, and goes on
    with the next group until its own work is done; then it wakes the oldest waiting caller to lead. No
    thread of its own, and a lone caller commits at once.

    Works handed in from an event loop (`run_awaited`) wait without a thread: the first finding no leader
    starts a thread that commits groups until none waits, and each group's callers are woken on their loop
    in one call. Under 100 clients the web app's sign-ups had held 32 threads, one per waiting sign-up, whose
    wake-ups and turns at the GIL cost more CPU than the sign-ups' statements."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._mutex = threading.Lock()
        self._waiting: list[_Pending[Any]] = []
        # SQLite lets one transaction write at a time: one group. A server database commits several groups
        # at once, each on its connection, which a group's round trips would otherwise leave idle.
        self._most_leaders = 1 if engine.dialect.name == "sqlite" else GROUP_COMMIT_LEADERS
        self._leaders = 0

    def run(self, work: Callable[[Session], T]) -> T:
        pending = _Pending(work)
        with self._mutex:
            self._waiting.append(pending)
            lead = self._leaders < self._most_leaders
            self._leaders += lead
        if not lead:
            pending.woken.wait()
            if not pending.lead:
                return pending.outcome()
        try:
            while not pending.done:
                with self._mutex:
                    group = self._waiting[:GROUP_COMMIT_MOST]
                    del self._waiting[:GROUP_COMMIT_MOST]
                if not group:  # its work is in another leader's group (a server database's)
                    break
                try:
                    self._commit(group)
                finally:
                    self._wake(group)
        finally:
            self._hand_over()
        pending.settled.wait()
        return pending.outcome()

    async def run_awaited(self, work: Callable[[Session], T], then: Then | None) -> T:
        pending = _Awaited(work, then, asyncio.get_running_loop())
        with self._mutex:
            self._waiting.append(pending)
            lead = self._leaders < self._most_leaders
            self._leaders += lead
        if lead:
            self._start_drain()
        return await pending.future

    def _hand_over(self) -> None:
        """A leader done with its own work: the oldest waiting caller leads next, or a thread of the group's
        when that caller awaits on a loop (it has no thread to lend)."""
        with self._mutex:
            if not self._waiting:
                self._leaders -= 1
                return
            head = self._waiting[0]
            if not isinstance(head, _Awaited):
                head.lead = True
                head.woken.set()
                return
        self._start_drain()

    def _start_drain(self) -> None:
        threading.Thread(target=self._drain, name="newsletter-group-commit").start()

    def _drain(self) -> None:
        """Commit groups until no work waits (a blocked caller's too: it is woken with its result)."""
        while True:
            with self._mutex:
                if not self._waiting:
                    self._leaders -= 1
                    return
                group = self._waiting[:GROUP_COMMIT_MOST]
                del self._waiting[:GROUP_COMMIT_MOST]
            try:
                self._commit(group)
            except BaseException:  # the group has its error; the works after it need a leader still
                self._hand_over()
                raise
            finally:
                self._wake(group)

    @staticmethod
    def _wake(group: list[_Pending[Any]]) -> None:
        """Resolve the group's awaited works on their loops, one call a loop (a thread's wake-up each costs
        a write to the loop's pipe)."""
        awaited: dict[asyncio.AbstractEventLoop, list[_Awaited[Any]]] = {}
        for pending in group:
            if isinstance(pending, _Awaited):
                awaited.setdefault(pending.loop, []).append(pending)
        for loop, works in awaited.items():
            try:
                loop.call_soon_threadsafe(_resolve_all, works)
            except RuntimeError:  # the loop has closed: nobody awaits these any more
                pass

    def _commit(self, group: list[_Pending[Any]]) -> None:
        """Commit the group's works together; when one raises, the transaction is rolled back, that work is run
        alone (its error, or its success in a transaction of its own, is its caller's) and the others again."""
        while group:
            values: list[Any] = []
            try:
                with transaction(self._engine) as session:
                    for pending in group:
                        values.append(pending.work(session))
            except BaseException as error:
                failed = len(values)
                if failed == len(group) or len(group) == 1 or not isinstance(error, Exception):
                    # The commit itself failed (or a lone work, or an interrupt): the error is everyone's.
                    for pending in group:
                        pending.settle(error=error)
                    if not isinstance(error, Exception):
                        raise
                    return
                self._alone(group[failed])
                group = group[:failed] + group[failed + 1 :]
                continue
            _settle_committed(group, values)
            return

    def _alone(self, pending: _Pending[Any]) -> None:
        try:
            with transaction(self._engine) as session:
                value = pending.work(session)
        except Exception as error:
            pending.settle(error=error)
        else:
            _settle_committed([pending], [value])


def _settle_committed(group: Sequence[_Pending[Any]], values: Sequence[Any]) -> None:
    """Give each committed work its value, once the `then` of the awaited ones has run (one call for each
    `then`, given the values of its works in order; should it raise, its works have its error)."""
    follows: dict[Then, list[int]] = {}
    for index, pending in enumerate(group):
        if isinstance(pending, _Awaited) and pending.then is not None:
            follows.setdefault(pending.then, []).append(index)
    errors: dict[int, Exception] = {}
    for then, indexes in follows.items():
        try:
            then([values[index] for index in indexes])
        except Exception as failed:
            errors.update(dict.fromkeys(indexes, failed))
    for index, (pending, value) in enumerate(zip(group, values, strict=True)):
        error = errors.get(index)
        pending.settle(value if error is None else None, error)


def _resolve_all(works: list[_Awaited[Any]]) -> None:
    for work in works:
        work.resolve()


def alembic_config(engine: Engine) -> Config:
    """An Alembic config for the migrations shipped with the package, bound to `engine`."""
    config = Config()
    config.set_main_option("script_location", str(resource_path("alembic")))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database up to `revision` (creating a SQLite file when needed)."""
    _ensure_sqlite_directory(engine)
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except OperationalError as error:
        raise DatabaseNotReady(f"cannot open the database: {error.orig}") from None


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def require_current(engine: Engine) -> None:
    """Raise DatabaseNotReady unless the database is at the latest migration."""
    current = current_revision(engine)
    if current != head_revision(engine):
        where = "has no tables" if current is None else f"is at revision {current}"
        raise DatabaseNotReady(f"the database {where}: run `newsletter db upgrade`")


def _ensure_sqlite_directory(engine: Engine) -> None:
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
