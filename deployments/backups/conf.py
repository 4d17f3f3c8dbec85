"""Backup settings, read from the environment through ``llmplatform.env`` (each call reads them
again, so a test or a changed environment takes effect without a restart; bad values raise
``ImproperlyConfigured`` naming the variable, and ``BackupsConfig.ready`` reads them once at
start so a misconfigured deployment stops there).

=================================  ==========================================================
``LLMP_BACKUP_MODE``               ``dump`` (default: pg_dump / SQLite online backup,
                                   encrypted, to S3) or ``rds`` (RDS snapshots through boto3)
``LLMP_BACKUP_BUCKET``             S3 bucket for dumps and the erasure ledger (unset: no
                                   dumps are taken, and the RPO check says so)
``LLMP_BACKUP_PREFIX``             key prefix in the bucket (default ``llmplatform/``)
``LLMP_BACKUP_ENDPOINT_URL``       any S3-compatible endpoint (default
                                   ``LLMP_AWS_ENDPOINT_URL``, else AWS)
``LLMP_BACKUP_REGION``             default ``AWS_REGION``
``LLMP_BACKUP_RETENTION_DAYS``     7
``LLMP_BACKUP_RPO_MINUTES``        60 (recovery point objective)
``LLMP_BACKUP_RTO_MINUTES``        15 (recovery time objective)
``LLMP_BACKUP_DRILL_MAX_AGE_DAYS`` 90 (how recent a restore drill must be)
``LLMP_BACKUP_RDS_INSTANCE``       the DB instance identifier (``rds`` mode)
``LLMP_BACKUP_RDS_WAIT_MINUTES``   60 (how long a run waits for a snapshot to be available)
``LLMP_BACKUP_PG_DUMP``            path of pg_dump (default: on PATH, else the newest
                                   ``/usr/lib/postgresql/*/bin``); ``LLMP_BACKUP_PG_RESTORE``
``LLMP_BACKUP_PG_COMPRESS``        pg_dump's compression level, 0-9 (default 1: conversation
                                   records are ciphertext and do not compress; level 6, pg_dump's
                                   own default, took 2.3x as long for a 3% smaller dump)
``LLMP_BACKUP_RESTORE_JOBS``       pg_restore parallel jobs (default 2)
``LLMP_BACKUP_PART_MB``            S3 multipart part size (default 32; 10,000 parts at most)
``LLMP_BACKUP_CHECKSUM_TABLES``    tables whose rows are checksummed at backup time and
                                   compared after a restore (comma-separated)
``LLMP_BACKUP_STALL_MINUTES``      a backup running this long is taken as crashed (240)
=================================  ==========================================================

Continuous archiving and point-in-time recovery with pgBackRest (``deployments.backups.pitr``),
on beside the dumps when ``LLMP_PITR_STANZA`` is set:

=================================  ==========================================================
``LLMP_PITR_STANZA``               pgBackRest's name for the cluster (unset: no PITR)
``LLMP_PITR_BUCKET``               the repository's S3 bucket (default ``LLMP_BACKUP_BUCKET``)
``LLMP_PITR_REPO_PATH``            its path in the bucket (default ``/pgbackrest``)
``LLMP_PITR_S3_ENDPOINT``          ``https://host[:port]`` (default
                                   ``https://s3.<region>.amazonaws.com``; pgBackRest speaks
                                   only TLS to S3)
``LLMP_PITR_REGION``               default ``LLMP_BACKUP_REGION``
``LLMP_PITR_CA_FILE``              CA bundle for the endpoint's certificate (optional)
``LLMP_PITR_S3_KEY``,              S3 credentials (``_FILE`` or ``_REF`` too); unset: the
``LLMP_PITR_S3_KEY_SECRET``        instance's or pod's IAM role (``repo1-s3-key-type=auto``)
``LLMP_PITR_CIPHER_PASS``          the repository's AES-256 pass (``_FILE`` or ``_REF`` too;
                                   required: the repository is always encrypted)
``LLMP_PITR_RETENTION_FULL``       full backups kept (default 2; WAL older than the oldest
                                   kept full backup expires with it)
``LLMP_PITR_RETENTION_DIFF``       differential backups kept (default 6)
``LLMP_PITR_RPO_MINUTES``          5: the newest archived WAL segment may be this old
``LLMP_PITR_PG_DATA``              the cluster's data directory (``pg1-path``)
``LLMP_PITR_PG_HOST``              where pgBackRest connects to it: a socket directory or a
                                   host (default ``/var/run/postgresql``)
``LLMP_PITR_PG_PORT``              5432
``LLMP_PITR_PG_USER``              postgres
``LLMP_PITR_RUN_AS``               the system user pgBackRest runs as when the platform runs
                                   as root (the cluster's owner, e.g. ``postgres``)
``LLMP_PITR_CONFIG``               where the generated pgbackrest.conf goes (default
                                   ``<LLMP_DATA_DIR>/pgbackrest/pgbackrest.conf``)
``LLMP_PITR_PGBACKREST``           path of pgbackrest (default: on PATH)
``LLMP_PITR_PG_BIN``               directory of pg_ctl (default: the newest
                                   ``/usr/lib/postgresql/*/bin``)
``LLMP_PITR_PROCESS_MAX``          pgBackRest's parallel processes (default 2)
=================================  ==========================================================
"""

