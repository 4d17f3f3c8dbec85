"""Consent-gated storage of conversations: consent decides, content is redacted and encrypted
with the subject's data key (local master key and AWS KMS on a loopback moto server),
crypto-shredding, master-key rotation, audited plaintext reads, the retention purge, the
privacy API handlers, the data map and the admin."""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from llmplatform import datamap
from llmplatform.actors import Actor
from llmplatform.errors import InvalidInput
from llmplatform.models import AuditEvent
from privacy import crypto, selectors, services
from privacy.api import handlers
from privacy.models import (
    ConsentRecord,
    Conversation,
    DataSubject,
    PrivacyPolicy,
    PurgeRun,
    SubjectKey,
)
from privacy.pii import DetectorError, detect

Purpose = ConsentRecord.Purpose
Source = ConsentRecord.Source

PII_PROMPT = (
    "Hi, I am Jane Doe, mail me at jane.doe@example.org or call +1 415 867 5309; "
    "my SSN is 123-45-6789. What is a banana split?"
)
PII_RESPONSE = "Sure Jane, I will write to jane.doe@example.org. A banana split is a dessert."


def new_master_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture(autouse=True)
def _local_keys(settings) -> Iterator[None]:
    settings.LLMP_KEY_PROVIDER = "local"
    settings.LLMP_MASTER_KEY = new_master_key()
    settings.LLMP_MASTER_KEYS_PREVIOUS = []
    crypto.data_key_cache.clear()
    yield
    crypto.data_key_cache.clear()


def consent(
    subject: DataSubject,
    purpose: str = Purpose.STORE_CONVERSATIONS,
    granted: bool = True,
    source: str = Source.API,
) -> ConsentRecord:
    return services.consent_set(
        actor=Actor.system("test-app"),
        subject=subject,
        purpose=purpose,
        granted=granted,
        source=source,
    )


def store(
    tenant, user: str = "u-1", prompt: str = PII_PROMPT, response: str = PII_RESPONSE, **kwargs
) -> Conversation | None:
    return services.conversation_store(
        tenant=tenant,
        external_id=user,
        alias="chat",
        request_id=f"req-{uuid.uuid4().hex[:8]}",
        prompt=prompt,
        response=response,
        **kwargs,
    )


@pytest.fixture
def subject_a(principals) -> DataSubject:
    return services.subject_get_or_create(tenant=principals.tenant_a, external_id="u-1")


# --------------------------------------------------------------------------- consent decides


def test_nothing_is_stored_without_a_consent_record(principals):
    assert store(principals.tenant_a) is None
    assert Conversation.objects.count() == 0
    # Not even a subject row or a data key is made for someone who never consented.
    assert DataSubject.objects.count() == 0
    assert SubjectKey.objects.count() == 0


def test_it_stores_while_consent_is_granted_and_stops_when_withdrawn(principals, subject_a):
    consent(subject_a)
    assert store(principals.tenant_a) is not None
    consent(subject_a, granted=False)
    assert store(principals.tenant_a) is None
    assert Conversation.objects.count() == 1
    # Withdrawing is as easy as granting, and both stay in the history.
    history = selectors.consent_history(subject_a)
    assert [h["granted"] for h in history] == [True, False]
    assert history[0]["policy_version"] == "1"


def test_consent_for_another_purpose_does_not_allow_storage(principals, subject_a):
    consent(subject_a, purpose=Purpose.ANALYTICS)
    assert store(principals.tenant_a) is None


def test_a_tenant_policy_without_storage_stores_nothing(principals, subject_a):
    consent(subject_a)
    PrivacyPolicy.objects.update_or_create(
        tenant=principals.tenant_a, defaults={"store_conversations": False}
    )
    assert store(principals.tenant_a) is None


def test_consent_of_one_tenants_user_does_not_count_for_another_tenant(principals, subject_a):
    consent(subject_a)
    assert store(principals.tenant_b, user="u-1") is None


