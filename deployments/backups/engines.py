"""What differs between PostgreSQL and SQLite: taking a consistent dump with the row counts and
checksums of the same moment, telling whether a target database is empty, loading a dump, and
counting again afterwards.

Databases are described by Django settings dicts (``connections["default"].settings_dict``, or
``dj_database_url.parse(url)`` for a target). PostgreSQL passwords go to the client tools in
``PGPASSWORD``, never on their command line.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from deployments.backups.conf import BackupSettings
from deployments.backups.storage import ByteStream

POSTGRES = "postgresql"
SQLITE = "sqlite"
_ENGINES = {"django.db.backends.postgresql": POSTGRES, "django.db.backends.sqlite3": SQLITE}
_MOD = 2**256


class EngineError(Exception):
    """A dump or restore step failed (the message carries the tool's error, which names
    objects, never row data)."""


class TargetNotEmpty(EngineError):
    """The target database already holds tables: a restore never writes over data."""


def engine_of(settings_dict: dict[str, Any]) -> str:
    engine = _ENGINES.get(settings_dict.get("ENGINE", ""))
    if engine is None:
        raise EngineError(
            f"backups support PostgreSQL and SQLite, not {settings_dict.get('ENGINE')}"
        )
    return engine


def parse_url(url: str) -> dict[str, Any]:
    import dj_database_url

    try:
        # A plain settings dict, as every function here takes (the library types it as a
        # TypedDict of the keys it sets).
        parsed: dict[str, Any] = dict(dj_database_url.parse(url))
    except ValueError as exc:
        raise EngineError(f"not a database URL: {exc}") from None
    engine_of(parsed)
    if parsed["ENGINE"] == "django.db.backends.sqlite3" and str(parsed["NAME"]) in ("", ":memory:"):
        raise EngineError("a SQLite target must be a file: sqlite:////absolute/path.sqlite3")
    return parsed


def describe(settings_dict: dict[str, Any]) -> str:
    """The database as a URL without its password (for records and messages)."""
    if engine_of(settings_dict) == SQLITE:
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    host = settings_dict.get("HOST") or "localhost"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{user + '@' if user else ''}{host}:{port}/{settings_dict['NAME']}"


# --------------------------------------------------------------------------- statistics


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _checksum(cursor: Any, table: str) -> str:
    """An order-independent checksum of a table's rows (the sum of each row's SHA-256): equal
    for the same rows, whatever order the database returns them in. Rows are fetched in
    batches (from a server-side cursor on PostgreSQL), so a large table is not held in
    memory."""
    cursor.execute(f"SELECT * FROM {_quote(table)}")  # noqa: S608 - a quoted model table name
    total = 0
    while True:
        rows = cursor.fetchmany(2000)
        if not rows:
            break
        for row in rows:
            values = tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
            total = (
                total + int.from_bytes(hashlib.sha256(repr(values).encode()).digest(), "big")
            ) % _MOD
    return f"{total:064x}"


def _stats(
    cursor: Any, tables: list[str], checksum_tables: tuple[str, ...], stream: Any = None
) -> tuple[dict[str, int], dict[str, str]]:
    """Row counts of ``tables`` and checksums of ``checksum_tables``; ``stream()`` opens the
    cursor the checksums read through (default: ``cursor``)."""
    counts: dict[str, int] = {}
    for table in tables:
        cursor.execute(f"SELECT count(*) FROM {_quote(table)}")  # noqa: S608 - a quoted model table name
        counts[table] = int(cursor.fetchone()[0])
    checksums: dict[str, str] = {}
    for table in checksum_tables:
        if table not in counts:
            continue
        if stream is None:
            checksums[table] = _checksum(cursor, table)
        else:
            with stream() as server_side:
                checksums[table] = _checksum(server_side, table)
    return counts, checksums


def _pg_stream(connection: Any) -> Any:
    return lambda: connection.cursor(name="llmp_backup_checksum")


def _pg_tables(cursor: Any) -> list[str]:
    cursor.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
    )
    return [row[0] for row in cursor.fetchall()]


def _sqlite_tables(cursor: Any) -> list[str]:
    cursor.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' "
        "AND name NOT LIKE 'sqlite_%' ORDER BY name"
    )
    return [row[0] for row in cursor.fetchall()]


# --------------------------------------------------------------------------- PostgreSQL


def _pg_conninfo(
    settings_dict: dict[str, Any], dbname: str | None = None
) -> tuple[str, dict[str, str]]:
    """A libpq connection string without the password, and the environment carrying it."""
    from psycopg.conninfo import make_conninfo

    options = settings_dict.get("OPTIONS") or {}
    params = {
        "dbname": dbname or settings_dict["NAME"],
        "host": settings_dict.get("HOST") or None,
        "port": str(settings_dict.get("PORT") or "") or None,
        "user": settings_dict.get("USER") or None,
        "sslmode": options.get("sslmode"),
    }
    env = {**os.environ}
    env.pop("PGPASSWORD", None)
    if settings_dict.get("PASSWORD"):
        env["PGPASSWORD"] = str(settings_dict["PASSWORD"])
    return make_conninfo(**{k: v for k, v in params.items() if v}), env


def _pg_connect(
    settings_dict: dict[str, Any], *, dbname: str | None = None, autocommit: bool = False
) -> Any:
    import psycopg

    conninfo, _ = _pg_conninfo(settings_dict, dbname)
    try:
        connection = psycopg.connect(
            conninfo,
            password=settings_dict.get("PASSWORD") or None,
            autocommit=autocommit,
            connect_timeout=10,
        )
    except psycopg.OperationalError as exc:
        raise EngineError(
            f"cannot connect to {describe(settings_dict)}: {str(exc).strip().splitlines()[-1]}"
        ) from None
    connection.execute("SET TIME ZONE 'UTC'")
    if not autocommit:
        connection.commit()
    return connection


def _tail(stream: BinaryIO) -> str:
    stream.seek(0)
    text = stream.read().decode(errors="replace").strip()
    return text[-800:] or "no message"


@dataclass
class DumpSource:
    """A dump being produced: read ``stream``; ``counts`` and ``checksums`` describe the same
    moment."""

    engine: str
    stream: ByteStream
    counts: dict[str, int] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def postgres_dump(settings_dict: dict[str, Any], conf: BackupSettings) -> Iterator[DumpSource]:
    """``pg_dump --format=custom`` of an exported snapshot; the counts and checksums are taken
    in the transaction that exported it, so they describe exactly what is dumped."""
    import psycopg

    if not conf.pg_dump:
        raise EngineError("pg_dump was not found (set LLMP_BACKUP_PG_DUMP)")
    conninfo, env = _pg_conninfo(settings_dict)
    connection = _pg_connect(settings_dict)
    try:
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        connection.read_only = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_export_snapshot()")
            snapshot = cursor.fetchone()[0]
            counts, checksums = _stats(
                cursor, _pg_tables(cursor), conf.checksum_tables, _pg_stream(connection)
            )
        with tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen(  # noqa: S603 - pg_dump with a fixed argv, no shell
                [
                    conf.pg_dump,
                    "--format=custom",
                    f"--compress={conf.pg_compress}",
                    f"--snapshot={snapshot}",
                    "--no-password",
                    f"--dbname={conninfo}",
                ],
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
            assert process.stdout is not None  # stdout=PIPE
            try:
                yield DumpSource(POSTGRES, process.stdout, counts, checksums)
            except BaseException:
                process.kill()
                process.wait()
                raise
            # Whatever was not read (nothing, normally) is discarded so pg_dump can exit.
            process.stdout.read()
            process.stdout.close()
            if process.wait() != 0:
                raise EngineError(f"pg_dump failed: {_tail(stderr)}")
    finally:
        connection.close()


def _pg_is_empty(settings_dict: dict[str, Any]) -> bool:
    with _pg_connect(settings_dict, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
        ).fetchone()
    return row[0] == 0


def _pg_restore(settings_dict: dict[str, Any], dump: Path, conf: BackupSettings) -> None:
    if not conf.pg_restore:
        raise EngineError("pg_restore was not found (set LLMP_BACKUP_PG_RESTORE)")
    conninfo, env = _pg_conninfo(settings_dict)
    with tempfile.TemporaryFile() as stderr:
        result = subprocess.run(  # noqa: S603 - pg_restore with a fixed argv, no shell
            [
                conf.pg_restore,
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                f"--jobs={conf.restore_jobs}",
                "--no-password",
                f"--dbname={conninfo}",
                str(dump),
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            check=False,
        )
        if result.returncode != 0:
            raise EngineError(f"pg_restore failed: {_tail(stderr)}")


def _pg_stats(
    settings_dict: dict[str, Any], checksum_tables: tuple[str, ...]
) -> tuple[dict[str, int], dict[str, str]]:
    with _pg_connect(settings_dict) as connection, connection.cursor() as cursor:
        return _stats(cursor, _pg_tables(cursor), checksum_tables, _pg_stream(connection))


def create_scratch_database(settings_dict: dict[str, Any]) -> dict[str, Any]:
    """A new, empty PostgreSQL database on the same server (needs CREATEDB)."""
    name = f"llmp_drill_{secrets.token_hex(4)}"
    with _pg_connect(settings_dict, dbname="postgres", autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {_quote(name)}")
    return {
        **settings_dict,
        "NAME": name,
        "OPTIONS": {k: v for k, v in (settings_dict.get("OPTIONS") or {}).items() if k != "pool"},
    }


def drop_database(settings_dict: dict[str, Any]) -> None:
    if engine_of(settings_dict) == SQLITE:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{settings_dict['NAME']}{suffix}").unlink(missing_ok=True)
        return
    with _pg_connect(settings_dict, dbname="postgres", autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {_quote(settings_dict['NAME'])} WITH (FORCE)")


# --------------------------------------------------------------------------- SQLite


@contextlib.contextmanager
def sqlite_dump(conf: BackupSettings) -> Iterator[DumpSource]:
    """SQLite's online backup API, from the platform's own connection (it copies a consistent
    image while writers go on) into a private temporary file, then counted there."""
    from django.db import connections

    connection = connections["default"]
    connection.ensure_connection()
    with tempfile.TemporaryDirectory(prefix="llmp-backup-") as directory:
        path = Path(directory) / "backup.sqlite3"
        target = sqlite3.connect(path)
        try:
            connection.connection.backup(target)
        finally:
            target.close()
        copy = sqlite3.connect(path)
        try:
            counts, checksums = _stats(
                copy.cursor(), _sqlite_tables(copy.cursor()), conf.checksum_tables
            )
        finally:
            copy.close()
        with path.open("rb") as stream:
            yield DumpSource(SQLITE, stream, counts, checksums)


def _sqlite_connect(name: Any) -> sqlite3.Connection:
    """A connection to a SQLite file, or to a ``file:`` URI (Django's in-memory test
    databases are shared-cache URIs)."""
    name = str(name)
    return sqlite3.connect(name, uri=name.startswith("file:"))


def _sqlite_is_empty(settings_dict: dict[str, Any]) -> bool:
    name = str(settings_dict["NAME"])
    if not name.startswith("file:"):
        path = Path(name)
        if not path.exists() or path.stat().st_size == 0:
            return True
    connection = _sqlite_connect(name)
    try:
        return not _sqlite_tables(connection.cursor())
    finally:
        connection.close()


def _sqlite_restore(settings_dict: dict[str, Any], dump: Path) -> None:
    if not str(settings_dict["NAME"]).startswith("file:"):
        Path(settings_dict["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    source, target = sqlite3.connect(dump), _sqlite_connect(settings_dict["NAME"])
    try:
        source.backup(target)
    except sqlite3.Error as exc:
        raise EngineError(f"the SQLite restore failed: {exc}") from None
    finally:
        source.close()
        target.close()


def _sqlite_stats(
    settings_dict: dict[str, Any], checksum_tables: tuple[str, ...]
) -> tuple[dict[str, int], dict[str, str]]:
    connection = _sqlite_connect(settings_dict["NAME"])
    try:
        return _stats(connection.cursor(), _sqlite_tables(connection.cursor()), checksum_tables)
    finally:
        connection.close()


# --------------------------------------------------------------------------- either


@contextlib.contextmanager
def dump(settings_dict: dict[str, Any], conf: BackupSettings) -> Iterator[DumpSource]:
    if engine_of(settings_dict) == POSTGRES:
        with postgres_dump(settings_dict, conf) as source:
            yield source
    else:
        with sqlite_dump(conf) as source:
            yield source


def is_empty(settings_dict: dict[str, Any]) -> bool:
    if engine_of(settings_dict) == POSTGRES:
        return _pg_is_empty(settings_dict)
    return _sqlite_is_empty(settings_dict)


def load(settings_dict: dict[str, Any], dump_path: Path, conf: BackupSettings) -> None:
    if engine_of(settings_dict) == POSTGRES:
        _pg_restore(settings_dict, dump_path, conf)
    else:
        _sqlite_restore(settings_dict, dump_path)


def stats(
    settings_dict: dict[str, Any], checksum_tables: tuple[str, ...]
) -> tuple[dict[str, int], dict[str, str]]:
    if engine_of(settings_dict) == POSTGRES:
        return _pg_stats(settings_dict, checksum_tables)
    return _sqlite_stats(settings_dict, checksum_tables)


def same_database(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if engine_of(a) != engine_of(b):
        return False
    if engine_of(a) == SQLITE:
        if str(a["NAME"]).startswith("file:") or str(b["NAME"]).startswith("file:"):
            return str(a["NAME"]) == str(b["NAME"])
        return Path(str(a["NAME"])).resolve() == Path(str(b["NAME"])).resolve()
    return (str(a["NAME"]), a.get("HOST") or "localhost", str(a.get("PORT") or 5432)) == (
        str(b["NAME"]),
        b.get("HOST") or "localhost",
        str(b.get("PORT") or 5432),
    )


@contextlib.contextmanager
def as_default_database(settings_dict: dict[str, Any]) -> Iterator[None]:
    """Run the enclosed code (services, the data map) against another database, in this thread:
    Django's ``default`` connection is swapped for one to ``settings_dict`` and put back after.
    Used to replay erasures into a restored database that is not (yet) the platform's own."""
    from django.db import connections
    from django.db.utils import load_backend

    current = connections["default"]
    if same_database(current.settings_dict, settings_dict):
        yield
        return
    prepared = {**current.settings_dict, **settings_dict}
    prepared["OPTIONS"] = {
        k: v for k, v in (settings_dict.get("OPTIONS") or {}).items() if k != "pool"
    }
    prepared.setdefault("TIME_ZONE", None)
    prepared["CONN_MAX_AGE"] = 0
    prepared["CONN_HEALTH_CHECKS"] = False
    prepared["ATOMIC_REQUESTS"] = False
    prepared["AUTOCOMMIT"] = True
    wrapper = load_backend(prepared["ENGINE"]).DatabaseWrapper(prepared, "default")
    connections["default"] = wrapper
    try:
        yield
    finally:
        wrapper.close()
        connections["default"] = current
