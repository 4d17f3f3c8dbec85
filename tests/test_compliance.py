"""Compliance checklists with live evidence: each live check follows the real condition it
verifies, runs are kept as history (hourly task, command, audited re-check), and officers read
per-framework reports (printable) and the GDPR Art. 30 record, with permissions."""

from __future__ import annotations

import base64
import importlib
import io
import secrets
from datetime import timedelta

import pytest
import time_machine
from django.apps import apps as django_apps
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice

from deployments import evidence
from deployments.compliance import checks, selectors, services
from deployments.compliance.models import (
    Attestation,
    ComplianceFramework,
    ComplianceItem,
    EvidenceCheck,
)
from deployments.compliance.tasks import run_evidence_checks
from gateway.models import Provider, ProviderDeployment
from llmplatform.actors import SYSTEM, Actor
from llmplatform.audit import AuditAction, audit_record
from llmplatform.models import AuditEvent, Tenant
from privacy import crypto
from privacy import services as privacy_services
from privacy.models import Conversation, PrivacyPolicy, PurgeRun, SubjectKey, SubjectRequest

State = SubjectRequest.State


def _ensure_default_checklists() -> None:
    """The data migration's content (flushed by earlier transactional tests, so put back)."""
    migration = importlib.import_module("deployments.compliance.migrations.0002_default_checklists")
    migration.forwards(django_apps, None)


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def tenants(db) -> tuple[Tenant, Tenant]:
    """Two tenants, without the users of ``principals`` (whose password hashing is slow)."""
    return (
        Tenant.objects.create(name="Tenant A", slug="tenant-a"),
        Tenant.objects.create(name="Tenant B", slug="tenant-b"),
    )


@pytest.fixture
def production_key(settings, tmp_path):
    """A master key given explicitly; the embedded mode's generated key is elsewhere."""
    settings.DATA_DIR = tmp_path
    (tmp_path / "master_key").write_text(_new_key())
    settings.LLMP_MASTER_KEY = _new_key()
    settings.LLMP_MASTER_KEYS_PREVIOUS = []
    settings.LLMP_KEY_PROVIDER = "local"
    crypto.data_key_cache.clear()
    yield settings.LLMP_MASTER_KEY
    crypto.data_key_cache.clear()


def _store_conversation(tenant, user="user-1", text="hello"):
    subject = privacy_services.subject_register_email(
        actor=Actor.system("app"), tenant=tenant, external_id=user, email=f"{user}@ex.org"
    )
    privacy_services.consent_set(
        actor=Actor.system("app"),
        subject=subject,
        purpose="store_conversations",
        granted=True,
        source="api",
    )
    privacy_services.conversation_store(
        tenant=tenant,
        external_id=user,
        alias="chat",
        request_id=f"r-{user}",
        prompt=text,
        response="answer",
    )
    return subject


def _staff(django_user_model, username, *perms, device=True, superuser=False):
    create = (
        django_user_model.objects.create_superuser
        if superuser
        else django_user_model.objects.create_user
    )
    user = create(username, password=None, is_staff=True)  # force_login: no hashing
    for codename in perms:
        user.user_permissions.add(
            Permission.objects.get(codename=codename, content_type__app_label="compliance")
        )
    if device:
        TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    return user


def _verified_client(client, user):
    """Signed in as the admin requires: password session plus a verified second factor."""
    device = TOTPDevice.objects.filter(user=user, confirmed=True).first()
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client