def test_a_retried_store_keeps_one_record_and_leaves_other_tenants_alone(principals, subject_a):
    from gateway.pipeline.chat import _store_conversation

    subject_b = services.subject_get_or_create(tenant=principals.tenant_b, external_id="u-1")
    consent(subject_a)
    consent(subject_b)
    a, b = principals.tenant_a.pk, principals.tenant_b.pk
    # Request ids are the clients' to choose: two tenants may send the same one.
    _store_conversation(a, "u-1", "chat", "req-same", "hi", "hello", attempt=1)
    _store_conversation(a, "u-1", "chat", "req-same", "hi", "hello", attempt=2)
    _store_conversation(b, "u-1", "chat", "req-same", "hi", "hello", attempt=2)
    assert sorted(Conversation.objects.values_list("tenant_id", flat=True)) == sorted([a, b])


def test_a_gpc_signal_opts_out_and_nothing_is_stored(principals, subject_a):
    consent(subject_a)
    assert store(principals.tenant_a, gpc=True) is None
    subject_a.refresh_from_db()
    assert subject_a.do_not_sell is True
    latest = selectors.consent_latest(subject_a, Purpose.SALE_SHARING)
    assert (latest.granted, latest.source) == (False, Source.GPC)
    # Recorded once, not on every request that carries the signal.
    store(principals.tenant_a, gpc=True)
    assert subject_a.consents.filter(source=Source.GPC).count() == 1
    # The opt-out holds for later requests without the header too.
    assert store(principals.tenant_a) is None


def test_withdrawing_sale_sharing_is_the_ccpa_opt_out(principals, subject_a):
    consent(subject_a, purpose=Purpose.SALE_SHARING, granted=False)
    subject_a.refresh_from_db()
    assert subject_a.do_not_sell
    consent(subject_a, purpose=Purpose.SALE_SHARING, granted=True)
    subject_a.refresh_from_db()
    assert not subject_a.do_not_sell


def test_consent_changes_are_audited(principals, subject_a):
    consent(subject_a)
    consent(subject_a, granted=False)
    actions = list(
        AuditEvent.objects.filter(action__startswith="privacy.consent.")
        .order_by("id")
        .values_list("action", "tenant_id")
    )
    assert actions == [
        ("privacy.consent.grant", principals.tenant_a.pk),
        ("privacy.consent.withdraw", principals.tenant_a.pk),
    ]


# --------------------------------------------------------------------------- what is stored


def test_a_stored_record_holds_no_detected_pii_and_its_ciphertext_hides_the_text(
    principals, subject_a
):
    consent(subject_a)
    conversation = store(principals.tenant_a)
    conversation = Conversation.objects.get(pk=conversation.pk)
    plaintext = services.conversation_decrypt(conversation)
    assert detect(plaintext["prompt"]) == []
    assert detect(plaintext["response"]) == []
    assert "<EMAIL>" in plaintext["prompt"] and "banana split" in plaintext["prompt"]
    for blob in (conversation.prompt_ciphertext, conversation.response_ciphertext):
        raw = bytes(blob)
        assert b"banana" not in raw and b"jane" not in raw.lower() and b"EMAIL" not in raw
    assert conversation.key_id == crypto.ciphertext_key_id(conversation.prompt_ciphertext)
    assert conversation.expires_at - conversation.created_at == pytest.approx(
        timedelta(days=30), abs=timedelta(seconds=5)
    )


def test_retention_follows_the_tenant_policy(principals, subject_a):
    PrivacyPolicy.objects.create(tenant=principals.tenant_a, retention_days=7)
    consent(subject_a)
    conversation = store(principals.tenant_a)
    assert conversation.expires_at - timezone.now() < timedelta(days=7, minutes=1)


def test_a_detector_failure_stores_nothing(principals, subject_a, monkeypatch):
    consent(subject_a)

    def broken(text, entities=None):
        raise DetectorError("recogniser failed")

    monkeypatch.setattr(services, "redact", broken)
    with pytest.raises(DetectorError):
        store(principals.tenant_a)
    assert Conversation.objects.count() == 0


