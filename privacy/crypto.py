"""Envelope encryption of personal data: one AES-256-GCM data key per data subject, wrapped by
a master key from a key provider.

- ``LocalKeyProvider``: the master key is ``LLMP_MASTER_KEY`` (generated into ``LLMP_DATA_DIR``
  in the embedded mode); old ones in ``LLMP_MASTER_KEYS_PREVIOUS`` still unwrap until rotated.
- ``KmsKeyProvider``: AWS KMS (``LLMP_KMS_KEY_ID``); the data key is made by GenerateDataKey
  and unwrapped by Decrypt, so the master key never leaves KMS.

A wrapped key is bound to its subject (AES-GCM associated data locally, the encryption context
in KMS), so a wrapped key copied to another subject's row does not unwrap. Every ciphertext
names the data key that made it, and its associated data binds it to tenant, subject and record
kind, so a prompt cannot be passed off as another subject's, or as a response.

Destroying a subject's data key (crypto-shredding) makes everything encrypted with it
unreadable, backups included; ``decrypt`` then raises ``KeyDestroyed``. Rotating the master key
re-wraps data keys; records are not re-encrypted.

Ciphertext format (version 1)::

    0x01 | len(key id) (1 byte) | key id (ASCII) | nonce (12 bytes) | AES-GCM ciphertext + tag

The header (version and key id) is part of the associated data, so it cannot be altered.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from llmplatform.actors import SYSTEM, Actor
from llmplatform.audit import AuditAction, audit_record

if TYPE_CHECKING:
    from privacy.models import DataSubject, SubjectKey

FORMAT_VERSION = 1
NONCE_BYTES = 12
DATA_KEY_BYTES = 32


class CryptoError(Exception):
    """Encryption or decryption failed. Messages never contain plaintext or key material."""


class KeyDestroyed(CryptoError):
    """The subject's data key was destroyed (crypto-shredded): the data cannot be read."""


class KeyUnavailable(CryptoError):
    """The master key that wrapped a data key is not available (not configured, or the key
    provider refused or could not be reached)."""


class DecryptionFailed(CryptoError):
    """The ciphertext is damaged, or does not belong to the given context (associated data)."""


# --------------------------------------------------------------------------- key providers


Context = dict[str, str]


class KeyProvider(Protocol):
    def current_key_id(self) -> str: ...

    def generate_data_key(self, context: Context) -> tuple[bytes, bytes, str]:
        """A new data key: (plaintext, wrapped, master key id)."""
        ...

    def unwrap(self, wrapped: bytes, master_key_id: str, context: Context) -> bytes: ...

    def rewrap(self, wrapped: bytes, master_key_id: str, context: Context) -> tuple[bytes, str]:
        """The data key wrapped by the current master key: (wrapped, master key id)."""
        ...


def _context_bytes(context: Context) -> bytes:
    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode()


