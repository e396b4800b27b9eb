"""Account export: all of an account's data in one zip, its mail as Maildir folders.

Layout (``FORMAT``):

- ``inboxes/<address>/<folder>/{cur,new,tmp}/``: each inbox's folders as Maildir directories
  (https://cr.yp.to/proto/maildir.html), the layout mbsync, Dovecot and mutt import; a folder
  ``a/b`` is the directory ``b`` inside ``a``'s. Every message is a file in ``cur/`` named
  ``<internal date, Unix seconds>.<entry id>.mailboxkit:2,<flags>``, its flag letters in ASCII
  order (:func:`maildir_flags`); its content is the raw message exactly as stored. Keywords
  (labels) follow as Dovecot's lowercase letters: a folder's first 26 keywords get ``a``-``z``,
  listed in its ``dovecot-keywords`` file (a line ``<index> <keyword>`` each, ``0`` being
  ``a``); any further ones are in ``messages.jsonl`` only.
- ``inboxes/<address>/messages.jsonl``: one line per message in a folder (folder, UID, the
  file, flags, keywords, dates, addresses, attachments...); ``file`` is null for a message
  whose raw blob is missing.
- ``outbound.jsonl``: the delivery log of the mail the account sent, metadata only.
- ``account.json``, last: the account, its own domains (DKIM public records), inboxes and
  folders (with the number of messages exported of each), API keys, webhooks, sender rules,
  suppressions, drafts, usage, billing (its Stripe customer, subscriptions and the Stripe
  events received about it), and ``missing_blobs``. Datetimes are ISO 8601 in UTC.

Implementation notes (invariants):

- Never a secret: rows are read column by column, and only what is listed here is written
  (no API key hash, webhook secret, DKIM private key or password hash), so a column added
  later is not exported by accident.
- Paths are safe and readable (:func:`folder_path`): each level of a folder's name is one
  directory, an address one too, with ``%``, ``/``, ``\\`` and control characters
  percent-encoded; a level that would be empty, ``.`` or ``..``, a Maildir's own
  ``cur``/``new``/``tmp`` (case-insensitively) or the inbox's ``messages.jsonl`` is encoded
  so that it is not. No absolute path, no ``..``, no NUL.
- What is exported is the account as at the start: the metadata in one read transaction,
  then each folder's entries below its UIDNEXT of that moment, a page (``PAGE``) per short
  read transaction; never one transaction held open while blobs are read. An entry expunged
  meanwhile is left out; a flag changed meanwhile shows its new value.
- Memory is bounded by one message: the zip is written an entry at a time, each inbox's
  messages.jsonl spooled to a temporary file until its messages are written (a zip takes one
  entry at a time); only the zip's central directory (an entry name each) and the list of
  missing blobs grow with the account.
- The archive is always written as a stream (data descriptors, as to a pipe or an HTTP body),
  so ``out`` needs only ``write`` and ``flush``; it is written from worker threads, one call at
  a time, so compressing a large message does not stop the event loop.
- A missing raw blob (``BlobNotFound``) is listed in ``missing_blobs`` and the export goes on.
  Any other failure, or cancellation, stops the writing at once (but for a write to ``out``
  already started in its thread): ``out`` is then a zip without its central directory, which
  no reader takes for a whole export.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import IO, Any, Protocol

from sqlalchemy import ColumnElement, Integer, Table, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.accounts import get_account, list_api_keys
from mailboxkit.store.blobs import BlobNotFound, BlobStore
from mailboxkit.store.db import Database
from mailboxkit.store.domains import list_domains
from mailboxkit.store.entries import SystemFlag, entry_of
from mailboxkit.store.folders import DELIMITER, Folder, list_folders
from mailboxkit.store.senderrules import list_rules
from mailboxkit.store.usage import usage

logger = logging.getLogger(__name__)

FORMAT = "mailboxkit-export/1"
PAGE = 200  # rows per read transaction
SPOOL_IN_MEMORY = 1 << 20  # bytes of a messages.jsonl kept in memory before it spills to disk
COMPRESS_LEVEL = 6  # zlib's default, which ZipFile.open(info, "w") also uses
COPY_CHUNK = 1 << 16

_F = SystemFlag
MAILDIR_FLAG = {_F.DRAFT: "D", _F.FLAGGED: "F", _F.ANSWERED: "R", _F.SEEN: "S", _F.DELETED: "T"}
"""Maildir's info letters ("2,") of the IMAP system flags."""

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f%/\\]")  # "/": in an address, not a level
_MAILDIR_DIRS = frozenset({"cur", "new", "tmp"})
_JSONL = "messages.jsonl"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ZIP_FIRST = datetime(1980, 1, 1, tzinfo=UTC)  # the DOS dates of zip entries
_ZIP_LAST = datetime(2107, 12, 31, 23, 59, 58, tzinfo=UTC)