def test_ciphertext_does_not_decrypt_in_another_context(principals, subject_a):
    blob = crypto.encrypt(subject_a, "hello", aad=crypto.record_aad(subject_a, "prompt"))
    assert crypto.decrypt(subject_a, blob, aad=crypto.record_aad(subject_a, "prompt")) == "hello"
    with pytest.raises(crypto.DecryptionFailed):
        crypto.decrypt(subject_a, blob, aad=crypto.record_aad(subject_a, "response"))
    other = services.subject_get_or_create(tenant=principals.tenant_a, external_id="u-2")
    crypto.subject_key_get_or_create(other)
    with pytest.raises(crypto.DecryptionFailed):
        crypto.decrypt(other, blob, aad=crypto.record_aad(subject_a, "prompt"))
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(crypto.DecryptionFailed):
        crypto.decrypt(subject_a, bytes(tampered), aad=crypto.record_aad(subject_a, "prompt"))


def test_a_wrapped_key_copied_to_another_subject_does_not_unwrap(principals, subject_a):
    key_a = crypto.subject_key_get_or_create(subject_a)
    other = services.subject_get_or_create(tenant=principals.tenant_a, external_id="u-2")
    key_b = crypto.subject_key_get_or_create(other)
    SubjectKey.objects.filter(pk=key_b.pk).update(wrapped_key=key_a.wrapped_key)
    crypto.data_key_cache.clear()
    with pytest.raises(crypto.DecryptionFailed):
        crypto.encrypt(other, "x", aad=b"")


def test_email_hashes_ignore_case_and_spaces():
    assert crypto.hmac_email(" Jane.Doe@Example.ORG ") == crypto.hmac_email("jane.doe@example.org")
    assert crypto.hmac_email("jane@example.org") != crypto.hmac_email("john@example.org")


# --------------------------------------------------------------------------- crypto-shredding


def test_destroying_the_data_key_makes_records_unreadable(principals, subject_a):
    consent(subject_a)
    conversation = store(principals.tenant_a)
    assert services.conversation_decrypt(conversation)  # the key is cached now
    assert crypto.subject_key_destroy(subject_a) is True
    key = SubjectKey.objects.get(subject=subject_a)
    assert key.wrapped_key is None and key.destroyed_at is not None
    with pytest.raises(crypto.KeyDestroyed):
        services.conversation_decrypt(conversation)
    with pytest.raises(crypto.KeyDestroyed):
        crypto.encrypt(subject_a, "more", aad=b"")
    assert crypto.subject_key_destroy(subject_a) is False  # idempotent
    assert AuditEvent.objects.filter(action="privacy.subject_key.destroy").count() == 1


def test_a_key_destroyed_by_another_process_is_refused_despite_this_process_cache(
    principals, subject_a
):
    blob = crypto.encrypt(subject_a, "hello", aad=b"k")
    # Another process wipes the key: this process still has it cached.
    SubjectKey.objects.filter(subject=subject_a).update(
        wrapped_key=None, destroyed_at=timezone.now()
    )
    with pytest.raises(crypto.KeyDestroyed):
        crypto.decrypt(subject_a, blob, aad=b"k")


# --------------------------------------------------------------------------- rotation


def test_master_key_rotation_rewraps_data_keys_without_touching_records(
    principals, subject_a, settings
):
    old_master = settings.LLMP_MASTER_KEY
    consent(subject_a)
    conversation = store(principals.tenant_a)
    old_key = SubjectKey.objects.get(subject=subject_a)
    ciphertext_before = bytes(conversation.prompt_ciphertext)

    settings.LLMP_MASTER_KEY = new_master_key()
    crypto.data_key_cache.clear()
    # Without the old master key, the data key cannot be unwrapped.
    with pytest.raises(crypto.KeyUnavailable):
        services.conversation_decrypt(conversation)

    settings.LLMP_MASTER_KEYS_PREVIOUS = [old_master]
    result = crypto.master_key_rotate(actor=Actor.for_user(principals.alice))
    assert result.rewrapped == 1
    new_key = SubjectKey.objects.get(subject=subject_a)
    assert new_key.master_key_id == crypto.current_provider().current_key_id()
    assert new_key.master_key_id != old_key.master_key_id
    assert bytes(new_key.wrapped_key) != bytes(old_key.wrapped_key)
    assert new_key.rewrapped_at is not None

    # The old master key is gone after rotation: records still decrypt, unchanged.
    settings.LLMP_MASTER_KEYS_PREVIOUS = []
    crypto.data_key_cache.clear()
    conversation.refresh_from_db()
    assert bytes(conversation.prompt_ciphertext) == ciphertext_before
    assert "banana split" in services.conversation_decrypt(conversation)["prompt"]

    event = AuditEvent.objects.get(action="privacy.master_key.rotate")
    assert event.actor == "user:alice" and event.after["rewrapped"] == 1
    # A second run has nothing left to do.
    assert crypto.master_key_rotate(actor=Actor.for_user(principals.alice)).rewrapped == 0


