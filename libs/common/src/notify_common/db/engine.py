"""Engines and sessions. Services use the sync engine (psycopg 3) from worker threads."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from notify_common.settings import DatabaseSettings


def normalize_url(url: str) -> str:
    """Accept postgres:// and postgresql:// URLs; always drive them with psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(settings: DatabaseSettings) -> Engine:
    return create_engine(
        normalize_url(settings.database_url.get_secret_value()),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        hide_parameters=True,  # values never appear in error messages or logs
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
