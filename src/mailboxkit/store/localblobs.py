"""The local blob store: files under a directory, signed URLs served by our HTTP server.

The contract and its invariants are in ``store.blobs``; what is particular here: a blob is
written to a hidden temp file in its directory, fsynced, renamed, and the directory fsynced;
deleting a stale blob renames it aside first, so a put racing the sweep is never lost.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import errno
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Iterator, Sequence
from pathlib import Path
from urllib.parse import quote, urlencode

from mailboxkit.store.blobs import (
    LIST_PAGE,
    BlobInfo,
    BlobNotFound,
    InvalidBlobKey,
    check_url_params,
    validate_key,
)

logger = logging.getLogger(__name__)

MIN_SIGNING_KEY_BYTES = 32
# Threads writing and fsyncing one local batch: enough for the filesystem to fold the fsyncs
# into a few journal commits, small enough not to flood the disk queue.
LOCAL_BATCH_WORKERS = 8

_FILE_MODE = 0o600
_DIR_MODE = 0o700
_SIGNATURE_DOMAIN = "mailboxkit.blob-url.v1"


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

    async def check(self) -> None:
        """No free block where blobs are written is ``OSError`` ENOSPC. (The directory itself
        is made with the first blob, on the filesystem of its nearest existing ancestor.)"""
        await asyncio.to_thread(self._check_space)

    def _check_space(self) -> None:
        place = self._root
        while not place.exists() and place != place.parent:
            place = place.parent
        if os.statvfs(place).f_bavail == 0:
            raise OSError(errno.ENOSPC, "no space left for blobs", str(self._root))

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
        check_url_params(expires_in, content_type)
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
