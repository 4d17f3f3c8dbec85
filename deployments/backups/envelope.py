"""Envelope encryption of backup files, streamed in chunks.

Each backup has its own random 256-bit data key, made and wrapped by the key provider of
``privacy.crypto`` (the local ``LLMP_MASTER_KEY``, or KMS's GenerateDataKey when
``LLMP_KEY_PROVIDER=kms``), so backups need no second key store: the wrapped key and the master
key's id travel in the backup's manifest, and whoever can unwrap subject data keys can unwrap
backup keys. The wrapping is bound to the backup's id (AES-GCM associated data locally, the KMS
encryption context), so a wrapped key copied to another backup's manifest does not unwrap.

The file is encrypted with AES-256-GCM in chunks of 1 MiB, following the STREAM construction
(Hoang, Reyhanitabar, Rogaway and Vizár, 2015; Tink's streaming AEAD): the nonce of chunk *i* is
a random 7-byte prefix, the counter *i* and a last-chunk flag, so chunks cannot be reordered,
dropped, or the stream cut short without the decryption failing. Memory stays at a few chunks
whatever the size of the database.

Format (version 1)::

    header:  b"LLMPBAK" | 0x01 | nonce prefix (7 bytes)            (authenticated: the AAD)
    chunks:  last flag (1 byte) | length (4 bytes, big-endian) | AES-GCM ciphertext + tag
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from deployments.backups.storage import ByteStream
from privacy import crypto

MAGIC = b"LLMPBAK"
VERSION = 1
PREFIX_BYTES = 7
HEADER_BYTES = len(MAGIC) + 1 + PREFIX_BYTES
CHUNK_BYTES = 1024 * 1024
TAG_BYTES = 16
_RECORD = struct.Struct(">BI")


class BackupDecryptionFailed(Exception):
    """The backup file is damaged, truncated, or not encrypted with this key."""


def _context(backup_uuid: str) -> dict[str, str]:
    return {"purpose": "llmp-backup-data-key", "backup": backup_uuid}


def new_data_key(backup_uuid: str) -> tuple[bytes, bytes, str]:
    """A fresh data key for one backup: (plaintext, wrapped, master key id)."""
    return crypto.current_provider().generate_data_key(_context(backup_uuid))


def unwrap_data_key(wrapped: bytes, master_key_id: str, backup_uuid: str) -> bytes:
    provider = (
        crypto.LocalKeyProvider() if master_key_id.startswith("local:") else crypto.KmsKeyProvider()
    )
    return provider.unwrap(wrapped, master_key_id, _context(backup_uuid))


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">I", index) + (b"\x01" if last else b"\x00")


def _read_full(source: ByteStream, size: int) -> bytes:
    """Up to ``size`` bytes, fewer only at the end (pipes return short reads)."""
    parts, missing = [], size
    while missing:
        part = source.read(missing)
        if not part:
            break
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)


class EncryptingReader:
    """A file-like object whose ``read`` returns the encrypted form of ``source``, for boto3's
    ``upload_fileobj`` (which reads a non-seekable stream part by part). Counts and hashes the
    plaintext on the way (``sha256``, ``plaintext_bytes``)."""

    def __init__(self, source: ByteStream, key: bytes, *, chunk_bytes: int = CHUNK_BYTES) -> None:
        self._source = source
        self._aead = AESGCM(key)
        self._chunk_bytes = chunk_bytes
        self._prefix = os.urandom(PREFIX_BYTES)
        self._header = MAGIC + bytes([VERSION]) + self._prefix
        self._buffer = bytearray(self._header)
        self._index = 0
        self._done = False
        self.sha256 = hashlib.sha256()
        self.plaintext_bytes = 0
        self.ciphertext_bytes = 0
        # One chunk of look-ahead: a chunk is the last one when nothing follows it.
        self._pending = self._take()

    def _take(self) -> bytes:
        chunk = _read_full(self._source, self._chunk_bytes)
        self.sha256.update(chunk)
        self.plaintext_bytes += len(chunk)
        return chunk

    def _seal_next(self) -> None:
        chunk = self._pending
        following = self._take() if chunk else b""
        last = not following
        sealed = self._aead.encrypt(_nonce(self._prefix, self._index, last), chunk, self._header)
        self._buffer += _RECORD.pack(1 if last else 0, len(sealed))
        self._buffer += sealed
        self._index += 1
        self._pending = following
        self._done = last

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size is None or size < 0 or len(self._buffer) < size):
            self._seal_next()
        if size is None or size < 0:
            size = len(self._buffer)
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        self.ciphertext_bytes += len(out)
        return out

    def readable(self) -> bool:
        return True


def decrypt_stream(read: Callable[[int], bytes], key: bytes, out: BinaryIO) -> tuple[str, int]:
    """Decrypt the stream that ``read(n)`` yields into ``out``; returns the plaintext's SHA-256
    (hex) and size. Raises ``BackupDecryptionFailed`` on any damage, truncation or wrong key:
    every chunk is authenticated before it is written."""

    def exact(size: int) -> bytes:
        parts, missing = [], size
        while missing:
            part = read(missing)
            if not part:
                break
            parts.append(part)
            missing -= len(part)
        return b"".join(parts)

    header = exact(HEADER_BYTES)
    if len(header) != HEADER_BYTES or header[: len(MAGIC)] != MAGIC:
        raise BackupDecryptionFailed("not an encrypted llmplatform backup")
    if header[len(MAGIC)] != VERSION:
        raise BackupDecryptionFailed(f"unknown backup format version {header[len(MAGIC)]}")
    prefix = header[len(MAGIC) + 1 :]
    aead = AESGCM(key)
    digest, size, index = hashlib.sha256(), 0, 0
    while True:
        record = exact(_RECORD.size)
        if len(record) != _RECORD.size:
            raise BackupDecryptionFailed("the backup is truncated")
        flag, length = _RECORD.unpack(record)
        if flag not in (0, 1) or length < TAG_BYTES or length > CHUNK_BYTES * 64 + TAG_BYTES:
            raise BackupDecryptionFailed("the backup is damaged")
        sealed = exact(length)
        if len(sealed) != length:
            raise BackupDecryptionFailed("the backup is truncated")
        try:
            chunk = aead.decrypt(_nonce(prefix, index, flag == 1), sealed, header)
        except InvalidTag:
            raise BackupDecryptionFailed(
                "the backup does not decrypt: damaged, reordered, or another key"
            ) from None
        out.write(chunk)
        digest.update(chunk)
        size += len(chunk)
        index += 1
        if flag == 1:
            if read(1):
                raise BackupDecryptionFailed("unexpected data after the last chunk")
            return digest.hexdigest(), size
