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

import re
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, unquote, urlsplit

MAX_KEY_LENGTH = 512
MAX_SEGMENT_LENGTH = 255
# SigV4 presigned URLs cannot outlive 7 days; the local store keeps the same limit.
MAX_URL_LIFETIME = 7 * 24 * 3600
# Blobs per page of a listing (ListObjectsV2 returns at most 1000).
LIST_PAGE = 1000

_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class BlobNotFound(KeyError):
    """No blob is stored under this key."""


class BlobStoreUnavailable(ConnectionError):
    """The blob store cannot be reached, or fails, for now (S3 down or throttling): the
    caller answers "try again later" (``store.db.unavailable`` says so of any ConnectionError)."""


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

    async def check(self) -> None:
        """Raise when the store could not take a blob now (readiness): out of reach, missing,
        or out of space."""
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


def check_url_params(expires_in: int, content_type: str | None) -> None:
    """Refuse a signed URL's lifetime or content type that no backend may sign."""
    if not 0 < expires_in <= MAX_URL_LIFETIME:
        raise ValueError(f"expires_in must be 1..{MAX_URL_LIFETIME} seconds, got {expires_in}")
    if content_type is not None and (not content_type or _CONTROL.search(content_type)):
        raise ValueError(f"content_type must be a non-empty header value: {content_type!r:.80}")


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
        from mailboxkit.store.s3blobs import S3BlobStore  # boto3 only when S3 is used

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
    from mailboxkit.store.localblobs import LocalBlobStore

    return LocalBlobStore(
        root, signing_key=signing_key, public_base_url=public_base_url, clock=clock
    )