class Output(Protocol):
    """Where the archive goes: a buffered binary file (``write`` takes all it is given) on a
    file, a pipe, an HTTP body. Written from a worker thread, never from two at once."""

    def write(self, data: bytes, /) -> object: ...

    def flush(self) -> object: ...


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What an export wrote."""

    inboxes: int
    folders: int
    messages: int  # message files written
    message_bytes: int  # their size, uncompressed
    missing_blobs: int
    outbound: int  # sent messages in outbound.jsonl
    archive_bytes: int  # written to ``out``


def maildir_flags(flags: Iterable[SystemFlag]) -> str:
    """The Maildir info letters of ``flags``, in ASCII order: ``{\\Seen, \\Flagged}`` -> ``FS``."""
    return "".join(sorted(MAILDIR_FLAG[f] for f in flags))


class KeywordLetters:
    """One folder's keywords as Dovecot's Maildir letters (see the module notes)."""

    LETTERS = "abcdefghijklmnopqrstuvwxyz"

    def __init__(self) -> None:
        self._letter: dict[str, str] = {}

    def of(self, keywords: Iterable[str]) -> str:
        """The letters of ``keywords``, in ASCII order, giving new keywords the next ones."""
        out = []
        for keyword in keywords:
            letter = self._letter.get(keyword)
            if letter is None and len(self._letter) < len(self.LETTERS):
                letter = self._letter[keyword] = self.LETTERS[len(self._letter)]
            if letter is not None:
                out.append(letter)
        return "".join(sorted(out))

    def listing(self) -> bytes:
        """The folder's ``dovecot-keywords`` file; empty when no message had a keyword."""
        return "".join(f"{n} {k}\n" for n, k in enumerate(self._letter)).encode()


def _level(text: str, reserved: frozenset[str]) -> str:
    """One directory name for one level of a name (see the module notes)."""
    encoded = _UNSAFE.sub(lambda c: "".join(f"%{b:02X}" for b in c[0].encode()), text)
    if not encoded:
        return "%"  # made of nothing else: an encoded "%" is always followed by two hex digits
    if not encoded.strip("."):
        return encoded.replace(".", "%2E")
    if encoded.lower() in reserved:
        return f"%{ord(encoded[0]):02X}{encoded[1:]}"
    return encoded


def folder_path(name: str) -> str:
    """The relative directory of folder ``name`` inside its inbox's directory."""
    levels = name.split(DELIMITER)
    top = _level(levels[0], frozenset({_JSONL}))
    return "/".join([top, *(_level(level, _MAILDIR_DIRS) for level in levels[1:])])


def _plain(value: object) -> object:
    """JSON for what json does not know: datetimes as ISO 8601 in UTC."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"not exported: {type(value).__name__}")


def _json_line(value: object) -> bytes:
    return json.dumps(value, default=_plain, separators=(",", ":")).encode() + b"\n"


def _fields(record: Any, without: Sequence[str] = ("account_id",)) -> dict[str, Any]:
    """A record dataclass as a dict, without the fields named."""
    return {f.name: getattr(record, f.name) for f in fields(record) if f.name not in without}


def _columns(table: Table, names: str) -> list[ColumnElement[Any]]:
    """The columns ``names`` (space-separated) of ``table``: what is exported of it."""
    return [table.c[name] for name in names.split()]


class _Sink:
    """``out`` as the zip sees it: counted, cut off for good at the first failure. No
    ``tell``, so zipfile always writes a stream."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.written = 0
        self.cut = False

    def write(self, data: bytes, /) -> int:
        if not self.cut:
            try:
                self.out.write(data)
            except BaseException:
                self.cut = True
                raise
            self.written += len(data)
        return len(data)

    def flush(self) -> None:
        if not self.cut:
            self.out.flush()

    def close(self) -> None:
        """The caller closes ``out``."""


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What the metadata transaction read: account.json but for the inboxes' counts."""

    document: dict[str, Any]
    inboxes: list[tuple[dict[str, Any], list[Folder]]]


