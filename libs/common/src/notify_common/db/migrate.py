"""Alembic, configured in code so no alembic.ini has to be found at run time."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from notify_common.db.engine import normalize_url

MIGRATIONS = Path(__file__).parent / "migrations"


def config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # "%" must be escaped for configparser interpolation.
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(config(url), revision)


def check(url: str) -> None:
    """Raise if the models have changes no migration describes."""
    command.check(config(url))