# --- Default content ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_default_checklists_hold_the_seeds_items_mapped_to_live_checks_or_attestation():
    _ensure_default_checklists()
    frameworks = {f.code: f for f in ComplianceFramework.objects.all()}
    assert set(frameworks) == {"gdpr", "hipaa", "soc2", "ccpa"}
    texts = {f: [i.text for i in frameworks[f].items.all()] for f in frameworks}
    # The default checklist, each item present.
    for framework, start in [
        ("gdpr", "Privacy policy updated"),
        ("gdpr", "Data deletion implemented"),
        ("gdpr", "Data processing agreement signed"),
        ("hipaa", "Encryption at rest"),
        ("hipaa", "Encryption in transit"),
        ("hipaa", "Access logs maintained"),
        ("hipaa", "Business Associate Agreement (BAA) signed"),
        ("soc2", "Security controls documented"),
        ("soc2", "Audit logging enabled"),
        ("soc2", "Annual audit scheduled"),
        ("ccpa", "Data disclosure implemented"),
        ("ccpa", "Opt-out mechanism provided"),
    ]:
        assert any(t.startswith(start) for t in texts[framework]), (framework, start)
    live_codes = set(
        ComplianceItem.objects.filter(kind="live").values_list("check_code", flat=True)
    )
    ours = {
        checks.ENCRYPTION,
        checks.AUDIT_LOG,
        checks.RETENTION_PURGE,
        checks.SUBJECT_REQUESTS,
        checks.STAFF_SECOND_FACTOR,
        checks.TLS_REQUIRED,
    }
    assert live_codes == ours | {checks.BACKUPS_WITHIN_RPO, checks.RESTORE_DRILL_RECENT}
    assert ours <= set(evidence.registered())
    # Every item is either manual (no check) or live (a check), never both.
    assert not ComplianceItem.objects.filter(kind="manual").exclude(check_code="").exists()


# --- Live checks flip with the real condition ---------------------------------------------------


@pytest.mark.django_db
def test_encryption_fails_on_the_generated_development_key_and_passes_on_a_given_one(
    settings, tmp_path, tenants
):
    settings.DATA_DIR = tmp_path
    development = _new_key()
    (tmp_path / "master_key").write_text(development)
    settings.LLMP_MASTER_KEY = development
    settings.LLMP_MASTER_KEYS_PREVIOUS = []
    crypto.data_key_cache.clear()
    _store_conversation(tenants[0])

    result = evidence.run(checks.ENCRYPTION)
    assert not result.ok
    assert (
        "development key" in result.summary
        and "1 data key wrapped by the development key" in result.summary
    )

    # A real key given explicitly, the old one kept to unwrap until rotated: passes only after
    # the data keys are re-wrapped off the development key.
    settings.LLMP_MASTER_KEY = _new_key()
    settings.LLMP_MASTER_KEYS_PREVIOUS = [development]
    assert not evidence.run(checks.ENCRYPTION).ok
    call_command("rotate_master_key", stdout=io.StringIO())
    result = evidence.run(checks.ENCRYPTION)
    assert result.ok, result.summary
    assert "1 data key all wrapped by configured keys" in result.summary
    assert "the newest 1 record encrypted" in result.summary
    assert result.details["master_key_id"] == crypto.local_key_id(
        base64.b64decode(settings.LLMP_MASTER_KEY)
    )


@pytest.mark.django_db
def test_encryption_fails_when_records_are_not_ciphertext_or_keys_cannot_be_unwrapped(
    production_key, settings, tenants
):
    subject = _store_conversation(tenants[0])
    assert evidence.run(checks.ENCRYPTION).ok

    Conversation.objects.filter(subject=subject).update(prompt_ciphertext=b"plain text prompt")
    result = evidence.run(checks.ENCRYPTION)
    assert not result.ok
    assert (
        "1 of the newest 1 conversation records are not in the encrypted format" in result.summary
    )

    Conversation.objects.all().delete()
    SubjectKey.objects.filter(subject=subject).update(master_key_id="local:000000000000")
    result = evidence.run(checks.ENCRYPTION)
    assert (
        not result.ok
        and "1 data key wrapped by a master key that is not configured" in result.summary
    )

    settings.LLMP_MASTER_KEY = base64.b64encode(b"\x00" * 32).decode()
    assert "weak" in evidence.run(checks.ENCRYPTION).summary