def test_the_rotate_command_reports_what_it_did(principals, subject_a, settings, capsys):
    crypto.subject_key_get_or_create(subject_a)
    settings.LLMP_MASTER_KEYS_PREVIOUS = [settings.LLMP_MASTER_KEY]
    settings.LLMP_MASTER_KEY = new_master_key()
    call_command("rotate_master_key")
    assert "re-wrapped 1 data keys" in capsys.readouterr().out


def test_destroyed_keys_are_not_rewrapped(principals, subject_a, settings):
    crypto.subject_key_get_or_create(subject_a)
    crypto.subject_key_destroy(subject_a)
    settings.LLMP_MASTER_KEYS_PREVIOUS = [settings.LLMP_MASTER_KEY]
    settings.LLMP_MASTER_KEY = new_master_key()
    assert crypto.master_key_rotate(actor=Actor.system("test")).rewrapped == 0
    assert SubjectKey.objects.get(subject=subject_a).wrapped_key is None


# --------------------------------------------------------------------------- AWS KMS (moto)


@pytest.fixture
def kms(moto_endpoint, aws_region):
    import boto3

    crypto.clear_kms_clients()
    client = boto3.client("kms", region_name=aws_region, endpoint_url=moto_endpoint)
    yield client
    crypto.clear_kms_clients()


def new_kms_key(kms) -> tuple[str, str]:
    """(alias, ARN) of a new symmetric KMS key."""
    arn = kms.create_key(Description="llmp test")["KeyMetadata"]["Arn"]
    alias = f"alias/llmp-test-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=alias, TargetKeyId=arn)
    return alias, arn


def test_kms_wraps_data_keys_and_records_round_trip(principals, subject_a, kms, settings):
    alias, arn = new_kms_key(kms)
    settings.LLMP_KEY_PROVIDER = "kms"
    settings.LLMP_KMS_KEY_ID = alias
    consent(subject_a)
    conversation = store(principals.tenant_a)
    key = SubjectKey.objects.get(subject=subject_a)
    assert key.master_key_id == arn

    crypto.data_key_cache.clear()  # the next read unwraps through KMS Decrypt
    conversation = Conversation.objects.get(pk=conversation.pk)
    assert "banana split" in services.conversation_decrypt(conversation)["prompt"]


def test_kms_binds_wrapped_keys_to_their_subject(principals, subject_a, kms, settings):
    alias, _ = new_kms_key(kms)
    settings.LLMP_KEY_PROVIDER = "kms"
    settings.LLMP_KMS_KEY_ID = alias
    key_a = crypto.subject_key_get_or_create(subject_a)
    other = services.subject_get_or_create(tenant=principals.tenant_a, external_id="u-2")
    key_b = crypto.subject_key_get_or_create(other)
    SubjectKey.objects.filter(pk=key_b.pk).update(wrapped_key=key_a.wrapped_key)
    crypto.data_key_cache.clear()
    with pytest.raises(crypto.DecryptionFailed):
        crypto.encrypt(other, "x", aad=b"")


def test_kms_rotation_reencrypts_under_the_new_key(principals, subject_a, kms, settings):
    alias_1, arn_1 = new_kms_key(kms)
    alias_2, arn_2 = new_kms_key(kms)
    settings.LLMP_KEY_PROVIDER = "kms"
    settings.LLMP_KMS_KEY_ID = alias_1
    consent(subject_a)
    conversation = store(principals.tenant_a)
    settings.LLMP_KMS_KEY_ID = alias_2
    assert crypto.master_key_rotate(actor=Actor.system("test")).rewrapped == 1
    assert SubjectKey.objects.get(subject=subject_a).master_key_id == arn_2
    # The old KMS key is disabled: records are read through the new one.
    kms.disable_key(KeyId=arn_1.rsplit("/", 1)[-1])
    crypto.data_key_cache.clear()
    assert "banana split" in services.conversation_decrypt(conversation)["prompt"]


