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
"""

from __future__ import annotations

import glob
import re
import shutil
from dataclasses import dataclass
from datetime import timedelta

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
