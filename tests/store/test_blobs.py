"""Blob store: both backends through the same tests; S3 against moto's server mode."""

from __future__ import annotations

import asyncio
import os
import stat
import string
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3  # type: ignore[import-untyped]
import httpx
import pytest
from botocore.exceptions import ClientError  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st
from moto.server import ThreadedMotoServer

from mailboxkit.store import blobs as blobs_module
from mailboxkit.store.blobs import (
    BlobInfo,
    BlobNotFound,
    BlobStore,
    InvalidBlobKey,
    content_disposition,
    open_blob_store,
    validate_key,
)
from mailboxkit.store.localblobs import LocalBlobStore
from mailboxkit.store.s3blobs import S3BlobStore

SIGNING_KEY = b"0123456789abcdef0123456789abcdef"
BASE_URL = "https://mail.example.test"
REGION = "us-east-1"


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def raw_s3(moto_endpoint: str, aws_env: None) -> Iterator[Any]:
    client = boto3.session.Session().client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    yield client
    client.close()


@pytest.fixture
def bucket(raw_s3: Any) -> str:
    name = f"blobs-{uuid.uuid4().hex[:12]}"
    raw_s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def local_store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[LocalBlobStore]:
    store = LocalBlobStore(
        tmp_path / "blobs", signing_key=SIGNING_KEY, public_base_url=BASE_URL + "/", clock=clock
    )
    yield store
    await store.close()


@pytest.fixture
async def s3_store(moto_endpoint: str, bucket: str) -> AsyncIterator[S3BlobStore]:
    store = S3BlobStore(bucket=bucket, prefix="/tenant/", endpoint_url=moto_endpoint, region=REGION)
    yield store
    await store.close()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> BlobStore:
    """Each store-agnostic test runs against both backends."""
    result: BlobStore = request.getfixturevalue(f"{request.param}_store")
    return result


def stored_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# --- the BlobStore contract, both backends --------------------------------------------------


async def test_check_passes_while_the_store_can_take_blobs(store: BlobStore) -> None:
    await store.check()  # a fresh local store has no directory yet: made with the first blob
    await store.put("msg/2024/01/01/a.eml", b"x")
    await store.check()


async def test_check_of_a_missing_bucket_fails(moto_endpoint: str, aws_env: None) -> None:
    store = S3BlobStore(bucket="no-such-bucket", endpoint_url=moto_endpoint, region=REGION)
    try:
        with pytest.raises(ClientError):
            await store.check()
    finally:
        await store.close()


async def test_round_trip(store: BlobStore) -> None:
    raw = b"From: a@example.test\r\nSubject: hi\r\n\r\nbody\r\n" + bytes(range(256))
    await store.put("msg/2026/11/27/0b1c.eml", raw)
    await store.put("att/empty", b"")
    assert await store.get("msg/2026/11/27/0b1c.eml") == raw
    assert await store.get("att/empty") == b""


async def test_put_overwrites(store: BlobStore) -> None:
    await store.put("att/k", b"first version, longer")
    await store.put("att/k", b"second")
    assert await store.get("att/k") == b"second"


async def test_get_missing_raises_blob_not_found(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound) as excinfo:
        await store.get("msg/missing.eml")
    assert isinstance(excinfo.value, KeyError)


async def test_get_of_a_key_prefix_is_not_found(store: BlobStore) -> None:
    await store.put("msg/2026/x.eml", b"x")
    with pytest.raises(BlobNotFound):
        await store.get("msg/2026")
    with pytest.raises(BlobNotFound):
        await store.get("msg/2026/x.eml/child")


async def test_delete_is_idempotent(store: BlobStore) -> None:
    await store.put("att/d", b"data")
    await store.delete("att/d")
    await store.delete("att/d")
    await store.delete("never/stored")
    with pytest.raises(BlobNotFound):
        await store.get("att/d")


async def test_put_many_round_trip_and_last_duplicate_wins(store: BlobStore) -> None:
    items = [(f"msg/2026/11/{i % 2}/{i}.eml", f"message {i}".encode()) for i in range(20)]
    await store.put_many([*items, ("msg/2026/11/0/0.eml", b"replaced")])
    for key, data in items[1:]:
        assert await store.get(key) == data
    assert await store.get("msg/2026/11/0/0.eml") == b"replaced"
    await store.put_many([])