def _decode_master_key(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def local_key_id(key: bytes) -> str:
    """A master key's public name: ``local:`` and the start of its SHA-256."""
    return "local:" + hashlib.sha256(key).hexdigest()[:12]


class LocalKeyProvider:
    """Master keys from settings. Wrapping is AES-256-GCM with the subject context as associated
    data (the local counterpart of a KMS encryption context)."""

    def __init__(self) -> None:
        if not settings.LLMP_MASTER_KEY:
            raise KeyUnavailable("LLMP_MASTER_KEY is not set")
        current = _decode_master_key(settings.LLMP_MASTER_KEY)
        self._current_id = local_key_id(current)
        self._keys = {self._current_id: current}
        for value in getattr(settings, "LLMP_MASTER_KEYS_PREVIOUS", []):
            key = _decode_master_key(value)
            self._keys.setdefault(local_key_id(key), key)

    def current_key_id(self) -> str:
        return self._current_id

    def wrap(self, plaintext: bytes, context: Context) -> tuple[bytes, str]:
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self._keys[self._current_id]).encrypt(
            nonce, plaintext, _context_bytes(context)
        )
        return nonce + sealed, self._current_id

    def generate_data_key(self, context: Context) -> tuple[bytes, bytes, str]:
        plaintext = AESGCM.generate_key(bit_length=256)
        wrapped, key_id = self.wrap(plaintext, context)
        return plaintext, wrapped, key_id

    def unwrap(self, wrapped: bytes, master_key_id: str, context: Context) -> bytes:
        key = self._keys.get(master_key_id)
        if key is None:
            raise KeyUnavailable(
                f"master key {master_key_id} is not configured (LLMP_MASTER_KEY or "
                "LLMP_MASTER_KEYS_PREVIOUS)"
            )
        try:
            return AESGCM(key).decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _context_bytes(context)
            )
        except InvalidTag:
            raise DecryptionFailed("the wrapped data key does not match its subject") from None

    def rewrap(self, wrapped: bytes, master_key_id: str, context: Context) -> tuple[bytes, str]:
        return self.wrap(
            _provider_for(master_key_id).unwrap(wrapped, master_key_id, context), context
        )


_kms_lock = threading.Lock()
_kms_clients: dict[tuple[str, str | None], Any] = {}


def _kms_client() -> Any:
    """One boto3 client per region and endpoint (clients are thread-safe; creating one is
    slow)."""
    region = settings.AWS_REGION
    endpoint = getattr(settings, "LLMP_AWS_ENDPOINT_URL", None) or None
    client = _kms_clients.get((region, endpoint))
    if client is None:
        with _kms_lock:
            client = _kms_clients.get((region, endpoint))
            if client is None:
                import boto3
                from botocore.config import Config

                client = boto3.client(
                    "kms",
                    region_name=region,
                    endpoint_url=endpoint,
                    config=Config(
                        connect_timeout=3,
                        read_timeout=5,
                        retries={"max_attempts": 3, "mode": "standard"},
                    ),
                )
                _kms_clients[(region, endpoint)] = client
    return client


def _kms_error(operation: str, exc: Exception) -> KeyUnavailable:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
    return KeyUnavailable(f"KMS {operation} failed ({code})")


class KmsKeyProvider:
    """AWS KMS. The master key id recorded with each data key is the KMS key's ARN."""

    def __init__(self) -> None:
        if not getattr(settings, "LLMP_KMS_KEY_ID", None):
            raise KeyUnavailable("LLMP_KMS_KEY_ID is not set")
        self._configured = settings.LLMP_KMS_KEY_ID

    def _call(self, operation: str, **kwargs: Any) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(_kms_client(), operation)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "InvalidCiphertextException":
                raise DecryptionFailed(
                    "the wrapped data key does not match its subject or master key"
                ) from None
            raise _kms_error(operation, exc) from None
        except BotoCoreError as exc:
            raise _kms_error(operation, exc) from None

    def current_key_id(self) -> str:
        # Not cached: an alias may be pointed at a new key, and this is asked once per rotation.
        return self._call("describe_key", KeyId=self._configured)["KeyMetadata"]["Arn"]

    def generate_data_key(self, context: Context) -> tuple[bytes, bytes, str]:
        response = self._call(
            "generate_data_key",
            KeyId=self._configured,
            KeySpec="AES_256",
            EncryptionContext=context,
        )
        return bytes(response["Plaintext"]), bytes(response["CiphertextBlob"]), response["KeyId"]

    def unwrap(self, wrapped: bytes, master_key_id: str, context: Context) -> bytes:
        response = self._call(
            "decrypt", CiphertextBlob=wrapped, KeyId=master_key_id, EncryptionContext=context
        )
        return bytes(response["Plaintext"])

    def rewrap(self, wrapped: bytes, master_key_id: str, context: Context) -> tuple[bytes, str]:
        if master_key_id.startswith("local:"):
            # Moving from the local provider to KMS: unwrap here, encrypt in KMS.
            plaintext = LocalKeyProvider().unwrap(wrapped, master_key_id, context)
            response = self._call(
                "encrypt", KeyId=self._configured, Plaintext=plaintext, EncryptionContext=context
            )
        else:
            # Within KMS the data key never leaves it.
            response = self._call(
                "re_encrypt",
                CiphertextBlob=wrapped,
                SourceKeyId=master_key_id,
                SourceEncryptionContext=context,
                DestinationKeyId=self._configured,
                DestinationEncryptionContext=context,
            )
        return bytes(response["CiphertextBlob"]), response["KeyId"]


