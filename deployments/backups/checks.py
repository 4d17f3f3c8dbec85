"""Live evidence for the compliance checklists (registered from ``BackupsConfig.ready``)."""

from __future__ import annotations

from django.utils import timezone

from deployments.backups import conf as backup_conf
from deployments.backups import selectors
from deployments.evidence import Evidence, register


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _wal_rpo() -> Evidence:
    """With point-in-time recovery on, the measured RPO is the age of the newest WAL segment
    in pgBackRest's repository, against ``LLMP_PITR_RPO_MINUTES`` (and a full backup must
    exist to replay it onto); the dumps, the portable fallback, are reported beside it."""
    from deployments.backups import pitr

    pitr_conf = backup_conf.pitr_get()
    target = pitr_conf.rpo.total_seconds()
    dump = _dump_rpo()
    details: dict[str, object] = {
        "mode": "pgbackrest",
        "stanza": pitr_conf.stanza,
        "rpo_seconds": target,
        "dumps": {"ok": dump.ok, "summary": dump.summary},
    }
    try:
        repository = pitr.info(pitr_conf)
        wal = pitr.archived_wal(pitr_conf)
    except pitr.PitrError as exc:
        return Evidence(False, f"The WAL archive cannot be read: {exc}", details)
    full, diff = repository.newest("full"), repository.newest("diff")
    details["newest_full"] = full.stopped_at.isoformat() if full else None
    details["newest_diff"] = diff.stopped_at.isoformat() if diff else None
    if wal is None:
        return Evidence(False, "No WAL segment has been archived yet.", details)
    age = wal.age().total_seconds()
    details["wal_segment"] = wal.segment
    details["archived_at"] = wal.archived_at.isoformat()
    details["age_seconds"] = round(age)
    ok = age <= target and full is not None
    summary = (
        f"The newest archived WAL segment is {_minutes(age)} old (RPO {_minutes(target)}): "
        f"{'within' if age <= target else 'OUTSIDE'} the RPO; "
        + (f"newest full backup {full.label}." if full else "NO full backup yet.")
        + f" Dumps: {dump.summary}"
    )
    return Evidence(ok, summary, details)


@register("backups.within_rpo", "Backups succeeded within the RPO")
def within_rpo() -> Evidence:
    if backup_conf.pitr_get().configured:
        return _wal_rpo()
    return _dump_rpo()


def _dump_rpo() -> Evidence:
    conf = backup_conf.get()
    rpo = conf.rpo.total_seconds()
    backup = selectors.last_good_backup()
    if backup is None or backup.started_at is None:
        why = (
            ""
            if conf.configured
            else (
                " Backups are not configured (LLMP_BACKUP_RDS_INSTANCE)."
                if conf.mode == "rds"
                else " Backups are not configured (LLMP_BACKUP_BUCKET)."
            )
        )
        return Evidence(
            False,
            "No backup has succeeded yet." + why,
            {"rpo_seconds": rpo, "configured": conf.configured},
        )
    age = (timezone.now() - backup.started_at).total_seconds()
    ok = age <= rpo
    summary = (
        f"The last good backup is {_minutes(age)} old (RPO {_minutes(rpo)}): "
        f"{'within' if ok else 'OUTSIDE'} the RPO."
    )
    return Evidence(
        ok,
        summary,
        {
            "backup": str(backup.uuid),
            "started_at": backup.started_at.isoformat(),
            "age_seconds": round(age),
            "rpo_seconds": rpo,
            "mode": backup.mode,
            "size_bytes": backup.size_bytes,
            "encrypted_with": backup.encryption_key_id or None,
        },
    )


@register("backups.restore_drill_recent", "Restore drill within the last 90 days")
def restore_drill_recent() -> Evidence:
    conf = backup_conf.get()
    max_age = conf.drill_max_age.total_seconds()
    rto = conf.rto.total_seconds()
    drill = selectors.last_successful_restore_drill()
    latest = selectors.last_restore_drill()
    if drill is None:
        failed = " The last one failed." if latest is not None else ""
        return Evidence(
            False,
            "No restore drill has succeeded." + failed,
            {"rto_seconds": rto, "max_age_days": conf.drill_max_age.days},
        )
    age = (timezone.now() - drill.finished_at).total_seconds()
    recent = age <= max_age
    met_rto = drill.duration_seconds <= rto
    summary = (
        f"Last successful {drill.kind} {_minutes(age)} ago "
        f"({'within' if recent else 'OLDER than'} {conf.drill_max_age.days} days); it took "
        f"{_minutes(drill.duration_seconds)} against an RTO of {_minutes(rto)}: "
        f"{'met' if met_rto else 'NOT met'}."
    )
    if latest is not None and latest.pk != drill.pk:
        summary += f" A later {latest.kind} failed ({latest.finished_at:%Y-%m-%d})."
    return Evidence(
        recent,
        summary,
        {
            "drill": drill.pk,
            "backup": str(drill.backup_uuid) if drill.backup_uuid else drill.backup_label,
            "recovery_target": (
                drill.recovery_target.isoformat() if drill.recovery_target else None
            ),
            "finished_at": drill.finished_at.isoformat(),
            "age_days": round(age / 86400, 1),
            "duration_seconds": drill.duration_seconds,
            "rto_seconds": rto,
            "met_rto": met_rto,
            "rows_verified": drill.rows_verified,
            "erasures_replayed": drill.erasures_replayed,
        },
    )
