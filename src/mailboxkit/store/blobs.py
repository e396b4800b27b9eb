"""Blob store: raw RFC 5322 messages and decoded attachments, on local disk or in S3.

Implementation notes (invariants):

- Keys are relative, portable names: ``[A-Za-z0-9._-]`` segments joined by ``/``, no empty, ``.``
  or ``..`` segment, at most 512 characters and 255 per segment (a filename limit on every local
  filesystem). A key means the same object in both backends, so a data directory can be moved to S3.
- ``put``/``put_many`` return only once the bytes are durable. Locally: temp file in the target
  directory (hidden name, ``O_EXCL``), write, ``fsync``, ``os.replace``, ``fsync`` of the directory;
  a directory this process has not yet made durable has its parent fsynced once. In S3: the
  ``PutObject`` acknowledgement, with ``Content-MD5`` so a truncated body is refused.
- Temp names contain ``~``, which no key can: a temp file is never mistaken for a blob.
- A batch (``put_many``) is not atomic: on error, some items may be stored, none are half-written.
  When a key appears twice in a batch the last item wins.
- Blocking calls run in threads; a cancelled caller does not interrupt a write already started,
  and cleanup of temp files runs in that same thread.
- Listing (``list_blobs``) streams: a page at a time, in no promised order, never the whole store
  in memory. A blob's ``modified`` is when it was last written (a ``put`` of the same key again,
  as content-addressed attachments get, makes it new).
- ``delete_stale`` is how a sweep deletes: a blob written again since its cutoff is kept, so a
  batch that re-stages a shared attachment while the sweep decides is not robbed of it. Locally
  that is exact: the file is renamed aside (atomic: a ``put`` racing it makes a new file), its
  time is read there, and a file found new is linked back unless a newer one took its name. S3
  has no conditional delete: the time is read with HEAD just before ``DeleteObjects``, so only a
  put landing between those two requests could be lost.
- Signed URLs bind key, expiry, filename and content type; they are always downloads
  (``Content-Disposition: attachment``), never rendered inline: message content is untrusted.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlencode, urlsplit

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

logger = logging.getLogger(__name__)

MAX_KEY_LENGTH = 512
MAX_SEGMENT_LENGTH = 255
# SigV4 presigned URLs cannot outlive 7 days; the local store keeps the same limit.
MAX_URL_LIFETIME = 7 * 24 * 3600
MIN_SIGNING_KEY_BYTES = 32
# Threads writing and fsyncing one local batch: enough for the filesystem to fold the fsyncs
# into a few journal commits, small enough not to flood the disk queue.
LOCAL_BATCH_WORKERS = 8
# Concurrent PutObject calls of one S3 batch.
S3_BATCH_CONCURRENCY = 8
# DeleteObjects accepts at most 1000 keys per request.
S3_DELETE_BATCH = 1000
# Blobs per page of a listing (ListObjectsV2 returns at most 1000).
LIST_PAGE = 1000

_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FILE_MODE = 0o600
_DIR_MODE = 0o700
_SIGNATURE_DOMAIN = "mailboxkit.blob-url.v1"


class BlobNotFound(KeyError):
    """No blob is stored under this key."""


class InvalidBlobKey(ValueError):
    """The key is not a valid blob key (see ``validate_key``)."""


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A stored blob: its key, size in bytes, and when it was last written (Unix seconds)."""

    key: str
    size: int
    modified: float


