"""Continuous archiving and point-in-time recovery with pgBackRest.

The 30-minute dumps (``services``) stay as the portable fallback; this adds what a dump cannot:
every WAL segment PostgreSQL closes is pushed to S3 by its ``archive_command`` (pgBackRest's
``archive-push``), full and differential backups are taken on the schedule in
``llmplatform/celery.py``, and a restore replays the archive up to any moment
(``manage.py restore_backup --to-time 'YYYY-MM-DD HH:MM:SS'``), then the erasure ledger.

* The repository is always encrypted (``repo1-cipher-type=aes-256-cbc``); its pass and the S3
  keys reach pgBackRest only through the environment of the command that needs them
  (``PGBACKREST_REPO1_CIPHER_PASS``, ``PGBACKREST_REPO1_S3_KEY``, ``..._KEY_SECRET``), never a
  command line, the generated configuration file or a log line. The PostgreSQL server's
  ``archive_command`` needs the same three variables in the server's environment
  (``manage.py pitr_setup`` prints what to set).
* Retention is pgBackRest's: ``repo1-retention-full`` full backups (WAL older than the oldest
  one expires with it) and ``repo1-retention-diff`` differential ones.
* Small files are bundled (``repo1-bundle``): a backup of a fresh cluster is some 1,000 files,
  one S3 request each without it (75 s against a loopback S3 server, 7 s with it).
* The measured RPO is the age of the newest archived WAL segment (``archived_wal``); a restore
  or drill measures the RTO (``pitr_restore``), recorded as a ``RestoreDrill``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, transaction
from django.utils import timezone

from deployments.backups import conf as backup_conf
from deployments.backups import engines, ledger
from deployments.backups.conf import PitrSettings
from deployments.backups.models import RestoreDrill
from deployments.backups.storage import BackupStorageError, BackupStore
from llmplatform.actors import Actor
from llmplatform.audit import AuditAction, audit_record
from llmplatform.env import env_str

logger = logging.getLogger(__name__)

BACKUP_KINDS = ("full", "diff")
TARGET_FORMAT = "%Y-%m-%d %H:%M:%S"
# A scheduled backup is skipped when one of its kind (or a full one) is this recent: a second
# delivery of the same beat tick does nothing.
_RECENT = {"full": timedelta(days=6), "diff": timedelta(hours=20)}
_PRINTABLE = re.compile(r"[^\t\n\x20-\x7e]+")


class PitrError(Exception):
    """A pgBackRest step failed, or PITR is not configured. The message is for the operator:
    the tool's own error (printable characters only), never a secret."""


class PitrRefused(PitrError):
    """Refused before anything was written (bad target time, a data directory not empty)."""


# --------------------------------------------------------------------------- configuration


def _secret(name: str) -> str | None:
    """``NAME`` (or ``NAME_FILE``), or the secret ``NAME_REF`` points at in a store."""
    value = env_str(name)
    ref = env_str(f"{name}_REF")
    if not ref:
        return value
    if value:
        raise ImproperlyConfigured(f"set {name} or {name}_REF, not both")
    from django.conf import settings

    from gateway.secrets import SecretNotFound, resolve_platform_secret
    from llmplatform.secret_stores import SecretStoreConfig

    try:
        return resolve_platform_secret(ref, SecretStoreConfig.from_settings(settings)) or None
    except SecretNotFound as exc:
        raise PitrError(f"{name}_REF: {exc}") from None


def secret_env() -> dict[str, str]:
    """The variables pgBackRest reads its secrets from (for one command's environment)."""
    cipher_pass = _secret("LLMP_PITR_CIPHER_PASS")
    if not cipher_pass:
        raise PitrError("LLMP_PITR_CIPHER_PASS is not set: the repository is always encrypted")
    env = {"PGBACKREST_REPO1_CIPHER_PASS": cipher_pass}
    key, key_secret = _secret("LLMP_PITR_S3_KEY"), _secret("LLMP_PITR_S3_KEY_SECRET")
    if bool(key) != bool(key_secret):
        raise PitrError("set both LLMP_PITR_S3_KEY and LLMP_PITR_S3_KEY_SECRET, or neither")
    if key and key_secret:
        env["PGBACKREST_REPO1_S3_KEY"] = key
        env["PGBACKREST_REPO1_S3_KEY_SECRET"] = key_secret
    return env