async def test_delete_many_spans_request_batches(store: BlobStore) -> None:
    keys = [f"att/{i:04d}" for i in range(1001)]
    kept = ("keep/me", b"kept")
    await store.put_many([(keys[0], b"a"), (keys[999], b"b"), (keys[1000], b"c"), kept])
    await store.delete_many([*keys, keys[0]])
    for key in (keys[0], keys[999], keys[1000]):
        with pytest.raises(BlobNotFound):
            await store.get(key)
    assert await store.get(kept[0]) == kept[1]
    await store.delete_many([])


BAD_KEYS = [
    "",
    "/abs",
    "trailing/",
    "a//b",
    ".",
    "..",
    "a/./b",
    "a/../b",
    "../escape",
    "space in key",
    "tilde~",
    "back\\slash",
    "nul\x00",
    "new\nline",
    "ünïcode",
    "q?x=1",
    "x" * 513,
    "a/" + "x" * 256,
]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
async def test_bad_keys_rejected_by_every_operation(store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidBlobKey):
        await store.put(key, b"x")
    with pytest.raises(InvalidBlobKey):
        await store.put_many([("ok", b"x"), (key, b"x")])
    with pytest.raises(InvalidBlobKey):
        await store.get(key)
    with pytest.raises(InvalidBlobKey):
        await store.delete(key)
    with pytest.raises(InvalidBlobKey):
        await store.delete_many(["ok", key])
    with pytest.raises(InvalidBlobKey):
        store.signed_url(key, expires_in=60)
    with pytest.raises(BlobNotFound):
        await store.get("ok")  # the batch was refused before writing anything


@pytest.mark.parametrize(
    "kwargs",
    [
        {"expires_in": 0},
        {"expires_in": 7 * 24 * 3600 + 1},
        {"expires_in": 60, "content_type": "text/plain\r\nSet-Cookie: x=1"},
        {"expires_in": 60, "content_type": ""},
    ],
)
def test_signed_url_rejects_bad_parameters(store: BlobStore, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        store.signed_url("att/x", **kwargs)


# --- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["msg/2026/11/27/6f1d0c1e-5a0e-4c1b-9a59-3f3c1c2b8e10.eml", "att/" + "ab" * 32, "a", "x" * 255],
)
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


KEY_SEGMENTS = st.text(
    string.ascii_letters + string.digits + "._-", min_size=1, max_size=12
).filter(lambda s: s not in (".", ".."))
VALID_KEYS = st.lists(KEY_SEGMENTS, min_size=1, max_size=6).map("/".join)


@given(
    key=VALID_KEYS, bad=st.characters(exclude_characters=string.ascii_letters + "0123456789._-/")
)
def test_key_grammar(key: str, bad: str) -> None:
    assert validate_key(key) == key
    with pytest.raises(InvalidBlobKey):
        validate_key(key + bad)


@settings(max_examples=30, deadline=None)
@given(key=VALID_KEYS, data=st.binary(max_size=2048))
def test_local_round_trip_any_valid_key(
    tmp_path_factory: pytest.TempPathFactory, key: str, data: bytes
) -> None:
    async def scenario() -> None:
        root = tmp_path_factory.mktemp("hyp") / "blobs"
        store = LocalBlobStore(root, signing_key=SIGNING_KEY, public_base_url=BASE_URL)
        try:
            await store.put(key, data)
            assert await store.get(key) == data
            assert stored_files(root) == {key}
        finally:
            await store.close()

    asyncio.run(scenario())


# --- local store -------------------------------------------------------------------------------


async def test_local_leaves_no_temp_files(local_store: LocalBlobStore, tmp_path: Path) -> None:
    await local_store.put("msg/2026/11/27/a.eml", b"a")
    await local_store.put("msg/2026/11/27/a.eml", b"again")
    await local_store.put_many([(f"att/{i}", b"x" * i) for i in range(10)])
    assert stored_files(tmp_path / "blobs") == {"msg/2026/11/27/a.eml"} | {
        f"att/{i}" for i in range(10)
    }
    assert local_store.path_for("att/3").read_bytes() == b"xxx"