def _info(name: str, when: datetime) -> zipfile.ZipInfo:
    at = min(max(when.astimezone(UTC), _ZIP_FIRST), _ZIP_LAST)
    info = zipfile.ZipInfo(name, (at.year, at.month, at.day, at.hour, at.minute, at.second))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o600 << 16  # mail is private
    return info


def _write(zf: zipfile.ZipFile, info: zipfile.ZipInfo | None, data: bytes | None) -> None:
    if info is not None and data is not None:
        zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL)


def _maildir(zf: zipfile.ZipFile, path: str) -> None:
    for name in ("", "cur/", "new/", "tmp/"):
        zf.mkdir(f"{path}/{name}", mode=0o700)


def _copy_in(zf: zipfile.ZipFile, info: zipfile.ZipInfo, spool: IO[bytes]) -> None:
    """Write the spooled file as one entry, a chunk at a time."""
    info.file_size = spool.seek(0, 2)  # the size decides whether the entry needs Zip64
    spool.seek(0)
    with zf.open(info, "w") as dest:
        shutil.copyfileobj(spool, dest, COPY_CHUNK)


async def export_account(
    db: Database, blobs: BlobStore, account_id: str, out: Output, *, now: datetime
) -> ExportSummary | None:
    """Write the export of ``account_id`` to ``out`` as one zip, dated ``now``; None (and
    nothing written) when there is no such account. ``out`` is flushed, not closed."""
    async with db.read() as conn:
        snapshot = await _snapshot(conn, account_id, now)
    if snapshot is None:
        return None
    export = _Export(db, blobs, _Sink(out), now)
    try:
        summary = await export.run(snapshot)
    except BaseException:
        export.sink.cut = True  # a partial export must not look whole (see the notes)
        raise
    counts = (summary.messages, summary.missing_blobs, summary.archive_bytes)
    logger.info("exported account=%s messages=%d missing_blobs=%d bytes=%d", account_id, *counts)
    return summary


async def _rows(
    conn: AsyncConnection, columns: Sequence[ColumnElement[Any]], *where: ColumnElement[bool]
) -> list[dict[str, Any]]:
    """The rows of ``columns`` that meet ``where``, by the first column."""
    result = await conn.execute(select(*columns).where(*where).order_by(columns[0]))
    return [dict(row._mapping) for row in result]


_INBOX = "id display_name metadata created_at"
_DKIM = "domain_id selector algorithm public_txt active created_at"
_WEBHOOK = "id url description events inbox_ids enabled disabled_reason created_at updated_at"
_SUPPRESSION = "address reason detail message_id created_at"
_USAGE = "day api_requests"
_CUSTOMER = "customer_id created_at"
_SUBSCRIPTION = (
    "subscription_id status price_id current_period_end cancel_at_period_end state_at updated_at"
)
_STRIPE_EVENT = "event_id type received_at"
_DRAFT = (
    "id inbox_id status version message_id reply_to_message_id content send_at error"
    " sent_message_id thread_id created_at updated_at sent_at"
)


async def _snapshot(conn: AsyncConnection, account_id: str, now: datetime) -> _Snapshot | None:
    """Everything but the mail, in the caller's one transaction; None: no such account."""
    account = await get_account(conn, account_id)
    if account is None:
        return None
    own = [d for d in await list_domains(conn, account_id) if d.account_id == account_id]
    keys: dict[str, list[dict[str, Any]]] = {}
    for key in await _rows(
        conn, _columns(m.dkim_keys, _DKIM), m.dkim_keys.c.domain_id.in_([d.id for d in own])
    ):
        keys.setdefault(key.pop("domain_id"), []).append(key)

    async def mine(table: Table, names: str) -> list[dict[str, Any]]:
        return await _rows(conn, _columns(table, names), table.c.account_id == account_id)

    inboxes = await _rows(
        conn,
        [m.inboxes.c.address.label("email"), *_columns(m.inboxes, _INBOX)],
        m.inboxes.c.account_id == account_id,
    )
    document = {
        "format": FORMAT,
        "exported_at": now,
        "account": _fields(account, ()),
        "domains": [
            {**_fields(d), "dns_status": str(d.dns_status), "dkim_keys": keys.get(d.id, [])}
            for d in own  # the operator's shared domains are not the account's data
        ],
        "api_keys": [_fields(key, ()) for key in await list_api_keys(conn, account_id)],
        "webhooks": await mine(m.webhooks, _WEBHOOK),
        "sender_rules": [_fields(rule) for rule in await list_rules(conn, account_id)],
        "suppressions": await mine(m.suppressions, _SUPPRESSION),
        "drafts": await mine(m.drafts, _DRAFT),
        "usage": {
            **_fields(await usage(conn, account_id, since=_EPOCH, until=now), ()),
            "api_requests_by_day": {
                row["day"]: row["api_requests"] for row in await mine(m.usage_counters, _USAGE)
            },
        },
        "billing": {
            "customer": next(iter(await mine(m.billing_customers, _CUSTOMER)), None),
            "subscriptions": await mine(m.billing_subscriptions, _SUBSCRIPTION),
            "events": await mine(m.billing_events, _STRIPE_EVENT),
        },
    }
    folders = [(inbox, await list_folders(conn, inbox["id"])) for inbox in inboxes]
    return _Snapshot(document, folders)