def _settings(conf: PitrSettings | None) -> PitrSettings:
    conf = conf or backup_conf.pitr_get()
    if not conf.configured:
        raise PitrError("point-in-time recovery is not configured (set LLMP_PITR_STANZA)")
    if not conf.pgbackrest:
        raise PitrError("pgbackrest was not found (apt-get install pgbackrest)")
    return conf


def render_config(conf: PitrSettings) -> str:
    """pgbackrest.conf for ``conf``: no secret in it (they come from the environment)."""
    state = conf.config_path.parent
    lines = [
        "# Written by llmplatform (manage.py pitr_setup); secrets come from the environment.",
        "[global]",
        "repo1-type=s3",
        f"repo1-s3-bucket={conf.bucket}",
        f"repo1-s3-endpoint={conf.s3_host}",
        f"repo1-storage-port={conf.s3_port}",
        f"repo1-s3-region={conf.region}",
        "repo1-s3-uri-style=path",
        f"repo1-path={conf.repo_path}",
        "repo1-cipher-type=aes-256-cbc",
        f"repo1-retention-full={conf.retention_full}",
        f"repo1-retention-diff={conf.retention_diff}",
        "repo1-bundle=y",
        "compress-type=lz4",
        f"process-max={conf.process_max}",
        "start-fast=y",
        f"lock-path={state / 'lock'}",
        f"log-path={state / 'log'}",
        f"spool-path={state / 'spool'}",
        "log-level-console=warn",
        "log-level-file=info",
    ]
    if conf.ca_file:
        lines.append(f"repo1-storage-ca-file={conf.ca_file}")
    if not _secret("LLMP_PITR_S3_KEY"):
        lines.append("repo1-s3-key-type=auto")  # the instance's or pod's IAM role
    lines += [
        "",
        f"[{conf.stanza}]",
        f"pg1-path={conf.pg_data or '/var/lib/postgresql/data'}",
        f"pg1-port={conf.pg_port}",
        f"pg1-user={conf.pg_user}",
    ]
    # pgBackRest runs on the database's host (it reads the data directory): it reaches the
    # server through its socket.
    if conf.pg_host.startswith("/"):
        lines.append(f"pg1-socket-path={conf.pg_host}")
    return "\n".join(lines) + "\n"


def server_settings(conf: PitrSettings) -> dict[str, str]:
    """The postgresql.conf lines that send every WAL segment to the repository. An
    ``archive_timeout`` of a minute closes a segment at least that often while anything is
    written, so the newest archived one is never much older than the last write."""
    return {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": (
            f"{conf.pgbackrest or 'pgbackrest'} --config={conf.config_path} "
            f"--stanza={conf.stanza} archive-push %p"
        ),
        "archive_timeout": "60",
    }


def write_config(conf: PitrSettings | None = None) -> Path:
    """Write pgbackrest.conf and the directories pgBackRest keeps its state in; owned by
    ``LLMP_PITR_RUN_AS`` when that is set and the platform runs as root."""
    conf = _settings(conf)
    directory = conf.config_path.parent
    directory.mkdir(parents=True, exist_ok=True)
    for sub in ("lock", "log", "spool"):
        (directory / sub).mkdir(exist_ok=True)
    # Written whole and renamed over the old one: the server's archive_command reads it any time.
    partial = conf.config_path.with_suffix(".tmp")
    partial.write_text(render_config(conf))
    partial.chmod(0o640)
    partial.replace(conf.config_path)
    if conf.run_as and os.geteuid() == 0:
        for path in (directory, directory / "lock", directory / "log", directory / "spool"):
            shutil.chown(path, conf.run_as)
        shutil.chown(conf.config_path, conf.run_as)
    return conf.config_path


# --------------------------------------------------------------------------- running it


