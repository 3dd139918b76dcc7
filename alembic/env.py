"""Alembic environment: runs the migrations on the engine the newsletter hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from newsletter.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:  # plain `alembic` from a shell: take the URL from the config
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///newsletter.db")
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