async def test_local_failed_writes_leave_nothing_behind(
    local_store: LocalBlobStore, tmp_path: Path
) -> None:
    await local_store.put("file", b"f")
    await local_store.put("dir/child", b"c")
    with pytest.raises(NotADirectoryError):
        await local_store.put("file/child", b"x")
    with pytest.raises(NotADirectoryError):  # one bad item: the good temp files are removed too
        await local_store.put_many([("good/1", b"1"), ("good/2", b"2"), ("file/child", b"x")])
    with pytest.raises(IsADirectoryError):  # fails at rename time
        await local_store.put_many([("good/3", b"3"), ("dir", b"x")])
    assert stored_files(tmp_path / "blobs") == {"file", "dir/child", "good/3"}


class FsyncLog:
    """Records which files and directories were fsynced (by inode)."""

    def __init__(self, real_fsync: Callable[[int], None]) -> None:
        self.real_fsync = real_fsync
        self.files: list[int] = []
        self.dirs: list[int] = []

    def __call__(self, fd: int) -> None:
        st_ = os.fstat(fd)
        (self.dirs if stat.S_ISDIR(st_.st_mode) else self.files).append(st_.st_ino)
        self.real_fsync(fd)


@pytest.fixture
def fsync_log(monkeypatch: pytest.MonkeyPatch) -> FsyncLog:
    log = FsyncLog(os.fsync)
    monkeypatch.setattr(os, "fsync", log)
    return log


async def test_local_put_fsyncs_file_directory_and_new_parents(
    local_store: LocalBlobStore, tmp_path: Path, fsync_log: FsyncLog
) -> None:
    await local_store.put("msg/2026/11/27/a.eml", b"a")
    root = tmp_path / "blobs"
    chain = [tmp_path, root, *(root / p for p in ("msg", "msg/2026", "msg/2026/11"))]
    day = root / "msg/2026/11/27"
    # each new directory's entry in its parent, then the file, then the file's entry
    assert sorted(fsync_log.dirs) == sorted(p.stat().st_ino for p in [*chain, day])
    assert fsync_log.files == [local_store.path_for("msg/2026/11/27/a.eml").stat().st_ino]

    fsync_log.dirs.clear()
    fsync_log.files.clear()
    await local_store.put("msg/2026/11/27/b.eml", b"b")
    assert fsync_log.dirs == [day.stat().st_ino]
    assert len(fsync_log.files) == 1


async def test_local_put_many_fsyncs_each_directory_once(
    local_store: LocalBlobStore, tmp_path: Path, fsync_log: FsyncLog
) -> None:
    await local_store.put_many([("d1/warm", b""), ("d2/warm", b"")])
    fsync_log.dirs.clear()
    fsync_log.files.clear()
    await local_store.put_many([(f"d{1 + i % 2}/{i}", b"x") for i in range(10)])
    root = tmp_path / "blobs"
    assert sorted(fsync_log.dirs) == sorted((root / d).stat().st_ino for d in ("d1", "d2"))
    assert len(fsync_log.files) == 10


def signed_parts(url: str) -> tuple[str, int, str | None, str | None, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query, strict_parsing=True)
    assert parts.path.startswith("/blobs/")
    return (
        parts.path.removeprefix("/blobs/"),
        int(query["expires"][0]),
        query.get("filename", [None])[0],
        query.get("type", [None])[0],
        query["sig"][0],
    )


async def test_local_signed_url_verifies(local_store: LocalBlobStore, clock: FakeClock) -> None:
    url = local_store.signed_url(
        "att/abc", expires_in=300, filename="Q3 report & ü.pdf", content_type="application/pdf"
    )
    assert url.startswith(f"{BASE_URL}/blobs/att/abc?expires={int(clock.now) + 300}&sig=")
    key, expires, filename, content_type, sig = signed_parts(url)
    assert (key, filename, content_type) == ("att/abc", "Q3 report & ü.pdf", "application/pdf")
    assert local_store.verify_signature(key, expires, filename, content_type, sig)

    bare = signed_parts(local_store.signed_url("att/abc", expires_in=300))
    assert bare[2:4] == (None, None)
    assert local_store.verify_signature(*bare)