def current_provider() -> KeyProvider:
    """The provider that wraps new data keys (setting ``LLMP_KEY_PROVIDER``)."""
    if settings.LLMP_KEY_PROVIDER == "kms":
        return KmsKeyProvider()
    return LocalKeyProvider()


def _provider_for(master_key_id: str) -> LocalKeyProvider | KmsKeyProvider:
    """The provider that can unwrap a key wrapped by ``master_key_id`` (after a switch from one
    provider to the other, old keys are still read until rotated)."""
    if master_key_id.startswith("local:"):
        return LocalKeyProvider()
    return KmsKeyProvider()


def clear_kms_clients() -> None:
    _kms_clients.clear()


# --------------------------------------------------------------------------- data-key cache


class _DataKeyCache:
    """Unwrapped data keys by data-key id, for a short time (LRU, bounded)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def get(self, key_id: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key_id)
            if entry is None:
                return None
            if time.monotonic() >= entry[0]:
                del self._entries[key_id]
                return None
            self._entries.move_to_end(key_id)
            return entry[1]

    def put(self, key_id: str, key: bytes) -> None:
        ttl = float(settings.LLMP_DATA_KEY_CACHE_SECONDS)
        if ttl <= 0:
            return
        with self._lock:
            self._entries[key_id] = (time.monotonic() + ttl, key)
            self._entries.move_to_end(key_id)
            while len(self._entries) > int(settings.LLMP_DATA_KEY_CACHE_SIZE):
                self._entries.popitem(last=False)

    def evict(self, key_id: str) -> None:
        with self._lock:
            self._entries.pop(key_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


data_key_cache = _DataKeyCache()


# --------------------------------------------------------------------------- subject keys


def data_key_id(subject_key: SubjectKey) -> str:
    """The id stored with every ciphertext made with this data key."""
    return f"dk:{subject_key.pk}"


def _context(subject_key: SubjectKey) -> Context:
    subject = subject_key.subject
    return {
        "purpose": "llmp-subject-data-key",
        "tenant": str(subject.tenant_id),
        "subject": str(subject.pk),
    }


def subject_key_get_or_create(subject: DataSubject) -> SubjectKey:
    """The subject's data key row, made (and wrapped by the current master key) on first use.
    A destroyed key is returned as it is; ``encrypt`` refuses it."""
    from privacy.models import SubjectKey

    existing = SubjectKey.objects.filter(subject=subject).select_related("subject").first()
    if existing is not None:
        return existing
    if subject.erased_at is not None:
        raise KeyDestroyed(f"{subject} was erased; nothing more is encrypted for it")
    # The provider call (KMS) happens before the row is written, outside any lock.
    context = {
        "purpose": "llmp-subject-data-key",
        "tenant": str(subject.tenant_id),
        "subject": str(subject.pk),
    }
    plaintext, wrapped, master_key_id = current_provider().generate_data_key(context)
    try:
        with transaction.atomic():
            subject_key = SubjectKey.objects.create(
                subject=subject, wrapped_key=wrapped, master_key_id=master_key_id
            )
    except IntegrityError:
        # Another process made it first: use theirs.
        return SubjectKey.objects.select_related("subject").get(subject=subject)
    data_key_cache.put(data_key_id(subject_key), plaintext)
    return subject_key


def _unwrapped(subject_key: SubjectKey) -> bytes:
    if subject_key.destroyed_at is not None or not subject_key.wrapped_key:
        raise KeyDestroyed(f"the data key of subject #{subject_key.subject_id} was destroyed")
    key_id = data_key_id(subject_key)
    cached = data_key_cache.get(key_id)
    if cached is not None:
        return cached
    plaintext = _provider_for(subject_key.master_key_id).unwrap(
        bytes(subject_key.wrapped_key), subject_key.master_key_id, _context(subject_key)
    )
    data_key_cache.put(key_id, plaintext)
    return plaintext


def record_aad(subject: DataSubject, kind: str) -> bytes:
    """Associated data binding a ciphertext to its tenant, subject and kind of record
    (``prompt``, ``response``, ``email``, ``export``...)."""
    return f"llmp|tenant={subject.tenant_id}|subject={subject.pk}|kind={kind}".encode()


@dataclass(frozen=True, slots=True)
class _Parsed:
    key_id: str
    header: bytes
    nonce: bytes
    sealed: bytes


def _parse(blob: bytes) -> _Parsed:
    blob = bytes(blob)
    if len(blob) < 2 or blob[0] != FORMAT_VERSION:
        raise DecryptionFailed("unknown ciphertext format")
    length = blob[1]
    header_end = 2 + length
    if len(blob) < header_end + NONCE_BYTES + 16:
        raise DecryptionFailed("the ciphertext is truncated")
    try:
        key_id = blob[2:header_end].decode("ascii")
    except UnicodeDecodeError:
        raise DecryptionFailed("the ciphertext header is damaged") from None
    return _Parsed(
        key_id,
        blob[:header_end],
        blob[header_end : header_end + NONCE_BYTES],
        blob[header_end + NONCE_BYTES :],
    )


def ciphertext_key_id(blob: bytes) -> str:
    """The id of the data key that made ``blob``."""
    return _parse(blob).key_id


def encrypt(subject: DataSubject, plaintext: str, *, aad: bytes) -> bytes:
    subject_key = subject_key_get_or_create(subject)
    key = _unwrapped(subject_key)
    key_id = data_key_id(subject_key).encode("ascii")
    header = bytes([FORMAT_VERSION, len(key_id)]) + key_id
    nonce = os.urandom(NONCE_BYTES)
    return header + nonce + AESGCM(key).encrypt(nonce, plaintext.encode(), header + aad)


def decrypt(subject: DataSubject, blob: bytes, *, aad: bytes) -> str:
    """The plaintext of ``blob``. Raises ``KeyDestroyed`` after crypto-shredding,
    ``DecryptionFailed`` when ``aad`` or the ciphertext does not match."""
    from privacy.models import SubjectKey

    parsed = _parse(blob)
    # Read the key row every time (one indexed query): a key destroyed by another process is
    # refused at once, whatever this process has cached.
    subject_key = SubjectKey.objects.filter(subject=subject).select_related("subject").first()
    if subject_key is None:
        raise KeyDestroyed(f"the data key {parsed.key_id} no longer exists")
    if data_key_id(subject_key) != parsed.key_id:
        # A subject has one data key for life: another key id is another subject's data.
        raise DecryptionFailed("the ciphertext was made with another subject's data key")
    key = _unwrapped(subject_key)
    try:
        data = AESGCM(key).decrypt(parsed.nonce, parsed.sealed, parsed.header + aad)
    except InvalidTag:
        raise DecryptionFailed(
            "the ciphertext does not match its context (tenant, subject, kind) or was altered"
        ) from None
    return data.decode()


def subject_key_destroy(subject: DataSubject, *, actor: Actor = SYSTEM) -> bool:
    """Crypto-shred the subject's data: wipe the wrapped data key. Returns whether a key was
    destroyed now (False if there was none or it already was). Idempotent."""
    from privacy.models import SubjectKey

    with transaction.atomic():
        subject_key = SubjectKey.objects.select_for_update().filter(subject=subject).first()
        if subject_key is None or subject_key.destroyed_at is not None:
            return False
        subject_key.wrapped_key = None
        subject_key.destroyed_at = timezone.now()
        subject_key.save(update_fields=["wrapped_key", "destroyed_at"])
        audit_record(
            actor=actor,
            action=AuditAction.PRIVACY_SUBJECT_KEY_DESTROY,
            obj=subject_key,
            tenant=subject.tenant,
            before={"master_key_id": subject_key.master_key_id},
            after={"destroyed_at": subject_key.destroyed_at.isoformat()},
        )
        # Evicted after commit too: a concurrent reader could have re-cached it meanwhile.
        key_id = data_key_id(subject_key)
        transaction.on_commit(lambda: data_key_cache.evict(key_id))
    data_key_cache.evict(key_id)
    return True


@dataclass
class RotationResult:
    master_key_id: str
    rewrapped: int = 0
    batches: int = 0


def master_key_rotate(*, actor: Actor, batch_size: int = 500) -> RotationResult:
    """Re-wrap every live data key that the current master key did not wrap. Records are not
    touched (they are encrypted with the data keys, which do not change). Runs in batches, each
    in its own transaction with its audit row; safe to re-run after an interruption."""
    from privacy.models import SubjectKey

    provider = current_provider()
    target = provider.current_key_id()
    result = RotationResult(master_key_id=target)
    last_pk = 0
    while True:
        with transaction.atomic():
            batch = list(
                SubjectKey.objects.select_for_update(of=("self",))
                .select_related("subject")
                .filter(pk__gt=last_pk, destroyed_at__isnull=True, wrapped_key__isnull=False)
                .exclude(master_key_id=target)
                .order_by("pk")[:batch_size]
            )
            if not batch:
                break
            sources: dict[str, int] = {}
            now = timezone.now()
            for subject_key in batch:
                # The query above excludes keys without a wrapped key.
                assert subject_key.wrapped_key is not None
                wrapped, new_id = provider.rewrap(
                    bytes(subject_key.wrapped_key),
                    subject_key.master_key_id,
                    _context(subject_key),
                )
                sources[subject_key.master_key_id] = sources.get(subject_key.master_key_id, 0) + 1
                subject_key.wrapped_key = wrapped
                subject_key.master_key_id = new_id
                subject_key.rewrapped_at = now
            SubjectKey.objects.bulk_update(batch, ["wrapped_key", "master_key_id", "rewrapped_at"])
            audit_record(
                actor=actor,
                action=AuditAction.PRIVACY_MASTER_KEY_ROTATE,
                object_type="privacy.SubjectKey",
                object_id=f"{batch[0].pk}-{batch[-1].pk}",
                object_repr=f"{len(batch)} data keys",
                before={"master_key_ids": sources},
                after={"master_key_id": target, "rewrapped": len(batch)},
            )
            result.rewrapped += len(batch)
            result.batches += 1
            last_pk = batch[-1].pk
    return result


# --------------------------------------------------------------------------- keyed hashes


def normalise_email(email: str) -> str:
    return unicodedata.normalize("NFKC", email).strip().casefold()


def subject_hmac(value: str, *, purpose: str) -> str:
    """A keyed hash (HMAC-SHA256, hex) with the server's subject key, domain-separated by
    ``purpose``: finds a subject by a value without storing the value."""
    key = settings.LLMP_SUBJECT_HMAC_KEY.encode()
    return hmac.new(key, f"{purpose}\x00{value}".encode(), hashlib.sha256).hexdigest()


def hmac_email(email: str) -> str:
    """The keyed hash of a normalised email, for ``DataSubject.email_hmac``."""
    return subject_hmac(normalise_email(email), purpose="email")
