"""Alembic environment: the URL comes from automail.db unless the caller set one."""

from __future__ import annotations

from alembic import context

from automail.db import make_engine, resolve_url
from automail.migrate import include_object_for
from automail.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or resolve_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or resolve_url())
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection) -> None:  # noqa: ANN001
    # render_as_batch: SQLite cannot ALTER most things, batch mode rebuilds the table.
    # Rebuilding a referenced table (mails) with rows pointing at it would trip the FK
    # check, so SQLite migrates with foreign keys off (alembic's documented recipe).
    if connection.dialect.name == "sqlite":
        # On the raw DB-API connection: outside any transaction, where the PRAGMA applies.
        connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        include_object=include_object_for(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