async def test_local_signed_url_tampering_is_rejected(local_store: LocalBlobStore) -> None:
    url = local_store.signed_url("att/abc", expires_in=300, filename="a.pdf", content_type="a/b")
    key, expires, filename, content_type, sig = signed_parts(url)
    tampered = [
        ("att/abd", expires, filename, content_type, sig),
        ("../att/abc", expires, filename, content_type, sig),
        (key, expires + 3600, filename, content_type, sig),
        (key, expires, "a.html", content_type, sig),
        (key, expires, None, content_type, sig),
        (key, expires, filename, "text/html", sig),
        (key, expires, filename, None, sig),
        (key, expires, filename, content_type, sig[:-1] + ("A" if sig[-1] != "A" else "B")),
        (key, expires, filename, content_type, ""),
        (key, expires, filename, content_type, "ü" + sig),
    ]
    for args in tampered:
        assert not local_store.verify_signature(*args), args
    other = LocalBlobStore(Path("unused"), signing_key=b"k" * 32, public_base_url=BASE_URL)
    assert not other.verify_signature(key, expires, filename, content_type, sig)
    await other.close()


async def test_local_signed_url_expires(local_store: LocalBlobStore, clock: FakeClock) -> None:
    parts = signed_parts(local_store.signed_url("att/abc", expires_in=60))
    clock.now += 60
    assert local_store.verify_signature(*parts)
    clock.now += 1
    assert not local_store.verify_signature(*parts)


HEADER_TEXT = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=40)


@given(filename=st.none() | HEADER_TEXT, content_type=st.none() | HEADER_TEXT)
def test_signed_url_parameters_survive_url_encoding(
    filename: str | None, content_type: str | None
) -> None:
    store = LocalBlobStore(
        Path("unused"), signing_key=SIGNING_KEY, public_base_url=BASE_URL, clock=FakeClock()
    )
    url = store.signed_url("att/x", expires_in=60, filename=filename, content_type=content_type)
    parts = signed_parts(url)
    assert parts[2:4] == (filename, content_type)
    assert store.verify_signature(*parts)


def test_short_signing_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        LocalBlobStore(Path("unused"), signing_key=b"short", public_base_url=BASE_URL)


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("a.pdf", 'attachment; filename="a.pdf"'),
        (
            'say "hi".txt',
            "attachment; filename=\"say _hi_.txt\"; filename*=UTF-8''say%20%22hi%22.txt",
        ),
        ("ü.pdf", "attachment; filename=\"_.pdf\"; filename*=UTF-8''%C3%BC.pdf"),
        ("evil\r\nX-Injected: 1.txt", 'attachment; filename="evilX-Injected: 1.txt"'),
        ("\x00", 'attachment; filename="download"'),
    ],
)
def test_content_disposition(filename: str, expected: str) -> None:
    assert content_disposition(filename) == expected


# --- S3 store ----------------------------------------------------------------------------------


async def test_s3_objects_live_under_the_prefix(
    s3_store: S3BlobStore, raw_s3: Any, bucket: str
) -> None:
    await s3_store.put("msg/a.eml", b"a")
    listed = raw_s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in listed] == ["tenant/msg/a.eml"]


async def test_s3_presigned_url_downloads_with_headers(s3_store: S3BlobStore, bucket: str) -> None:
    raw = b"%PDF-1.7 not really" + bytes(range(256))
    await s3_store.put("att/report", raw)
    filename = "Q3 report ü.pdf"
    url = s3_store.signed_url(
        "att/report", expires_in=300, filename=filename, content_type="application/pdf"
    )
    assert f"/{bucket}/tenant/att/report?" in url  # path-style addressing with an endpoint
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200
    assert response.content == raw
    assert response.headers["content-disposition"] == content_disposition(filename)
    assert response.headers["content-type"] == "application/pdf"


# --- open_blob_store ---------------------------------------------------------------------------


def open_store(url: str, data_dir: Path, endpoint: str | None = None) -> BlobStore:
    return open_blob_store(
        url,
        data_dir=data_dir,
        signing_key=SIGNING_KEY,
        public_base_url=BASE_URL,
        s3_endpoint_url=endpoint,
        s3_region=REGION,
    )


async def test_open_local_forms(tmp_path: Path) -> None:
    other = tmp_path / "other dir"
    cases = [("", tmp_path / "blobs"), (other.as_uri(), other), (str(other), other)]
    for url, root in cases:
        store = open_store(url, tmp_path)
        assert isinstance(store, LocalBlobStore)
        assert store.path_for("att/x") == root / "att/x"
        await store.close()