class BlobStore(Protocol):
    """Where raw messages and attachments live."""

    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing any previous blob; durable when it returns."""
        ...

    async def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Store a batch (group commit); all durable when it returns. Not atomic."""
        ...

    async def get(self, key: str) -> bytes:
        """Return the blob; raise ``BlobNotFound`` when there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the blob; deleting a missing blob is not an error."""
        ...

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Remove several blobs; missing ones are ignored."""
        ...

    def list_blobs(self, under: str) -> AsyncGenerator[BlobInfo, None]:
        """Every blob whose key starts with ``under + "/"``, streamed a page at a time."""
        ...

    async def delete_stale(self, keys: Sequence[str], *, written_before: float) -> list[BlobInfo]:
        """Remove those of ``keys`` last written before ``written_before`` (Unix seconds);
        keep any written since. Missing ones are ignored. Returns what was removed."""
        ...

    def signed_url(
        self,
        key: str,
        *,
        expires_in: int,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """A URL that downloads the blob without other credentials for ``expires_in`` seconds."""
        ...

    async def close(self) -> None:
        """Release threads and connections."""
        ...


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid blob key, else raise ``InvalidBlobKey``."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidBlobKey(f"blob key must be 1..{MAX_KEY_LENGTH} characters: {key!r:.80}")
    for segment in key.split("/"):
        if (
            not _SEGMENT.fullmatch(segment)
            or segment in (".", "..")
            or len(segment) > MAX_SEGMENT_LENGTH
        ):
            raise InvalidBlobKey(f"invalid blob key: {key!r:.80}")
    return key


def content_disposition(filename: str) -> str:
    """``Content-Disposition`` value downloading as ``filename`` (RFC 6266, RFC 8187).

    Control characters are dropped; a plain-ASCII fallback is always given for old clients.
    """
    clean = _CONTROL.sub("", filename).strip() or "download"
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in clean)
    value = f'attachment; filename="{fallback}"'
    if fallback != clean:
        value += f"; filename*=UTF-8''{quote(clean, safe='')}"
    return value


def _check_url_params(expires_in: int, content_type: str | None) -> None:
    if not 0 < expires_in <= MAX_URL_LIFETIME:
        raise ValueError(f"expires_in must be 1..{MAX_URL_LIFETIME} seconds, got {expires_in}")
    if content_type is not None and (not content_type or _CONTROL.search(content_type)):
        raise ValueError(f"content_type must be a non-empty header value: {content_type!r:.80}")


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(paths: Iterable[Path]) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            logger.warning("blob temp file not removed path=%s", path, exc_info=True)


def _write_temp(directory: Path, data: bytes) -> Path:
    """Write ``data`` to a new hidden temp file in ``directory``, fsynced; return its path."""
    temp = directory / f".{secrets.token_hex(8)}~tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly([temp])
        raise
    os.close(fd)
    return temp


def _walk(root: Path, under: str) -> Generator[BlobInfo, None, None]:
    """The blobs in the directory tree ``root/under``, one directory open at a time."""
    pending = [root / under]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if "~" in entry.name:  # a temp file or a blob being deleted, never a key
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(Path(entry.path))
                        continue
                    info = _file_info(root, Path(entry.path))
                    if info is not None:
                        yield info
        except (FileNotFoundError, NotADirectoryError):
            continue


def _file_info(root: Path, path: Path) -> BlobInfo | None:
    """The blob ``path`` holds, or None when it is gone or is not a regular file with a key."""
    try:
        st = path.lstat()
        key = validate_key(path.relative_to(root).as_posix())
    except (FileNotFoundError, InvalidBlobKey):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return BlobInfo(key, st.st_size, st.st_mtime)


def _take(items: Iterator[BlobInfo], count: int) -> list[BlobInfo]:
    return [item for _, item in zip(range(count), items, strict=False)]


class LocalBlobStore:
    """Blobs as files under ``root``; signed URLs served by our own HTTP server."""

    def __init__(
        self,
        root: Path,
        *,
        signing_key: bytes,
        public_base_url: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(signing_key) < MIN_SIGNING_KEY_BYTES:
            raise ValueError(
                f"blob URL signing key must be at least {MIN_SIGNING_KEY_BYTES} random bytes; "
                "generate one with `python -c 'import secrets; print(secrets.token_hex(32))'`"
            )
        self._root = root
        self._signing_key = signing_key
        self._public_base_url = public_base_url.rstrip("/")
        self._clock = clock
        # Directories whose entry (and their ancestors' up to root) this process has fsynced.
        self._durable_dirs: set[Path] = set()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=LOCAL_BATCH_WORKERS, thread_name_prefix="blob-fsync"
        )

    def path_for(self, key: str) -> Path:
        """Where the blob for ``key`` lives (it may not exist)."""
        return self._root / validate_key(key)

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put_batch, {self.path_for(key): data})

    async def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        batch = {self.path_for(key): data for key, data in items}
        if batch:
            await asyncio.to_thread(self._put_batch, batch)

    async def get(self, key: str) -> bytes:
        path = self.path_for(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise BlobNotFound(key) from None

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete_paths, [self.path_for(key)])

    async def delete_many(self, keys: Sequence[str]) -> None:
        paths = [self.path_for(key) for key in keys]
        if paths:
            await asyncio.to_thread(self._delete_paths, paths)

    async def list_blobs(self, under: str) -> AsyncGenerator[BlobInfo, None]:
        walk = _walk(self._root, validate_key(under))
        try:
            while page := await asyncio.to_thread(_take, walk, LIST_PAGE):
                for info in page:
                    yield info
        finally:
            walk.close()

    async def delete_stale(self, keys: Sequence[str], *, written_before: float) -> list[BlobInfo]:
        items = [(key, self.path_for(key)) for key in dict.fromkeys(keys)]
        if not items:
            return []
        return await asyncio.to_thread(self._delete_stale, items, written_before)

    def signed_url(
        self,
        key: str,
        *,
        expires_in: int,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> str:
        validate_key(key)
        _check_url_params(expires_in, content_type)
        expires = int(self._clock()) + expires_in
        params = {"expires": str(expires), "sig": self._sign(key, expires, filename, content_type)}
        if filename is not None:
            params["filename"] = filename
        if content_type is not None:
            params["type"] = content_type
        return f"{self._public_base_url}/blobs/{key}?{urlencode(params, quote_via=quote)}"

    def verify_signature(
        self,
        key: str,
        expires: int,
        filename: str | None,
        content_type: str | None,
        signature: str,
    ) -> bool:
        """True when ``signature`` was made by ``signed_url`` for these values and not expired."""
        try:
            validate_key(key)
        except InvalidBlobKey:
            return False
        expected = self._sign(key, expires, filename, content_type).encode("ascii")
        valid = hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass"))
        return valid and self._clock() <= expires

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown)

    def _sign(self, key: str, expires: int, filename: str | None, content_type: str | None) -> str:
        # JSON keeps the fields unambiguous (no separator games; None differs from "").
        message = json.dumps([_SIGNATURE_DOMAIN, key, expires, filename, content_type])
        digest = hmac.new(self._signing_key, message.encode("utf-8"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def _put_batch(self, batch: dict[Path, bytes]) -> None:
        """Write every file durably: parallel write+fsync, renames, one fsync per directory."""
        directories = {path.parent for path in batch}
        for directory in directories:
            self._make_directory_durable(directory)
        items = list(batch.items())
        if len(items) == 1:
            path, data = items[0]
            temps = [_write_temp(path.parent, data)]
        else:
            temps = self._write_temps_in_parallel(items)
        renamed = 0
        try:
            for (path, _), temp in zip(items, temps, strict=True):
                os.replace(temp, path)
                renamed += 1
        finally:
            _unlink_quietly(temps[renamed:])
        list(self._pool.map(_fsync_directory, directories))

    def _write_temps_in_parallel(self, items: list[tuple[Path, bytes]]) -> list[Path]:
        futures = [self._pool.submit(_write_temp, path.parent, data) for path, data in items]
        concurrent.futures.wait(futures)
        errors = [error for f in futures if (error := f.exception()) is not None]
        if errors:
            _unlink_quietly(f.result() for f in futures if f.exception() is None)
            logger.error("blob batch write failed items=%d failed=%d", len(items), len(errors))
            raise errors[0]
        return [f.result() for f in futures]

    def _make_directory_durable(self, directory: Path) -> None:
        """Create ``directory`` as needed and make its entry durable, once per process."""
        chain: list[Path] = []
        current = directory
        while current not in self._durable_dirs:
            chain.append(current)
            if current == self._root:
                ancestor = current.parent
                while not ancestor.exists() and ancestor != ancestor.parent:
                    chain.append(ancestor)
                    ancestor = ancestor.parent
                break
            current = current.parent
        for current in reversed(chain):
            # If someone else made it, its entry may not be durable yet: fsync the parent anyway.
            with contextlib.suppress(FileExistsError):
                current.mkdir(mode=_DIR_MODE)
            _fsync_directory(current.parent)
            self._durable_dirs.add(current)

    def _delete_stale(self, items: list[tuple[str, Path]], written_before: float) -> list[BlobInfo]:
        """Rename each file aside, then judge the file it was: a put after the rename made a
        new file, one before it shows in the time (see the module notes)."""
        deleted: list[BlobInfo] = []
        directories: set[Path] = set()
        for key, path in items:
            aside = path.parent / f".{secrets.token_hex(8)}~del"
            try:
                os.rename(path, aside)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue
            directories.add(path.parent)
            st = aside.lstat()
            if st.st_mtime < written_before:
                aside.unlink()
                deleted.append(BlobInfo(key, st.st_size, st.st_mtime))
                continue
            with contextlib.suppress(FileExistsError):  # else a newer put has the name
                os.link(aside, path)
            aside.unlink()
        for directory in directories:
            _fsync_directory(directory)
        return deleted

    def _delete_paths(self, paths: list[Path]) -> None:
        directories: set[Path] = set()
        for path in paths:
            try:
                path.unlink()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue
            directories.add(path.parent)
        for directory in directories:
            _fsync_directory(directory)


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
        await asyncio.to_thread(self._put_object, self._object_key(key), data)

    async def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        batch = {self._object_key(key): data for key, data in items}
        results = await asyncio.gather(
            *(self._put_in_batch(key, data) for key, data in batch.items()),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            logger.error("s3 blob batch put failed items=%d failed=%d", len(batch), len(errors))
            raise errors[0]

    async def get(self, key: str) -> bytes:
        object_key = self._object_key(key)
        try:
            return await asyncio.to_thread(self._get_object, object_key)
        except ClientError as error:
            if _is_not_found(error):
                raise BlobNotFound(key) from None
            raise

    async def delete(self, key: str) -> None:
        object_key = self._object_key(key)
        await asyncio.to_thread(self._client.delete_object, Bucket=self._bucket, Key=object_key)

    async def delete_many(self, keys: Sequence[str]) -> None:
        object_keys = list(dict.fromkeys(self._object_key(key) for key in keys))
        for start in range(0, len(object_keys), S3_DELETE_BATCH):
            chunk = object_keys[start : start + S3_DELETE_BATCH]
            await asyncio.to_thread(self._delete_objects, chunk)

    async def list_blobs(self, under: str) -> AsyncGenerator[BlobInfo, None]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = iter(
            paginator.paginate(
                Bucket=self._bucket,
                Prefix=f"{self._prefix}{validate_key(under)}/",
                PaginationConfig={"PageSize": LIST_PAGE},
            )
        )
        while (page := await asyncio.to_thread(next, pages, None)) is not None:
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
        _check_url_params(expires_in, content_type)
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
            await asyncio.to_thread(self._put_object, object_key, data)

    async def _head_in_batch(self, key: str) -> BlobInfo | None:
        object_key = self._object_key(key)
        async with self._batch_slots:
            try:
                head = await asyncio.to_thread(
                    self._client.head_object, Bucket=self._bucket, Key=object_key
                )
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


def _s3_client(endpoint_url: str | None, region: str | None) -> Any:
    """A boto3 S3 client from its own session (no module-level default session)."""
    config = Config(
        signature_version="s3v4",
        # R2 and MinIO endpoints do not route virtual-host-style bucket names.
        s3={"addressing_style": "path"} if endpoint_url else {},
        retries={"mode": "standard"},
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


_ACCEPTED_FORMS = (
    '"" (a "blobs" directory in the data directory), "file:///absolute/path", '
    'a plain filesystem path, or "s3://bucket/optional/prefix"'
)


def open_blob_store(
    url: str,
    *,
    data_dir: Path,
    signing_key: bytes,
    public_base_url: str,
    s3_endpoint_url: str | None = None,
    s3_region: str | None = None,
    clock: Callable[[], float] = time.time,
) -> BlobStore:
    """Build the blob store named by ``url`` (the operator's blob store setting).

    ``clock`` (Unix seconds) dates the local store's signed URLs; S3 signs with its own.
    """
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"invalid S3 blob store URL {url!r}; accepted: {_ACCEPTED_FORMS}")
        return S3BlobStore(
            bucket=parts.netloc,
            prefix=unquote(parts.path),
            endpoint_url=s3_endpoint_url,
            region=s3_region,
        )
    if url == "":
        root = data_dir / "blobs"
    elif parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(f"invalid file blob store URL {url!r}; accepted: {_ACCEPTED_FORMS}")
        root = Path(unquote(parts.path))
    elif parts.scheme == "":
        root = Path(url)
    else:
        raise ValueError(f"unsupported blob store URL {url!r}; accepted: {_ACCEPTED_FORMS}")
    return LocalBlobStore(
        root, signing_key=signing_key, public_base_url=public_base_url, clock=clock
    )