def test_rotation_moves_local_keys_into_kms(principals, subject_a, kms, settings):
    consent(subject_a)
    conversation = store(principals.tenant_a)
    assert SubjectKey.objects.get(subject=subject_a).master_key_id.startswith("local:")
    alias, arn = new_kms_key(kms)
    settings.LLMP_KEY_PROVIDER = "kms"
    settings.LLMP_KMS_KEY_ID = alias
    assert crypto.master_key_rotate(actor=Actor.system("test")).rewrapped == 1
    settings.LLMP_MASTER_KEY = None
    crypto.data_key_cache.clear()
    assert SubjectKey.objects.get(subject=subject_a).master_key_id == arn
    assert "banana split" in services.conversation_decrypt(conversation)["prompt"]


def test_an_unreachable_kms_fails_with_a_clear_error(principals, subject_a, settings):
    from tests.conftest import free_port

    settings.LLMP_KEY_PROVIDER = "kms"
    settings.LLMP_KMS_KEY_ID = "alias/nowhere"
    settings.LLMP_AWS_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    crypto.clear_kms_clients()
    try:
        with pytest.raises(crypto.KeyUnavailable, match="KMS generate_data_key failed"):
            crypto.encrypt(subject_a, "x", aad=b"")
    finally:
        crypto.clear_kms_clients()


# --------------------------------------------------------------------------- plaintext reads


def test_reading_plaintext_needs_the_permission_and_is_audited(principals, subject_a):
    consent(subject_a)
    conversation = store(principals.tenant_a)
    with pytest.raises(PermissionDenied):
        services.conversation_read_plaintext(
            actor=Actor.for_user(principals.bob), conversation=conversation
        )
    with pytest.raises(PermissionDenied):
        services.conversation_read_plaintext(
            actor=Actor.system("some-service"), conversation=conversation
        )
    assert not AuditEvent.objects.filter(action="privacy.conversation.read_plaintext").exists()

    principals.bob.user_permissions.add(
        Permission.objects.get(codename="read_conversation_plaintext")
    )
    bob = type(principals.bob).objects.get(pk=principals.bob.pk)  # fresh permission cache
    plaintext = services.conversation_read_plaintext(
        actor=Actor.for_user(bob), conversation=conversation
    )
    assert "banana split" in plaintext["prompt"]
    services.conversation_read_plaintext(actor=Actor.for_user(bob), conversation=conversation)
    events = AuditEvent.objects.filter(action="privacy.conversation.read_plaintext")
    assert events.count() == 2
    event = events.first()
    assert event.actor == "user:bob" and event.tenant_id == principals.tenant_a.pk
    assert "banana" not in str(event.before) + str(event.after) + event.object_repr


# --------------------------------------------------------------------------- retention purge


def make_conversations(subject: DataSubject, count: int, *, expires_in: timedelta) -> None:
    expires_at = timezone.now() + expires_in
    Conversation.objects.bulk_create(
        Conversation(
            tenant_id=subject.tenant_id,
            subject=subject,
            alias="chat",
            prompt_ciphertext=b"x",
            response_ciphertext=b"y",
            key_id="dk:0",
            expires_at=expires_at,
        )
        for _ in range(count)
    )


def test_the_purge_deletes_only_expired_rows_in_batches_and_is_idempotent(subject_a):
    make_conversations(subject_a, 7, expires_in=-timedelta(minutes=1))
    make_conversations(subject_a, 3, expires_in=timedelta(days=1))
    batches: list[int] = []
    run = services.purge_expired_conversations(
        batch_size=3, on_batch=lambda n, s: batches.append(n)
    )
    assert (run.deleted, run.batches) == (7, 3)
    assert batches == [3, 3, 1]
    assert run.finished_at is not None and run.error == ""
    assert Conversation.objects.filter(expires_at__lt=timezone.now()).count() == 0
    assert Conversation.objects.count() == 3

    again = services.purge_expired_conversations(batch_size=3)
    assert (again.deleted, again.batches) == (0, 0)
    assert PurgeRun.objects.count() == 2