@pytest.mark.django_db
def test_encryption_with_kms_passes_while_the_key_works_and_fails_when_it_does_not(
    aws_region, settings
):
    import boto3

    kms = boto3.client("kms", region_name=aws_region, endpoint_url=settings.LLMP_AWS_ENDPOINT_URL)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    settings.LLMP_KEY_PROVIDER = "kms"
    settings.LLMP_KMS_KEY_ID = key_id
    crypto.clear_kms_clients()
    try:
        result = evidence.run(checks.ENCRYPTION)
        assert result.ok, result.summary
        assert f"KMS key {key_id}" in result.summary
        # A key that is gone (moto does not refuse disabled keys as AWS does).
        settings.LLMP_KMS_KEY_ID = "alias/deleted-key"
        result = evidence.run(checks.ENCRYPTION)
        assert not result.ok and "cannot wrap a data key" in result.summary
    finally:
        crypto.clear_kms_clients()


def _write_an_audit_row() -> None:
    with transaction.atomic():
        audit_record(actor=SYSTEM, action=AuditAction.CACHE_INVALIDATE_ALIAS, object_type="x")


@pytest.mark.django_db
def test_audit_log_check_needs_an_event_in_the_last_24_hours():
    result = evidence.run(checks.AUDIT_LOG)
    assert not result.ok and "nothing written in the last 24 h" in result.summary.lower()

    _write_an_audit_row()
    result = evidence.run(checks.AUDIT_LOG)
    assert result.ok, result.summary
    assert "1 event in the last 24 h" in result.summary
    assert result.details["probe"] == "refused"

    # The checks' own re-runs do not count as the platform writing its trail.
    with time_machine.travel(timezone.now() + timedelta(hours=25)):
        services.evidence_checks_run(
            actor=Actor.system("someone"), trigger="manual", codes=[checks.TLS_REQUIRED]
        )
        result = evidence.run(checks.AUDIT_LOG)
        assert not result.ok and "0 events in the last 24 h" in result.summary


@pytest.mark.postgres
@pytest.mark.django_db
def test_audit_log_check_reads_the_postgres_trigger_and_fails_when_it_is_disabled():
    _write_an_audit_row()
    result = evidence.run(checks.AUDIT_LOG)
    assert result.ok, result.summary
    assert result.summary.startswith("Trigger llmp_audit_no_update refuses UPDATE and DELETE")
    assert [t["name"] for t in result.details["triggers"]] == ["llmp_audit_no_update"]

    with connection.cursor() as cursor:  # rolled back with the test's transaction
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending FK checks before ALTER
        cursor.execute("ALTER TABLE llmplatform_auditevent DISABLE TRIGGER llmp_audit_no_update")
    result = evidence.run(checks.AUDIT_LOG)
    assert not result.ok
    assert "No enabled trigger refuses UPDATE and DELETE" in result.summary
    assert "the database accepted an UPDATE of an audit row" in result.summary
    assert AuditEvent.objects.get().action == "cache.invalidate_alias"  # the probe changed nothing


@pytest.mark.django_db
def test_audit_log_check_on_sqlite_says_what_holds_and_fails_without_the_trigger(settings):
    if connection.vendor != "sqlite":
        pytest.skip("the SQLite catalog (the PostgreSQL one has its own test)")
    _write_an_audit_row()
    result = evidence.run(checks.AUDIT_LOG)
    assert result.ok
    assert (
        "SQLite: trigger llmp_audit_no_update refuses UPDATE; DELETE is refused by the "
        "application only" in result.summary
    )
    settings.PRODUCTION = True
    assert "Production on SQLite" in evidence.run(checks.AUDIT_LOG).summary
    settings.PRODUCTION = False

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER llmp_audit_no_update")
        result = evidence.run(checks.AUDIT_LOG)
        transaction.set_rollback(True)  # puts the trigger back
    assert not result.ok and "accepted an UPDATE" in result.summary
    assert evidence.run(checks.AUDIT_LOG).ok


@pytest.mark.django_db
def test_retention_check_follows_the_purge_runs(production_key, tenants):
    result = evidence.run(checks.RETENTION_PURGE)
    assert not result.ok and result.summary == "The retention purge has never run."

    run = privacy_services.purge_expired_conversations()
    result = evidence.run(checks.RETENTION_PURGE)
    assert result.ok
    assert result.summary.startswith(f"Last purge {checks.utc(run.finished_at)}, 0 deleted")

    with time_machine.travel(timezone.now() + timedelta(hours=25)):
        result = evidence.run(checks.RETENTION_PURGE)
        assert not result.ok and "No successful purge in the last 24 h" in result.summary

    PurgeRun.objects.create(finished_at=timezone.now(), error="Traceback...\nOperationalError: x")
    result = evidence.run(checks.RETENTION_PURGE)
    assert not result.ok and "failed: OperationalError: x" in result.summary


