"""The backup store: an S3 bucket (AWS or any S3-compatible endpoint), through boto3.

Layout under ``LLMP_BACKUP_PREFIX``::

    backups/<UTC time>-<backup uuid>/dump.enc        the encrypted dump (see ``envelope``)
    backups/<UTC time>-<backup uuid>/manifest.json   what a restore needs when the database
                                                     is gone: engine, sizes, SHA-256, wrapped
                                                     data key, row counts and checksums
    ledger/<UTC time>-<tenant id>-<subject hash>.json   one erasure (see ``ledger``)

Keys start with the time, so a listing is in time order and ``StartAfter`` skips the past.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from deployments.backups.conf import BackupSettings

DUMP_NAME = "dump.enc"
MANIFEST_NAME = "manifest.json"


class BackupStorageError(Exception):
    """The backup store refused or could not be reached (the message names the operation and
    the error code, never credentials)."""


class ByteStream(Protocol):
    """A stream read part by part, as ``upload_stream`` reads it: a pipe, a file, or
    ``envelope.EncryptingReader``."""

    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    last_modified: datetime


def _client(conf: BackupSettings) -> Any:
    import boto3
    from botocore.config import Config

    # Path-style addressing for custom endpoints: MinIO, Ceph and loopback servers rarely
    # resolve bucket subdomains.
    s3 = {"addressing_style": "path"} if conf.endpoint_url else {}
    return boto3.client(
        "s3",
        region_name=conf.region,
        endpoint_url=conf.endpoint_url,
        config=Config(
            connect_timeout=5,
            read_timeout=60,
            s3=s3,
            retries={"max_attempts": 5, "mode": "standard"},
        ),
    )


def backup_dir(started_at: datetime, backup_uuid: str) -> str:
    return f"backups/{started_at:%Y%m%dT%H%M%SZ}-{backup_uuid}/"


class BackupStore:
    def __init__(self, conf: BackupSettings) -> None:
        if not conf.bucket:
            raise BackupStorageError("LLMP_BACKUP_BUCKET is not set")
        self.conf = conf
        self.bucket = conf.bucket
        self.client = _client(conf)

    def key(self, relative: str) -> str:
        return self.conf.prefix + relative

    def _call(self, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise BackupStorageError(f"S3 {operation} failed ({code})") from None
        except BotoCoreError as exc:
            raise BackupStorageError(f"S3 {operation} failed ({type(exc).__name__})") from None

    def upload_stream(self, relative: str, stream: ByteStream) -> None:
        """Upload a stream of unknown length (multipart above one part)."""
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        transfer = TransferConfig(
            multipart_threshold=self.conf.part_bytes,
            multipart_chunksize=self.conf.part_bytes,
            max_concurrency=4,
        )
        try:
            self.client.upload_fileobj(
                stream,
                self.bucket,
                self.key(relative),
                Config=transfer,
                ExtraArgs={"ContentType": "application/octet-stream"},
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise BackupStorageError(f"S3 upload failed ({code})") from None
        except BotoCoreError as exc:
            raise BackupStorageError(f"S3 upload failed ({type(exc).__name__})") from None

    def put_json(self, relative: str, document: dict[str, Any]) -> None:
        body = json.dumps(document, sort_keys=True, indent=1).encode()
        self._call("put_object", Key=self.key(relative), Body=body, ContentType="application/json")

    def get_json(self, relative: str) -> dict[str, Any]:
        response = self._call("get_object", Key=self.key(relative))
        return json.loads(response["Body"].read())

    def open(self, relative: str) -> Any:
        """The object's body, a stream with ``read(n)``."""
        return self._call("get_object", Key=self.key(relative))["Body"]

    def size(self, relative: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(relative))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise BackupStorageError("S3 head_object failed") from None
        return int(head["ContentLength"])

    def list(
        self, relative_prefix: str, *, start_after: str | None = None
    ) -> Iterator[StoredObject]:
        """Objects under a prefix, in key order; keys are returned relative to the store's
        prefix."""
        kwargs: dict[str, Any] = {"Prefix": self.key(relative_prefix)}
        if start_after:
            kwargs["StartAfter"] = self.key(start_after)
        while True:
            page = self._call("list_objects_v2", **kwargs)
            for item in page.get("Contents", []):
                yield StoredObject(
                    item["Key"][len(self.conf.prefix) :], int(item["Size"]), item["LastModified"]
                )
            if not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def delete(self, relatives: Sequence[str]) -> None:
        for start in range(0, len(relatives), 1000):  # DeleteObjects takes 1000 keys at most
            batch = relatives[start : start + 1000]
            response = self._call(
                "delete_objects",
                Delete={
                    "Objects": [{"Key": self.key(relative)} for relative in batch],
                    "Quiet": True,
                },
            )
            if response.get("Errors"):
                codes = sorted({error.get("Code", "error") for error in response["Errors"]})
                raise BackupStorageError(f"S3 delete_objects failed ({', '.join(codes)})")

    def manifests(self) -> Iterator[dict[str, Any]]:
        """Every backup's manifest, oldest first."""
        for item in self.list("backups/"):
            if item.key.endswith("/" + MANIFEST_NAME):
                yield self.get_json(item.key)