def test_a_stored_conversation_is_purged_after_the_retention_period(principals, subject_a):
    consent(subject_a)
    store(principals.tenant_a)
    from privacy.tasks import purge_expired_conversations

    assert purge_expired_conversations.delay().get() == 0
    with time_machine.travel(timezone.now() + timedelta(days=30, minutes=1)):
        assert purge_expired_conversations.delay().get() == 1
    assert Conversation.objects.count() == 0


def test_the_purge_is_scheduled_hourly():
    from llmplatform.celery import app

    entry = app.conf.beat_schedule["privacy-purge-expired-conversations"]
    assert entry["task"] == "privacy.purge_expired_conversations"
    assert entry["schedule"].minute == {17} and len(entry["schedule"].hour) == 24


@pytest.mark.postgres
def test_a_purge_that_finds_another_running_steps_aside(subject_a):
    import psycopg

    make_conversations(subject_a, 4, expires_in=-timedelta(minutes=1))
    db = connection.settings_dict
    other = psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=True
    )
    try:
        other.execute("SELECT pg_advisory_lock(%s)", [services.PURGE_LOCK_KEY])
        assert services.purge_expired_conversations(batch_size=2) is None
        assert Conversation.objects.count() == 4
        other.execute("SELECT pg_advisory_unlock(%s)", [services.PURGE_LOCK_KEY])
        assert services.purge_expired_conversations(batch_size=2).deleted == 4
    finally:
        other.close()


# --------------------------------------------------------------------------- the API handlers


def test_the_consent_api_sets_and_reads_consent(principals):
    tenant_id = principals.tenant_a.pk
    empty = handlers.get_consent(tenant_id, "u-9")
    assert empty["consent"]["store_conversations"]["granted"] is False
    assert DataSubject.objects.count() == 0  # reading creates nothing

    reply = handlers.set_consent(
        tenant_id,
        "u-9",
        {"consents": {"store_conversations": True, "analytics": False}},
        actor=Actor.system("apikey:test"),
        gpc=False,
        request_id="r1",
    )
    assert reply["consent"]["store_conversations"]["granted"] is True
    assert reply["consent"]["store_conversations"]["source"] == "api"
    assert reply["consent"]["analytics"]["policy_version"] == "1"
    assert store(principals.tenant_a, user="u-9") is not None

    reply = handlers.set_consent(
        tenant_id,
        "u-9",
        {"purpose": "store_conversations", "granted": False, "source": "api"},
        actor=Actor.system("apikey:test"),
        gpc=False,
    )
    assert reply["consent"]["store_conversations"] == {
        **reply["consent"]["store_conversations"],
        "granted": False,
        "source": "api",
    }
    assert store(principals.tenant_a, user="u-9") is None


def test_another_tenant_sees_nothing_of_a_subject(principals):
    handlers.set_consent(
        principals.tenant_a.pk,
        "u-9",
        {"purpose": "store_conversations", "granted": True},
        actor=Actor.system("apikey:a"),
        gpc=False,
    )
    reply = handlers.get_consent(principals.tenant_b.pk, "u-9")
    assert reply["consent"]["store_conversations"]["granted"] is False
    assert store(principals.tenant_b, user="u-9") is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({"purpose": "marketing", "granted": True}, "unknown purpose"),
        ({"purpose": "analytics", "granted": "yes"}, "true or false"),
        ({"purpose": "analytics"}, "required"),
        ({"purpose": "analytics", "granted": True, "source": "gpc"}, "source must be"),
        ({"purpose": "analytics", "granted": True, "policy_version": 3}, "policy_version"),
        ({"purpose": "analytics", "granted": True, "extra": 1}, "unknown field"),
        ({"consents": {}}, "non-empty"),
    ],
)
def test_the_consent_api_rejects_bad_input_clearly(principals, body, message):
    with pytest.raises(InvalidInput, match=message):
        handlers.set_consent(
            principals.tenant_a.pk, "u-9", body, actor=Actor.system("a"), gpc=False
        )
    assert ConsentRecord.objects.count() == 0