@pytest.mark.django_db
def test_retention_check_fails_while_expired_records_are_still_stored(production_key, tenants):
    _store_conversation(tenants[0])
    expiry = Conversation.objects.get().expires_at
    with time_machine.travel(expiry + timedelta(hours=3)):
        PurgeRun.objects.create(finished_at=timezone.now())  # a run that did not delete it
        result = evidence.run(checks.RETENTION_PURGE)
        assert not result.ok and "1 record expired more than 2 h ago still stored" in result.summary
        privacy_services.purge_expired_conversations()
        assert evidence.run(checks.RETENTION_PURGE).ok


@pytest.mark.django_db
def test_subject_request_check_fails_on_an_overdue_request_and_respects_extensions(tenants):
    now = timezone.now()
    SubjectRequest.objects.create(
        tenant=tenants[0],
        kind="access",
        source="api",
        state=State.VERIFIED,
        due_at=now + timedelta(days=10),
    )
    result = evidence.run(checks.SUBJECT_REQUESTS)
    assert result.ok and result.summary.startswith("0 of 1 open request overdue; next due")

    late = SubjectRequest.objects.create(
        tenant=tenants[0],
        kind="erasure",
        source="api",
        state=State.APPROVED,
        due_at=now - timedelta(days=1),
    )
    # Closed requests past their date are not overdue.
    SubjectRequest.objects.create(
        tenant=tenants[1],
        kind="erasure",
        source="api",
        state=State.COMPLETED,
        due_at=now - timedelta(days=5),
    )
    result = evidence.run(checks.SUBJECT_REQUESTS)
    assert not result.ok
    assert result.summary.startswith(
        f"1 of 2 open requests overdue; the oldest, #{late.pk} (erasure, tenant-a)"
    )
    assert result.details["overdue_requests"][0]["id"] == late.pk

    SubjectRequest.objects.filter(pk=late.pk).update(extended_due_at=now + timedelta(days=30))
    assert evidence.run(checks.SUBJECT_REQUESTS).ok


@pytest.mark.django_db
def test_second_factor_check_counts_staff_without_a_confirmed_device(settings, django_user_model):
    _staff(django_user_model, "olivia")
    dave = _staff(django_user_model, "dave", device=False)
    django_user_model.objects.create_user("inactive", is_staff=True, is_active=False)
    django_user_model.objects.create_user("customer")  # not staff
    TOTPDevice.objects.create(user=dave, name="unfinished", confirmed=False)

    result = evidence.run(checks.STAFF_SECOND_FACTOR)
    assert not result.ok
    assert result.summary == "1 of 2 active staff users without a second factor (dave)."

    TOTPDevice.objects.filter(user=dave).update(confirmed=True)
    result = evidence.run(checks.STAFF_SECOND_FACTOR)
    assert result.ok
    assert result.summary == (
        "0 of 2 active staff users without a second factor; the admin requires a TOTP code."
    )

    settings.LLMP_ADMIN_REQUIRE_2FA = False
    result = evidence.run(checks.STAFF_SECOND_FACTOR)
    assert not result.ok and "LLMP_ADMIN_REQUIRE_2FA is off" in result.summary


@pytest.mark.django_db
def test_tls_check_requires_redirect_secure_cookies_and_hsts(settings):
    settings.DEBUG = False
    for name in ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE"):
        setattr(settings, name, False)
    settings.SECURE_HSTS_SECONDS = 0
    result = evidence.run(checks.TLS_REQUIRED)
    assert not result.ok
    assert (
        "SECURE_SSL_REDIRECT off, SESSION_COOKIE_SECURE off, CSRF_COOKIE_SECURE off, "
        "SECURE_HSTS_SECONDS is 0"
    ) in result.summary

    for name in ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE"):
        setattr(settings, name, True)
    settings.SECURE_HSTS_SECONDS = 31536000
    result = evidence.run(checks.TLS_REQUIRED)
    assert result.ok and "HSTS 31536000 s" in result.summary

    settings.DEBUG = True
    assert "DEBUG is on" in evidence.run(checks.TLS_REQUIRED).summary


