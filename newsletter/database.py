"""Engines, sessions and migrations of the ledger database."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from newsletter.errors import ConfigError, DatabaseNotReady
from newsletter.resources import resource_path
from newsletter.settings import Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
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
_SQLITE_WRITERS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


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
        options["pool_pre_ping"] = True
        if url.get_backend_name() == "postgresql":
            options["connect_args"] = dict(POSTGRES_LINK_CHECKS)
    try:
        engine = create_engine(url, **options)
    except ModuleNotFoundError as error:
        raise ConfigError(f"no driver for database_url {settings.database_url!r}: {error}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


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
    """On SQLite, the lock that lets one transaction of this process at a time hold the engine.

    SQLite has one writer at a time anyway: threads that queue on a lock (the web app's sign-ups, the
    in-process queue's workers) take their turn as soon as it is free, where SQLite's busy handler would
    have them sleep and retry (up to 100 ms a try), which is what made latencies seconds under load. An
    RLock, so a transaction opened inside another on the same thread does not wait for itself.
    """
    if engine.dialect.name != "sqlite":
        return nullcontext()
    lock = _SQLITE_WRITERS.get(engine)
    if lock is None:
        with _REGISTRY_LOCK:
            lock = _SQLITE_WRITERS.setdefault(engine, threading.RLock())
    return lock


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