async def test_open_s3_form(tmp_path: Path, moto_endpoint: str, bucket: str) -> None:
    store = open_store(f"s3://{bucket}/some/prefix/", tmp_path, moto_endpoint)
    assert isinstance(store, S3BlobStore)
    await store.put("att/x", b"x")
    assert f"/{bucket}/some/prefix/att/x?" in store.signed_url("att/x", expires_in=60)
    await store.close()


@pytest.mark.parametrize(
    "url", ["ftp://host/x", "s3://", "s3:///prefix", "s3://b/p?x=1", "file://otherhost/x", "gs://b"]
)
def test_open_rejects_unknown_forms(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValueError, match=r"s3://bucket/optional/prefix"):
        open_store(url, tmp_path)


# --- listing and sweeping: both backends ----------------------------------------------------


async def listed(store: BlobStore, under: str) -> dict[str, BlobInfo]:
    return {info.key: info async for info in store.list_blobs(under)}


async def test_list_blobs_gives_every_key_under_a_directory_with_size_and_time(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blobs_module, "LIST_PAGE", 2)  # several pages from 5 blobs
    messages = {f"msg/2026/11/{day}/{day}.eml": b"m" * day for day in (1, 2, 27)}
    attachments = {"att/aa": b"", "att/bb": b"12345"}
    await store.put_many([*messages.items(), *attachments.items(), ("other/x", b"x")])
    found = await listed(store, "msg")
    assert {k: i.size for k, i in found.items()} == {k: len(v) for k, v in messages.items()}
    assert {k: i.size for k, i in (await listed(store, "att")).items()} == {
        "att/aa": 0,
        "att/bb": 5,
    }
    assert await listed(store, "nothing") == {}
    # a key that merely starts like the directory is not in it
    await store.put("msgx", b"not under msg/")
    assert set(await listed(store, "msg")) == set(messages)
    for info in found.values():
        assert abs(info.modified - time.time()) < 120


async def test_listing_skips_what_is_not_a_blob(
    local_store: LocalBlobStore, s3_store: S3BlobStore, raw_s3: Any, bucket: str, tmp_path: Path
) -> None:
    await local_store.put("att/real", b"r")
    (tmp_path / "blobs/att/.0123~tmp").write_bytes(b"a write in progress")
    (tmp_path / "blobs/att/.4567~del").write_bytes(b"a blob being deleted")
    assert set(await listed(local_store, "att")) == {"att/real"}
    await s3_store.put("att/real", b"r")
    raw_s3.put_object(Bucket=bucket, Key="tenant/att/not a key", Body=b"someone else's")
    assert set(await listed(s3_store, "att")) == {"att/real"}


async def test_delete_stale_keeps_a_blob_written_since_the_cutoff(store: BlobStore) -> None:
    await store.put_many([("att/old", b"old bytes"), ("att/new", b"new")])
    times = await listed(store, "att")
    # written before the cutoff: deleted; at or after it: kept (a put that raced the sweep)
    deleted = await store.delete_stale(
        ["att/old", "att/missing", "att/old"], written_before=times["att/old"].modified + 5
    )
    assert [(i.key, i.size) for i in deleted] == [("att/old", 9)]
    assert await store.delete_stale(["att/new"], written_before=times["att/new"].modified - 5) == []
    assert await store.get("att/new") == b"new"
    with pytest.raises(BlobNotFound):
        await store.get("att/old")
    assert await store.delete_stale([], written_before=time.time()) == []


async def test_local_delete_stale_leaves_no_file_aside(
    local_store: LocalBlobStore, tmp_path: Path
) -> None:
    await local_store.put_many([("att/a", b"a"), ("att/b", b"b")])
    deleted = await local_store.delete_stale(["att/a", "att/b"], written_before=time.time() + 60)
    assert {i.key for i in deleted} == {"att/a", "att/b"}
    await local_store.put("att/c", b"c")  # renamed aside, found new, put back
    assert await local_store.delete_stale(["att/c"], written_before=time.time() - 3600) == []
    assert await local_store.get("att/c") == b"c"
    assert stored_files(tmp_path / "blobs") == {"att/c"}  # put back under its name, nothing else
