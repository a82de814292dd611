"""The ledger's database (SQLAlchemy Core: one SQLite file by default, PostgreSQL through the same code) and its lock.

Tables: ``ledger_meta`` (what identifies a ledger: its format and id), ``entries`` (one row per completed request, in
chain order; the certificate and the private request data: the ids and the salt of their fingerprint), ``public_keys``
(the public keys certificates were signed with, by fingerprint). An entry is inserted in one transaction, after its
model files and certificate file are on disk, so it is either complete or absent.

The lock serialises requests: a file lock (``fcntl.flock``) on ``<db>.lock`` for SQLite, a session-level advisory lock
for PostgreSQL. Both vanish with their process, so a request killed mid-way never leaves the ledger locked.

Longer than 60 lines: opening (telling a ledger from any other file or database), the schema and both locks.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ConfigError, LedgerError
from .chain import INSTALL

FORMAT = "unlearnkit.ledger"
SCHEMA = 1
LOCK_KEY = 0x756E6C6B  # PostgreSQL advisory lock key ("unlk")
OPEN_LOCK_KEY = LOCK_KEY + 1  # held only while a ledger is opened (created)


def _sa() -> Any:
    try:
        import sqlalchemy
    except ImportError:
        raise ConfigError(f"The deletion ledger needs SQLAlchemy: {INSTALL}.") from None
    return sqlalchemy


def tables(sa: Any) -> tuple[Any, ...]:
    meta = sa.MetaData()
    ledger_meta = sa.Table("ledger_meta", meta, sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.Text, nullable=False))
    entries = sa.Table(
        "entries", meta,
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("request_id", sa.String(200), nullable=False, unique=True),
        sa.Column("entry_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prev_hash", sa.String(64), nullable=False, unique=True),  # unique: the chain cannot fork
        sa.Column("lineage", sa.String(80), nullable=False),
        sa.Column("model_before", sa.String(80), nullable=False),
        sa.Column("model_after", sa.String(80), nullable=False),
        sa.Column("created", sa.String(40), nullable=False),
        sa.Column("certificate", sa.Text, nullable=False),
        sa.Column("ids", sa.Text, nullable=False),  # private: the request's ids (JSON), never in a certificate
        sa.Column("salt", sa.String(64), nullable=False),  # private: the salt of the forget-set fingerprint
        sa.Column("request", sa.Text, nullable=False),  # private: what was asked (method, params, evidence, seed), for idempotency
    )
    keys = sa.Table("public_keys", meta, sa.Column("fingerprint", sa.String(80), primary_key=True), sa.Column("pem", sa.Text, nullable=False))
    return meta, ledger_meta, entries, keys


def is_url(target: str) -> bool:
    return "://" in target


def sqlite_path(target: str) -> Path | None:
    """The SQLite file of ``target`` (a path or a sqlite:/// URL), or None for another database."""
    if not is_url(target):
        return Path(target)
    if target.startswith("sqlite:///"):
        return Path(target[len("sqlite:///"):])
    return None


def engine_url(target: str) -> str:
    path = sqlite_path(target)
    if path is not None:
        return f"sqlite:///{path}"
    if target.startswith("postgresql://") or target.startswith("postgres://"):
        return "postgresql+psycopg://" + target.split("://", 1)[1]  # psycopg 3, the driver of the ledger-pg extra
    return target


class Database:
    """An open ledger database. ``create=True`` initialises an empty one; anything that is not a ledger is refused."""

    def __init__(self, target: str, *, create: bool = True) -> None:
        sa = _sa()
        self.sa = sa
        self.target = target
        self.path = sqlite_path(target)
        if self.path is not None:
            if self.path.exists() and not self.path.is_file():
                raise LedgerError(f"{self.path} is a folder, not a ledger file.")
            if not self.path.exists() and not create:
                raise LedgerError(f"No ledger at {self.path}.")
            if self.path.exists() and self.path.stat().st_size and self.path.read_bytes()[:16] != b"SQLite format 3\x00":
                raise LedgerError(f"{self.path} is not a ledger: it is not an SQLite database (a ledger file starts with the "
                                  "SQLite header). Give the ledger's file, or a new path to create one.")
            if not self.path.parent.is_dir():
                raise LedgerError(f"Cannot create the ledger {self.path}: folder {self.path.parent} does not exist.")
        try:
            self.engine = sa.create_engine(engine_url(target), future=True, **({"connect_args": {"timeout": 60}} if self.path else {}))
        except (ImportError, sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
            raise ConfigError(f"Cannot open ledger {target!r}: {exc}. PostgreSQL needs pip install 'unlearnkit[ledger-pg]'.") from None
        self.meta, self.ledger_meta, self.entries, self.keys = tables(sa)
        with self._opening():  # two processes creating one ledger at once: the second waits, then reads a whole ledger
            self.info = self._open(create)

    @contextmanager
    def _opening(self) -> Iterator[None]:
        """Serialise opening (and creating) the ledger across processes, apart from the request lock, so reading a
        ledger never waits for a request to finish."""
        if self.path is not None:
            with _file_lock(self.path.with_name(self.path.name + ".open.lock"), "opening", quiet=True):
                yield
            return
        with self.engine.connect() as conn:
            conn.execute(self.sa.text("SELECT pg_advisory_lock(:k)"), {"k": OPEN_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(self.sa.text("SELECT pg_advisory_unlock(:k)"), {"k": OPEN_LOCK_KEY})
                conn.commit()

    def _open(self, create: bool) -> dict[str, str]:
        sa = self.sa
        try:
            with self.engine.begin() as conn:
                names = set(sa.inspect(conn).get_table_names())
                if not names and create:
                    self.meta.create_all(conn)
                    import uuid

                    info = {"format": FORMAT, "schema": str(SCHEMA), "ledger_id": uuid.uuid4().hex,
                            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                    conn.execute(self.ledger_meta.insert(), [{"key": k, "value": v} for k, v in info.items()])
                    return info
                if "ledger_meta" not in names:
                    raise LedgerError(f"{self.target} is a database but not a ledger (it has tables {sorted(names)[:5]} and no ledger_meta).")
                info = {r.key: r.value for r in conn.execute(sa.select(self.ledger_meta))}
        except sa.exc.DatabaseError as exc:
            raise LedgerError(f"{self.target} is not a ledger (the database cannot be read: {exc.orig}).") from None
        except sa.exc.OperationalError as exc:  # pragma: no cover - a server that does not answer
            raise LedgerError(f"Cannot open ledger {self.target}: {exc.orig}") from None
        if info.get("format") != FORMAT:
            raise LedgerError(f"{self.target} is not an unlearnkit ledger (format {info.get('format')!r}).")
        if info.get("schema") != str(SCHEMA):
            raise LedgerError(f"{self.target} is a ledger of schema {info.get('schema')}; this unlearnkit reads schema {SCHEMA}.")
        return info

    @contextmanager
    def lock(self, what: str) -> Iterator[None]:
        """Hold the ledger's write lock (waiting for another process's request to finish)."""
        if self.path is not None:
            with _file_lock(self.path.with_name(self.path.name + ".lock"), what):
                yield
            return
        with self.engine.connect() as conn:
            got = conn.execute(self.sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar()
            if not got:
                print(f"waiting for another request on ledger {self.target} to finish ({what}) ...", file=sys.stderr, flush=True)
                conn.execute(self.sa.text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(self.sa.text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                conn.commit()

    def dispose(self) -> None:
        self.engine.dispose()


@contextmanager
def _file_lock(path: Path, what: str, *, quiet: bool = False) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        raise LedgerError("The SQLite ledger's lock needs fcntl (POSIX); use a PostgreSQL ledger on this system.") from None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not quiet:
                print(f"waiting for another request on {path.with_suffix('')} to finish ({what}) ...", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