_E = m.entries.c
_PAGE_OF_FOLDER = (
    select(
        _E.id.label("entry_id"),
        *_columns(m.entries, "uid modseq internal_date seen answered flagged deleted draft"),
        *_columns(m.entries, "keywords message_id"),
        *_columns(m.messages, "raw_key size direction message_id_header in_reply_to thread_id"),
        *_columns(m.messages, "received_at sent_at from_name from_email to_addrs cc_addrs"),
        m.messages.c.subject,
    )
    .select_from(m.entries.join(m.messages, m.messages.c.id == _E.message_id))
    .where(
        _E.folder_id == bindparam("folder_id"),
        _E.uid > bindparam("after"),
        _E.uid < bindparam("uidnext"),
    )
    .order_by(_E.uid)
    .limit(bindparam("limit", type_=Integer))
)
_ATTACHMENT = "message_id filename content_type disposition content_id size sha256"
_OUTBOUND = "id inbox_id message_id envelope_from created_at expires_at purged_at"
_RECIPIENT = (
    "outbound_id recipient status attempts last_reply next_attempt_at updated_at"
    " provider_message_id"
)


async def _children(
    conn: AsyncConnection, table: Table, names: str, parent_ids: Sequence[str], order: str
) -> dict[str, list[dict[str, Any]]]:
    """Rows of ``table`` by their parent, the first of ``names``, in ``order``."""
    parent = table.c[names.split()[0]]
    rows = await conn.execute(
        select(*_columns(table, names)).where(parent.in_(parent_ids)).order_by(table.c[order])
    )
    found: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        child = dict(row._mapping)
        found.setdefault(child.pop(parent.name), []).append(child)
    return found


_LISTED = (
    "uid message_id message_id_header in_reply_to thread_id internal_date received_at sent_at"
    " direction subject size"
)


def _message_record(
    folder: Folder, row: Any, file: str | None, attachments: list[dict[str, Any]]
) -> dict[str, Any]:
    """The messages.jsonl line of one message in a folder."""
    entry = entry_of(row)
    return {
        "folder": folder.name,
        "file": file,
        **{name: row._mapping[name] for name in _LISTED.split()},
        "flags": [str(f) for f in SystemFlag if f in entry.flags],
        "keywords": list(entry.keywords),
        "from": {"name": row.from_name, "email": row.from_email},
        "to": row.to_addrs,
        "cc": row.cc_addrs,
        "attachments": attachments,
    }