def test_the_consent_api_honours_gpc(principals):
    reply = handlers.set_consent(
        principals.tenant_a.pk,
        "u-9",
        {"purpose": "analytics", "granted": True},
        actor=Actor.system("a"),
        gpc=True,
    )
    assert reply["do_not_sell"] is True
    assert reply["consent"]["sale_sharing"]["source"] == "gpc"
    with pytest.raises(InvalidInput, match="Sec-GPC"):
        handlers.set_consent(
            principals.tenant_a.pk,
            "u-9",
            {"purpose": "sale_sharing", "granted": True},
            actor=Actor.system("a"),
            gpc=True,
        )


def test_registering_an_email_stores_it_encrypted_and_never_logs_it(principals):
    reply = handlers.register_subject(
        principals.tenant_a.pk,
        "u-9",
        {"email": "Jane.Doe@Example.org"},
        actor=Actor.system("apikey:a"),
    )
    assert reply == {"user": "u-9", "email_registered": True}
    subject = DataSubject.objects.get(external_id="u-9")
    assert b"jane" not in bytes(subject.email_ciphertext).lower()
    assert subject.email_hmac == crypto.hmac_email("jane.doe@example.org")
    assert (
        crypto.decrypt(subject, subject.email_ciphertext, aad=crypto.record_aad(subject, "email"))
        == "Jane.Doe@Example.org"
    )
    event = AuditEvent.objects.get(action="privacy.subject.register_email")
    assert "jane" not in (str(event.before) + str(event.after) + event.object_repr).lower()
    with pytest.raises(InvalidInput, match="valid address"):
        handlers.register_subject(
            principals.tenant_a.pk, "u-9", {"email": "nope"}, actor=Actor.system("a")
        )


# --------------------------------------------------------------------------- the data map


def test_the_data_map_finds_and_erases_a_subject(principals):
    tenant = principals.tenant_a
    handlers.register_subject(
        tenant.pk, "u-9", {"email": "jane@example.org"}, actor=Actor.system("a")
    )
    subject = DataSubject.objects.get(external_id="u-9")
    consent(subject)
    store(tenant, user="u-9")

    found = datamap.find_all(tenant.pk, "u-9")
    assert found["privacy.subject"]["email"] == "jane@example.org"
    assert [h["granted"] for h in found["privacy.subject"]["consent_history"]] == [True]
    assert "banana split" in found["privacy.conversations"][0]["prompt"]

    counts = datamap.erase_all(tenant.pk, "u-9")
    assert counts["privacy.conversations"] == 1 and counts["privacy.subject"] == 1
    subject.refresh_from_db()
    assert subject.erased_at is not None and subject.email_ciphertext is None
    assert subject.external_id.startswith("erased:") and "u-9" not in subject.external_id
    assert SubjectKey.objects.get(subject=subject).destroyed_at is not None
    # The consent history is kept as proof of past consent.
    assert subject.consents.count() == 1

    # Idempotent; and the same user id afterwards is a new subject without consent.
    assert datamap.erase_all(tenant.pk, "u-9")["privacy.subject"] == 0
    assert datamap.find_all(tenant.pk, "u-9")["privacy.subject"] is None
    assert store(tenant, user="u-9") is None


# --------------------------------------------------------------------------- the admin


@pytest.fixture
def stored(principals, subject_a) -> Conversation:
    consent(subject_a)
    return store(principals.tenant_a)


def test_the_admin_never_shows_plaintext_in_lists_or_forms(admin_client, stored):
    for url in (
        reverse("admin:privacy_conversation_changelist"),
        reverse("admin:privacy_conversation_change", args=[stored.pk]),
        reverse("admin:privacy_datasubject_changelist"),
        reverse("admin:privacy_datasubject_change", args=[stored.subject_id]),
    ):
        body = admin_client.get(url).content.decode()
        assert "banana" not in body and "EMAIL" not in body, url
    assert not AuditEvent.objects.filter(action="privacy.conversation.read_plaintext").exists()


def test_the_admin_conversation_list_runs_a_fixed_number_of_queries(
    admin_client, principals, subject_a, django_assert_max_num_queries
):
    url = reverse("admin:privacy_conversation_changelist")
    consent(subject_a)
    store(principals.tenant_a)
    from django.db import connection as conn
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(conn) as one:
        admin_client.get(url)
    for n in range(5):
        other = services.subject_get_or_create(tenant=principals.tenant_b, external_id=f"b{n}")
        consent(other)
        store(principals.tenant_b, user=f"b{n}")
    with django_assert_max_num_queries(len(one.captured_queries)):
        assert admin_client.get(url).status_code == 200


