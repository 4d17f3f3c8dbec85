"""Admin for backups: the backups (age, size, state), restore drills (duration against the RTO),
the erasure ledger, the measured figures above the lists, and "back up now" (audited). Nothing
is edited or deleted by hand: the retention deletes, and every action goes through a service.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse
from django.utils import timezone

from deployments.backups import conf as backup_conf
from deployments.backups import restore, selectors, services
from deployments.backups.models import Backup, ErasureLedgerEntry, RestoreDrill
from llmplatform.actors import Actor
from llmplatform.admin.permissions import requires
from llmplatform.admin.readonly import ReadOnlyAdmin

BACK_UP_PERMISSION = "backups.add_backup"
DRILL_PERMISSION = "backups.add_restoredrill"


def _duration(value: timedelta | float | None) -> str:
    if value is None:
        return "—"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def measured_figures() -> dict[str, object]:
    """What the changelists show on top: the age of the last good backup against the RPO and
    the duration of the last restore drill against the RTO."""
    conf = backup_conf.get()
    backup = selectors.last_good_backup()
    drill = selectors.last_restore_drill()
    age = selectors.last_good_backup_age()
    return {
        "rpo": _duration(conf.rpo),
        "rto": _duration(conf.rto),
        "backup": backup,
        "backup_age": _duration(age),
        "backup_within_rpo": age is not None and age <= conf.rpo,
        "drill": drill,
        "drill_duration": _duration(drill.duration_seconds) if drill else "—",
        "drill_met_rto": drill is not None and drill.met_rto,
        "configured": conf.configured,
    }


@admin.register(Backup)
class BackupAdmin(ReadOnlyAdmin):
    change_list_template = "admin/backups/backup/change_list.html"
    list_display = [
        "started",
        "state",
        "trigger",
        "mode",
        "engine",
        "age",
        "duration_display",
        "size",
        "key_id",
    ]
    list_filter = ["state", "trigger", "mode"]
    search_fields = ["uuid", "storage_key"]
    actions = ["drill_selected"]
    fields = [
        "uuid",
        "state",
        "trigger",
        "mode",
        "engine",
        "requested_by",
        "created_at",
        "started_at",
        "finished_at",
        "duration_display",
        "worker",
        "size",
        "dump_size",
        "sha256",
        "storage_key",
        "encryption_key_id",
        "table_counts",
        "checksums",
        "error",
    ]
    readonly_fields = fields  # type: ignore[assignment]  # django-stubs: invariant list types

    @admin.display(description="data from", ordering="started_at")
    def started(self, obj: Backup):
        return obj.started_at or obj.created_at

    @admin.display(description="age")
    def age(self, obj: Backup) -> str:
        return _duration(timezone.now() - obj.started_at) if obj.started_at else "—"

    @admin.display(description="duration")
    def duration_display(self, obj: Backup) -> str:
        return _duration(obj.duration)

    @admin.display(description="size (encrypted)", ordering="size_bytes")
    def size(self, obj: Backup) -> str:
        return filesizeformat(obj.size_bytes) if obj.size_bytes is not None else "—"

    @admin.display(description="dump size")
    def dump_size(self, obj: Backup) -> str:
        return filesizeformat(obj.dump_bytes) if obj.dump_bytes is not None else "—"

    @admin.display(description="encryption key")
    def key_id(self, obj: Backup) -> str:
        value = obj.encryption_key_id
        return value if len(value) <= 40 else "…" + value[-39:]

    def get_urls(self):
        back_up_now = requires(BACK_UP_PERMISSION)(self.back_up_now)
        return [
            path(
                "back-up-now/",
                self.admin_site.admin_view(back_up_now),
                name="backups_backup_back_up_now",
            ),
            *super().get_urls(),
        ]

    def _may_back_up(self, request: HttpRequest) -> bool:
        return request.user.has_perm(BACK_UP_PERMISSION)

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(
            request,
            {
                **(extra_context or {}),
                "figures": measured_figures(),
                "may_back_up": self._may_back_up(request),
                "back_up_now_url": reverse("admin:backups_backup_back_up_now"),
            },
        )

    def back_up_now(self, request: HttpRequest):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self._may_back_up(request):
            raise PermissionDenied
        if not backup_conf.get().configured:
            self.message_user(
                request, "Backups are not configured (LLMP_BACKUP_BUCKET).", messages.ERROR
            )
        else:
            backup = services.backup_request_now(actor=Actor.for_user(request.user))
            backup.refresh_from_db()
            self.message_user(
                request,
                f"Backup {str(backup.uuid)[:8]} requested: {backup.state}.",
                messages.SUCCESS,
            )
        return HttpResponseRedirect(reverse("admin:backups_backup_changelist"))

    def has_drill_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(DRILL_PERMISSION)

    @admin.action(description="Run a restore drill of the selected backups", permissions=["drill"])
    def drill_selected(self, request, queryset):
        requested = 0
        for backup in queryset:
            try:
                restore.restore_drill_request(actor=Actor.for_user(request.user), backup=backup)
            except restore.RestoreRefused as exc:
                self.message_user(request, str(exc), messages.WARNING)
            else:
                requested += 1
        if requested:
            self.message_user(
                request,
                f"Requested {requested} restore drill(s); results appear under Restore drills.",
                messages.SUCCESS,
            )


@admin.register(RestoreDrill)
class RestoreDrillAdmin(ReadOnlyAdmin):
    change_list_template = "admin/backups/restoredrill/change_list.html"
    list_display = [
        "finished_at",
        "kind",
        "backup_short",
        "result",
        "duration_vs_rto",
        "rows",
        "checksums_verified",
        "erasures_replayed",
        "target_database",
    ]
    list_filter = ["kind", "result"]
    fields = [
        "kind",
        "backup",
        "backup_uuid",
        "backup_label",
        "recovery_target",
        "actor",
        "started_at",
        "finished_at",
        "duration_vs_rto",
        "target_database",
        "tables_compared",
        "rows_compared",
        "rows_verified",
        "checksums_verified",
        "mismatches",
        "erasures_replayed",
        "result",
        "error",
    ]
    readonly_fields = fields  # type: ignore[assignment]  # django-stubs: invariant list types

    @admin.display(description="backup")
    def backup_short(self, obj: RestoreDrill) -> str:
        return str(obj.backup_uuid)[:8] if obj.backup_uuid else obj.backup_label

    @admin.display(description="duration / RTO", ordering="duration_seconds")
    def duration_vs_rto(self, obj: RestoreDrill) -> str:
        verdict = "met" if obj.met_rto else "NOT met"
        return f"{_duration(obj.duration_seconds)} / {_duration(obj.rto_seconds)} ({verdict})"

    @admin.display(description="rows verified")
    def rows(self, obj: RestoreDrill) -> str:
        return f"{obj.rows_verified:,} / {obj.rows_compared:,}"

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(
            request, {**(extra_context or {}), "figures": measured_figures()}
        )


@admin.register(ErasureLedgerEntry)
class ErasureLedgerEntryAdmin(ReadOnlyAdmin):
    """Erasures a restore would replay. The subject is only a keyed hash."""

    list_display = ["erased_at", "tenant_id", "hash_prefix", "uploaded_at"]
    list_filter = [("uploaded_at", admin.EmptyFieldListFilter)]
    show_full_result_count = False
    fields = ["erased_at", "tenant_id", "subject_hash", "storage_key", "created_at", "uploaded_at"]
    readonly_fields = fields  # type: ignore[assignment]  # django-stubs: invariant list types

    @admin.display(description="subject (keyed hash)")
    def hash_prefix(self, obj: ErasureLedgerEntry) -> str:
        return obj.subject_hash[:16] + "…"