# --- Runs: task, command, history -------------------------------------------------------------


@pytest.fixture
def broken_check():
    code = "test.broken"

    @evidence.register(code, "A check that raises")
    def _broken():
        ComplianceItem.objects.raw("SELECT * FROM no_such_table")[0]  # a database error

    yield code
    evidence._checks.pop(code, None)


@pytest.mark.django_db
def test_the_hourly_task_stores_every_check_and_keeps_the_history(broken_check):
    _ensure_default_checklists()
    first = run_evidence_checks.delay().get()
    second = run_evidence_checks()
    codes = set(evidence.registered()) | {checks.BACKUPS_WITHIN_RPO, checks.RESTORE_DRILL_RECENT}
    assert set(first) == set(second) == codes
    assert EvidenceCheck.objects.filter(trigger="schedule").count() == 2 * len(codes)
    broken = EvidenceCheck.objects.filter(check_code=broken_check).first()
    assert not broken.ok and broken.summary.startswith("The check failed to run:")
    # A broken check neither stops the others nor the writing of their rows.
    assert EvidenceCheck.objects.filter(check_code=checks.TLS_REQUIRED).count() == 2
    # The scheduled run is not audited (its rows are the record).
    assert not AuditEvent.objects.filter(action="compliance.evidence_recheck").exists()


@pytest.mark.django_db
def test_the_command_prints_a_table_stores_the_runs_and_is_audited():
    out = io.StringIO()
    call_command("run_compliance_checks", stdout=out)
    text = out.getvalue()
    assert text.splitlines()[0].split() == ["check", "state", "summary"]
    assert any(
        line.startswith(checks.TLS_REQUIRED) and "FAILING" in line for line in text.splitlines()
    )
    assert (
        EvidenceCheck.objects.filter(trigger="command", check_code=checks.TLS_REQUIRED).count() == 1
    )
    event = AuditEvent.objects.get(action="compliance.evidence_recheck")
    assert event.actor.startswith("command:run_compliance_checks")
    assert event.after["results"][checks.TLS_REQUIRED] is False

    with pytest.raises(CommandError, match="failing"):
        call_command("run_compliance_checks", checks.TLS_REQUIRED, "--strict", stdout=io.StringIO())


@pytest.mark.django_db
def test_failing_items_lists_the_live_items_whose_newest_run_failed(settings):
    _ensure_default_checklists()
    settings.DEBUG = False
    settings.SECURE_SSL_REDIRECT = False
    services.evidence_checks_run(codes=[checks.TLS_REQUIRED])
    failing = selectors.failing_items()
    assert {(s.framework.code, s.item.code) for s in failing} == {
        ("hipaa", "encryption-in-transit"),
        ("soc2", "transmission"),
    }
    assert all(s.evidence.check_code == checks.TLS_REQUIRED for s in failing)

    for name in ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE"):
        setattr(settings, name, True)
    settings.SECURE_HSTS_SECONDS = 3600
    services.evidence_checks_run(codes=[checks.TLS_REQUIRED])
    assert selectors.failing_items() == []