class _Export:
    """One export being written: the zip, and what went into it."""

    def __init__(self, db: Database, blobs: BlobStore, sink: _Sink, now: datetime) -> None:
        self.db, self.blobs, self.sink, self.now = db, blobs, sink, now
        self.zf = zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL)
        self.messages = self.message_bytes = 0
        self.missing: list[dict[str, Any]] = []

    async def run(self, snapshot: _Snapshot) -> ExportSummary:
        inboxes = [await self.inbox(inbox, folders) for inbox, folders in snapshot.inboxes]
        outbound = await self.outbound(snapshot.document["account"]["id"])
        document = {**snapshot.document, "inboxes": inboxes, "missing_blobs": self.missing}
        data = json.dumps(document, default=_plain, indent=2).encode() + b"\n"
        await asyncio.to_thread(self.finish, data)
        return ExportSummary(
            inboxes=len(inboxes),
            folders=sum(len(folders) for _, folders in snapshot.inboxes),
            messages=self.messages,
            message_bytes=self.message_bytes,
            missing_blobs=len(self.missing),
            outbound=outbound,
            archive_bytes=self.sink.written,
        )

    def finish(self, account_json: bytes) -> None:
        _write(self.zf, _info("account.json", self.now), account_json)
        self.zf.close()
        self.sink.flush()

    async def inbox(self, inbox: dict[str, Any], folders: list[Folder]) -> dict[str, Any]:
        """Write the inbox's folders and its messages.jsonl; its part of account.json."""
        base = f"inboxes/{_level(inbox['email'], frozenset())}"
        listed = []
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
            for folder in folders:
                path = f"{base}/{folder_path(folder.name)}"
                await asyncio.to_thread(_maildir, self.zf, path)
                count = await self.folder(inbox, folder, path, spool)
                listed.append(
                    {**_fields(folder, ("id", "inbox_id")), "path": f"{path}/", "messages": count}
                )
            await asyncio.to_thread(_copy_in, self.zf, _info(f"{base}/{_JSONL}", self.now), spool)
        return {**inbox, "path": f"{base}/", "folders": listed}

    async def folder(
        self, inbox: dict[str, Any], folder: Folder, path: str, spool: IO[bytes]
    ) -> int:
        """Write the folder's messages, a page of entries at a time; how many were listed."""
        count, after, keywords = 0, 0, KeywordLetters()
        page = {"folder_id": folder.id, "uidnext": folder.uidnext, "limit": PAGE}
        while True:
            async with self.db.read() as conn:
                rows = (await conn.execute(_PAGE_OF_FOLDER, {**page, "after": after})).all()
                ids = [row.message_id for row in rows]
                attachments = await _children(conn, m.attachments, _ATTACHMENT, ids, "position")
            for row in rows:
                entry = entry_of(row)
                flags = maildir_flags(entry.flags) + keywords.of(entry.keywords)
                seconds = max(0, int(row.internal_date.timestamp()))
                name: str | None = f"{path}/cur/{seconds}.{row.entry_id}.mailboxkit:2,{flags}"
                raw: bytes | None
                try:
                    raw = await self.blobs.get(row.raw_key)
                except BlobNotFound:
                    raw = name = None
                    where = {"inbox": inbox["email"], "folder": folder.name, "uid": row.uid}
                    self.missing.append({"key": row.raw_key, "message_id": row.message_id, **where})
                    logger.warning("export blob missing key=%s", row.raw_key)
                else:
                    self.messages += 1
                    self.message_bytes += len(raw)
                line = _json_line(
                    _message_record(folder, row, name, attachments.get(row.message_id, []))
                )
                info = None if name is None else _info(name, row.internal_date)
                await asyncio.to_thread(_write_message, self.zf, info, raw, spool, line)
            count += len(rows)
            if len(rows) < PAGE:
                break
            after = rows[-1].uid
        if listing := keywords.listing():
            info = _info(f"{path}/dovecot-keywords", self.now)
            await asyncio.to_thread(_write, self.zf, info, listing)
        return count

    async def outbound(self, account_id: str) -> int:
        """Write outbound.jsonl, a page of sent messages with their recipients at a time."""
        o = m.outbound_messages.c
        count, after = 0, ""
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
            while True:
                async with self.db.read() as conn:
                    query = select(*_columns(m.outbound_messages, _OUTBOUND))
                    query = query.where(o.account_id == account_id, o.id > after)
                    heads = (await conn.execute(query.order_by(o.id).limit(PAGE))).all()
                    ids = [head.id for head in heads]
                    recipients = await _children(conn, m.outbound_recipients, _RECIPIENT, ids, "id")
                lines = b"".join(
                    _json_line({**head._mapping, "recipients": recipients.get(head.id, [])})
                    for head in heads
                )
                await asyncio.to_thread(spool.write, lines)
                count += len(heads)
                if len(heads) < PAGE:
                    break
                after = heads[-1].id
            await asyncio.to_thread(_copy_in, self.zf, _info("outbound.jsonl", self.now), spool)
        return count


def _write_message(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo | None,
    raw: bytes | None,
    spool: IO[bytes],
    line: bytes,
) -> None:
    _write(zf, info, raw)
    spool.write(line)
