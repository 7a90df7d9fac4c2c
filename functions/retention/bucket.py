"""The archive bucket: verified writes, reads, and deletes that reach every version.

Every failure to reach S3 is an UnavailableError (503): callers stop before they
delete anything whose copy is not verified.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from shared.errors import UnavailableError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

    from shared.runtime import Services

log = logging.getLogger("sms.retention.bucket")


class ArchiveBucket:
    def __init__(self, client: S3Client, name: str) -> None:
        self.client = client
        self.name = name

    def put_verified(self, key: str, data: bytes, sha256: str) -> None:
        """Upload, then read back and compare: only a verified copy counts."""
        with _reaching_s3():
            self.client.put_object(
                Bucket=self.name,
                Key=key,
                Body=data,
                ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256)).decode(),
                ContentType="application/vnd.apache.parquet",
            )
        stored = self.read(key)
        if stored is None or hashlib.sha256(stored).hexdigest() != sha256:
            raise UnavailableError("The archive did not return what was written; retry later.")

    def read(self, key: str) -> bytes | None:
        """The object's current bytes; None if it does not exist."""
        with _reaching_s3():
            try:
                return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
            except self.client.exceptions.NoSuchKey:
                return None

    def delete_versions(self, key: str, *, keep_current: bool) -> int:
        """Delete the object's versions and delete markers, or all but the current
        version; how many versions holding data were deleted. Without versioning, the
        object itself is the one version."""
        found = [entry for entry in self._versions(key) if not (keep_current and entry[1])]
        doomed: list[ObjectIdentifierTypeDef] = [
            {"Key": key, "VersionId": version} for version, _, _ in found
        ]
        with _reaching_s3():
            for start in range(0, len(doomed), 1000):
                answer = self.client.delete_objects(
                    Bucket=self.name,
                    Delete={"Objects": doomed[start : start + 1000], "Quiet": True},
                )
                if answer.get("Errors"):
                    raise UnavailableError("The archive refused to delete an object version.")
        return sum(1 for _, _, holds_data in found if holds_data)

    def _versions(self, key: str) -> Iterator[tuple[str, bool, bool]]:
        """(version id, is current, holds data) of every version and delete marker."""
        with _reaching_s3():
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.name, Prefix=key
            )
            for page in pages:
                for entry in page.get("Versions", []):
                    if entry["Key"] == key:
                        yield entry.get("VersionId") or "null", bool(entry.get("IsLatest")), True
                for marker in page.get("DeleteMarkers", []):
                    if marker["Key"] == key:
                        yield marker.get("VersionId") or "null", bool(marker.get("IsLatest")), False


@contextmanager
def _reaching_s3() -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code == "NoSuchKey":
            raise
        log.warning("archive bucket error", extra={"dependency_code": code})
        raise UnavailableError(
            "The archive bucket cannot be used right now; retry later."
        ) from None
    except BotoCoreError as exc:
        log.warning("archive bucket unreachable", extra={"dependency_code": type(exc).__name__})
        raise UnavailableError("The archive bucket cannot be reached; retry later.") from None


def archive_bucket(services: Services) -> ArchiveBucket:
    """The archive bucket (the composition root's factory): one S3 client per process."""
    import boto3
    from botocore.config import Config

    settings = services.settings
    if settings.archive_bucket is None:
        raise settings.missing("archive_bucket", purpose="the archive")
    endpoint = str(settings.s3_endpoint_url) if settings.s3_endpoint_url else None
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        config=Config(
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    )
    return ArchiveBucket(client, settings.archive_bucket)