from __future__ import annotations

import glob
import re
import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from llmplatform.env import env_int, env_list, env_str, env_url

MODES = ("dump", "rds")
DEFAULT_CHECKSUM_TABLES = [
    "llmplatform_tenant",
    "llmplatform_membership",
    "auth_user",
    "gateway_apikey",
    "privacy_datasubject",
    "privacy_subjectkey",
    "privacy_consentrecord",
]


@dataclass(frozen=True)
class BackupSettings:
    mode: str
    bucket: str | None
    prefix: str
    endpoint_url: str | None
    region: str
    retention: timedelta
    rpo: timedelta
    rto: timedelta
    drill_max_age: timedelta
    rds_instance: str | None
    rds_wait: timedelta
    pg_dump: str | None
    pg_restore: str | None
    pg_compress: int
    restore_jobs: int
    part_bytes: int
    checksum_tables: tuple[str, ...]
    stall: timedelta

    @property
    def configured(self) -> bool:
        """Whether scheduled backups can run at all."""
        return bool(self.rds_instance) if self.mode == "rds" else bool(self.bucket)


def _postgres_tool(name: str, variable: str) -> str | None:
    configured = env_str(variable)
    if configured:
        return configured
    found = shutil.which(name)
    if found:
        return found
    # Debian keeps the versioned clients here; the newest reads dumps of every older server.
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_major_version)
    return candidates[-1] if candidates else None


def _major_version(path: str) -> int:
    match = re.search(r"/postgresql/(\d+)/", path)
    return int(match.group(1)) if match else 0


def _compress_level() -> int:
    level = env_int("LLMP_BACKUP_PG_COMPRESS", 1, minimum=0)
    if level > 9:
        raise ImproperlyConfigured(f"LLMP_BACKUP_PG_COMPRESS={level} must be at most 9")
    return level


def get() -> BackupSettings:
    mode = env_str("LLMP_BACKUP_MODE", "dump")
    if mode not in MODES:
        raise ImproperlyConfigured(
            f"LLMP_BACKUP_MODE must be one of {', '.join(MODES)}, not {mode!r}"
        )
    prefix = env_str("LLMP_BACKUP_PREFIX", "llmplatform/") or ""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    part_mb = env_int("LLMP_BACKUP_PART_MB", 32, minimum=5)  # S3's smallest part is 5 MiB
    return BackupSettings(
        mode=mode,
        bucket=env_str("LLMP_BACKUP_BUCKET"),
        prefix=prefix.lstrip("/"),
        endpoint_url=env_url("LLMP_BACKUP_ENDPOINT_URL", None, schemes=("http", "https"))
        or getattr(settings, "LLMP_AWS_ENDPOINT_URL", None),
        region=env_str("LLMP_BACKUP_REGION") or settings.AWS_REGION,
        retention=timedelta(days=env_int("LLMP_BACKUP_RETENTION_DAYS", 7, minimum=1)),
        rpo=timedelta(minutes=env_int("LLMP_BACKUP_RPO_MINUTES", 60, minimum=1)),
        rto=timedelta(minutes=env_int("LLMP_BACKUP_RTO_MINUTES", 15, minimum=1)),
        drill_max_age=timedelta(days=env_int("LLMP_BACKUP_DRILL_MAX_AGE_DAYS", 90, minimum=1)),
        rds_instance=env_str("LLMP_BACKUP_RDS_INSTANCE"),
        rds_wait=timedelta(minutes=env_int("LLMP_BACKUP_RDS_WAIT_MINUTES", 60, minimum=0)),
        pg_dump=_postgres_tool("pg_dump", "LLMP_BACKUP_PG_DUMP"),
        pg_restore=_postgres_tool("pg_restore", "LLMP_BACKUP_PG_RESTORE"),
        pg_compress=_compress_level(),
        restore_jobs=env_int("LLMP_BACKUP_RESTORE_JOBS", 2, minimum=1),
        part_bytes=part_mb * 1024 * 1024,
        checksum_tables=tuple(env_list("LLMP_BACKUP_CHECKSUM_TABLES", DEFAULT_CHECKSUM_TABLES)),
        stall=timedelta(minutes=env_int("LLMP_BACKUP_STALL_MINUTES", 240, minimum=5)),
    )


