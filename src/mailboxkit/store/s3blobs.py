"""The S3 blob store: objects in a bucket of any S3-compatible service (AWS, R2, MinIO).

The contract and its invariants are in ``store.blobs``; what is particular here: a put is
durable once ``PutObject`` is acknowledged (with ``Content-MD5``, so a truncated body is
refused), and signed URLs are SigV4 presigned URLs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, TypeVar

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import ClientError, HTTPClientError  # type: ignore[import-untyped]
from botocore.exceptions import ConnectionError as EndpointUnreachable

from mailboxkit.store.blobs import (
    LIST_PAGE,
    BlobInfo,
    BlobNotFound,
    BlobStoreUnavailable,
    InvalidBlobKey,
    check_url_params,
    content_disposition,
    validate_key,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Concurrent PutObject calls of one S3 batch.
S3_BATCH_CONCURRENCY = 8
# DeleteObjects accepts at most 1000 keys per request.
S3_DELETE_BATCH = 1000


class S3BlobStore:
    """Blobs as objects in an S3 bucket (AWS, R2, MinIO: anything speaking SigV4)."""

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any | None = None,
    ) -> None:
        if not bucket:
            raise ValueError("S3 bucket name must not be empty")
        self._bucket = bucket
        prefix = prefix.strip("/")
        self._prefix = f"{prefix}/" if prefix else ""
        self._owns_client = client is None
        self._client = client if client is not None else _s3_client(endpoint_url, region)
        self._batch_slots = asyncio.Semaphore(S3_BATCH_CONCURRENCY)

    async def put(self, key: str, data: bytes) -> None:
        await _call(self._put_object, self._object_key(key), data)

    async def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        batch = {self._object_key(key): data for key, data in items}
        results = await asyncio.gather(
            *(self._put_in_batch(key, data) for key, data in batch.items()),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            logger.warning("s3 blob batch put failed items=%d failed=%d", len(batch), len(errors))
            raise errors[0]

    async def get(self, key: str) -> bytes:
        object_key = self._object_key(key)
        try:
            return await _call(self._get_object, object_key)
        except ClientError as error:
            if _is_not_found(error):
                raise BlobNotFound(key) from None
            raise

    async def check(self) -> None:
        await _call(self._client.head_bucket, Bucket=self._bucket)

    async def delete(self, key: str) -> None:
        object_key = self._object_key(key)
        await _call(self._client.delete_object, Bucket=self._bucket, Key=object_key)

    async def delete_many(self, keys: Sequence[str]) -> None:
        object_keys = list(dict.fromkeys(self._object_key(key) for key in keys))
        for start in range(0, len(object_keys), S3_DELETE_BATCH):
            chunk = object_keys[start : start + S3_DELETE_BATCH]
            await _call(self._delete_objects, chunk)

    async def list_blobs(self, under: str) -> AsyncGenerator[BlobInfo, None]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = iter(
            paginator.paginate(
                Bucket=self._bucket,
                Prefix=f"{self._prefix}{validate_key(under)}/",
                PaginationConfig={"PageSize": LIST_PAGE},
            )
        )
        while (page := await _call(next, pages, None)) is not None:
            for item in page.get("Contents", []):
                key = item["Key"][len(self._prefix) :]
                with contextlib.suppress(InvalidBlobKey):  # not ours: never listed, never deleted
                    yield BlobInfo(
                        validate_key(key), item["Size"], item["LastModified"].timestamp()
                    )

    async def delete_stale(self, keys: Sequence[str], *, written_before: float) -> list[BlobInfo]:
        found = await asyncio.gather(*(self._head_in_batch(k) for k in dict.fromkeys(keys)))
        stale = [info for info in found if info is not None and info.modified < written_before]
        await self.delete_many([info.key for info in stale])
        return stale

    def signed_url(
        self,
        key: str,
        *,
        expires_in: int,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> str:
        check_url_params(expires_in, content_type)
        params = {"Bucket": self._bucket, "Key": self._object_key(key)}
        if filename is not None:
            params["ResponseContentDisposition"] = content_disposition(filename)
        if content_type is not None:
            params["ResponseContentType"] = content_type
        url: str = self._client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires_in
        )
        return url

    async def close(self) -> None:
        if self._owns_client:
            await asyncio.to_thread(self._client.close)

    def _object_key(self, key: str) -> str:
        return self._prefix + validate_key(key)

    async def _put_in_batch(self, object_key: str, data: bytes) -> None:
        async with self._batch_slots:
            await _call(self._put_object, object_key, data)

    async def _head_in_batch(self, key: str) -> BlobInfo | None:
        object_key = self._object_key(key)
        async with self._batch_slots:
            try:
                head = await _call(self._client.head_object, Bucket=self._bucket, Key=object_key)
            except ClientError as error:
                if _is_not_found(error):
                    return None
                raise
        return BlobInfo(key, head["ContentLength"], head["LastModified"].timestamp())

    def _put_object(self, object_key: str, data: bytes) -> None:
        md5 = hashlib.md5(data, usedforsecurity=False).digest()
        self._client.put_object(
            Bucket=self._bucket,
            Key=object_key,
            Body=data,
            ContentLength=len(data),
            ContentMD5=base64.b64encode(md5).decode("ascii"),
        )

    def _get_object(self, object_key: str) -> bytes:
        response = self._client.get_object(Bucket=self._bucket, Key=object_key)
        body = response["Body"]
        try:
            # botocore raises IncompleteReadError when fewer than Content-Length bytes arrive.
            data: bytes = body.read()
        finally:
            body.close()
        return data

    def _delete_objects(self, object_keys: list[str]) -> None:
        response = self._client.delete_objects(
            Bucket=self._bucket,
            Delete={"Objects": [{"Key": k} for k in object_keys], "Quiet": True},
        )
        errors = response.get("Errors", [])
        if errors:
            first = errors[0]
            logger.error(
                "s3 blob delete failed bucket=%s failed=%d first_key=%s code=%s",
                self._bucket,
                len(errors),
                first.get("Key"),
                first.get("Code"),
            )
            raise OSError(f"S3 DeleteObjects failed for {len(errors)} of {len(object_keys)} keys")


async def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on a worker thread. The endpoint out of reach, or answering
    5xx after botocore's own retries, raises :class:`BlobStoreUnavailable`."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except (EndpointUnreachable, HTTPClientError) as error:
        raise BlobStoreUnavailable(f"S3 endpoint unreachable: {error}") from error
    except ClientError as error:
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if status >= 500:
            raise BlobStoreUnavailable(f"S3 endpoint failing: {error}") from error
        raise


def _s3_client(endpoint_url: str | None, region: str | None) -> Any:
    """A boto3 S3 client from its own session (no module-level default session)."""
    config = Config(
        signature_version="s3v4",
        # R2 and MinIO endpoints do not route virtual-host-style bucket names.
        s3={"addressing_style": "path"} if endpoint_url else {},
        retries={"mode": "standard"},  # 3 attempts
        connect_timeout=10,  # not botocore's 60 s: a blackholed endpoint holds SMTP sessions
        max_pool_connections=S3_BATCH_CONCURRENCY * 2,
        # We send Content-MD5 ourselves; the newer default CRC headers break some S3 clones.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, region_name=region, config=config
    )


def _is_not_found(error: Exception) -> bool:
    response: dict[str, Any] = getattr(error, "response", {})
    code = response.get("Error", {}).get("Code")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("NoSuchKey", "404", "NotFound") or status == 404