def _as_user(conf: PitrSettings, argv: list[str]) -> list[str]:
    if conf.run_as and os.geteuid() == 0:
        return ["runuser", "-u", conf.run_as, "--", *argv]
    return argv


def _clean(text: str) -> str:
    # A wrong cipher pass makes pgBackRest quote the undecryptable bytes it read.
    return _PRINTABLE.sub("?", text).strip()


def _explain(stderr: str) -> str:
    text = _clean(stderr)
    if "CryptoError" in text or "FormatError" in text or "cipher" in text.lower():
        return (
            "the repository cannot be decrypted: LLMP_PITR_CIPHER_PASS is not the pass it was "
            f"created with ({text.splitlines()[0][:200] if text else 'no message'})"
        )
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-6:])[-1200:] or "no message"


def run(
    conf: PitrSettings, *args: str, timeout: float = 6 * 3600, pg_path: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``pgbackrest --stanza=... ARGS`` with the secrets in its environment only."""
    conf = _settings(conf)
    write_config(conf)  # what the settings say now
    argv = [
        str(conf.pgbackrest),
        f"--config={conf.config_path}",
        f"--stanza={conf.stanza}",
        *([f"--pg1-path={pg_path}"] if pg_path else []),
        *args,
    ]
    env = {**os.environ, **secret_env()}
    try:
        result = subprocess.run(  # noqa: S603 - a fixed argv, no shell
            _as_user(conf, argv),
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PitrError(f"pgbackrest {args[-1]} did not finish in {timeout:.0f} s") from None
    if result.returncode != 0:
        raise PitrError(f"pgbackrest {args[-1]} failed: {_explain(result.stderr)}")
    return result


def stanza_create(conf: PitrSettings | None = None) -> None:
    """Create the stanza in the repository (once, after the server archives to it)."""
    run(_settings(conf), "stanza-create", timeout=600)


# --------------------------------------------------------------------------- what is there


@dataclass(frozen=True)
class PitrBackup:
    label: str
    kind: str
    started_at: datetime
    stopped_at: datetime
    size_bytes: int
    repo_bytes: int


@dataclass(frozen=True)
class RepositoryInfo:
    """``pgbackrest info``: the backups (oldest first) and the archived WAL range."""

    backups: tuple[PitrBackup, ...]
    archive_id: str | None
    wal_min: str | None
    wal_max: str | None

    def newest(self, *kinds: str) -> PitrBackup | None:
        matching = [b for b in self.backups if not kinds or b.kind in kinds]
        return matching[-1] if matching else None


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def info(conf: PitrSettings | None = None) -> RepositoryInfo:
    conf = _settings(conf)
    result = run(conf, "--output=json", "info", timeout=300)
    try:
        stanzas = json.loads(result.stdout)
    except json.JSONDecodeError:
        # A wrong cipher pass: the status message quotes the bytes it could not decrypt.
        raise PitrError(
            "the repository cannot be read: " + _explain(result.stdout + result.stderr)
        ) from None
    stanza = next((s for s in stanzas if s.get("name") == conf.stanza), None)
    if stanza is None:
        raise PitrError(f"the repository has no stanza {conf.stanza}")
    for repo in stanza.get("repo") or []:
        status = repo.get("status") or {}
        # 0: ok; 2: no backup yet (the archive may already hold WAL).
        if status.get("code") not in (0, 2):
            raise PitrError(
                "the repository cannot be read: " + _explain(str(status.get("message", "")))
            )
    backups = tuple(
        PitrBackup(
            label=b["label"],
            kind=b["type"],
            started_at=_utc(b["timestamp"]["start"]),
            stopped_at=_utc(b["timestamp"]["stop"]),
            size_bytes=int((b.get("info") or {}).get("size") or 0),
            repo_bytes=int(((b.get("info") or {}).get("repository") or {}).get("size") or 0),
        )
        for b in stanza.get("backup") or []
    )
    archives = stanza.get("archive") or []
    newest = archives[-1] if archives else {}
    return RepositoryInfo(
        backups=backups,
        archive_id=newest.get("id"),
        wal_min=newest.get("min"),
        wal_max=newest.get("max"),
    )


@dataclass(frozen=True)
class ArchivedWal:
    segment: str
    archived_at: datetime

    def age(self, now: datetime | None = None) -> timedelta:
        return (now or timezone.now()) - self.archived_at


def archived_wal(conf: PitrSettings | None = None) -> ArchivedWal | None:
    """The newest WAL segment in the repository and when it was stored there (the object's
    time, from ``pgbackrest repo-ls``): what a disaster now would lose is at most its age."""
    conf = _settings(conf)
    repository = info(conf)
    if not repository.archive_id or not repository.wal_max:
        return None
    segment = repository.wal_max
    path = f"archive/{conf.stanza}/{repository.archive_id}/{segment[:16]}"
    result = run(conf, "--output=json", f"--filter=^{segment}", "repo-ls", path, timeout=300)
    try:
        listing: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise PitrError("pgbackrest repo-ls did not print JSON") from None
    times = [item["time"] for name, item in listing.items() if name.startswith(segment)]
    if not times:
        return None
    return ArchivedWal(segment=segment, archived_at=_utc(max(times)))


# --------------------------------------------------------------------------- backups


@dataclass(frozen=True)
class PitrBackupResult:
    kind: str
    backup: PitrBackup | None
    skipped: bool
    duration_seconds: float


def pitr_backup_run(*, actor: Actor, kind: str, scheduled: bool = False) -> PitrBackupResult:
    """A full or differential backup; audited with its label, size and duration. A scheduled
    one is skipped when a backup of its kind (or a full one) is recent (see ``_RECENT``)."""
    if kind not in BACKUP_KINDS:
        raise PitrRefused(f"a backup is full or diff, not {kind!r}")
    conf = _settings(None)
    if scheduled:
        newest = info(conf).newest(*({kind, "full"}))
        if newest is not None and timezone.now() - newest.started_at < _RECENT[kind]:
            return PitrBackupResult(kind, newest, skipped=True, duration_seconds=0.0)
    clock = time.monotonic()
    try:
        run(conf, f"--type={kind}", "backup")
        backup = info(conf).newest(kind)
    except PitrError as exc:
        with transaction.atomic():
            audit_record(
                actor=actor,
                action=AuditAction.BACKUP_PITR_FAIL,
                object_type="backups.pgbackrest",
                object_repr=f"{kind} backup of stanza {conf.stanza}",
                after={"kind": kind, "error": str(exc)[:500]},
            )
        raise
    duration = time.monotonic() - clock
    with transaction.atomic():
        audit_record(
            actor=actor,
            action=AuditAction.BACKUP_PITR_SUCCEED,
            object_type="backups.pgbackrest",
            object_id=backup.label if backup else "",
            object_repr=f"{kind} backup of stanza {conf.stanza}",
            after={
                "kind": kind,
                "label": backup.label if backup else None,
                "size_bytes": backup.size_bytes if backup else None,
                "repo_bytes": backup.repo_bytes if backup else None,
                "duration_seconds": round(duration, 1),
            },
        )
    return PitrBackupResult(kind, backup, skipped=False, duration_seconds=duration)


# --------------------------------------------------------------------------- restores


def parse_target(text: str) -> datetime | None:
    """``'YYYY-MM-DD HH:MM:SS'`` (UTC) as an aware datetime; ``latest`` as None (the end of
    the archive)."""
    text = text.strip()
    if text == "latest":
        return None
    try:
        return datetime.strptime(text, TARGET_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise PitrRefused(
            f"--to-time must be 'YYYY-MM-DD HH:MM:SS' (UTC) or 'latest', not {text[:40]!r}"
        ) from None


@dataclass
class PitrRestoreReport:
    target_time: datetime | None
    pg_data: str
    port: int
    drill: bool
    backup_label: str = ""
    duration_seconds: float = 0.0
    tables: int = 0
    rows: int = 0
    replay: ledger.ReplayResult = field(default_factory=ledger.ReplayResult)
    rto_seconds: int = 0
    database: dict[str, Any] = field(default_factory=dict)
    drill_row: RestoreDrill | None = None

    @property
    def met_rto(self) -> bool:
        return self.duration_seconds <= self.rto_seconds


def _pg_ctl(conf: PitrSettings) -> str:
    if not conf.pg_bin:
        raise PitrError("pg_ctl was not found (set LLMP_PITR_PG_BIN)")
    return str(Path(conf.pg_bin) / "pg_ctl")


def _restored_database(conf: PitrSettings, port: int, database: dict[str, Any]) -> dict[str, Any]:
    """Django's settings for the platform's database on the restored cluster."""
    return {
        **database,
        "HOST": conf.pg_host,
        "PORT": port,
        "USER": conf.pg_user,
        "PASSWORD": database.get("PASSWORD") or "",
    }


def start_cluster(conf: PitrSettings, pg_data: str, port: int, database: dict[str, Any]) -> None:
    """Start the restored cluster and wait until recovery has reached the target and it is
    promoted (it accepts connections read-only before that). The server gets the repository's
    secrets in its environment: its restore_command (pgBackRest's archive-get, written by the
    restore) fetches the WAL to replay with them."""
    log = Path(pg_data) / "restore-start.log"
    argv = [_pg_ctl(conf), "-D", pg_data, "-w", "-t", "3600", "-l", str(log)]
    argv += ["-o", f"-p {int(port)}", "start"]
    result = subprocess.run(  # noqa: S603 - a fixed argv, no shell
        _as_user(conf, argv),
        env={**os.environ, **secret_env()},
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-800:] if log.exists() else result.stderr
        raise PitrError(f"the restored cluster did not start: {_clean(tail)}")
    deadline = time.monotonic() + 3600
    while True:
        with engines._pg_connect(database, dbname="postgres", autocommit=True) as connection:
            in_recovery = connection.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        if not in_recovery:
            return
        if time.monotonic() > deadline:
            raise PitrError("the restored cluster is still recovering after an hour")
        time.sleep(0.2)


def stop_cluster(conf: PitrSettings, pg_data: str) -> None:
    argv = [_pg_ctl(conf), "-D", pg_data, "-m", "fast", "-w", "stop"]
    subprocess.run(_as_user(conf, argv), capture_output=True, check=False)  # noqa: S603


def _empty_directory(path: Path) -> None:
    if path.exists() and any(path.iterdir()):
        raise PitrRefused(
            f"{path} is not empty: a point-in-time restore only goes into an empty data "
            "directory (pgBackRest's --delta over a live one is a different operation)"
        )


def _record(
    report: PitrRestoreReport, *, actor: Actor, started_at: datetime, error: str = ""
) -> RestoreDrill | None:
    """The restore's row and audit in the platform's database (skipped, with a warning, when
    that database is the one lost)."""
    result = RestoreDrill.Result.FAILED if error else RestoreDrill.Result.SUCCEEDED
    kind = RestoreDrill.Kind.PITR_DRILL if report.drill else RestoreDrill.Kind.PITR
    try:
        with transaction.atomic():
            drill = RestoreDrill.objects.create(
                backup=None,
                backup_uuid=None,
                backup_label=report.backup_label[:64],
                recovery_target=report.target_time,
                kind=kind,
                actor=actor.label,
                started_at=started_at,
                finished_at=timezone.now(),
                duration_seconds=round(report.duration_seconds, 3),
                rto_seconds=report.rto_seconds,
                target_database=(
                    engines.describe(report.database) if report.database else report.pg_data
                )[:300],
                tables_compared=report.tables,
                rows_compared=report.rows,
                rows_verified=report.rows,
                erasures_replayed=report.replay.erased,
                result=result,
                error=error[:2000],
            )
            audit_record(
                actor=actor,
                action=(
                    AuditAction.BACKUP_DRILL_RUN if report.drill else AuditAction.BACKUP_RESTORE_RUN
                ),
                obj=drill,
                after={
                    "kind": kind,
                    "to_time": report.target_time.isoformat() if report.target_time else "latest",
                    "backup_label": report.backup_label,
                    "result": result,
                    "duration_seconds": drill.duration_seconds,
                    "rto_seconds": report.rto_seconds,
                    "met_rto": drill.met_rto,
                    "erasures_replayed": report.replay.erased,
                    "error": error[:300],
                },
            )
    except DatabaseError as exc:
        logger.warning(
            "the point-in-time restore was not recorded: the platform's database cannot take it "
            "(%s)",
            type(exc).__name__,
        )
        return None
    return drill


def _verify(database: dict[str, Any]) -> tuple[int, int]:
    """Tables and rows of the restored platform database (it must hold the platform)."""
    counts, _ = engines.stats(database, ())
    if "django_migrations" not in counts:
        raise PitrError(
            f"the restored cluster has no platform tables in database {database['NAME']}"
        )
    return len(counts), sum(counts.values())


def pitr_restore(
    *,
    actor: Actor,
    to_time: datetime | None,
    pg_data: str,
    port: int,
    drill: bool = False,
    database: dict[str, Any] | None = None,
) -> PitrRestoreReport:
    """Restore the cluster as it was at ``to_time`` (UTC; None: the end of the archive) into
    the empty data directory ``pg_data``, start it on ``port``, check that the platform's
    database is there and replay the erasure ledger into it. A drill then stops the cluster
    and removes the directory. The duration (restore, recovery, replay) is the measured
    recovery time, recorded as a ``RestoreDrill`` against the RTO.

    ``database``: the platform's database settings (its name and password; default the
    platform's own)."""
    from django.db import connections

    conf = _settings(None)
    dumps = backup_conf.get()
    path = Path(pg_data)
    _empty_directory(path)
    if to_time is not None and to_time > timezone.now():
        raise PitrRefused(f"--to-time {to_time:{TARGET_FORMAT}} is in the future")
    platform = dict(database or connections["default"].settings_dict)
    report = PitrRestoreReport(
        target_time=to_time,
        pg_data=str(path),
        port=port,
        drill=drill,
        rto_seconds=int(dumps.rto.total_seconds()),
    )
    report.database = _restored_database(conf, port, platform)
    started_at = timezone.now()
    clock = time.monotonic()
    started = False
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if conf.run_as and os.geteuid() == 0:
            shutil.chown(path, conf.run_as)
        target = (
            ["--type=time", f"--target={to_time:{TARGET_FORMAT}}+00", "--target-action=promote"]
            if to_time is not None
            else []
        )
        # A drill's cluster must not push its own WAL into the repository.
        archive = ["--archive-mode=off"] if drill else []
        result = run(
            conf, *target, *archive, "--log-level-console=info", "restore", pg_path=str(path)
        )
        found = re.search(r"restore backup set (\S+)", result.stdout)
        report.backup_label = found.group(1).rstrip(",") if found else ""
        start_cluster(conf, str(path), port, report.database)
        started = True
        report.tables, report.rows = _verify(report.database)
        store = BackupStore(dumps) if dumps.bucket else None
        since = (to_time or timezone.now()) - ledger.MARGIN
        records = ledger.erasure_ledger_since(since, store=store)
        with engines.as_default_database(report.database):
            report.replay = ledger.erasure_ledger_replay(records)
            if not drill:
                ledger.erasure_ledger_record_locally(records)
        report.duration_seconds = time.monotonic() - clock
    except (PitrError, engines.EngineError, BackupStorageError, DatabaseError) as exc:
        report.duration_seconds = time.monotonic() - clock
        if drill and started:
            stop_cluster(conf, str(path))
        report.drill_row = _record(
            report, actor=actor, started_at=started_at, error=f"{type(exc).__name__}: {exc}"
        )
        if isinstance(exc, PitrError):
            raise
        raise PitrError(str(exc)) from exc
    if drill:
        stop_cluster(conf, str(path))
        shutil.rmtree(path, ignore_errors=True)
    report.drill_row = _record(report, actor=actor, started_at=started_at)
    return report
