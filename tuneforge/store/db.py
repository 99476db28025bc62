"""Connecting to the store: SQLite (WAL) in the data dir by default, Postgres by URL; migrations at start."""

from __future__ import annotations

import fcntl
import os
import secrets
import time
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.orm import sessionmaker

from tuneforge import paths
from tuneforge.errors import ConfigError

MIGRATIONS = Path(__file__).parent / "migrations"
PG_MIGRATION_LOCK = 7_362_901  # pg_advisory_lock key: one process migrates at a time
# How long a SQLite write waits for another writer before it fails. Well under the worker's stale limit (30 s by
# default; its lease lapses at half that): a worker whose writes cannot get through finds out, and stops, long
# before another worker may take its job over.
SQLITE_BUSY_TIMEOUT_S = 10


def database_url(url: str | None = None) -> str:
    """--database-url, else $TUNEFORGE_DATABASE_URL, else SQLite in the data dir."""
    url = url or os.environ.get("TUNEFORGE_DATABASE_URL")
    if not url:
        return f"sqlite:///{paths.data_dir() / 'tuneforge.db'}"
    if url.startswith(("postgres://", "postgresql://")):  # the driver we ship is psycopg 3
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def now() -> int:
    return int(time.time())


class Database:
    def __init__(self, url: str | None = None):
        self.url = database_url(url)
        if not self.url.startswith(("sqlite:///", "postgresql+psycopg://")):
            raise ConfigError(f"unsupported database URL {_safe(self.url)}: use sqlite:///PATH or "
                              "postgresql://USER:PASSWORD@HOST/DB")
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            Path(self.url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(self.url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(self.url, pool_pre_ping=True, pool_size=5, max_overflow=10)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self):
        """A session in one transaction: committed on success, rolled back on error."""
        with self._sessions() as s, s.begin():
            yield s

    def migrate(self) -> None:
        """Bring the schema to the newest revision (every process may call this at start; one runs it)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self._migration_lock(), self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except Exception as exc:
            if type(exc).__module__.startswith(("sqlalchemy", "psycopg")):
                raise ConfigError(f"cannot use the database at {_safe(self.url)}: {str(exc).splitlines()[0]}") from None
            raise

    @contextmanager
    def _migration_lock(self):
        if self.is_sqlite:
            lock_path = Path(self.url.split("///", 1)[1]).with_suffix(".migrate.lock")
            with open(lock_path, "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                yield
            return
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_MIGRATION_LOCK})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_MIGRATION_LOCK})

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor it them
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}"
    return url