# --- Attestations -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_manual_item_is_not_attested_then_passing_then_expired_or_withdrawn(django_user_model):
    _ensure_default_checklists()
    officer = _staff(django_user_model, "olivia")
    item = ComplianceItem.objects.get(framework__code="gdpr", code="dpa-signed")

    def state():
        return next(s for s in selectors.item_statuses(item.framework) if s.item == item).state

    assert state() == selectors.NOT_ATTESTED
    attestation = services.attestation_create(
        actor=Actor.for_user(officer),
        item=item,
        note="DPAs signed with both providers",
        file=SimpleUploadedFile("dpa.pdf", b"%PDF-1.4 signed", content_type="application/pdf"),
        expires_at=timezone.now() + timedelta(days=365),
    )
    assert state() == selectors.PASSING
    assert attestation.attested_by == "user:olivia" and attestation.file_size == 15
    event = AuditEvent.objects.get(action="compliance.attestation_create")
    assert event.after["file_name"] == "dpa.pdf" and event.after["note"].startswith("DPAs")

    with time_machine.travel(timezone.now() + timedelta(days=366)):
        assert state() == selectors.EXPIRED

    services.attestation_withdraw(
        actor=Actor.for_user(officer), attestation=attestation, reason="DPA lapsed"
    )
    assert state() == selectors.NOT_ATTESTED
    assert AuditEvent.objects.filter(action="compliance.attestation_withdraw").exists()


@pytest.mark.django_db
def test_attestations_refuse_live_items_empty_evidence_and_unsafe_files(django_user_model):
    from django.core.exceptions import ValidationError

    _ensure_default_checklists()
    officer = _staff(django_user_model, "olivia")
    manual = ComplianceItem.objects.get(framework__code="gdpr", code="dpa-signed")
    live = ComplianceItem.objects.get(framework__code="gdpr", code="storage-limitation")
    with pytest.raises(ValidationError, match="Live items"):
        services.attestation_create(actor=Actor.for_user(officer), item=live, note="trust me")
    with pytest.raises(ValidationError, match="a note, a file"):
        services.attestation_create(actor=Actor.for_user(officer), item=manual, note="  ")
    with pytest.raises(ValidationError, match=r"not 'page\.html'"):
        services.attestation_create(
            actor=Actor.for_user(officer),
            item=manual,
            file=SimpleUploadedFile("page.html", b"<script>"),
        )
    assert not Attestation.objects.exists()


# --- Pages --------------------------------------------------------------------------------------


@pytest.fixture
def officer(django_user_model):
    return _staff(
        django_user_model,
        "olivia",
        "view_compliance_report",
        "run_evidence_checks",
        "add_attestation",
        "view_attestation",
        "view_evidencecheck",
    )