# --------------------------------------------------------------------------- pgBackRest


@dataclass(frozen=True)
class PitrSettings:
    """Where pgBackRest keeps the WAL archive and the full and differential backups, and the
    cluster it backs up. Secrets are not here: ``pitr.secret_env`` reads them when a command
    runs, into that command's environment only."""

    stanza: str | None
    bucket: str | None
    repo_path: str
    s3_host: str
    s3_port: int
    region: str
    ca_file: str | None
    retention_full: int
    retention_diff: int
    rpo: timedelta
    pg_data: str | None
    pg_host: str
    pg_port: int
    pg_user: str
    run_as: str | None
    config_path: Path
    pgbackrest: str | None
    pg_bin: str | None
    process_max: int

    @property
    def configured(self) -> bool:
        return bool(self.stanza)


def _pg_bin() -> str | None:
    configured = env_str("LLMP_PITR_PG_BIN")
    if configured:
        return configured
    found = shutil.which("pg_ctl")
    if found:
        return str(Path(found).parent)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_major_version)
    return str(Path(candidates[-1]).parent) if candidates else None


def pitr_get() -> PitrSettings:
    dumps = get()
    stanza = env_str("LLMP_PITR_STANZA")
    if stanza is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", stanza):
        raise ImproperlyConfigured(
            "LLMP_PITR_STANZA must be letters, digits, '.', '_' or '-' (at most 64)"
        )
    region = env_str("LLMP_PITR_REGION") or dumps.region
    endpoint = env_url(
        "LLMP_PITR_S3_ENDPOINT", f"https://s3.{region}.amazonaws.com", schemes=("https",)
    )
    parts = urlsplit(endpoint)
    if not parts.hostname or parts.path not in ("", "/"):
        raise ImproperlyConfigured("LLMP_PITR_S3_ENDPOINT must be https://host[:port]")
    bucket = env_str("LLMP_PITR_BUCKET") or dumps.bucket
    if stanza and not bucket:
        raise ImproperlyConfigured("LLMP_PITR_STANZA is set: set LLMP_PITR_BUCKET too")
    repo_path = "/" + (env_str("LLMP_PITR_REPO_PATH", "/pgbackrest") or "").strip("/")
    from django.conf import settings as django_settings

    config_path = env_str("LLMP_PITR_CONFIG") or str(
        Path(django_settings.DATA_DIR) / "pgbackrest" / "pgbackrest.conf"
    )
    return PitrSettings(
        stanza=stanza,
        bucket=bucket,
        repo_path=repo_path,
        s3_host=parts.hostname,
        s3_port=parts.port or 443,
        region=region,
        ca_file=env_str("LLMP_PITR_CA_FILE"),
        retention_full=env_int("LLMP_PITR_RETENTION_FULL", 2, minimum=1),
        retention_diff=env_int("LLMP_PITR_RETENTION_DIFF", 6, minimum=1),
        rpo=timedelta(minutes=env_int("LLMP_PITR_RPO_MINUTES", 5, minimum=1)),
        pg_data=env_str("LLMP_PITR_PG_DATA"),
        pg_host=env_str("LLMP_PITR_PG_HOST", "/var/run/postgresql"),
        pg_port=env_int("LLMP_PITR_PG_PORT", 5432, minimum=1),
        pg_user=env_str("LLMP_PITR_PG_USER", "postgres"),
        run_as=env_str("LLMP_PITR_RUN_AS"),
        config_path=Path(config_path),
        pgbackrest=env_str("LLMP_PITR_PGBACKREST") or shutil.which("pgbackrest"),
        pg_bin=_pg_bin(),
        process_max=env_int("LLMP_PITR_PROCESS_MAX", 2, minimum=1),
    )
