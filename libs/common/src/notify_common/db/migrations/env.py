from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from notify_common.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            # Several replicas may start at once: one migrates, the others wait.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7340211)")
            context.run_migrations()
    engine.dispose()


run_migrations_online()