@pytest.mark.django_db
def test_the_report_shows_each_items_state_and_evidence(
    client, officer, settings, django_assert_max_num_queries
):
    _ensure_default_checklists()
    settings.SECURE_SSL_REDIRECT = False
    services.evidence_checks_run(codes=[checks.TLS_REQUIRED, checks.SUBJECT_REQUESTS])
    item = ComplianceItem.objects.get(framework__code="gdpr", code="dpa-signed")
    attestation = services.attestation_create(
        actor=Actor.for_user(officer),
        item=item,
        note="Signed with Acme AI on 2026-01-10",
        file=SimpleUploadedFile("dpa.pdf", b"%PDF-1.4 signed", content_type="application/pdf"),
    )
    _verified_client(client, officer)

    with django_assert_max_num_queries(12):
        response = client.get(reverse("compliance:report", args=["gdpr"]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "GDPR compliance report" in html
    row = html.split('data-item="dpa-signed"')[1].split("</tr>")[0]
    assert "passing" in row and "Signed with Acme AI on 2026-01-10" in row
    assert "user:olivia" in row and "dpa.pdf" in row
    row = html.split('data-item="data-deletion"')[1].split("</tr>")[0]
    assert "passing" in row and "0 of 0 open requests overdue." in row
    row = html.split('data-item="privacy-policy-updated"')[1].split("</tr>")[0]
    assert "not attested" in row
    row = html.split('data-item="storage-limitation"')[1].split("</tr>")[0]
    assert "not checked" in row
    assert "Re-check now</button>" in html and "Print / save as PDF</button>" in html

    html = client.get(reverse("compliance:report", args=["hipaa"])).content.decode()
    row = html.split('data-item="encryption-in-transit"')[1].split("</tr>")[0]
    assert "failing" in row and "SECURE_SSL_REDIRECT off" in row

    download = client.get(reverse("compliance:attestation_file", args=[attestation.pk]))
    assert download.content == b"%PDF-1.4 signed"
    assert download["Content-Disposition"] == "attachment; filename*=UTF-8''dpa.pdf"

    overview = client.get(reverse("compliance:overview")).content.decode()
    assert "SOC 2 Type II" in overview and "SECURE_SSL_REDIRECT off" in overview


@pytest.mark.django_db
def test_the_record_of_processing_lists_enabled_providers_regions_and_retention(
    client, officer, settings, tenants
):
    settings.LLMP_CONTROLLER_NAME = "Example Health GmbH"
    bedrock = Provider.objects.create(name="bedrock-eu", kind="bedrock", region="eu-central-1")
    ProviderDeployment.objects.create(name="claude-eu", provider=bedrock, model="anthropic.x")
    local = Provider.objects.create(
        name="local-llama", kind="openai", base_url="http://127.0.0.1:8081/v1"
    )
    ProviderDeployment.objects.create(name="gemma", provider=local, model="gemma")
    azure = Provider.objects.create(
        name="azure-us", kind="azure", base_url="https://acme.openai.azure.com"
    )
    ProviderDeployment.objects.create(name="gpt-us", provider=azure, model="gpt-4o")
    off = Provider.objects.create(
        name="retired-vendor", kind="openai", base_url="https://api.example.com/v1", enabled=False
    )
    ProviderDeployment.objects.create(name="old", provider=off, model="old")
    PrivacyPolicy.objects.create(tenant=tenants[0], retention_days=14, upstream_pii="pseudonymize")
    _verified_client(client, officer)

    response = client.get(reverse("compliance:record_of_processing"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Example Health GmbH" in html
    recipients = html.split('id="recipients"')[1].split("</table>")[0]
    assert 'data-provider="bedrock-eu"' in recipients and "AWS region eu-central-1" in recipients
    assert 'data-provider="local-llama"' in recipients and "private network" in recipients
    assert 'data-provider="azure-us"' in recipients and "unknown" in recipients
    assert "retired-vendor" not in recipients
    transfers = html.split('id="transfers"')[1].split("</table>")[0]
    assert "to AWS region eu-central-1" in transfers and "none: processed on the" in transfers
    retention = html.split('id="retention"')[1].split("</table>")[0]
    tenant_a = retention.split('data-tenant="tenant-a"')[1].split("</tr>")[0]
    assert "14 days" in tenant_a and "pseudonymise" in tenant_a
    tenant_b = retention.split('data-tenant="tenant-b"')[1].split("</tr>")[0]
    assert "30 days (default policy)" in tenant_b
    measures = html.split('id="measures"')[1].split("</table>")[0]
    assert "AES-256-GCM" in measures and "1 tenant(s) pseudonymise" in measures


@pytest.mark.django_db
def test_pages_need_staff_with_the_second_factor_and_the_permission(client, django_user_model):
    _ensure_default_checklists()
    report = reverse("compliance:report", args=["gdpr"])
    pages = [reverse("compliance:overview"), report, reverse("compliance:record_of_processing")]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]

    customer = django_user_model.objects.create_user("customer")
    client.force_login(customer)
    assert client.get(report).status_code == 302

    # Staff signed in without the second factor: sent to the admin sign-in.
    unverified = _staff(django_user_model, "sam", "view_compliance_report")
    client.force_login(unverified)
    assert client.get(report).status_code == 302

    # Verified staff without the permission: refused.
    plain = _staff(django_user_model, "pat")
    _verified_client(client, plain)
    for url in pages:
        assert client.get(url).status_code == 403
    assert client.post(reverse("compliance:recheck")).status_code == 403

    # Viewing does not allow re-checking.
    viewer = _staff(django_user_model, "vic", "view_compliance_report")
    _verified_client(client, viewer)
    assert client.get(report).status_code == 200
    assert "Re-check now</button>" not in client.get(report).content.decode()
    assert client.post(reverse("compliance:recheck")).status_code == 403
    # The permission is asked first, whatever the method (only then is GET refused with 405).
    assert client.get(reverse("compliance:recheck")).status_code == 403
    assert not EvidenceCheck.objects.exists()


@pytest.mark.django_db
def test_re_check_now_runs_every_check_and_is_audited(client, officer):
    _ensure_default_checklists()
    _verified_client(client, officer)
    report = reverse("compliance:report", args=["soc2"])
    assert client.get(reverse("compliance:recheck")).status_code == 405  # POST only
    response = client.post(reverse("compliance:recheck"), {"next": report})
    assert response.status_code == 302 and response["Location"] == report
    rows = EvidenceCheck.objects.filter(trigger="manual")
    assert rows.count() == len(services.check_codes_in_use())
    assert set(rows.values_list("actor", flat=True)) == {"user:olivia"}
    event = AuditEvent.objects.get(action="compliance.evidence_recheck")
    assert event.actor == "user:olivia" and event.after["trigger"] == "manual"
    assert set(event.after["results"]) == set(rows.values_list("check_code", flat=True))
    # An outside "next" is not followed.
    response = client.post(reverse("compliance:recheck"), {"next": "https://evil.example/"})
    assert response["Location"] == reverse("compliance:overview")


@pytest.mark.django_db
def test_admin_adds_an_attestation_with_a_file_and_lists_items_with_their_evidence(
    admin_client, django_assert_max_num_queries
):
    _ensure_default_checklists()
    item = ComplianceItem.objects.get(framework__code="hipaa", code="baa-signed")
    add_url = reverse("admin:compliance_attestation_add")
    assert admin_client.get(f"{add_url}?item={item.pk}").status_code == 200
    response = admin_client.post(
        add_url,
        {
            "item": item.pk,
            "note": "BAA with Bedrock",
            "file": SimpleUploadedFile("baa.pdf", b"%PDF-1.7 baa", content_type="application/pdf"),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    attestation = Attestation.objects.get()
    assert bytes(attestation.file_data) == b"%PDF-1.7 baa"
    assert attestation.attested_by == "user:admin"
    assert AuditEvent.objects.filter(
        action="compliance.attestation_create", object_id=str(attestation.pk)
    ).exists()

    empty = admin_client.post(add_url, {"item": item.pk, "note": ""})
    assert empty.status_code == 200 and "Give a note, a file, or both." in empty.content.decode()

    services.evidence_checks_run(codes=[checks.TLS_REQUIRED])
    with django_assert_max_num_queries(14):
        listing = admin_client.get(reverse("admin:compliance_complianceitem_changelist"))
    html = listing.content.decode()
    assert "TLS is not required" in html and "BAA with Bedrock" in html
    history = admin_client.get(
        reverse("admin:compliance_evidencecheck_changelist") + f"?check_code={checks.TLS_REQUIRED}"
    )
    assert history.status_code == 200 and "TLS is not required" in history.content.decode()
    frameworks = admin_client.get(reverse("admin:compliance_complianceframework_changelist"))
    assert reverse("compliance:record_of_processing") in frameworks.content.decode()


# --- In the browser: printable -------------------------------------------------------------------


@pytest.mark.slow
def test_the_report_prints_without_the_admin_navigation(
    page, live_server, client, django_user_model
):
    _ensure_default_checklists()
    user = _staff(
        django_user_model, "olivia", "view_compliance_report", "run_evidence_checks", superuser=True
    )
    services.evidence_checks_run(codes=[checks.TLS_REQUIRED])
    _verified_client(client, user)
    page.context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )
    page.goto(f"{live_server.url}{reverse('compliance:report', args=['hipaa'])}")
    row = page.locator('tr[data-item="encryption-in-transit"]')
    assert "failing" in row.inner_text()
    for chrome in ("#header", ".breadcrumbs", "#nav-sidebar", ".compliance-actions"):
        assert page.locator(chrome).is_visible(), chrome

    page.emulate_media(media="print")
    for chrome in ("#header", ".breadcrumbs", "#nav-sidebar", ".compliance-actions"):
        assert page.locator(chrome).is_hidden(), chrome
    assert page.locator("#compliance-report").is_visible()
    assert row.is_visible() and "failing" in row.inner_text()

    pdf = page.pdf(format="A4")
    assert pdf.startswith(b"%PDF") and len(pdf) > 5000