def test_the_admin_reveals_plaintext_only_by_post_and_audits_it(admin_client, stored):
    change = admin_client.get(reverse("admin:privacy_conversation_change", args=[stored.pk]))
    assert b"Reveal plaintext" in change.content
    url = reverse("admin:privacy_conversation_plaintext", args=[stored.pk])
    assert admin_client.get(url).status_code == 405
    response = admin_client.post(url)
    assert response.status_code == 200
    assert b"banana split" in response.content
    assert "no-store" in response["Cache-Control"]
    assert (
        AuditEvent.objects.filter(
            action="privacy.conversation.read_plaintext", object_id=str(stored.pk)
        ).count()
        == 1
    )


def test_staff_without_the_permission_cannot_reveal(client, stored, django_user_model):
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    staff = django_user_model.objects.create_user(
        "officer", password="x-officer-123", is_staff=True
    )
    staff.user_permissions.add(Permission.objects.get(codename="view_conversation"))
    device = TOTPDevice.objects.create(user=staff, name="t", confirmed=True)
    client.force_login(staff)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()

    change = client.get(reverse("admin:privacy_conversation_change", args=[stored.pk]))
    assert change.status_code == 200 and b"Reveal plaintext" not in change.content
    response = client.post(reverse("admin:privacy_conversation_plaintext", args=[stored.pk]))
    assert response.status_code == 403
    assert b"banana" not in response.content
    assert not AuditEvent.objects.filter(action="privacy.conversation.read_plaintext").exists()


def test_purge_runs_are_listed_in_the_admin(admin_client, subject_a):
    services.purge_expired_conversations()
    response = admin_client.get(reverse("admin:privacy_purgerun_changelist"))
    assert response.status_code == 200 and b"0 deleted" not in response.content
    assert PurgeRun.objects.count() == 1


# --------------------------------------------------------------------------- settings

_PRODUCTION = {
    "LLMP_ENV": "production",
    "SECRET_KEY": secrets.token_urlsafe(48),
    "LLMP_API_KEY_PEPPER": secrets.token_urlsafe(48),
    "LLMP_SUBJECT_HMAC_KEY": secrets.token_urlsafe(48),
    "ALLOWED_HOSTS": "example.org",
}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({**_PRODUCTION}, "LLMP_MASTER_KEY (or LLMP_MASTER_KEY_FILE) must be set"),
        ({"LLMP_MASTER_KEY": "c2hvcnQ="}, "LLMP_MASTER_KEY must be 32 bytes in base64"),
        ({"LLMP_KEY_PROVIDER": "vault"}, "LLMP_KEY_PROVIDER must be 'local' or 'kms'"),
        ({"LLMP_KEY_PROVIDER": "kms"}, "LLMP_KMS_KEY_ID must be set"),
        (
            {**_PRODUCTION, "LLMP_MASTER_KEY": new_master_key(), "LLMP_SUBJECT_HMAC_KEY": ""},
            "LLMP_SUBJECT_HMAC_KEY (or LLMP_SUBJECT_HMAC_KEY_FILE or LLMP_SUBJECT_HMAC_KEY_REF) "
            "must be set",
        ),
    ],
)
def test_bad_key_settings_stop_the_start_with_a_clear_message(tmp_path, env, message):
    from tests.test_audit_and_settings import run_manage

    result = run_manage(["check"], env, tmp_path)
    assert result.returncode != 0
    assert message in result.stderr


def test_the_embedded_default_generates_a_master_key_once(tmp_path):
    from tests.test_audit_and_settings import run_manage

    code = "from django.conf import settings; print(settings.LLMP_MASTER_KEY)"
    first = run_manage(["shell", "--no-imports", "-c", code], {}, tmp_path)
    second = run_manage(["shell", "--no-imports", "-c", code], {}, tmp_path)
    assert first.returncode == 0, first.stderr
    key = first.stdout.strip().splitlines()[-1]
    assert len(base64.b64decode(key)) == 32
    assert second.stdout.strip().splitlines()[-1] == key
    assert (tmp_path / "master_key").stat().st_mode & 0o077 == 0
