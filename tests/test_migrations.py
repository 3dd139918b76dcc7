"""Migrations: every revision up and down on SQLite and PostgreSQL, and models that match them."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from newsletter import database
from newsletter.models import Base
from newsletter.settings import Settings


def walk_every_revision(engine: Engine) -> None:
    script = ScriptDirectory.from_config(database.alembic_config(engine))
    revisions = [revision.revision for revision in reversed(list(script.walk_revisions()))]
    assert len(script.get_heads()) == 1, f"migrations have several heads: {script.get_heads()}"
    for revision in revisions:
        database.upgrade(engine, revision)
        assert database.current_revision(engine) == revision
    for revision in reversed(revisions[:-1]):
        database.downgrade(engine, revision)
        assert database.current_revision(engine) == revision
    database.downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    database.upgrade(engine)
    assert database.current_revision(engine) == revisions[-1]


def assert_models_match_migrations(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == [], f"models and migrations disagree; generate a migration: {differences}"


def test_walk_revisions_on_sqlite(settings: Settings) -> None:
    engine = database.make_engine(settings)
    walk_every_revision(engine)
    engine.dispose()


def test_models_match_migrations_on_sqlite(engine: Engine) -> None:
    assert_models_match_migrations(engine)


@pytest.mark.postgres
def test_walk_revisions_on_postgres(postgres_settings: Settings) -> None:
    engine = database.make_engine(postgres_settings)
    walk_every_revision(engine)
    engine.dispose()


@pytest.mark.postgres
def test_models_match_migrations_on_postgres(postgres_engine: Engine) -> None:
    assert_models_match_migrations(postgres_engine)


def test_require_current_names_the_fix(settings: Settings) -> None:
    engine = database.make_engine(settings)
    with pytest.raises(database.DatabaseNotReady, match="newsletter db upgrade"):
        database.require_current(engine)
    engine.dispose()
