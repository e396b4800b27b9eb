"""The store sweep: messages in no folder, and blobs no row refers to, so that neither the
tables nor the blob store grow forever.

Implementation notes (what is left behind, and why deleting it is safe):

- Expunging a message's last entry (EXPUNGE, MOVE, DELETE of a folder) deletes its row and,
  by cascade, its attachment rows in the same transaction (``mailboxes``). Its blobs stay: the
  raw blob of an SMTP transaction is shared by its recipients, an attachment blob by every
  message with the same content. Deleting an inbox deletes the blobs no one else uses at once,
  except those written in the last hour, which are left to the sweep.
- On PostgreSQL two transactions expunging a message's last two entries at once (two folders)
  each still see the other's entry and both keep the row: a message in no folder. The sweep
  deletes rows with no entry, received more than ``message_grace`` ago, in chunks. A row has
  no entry only after its last one went (a message is inserted with its entry in one
  transaction), and an entry is only ever added by copying a visible one under the folder
  locks, so nothing adds an entry to such a row. Even so, the delete cannot race a transaction
  adding one: on PostgreSQL the rows are first locked ``FOR UPDATE`` (that waits for any
  transaction holding the foreign-key lock an entry insert takes, and makes later ones wait
  for us and fail), and the ``DELETE`` itself re-checks ``NOT EXISTS`` after the lock. SQLite
  has one writer.
- Blobs: every blob under ``msg/`` and ``att/`` written more than ``blob_grace`` ago (at least
  an hour: a batch stages its blobs before its rows commit) is checked, a chunk at a time,
  against ``messages.raw_key``, ``attachments.blob_key`` and ``outbound_messages.raw_key``;
  those no row names are deleted with ``BlobStore.delete_stale``, which keeps a blob written
  again since the cutoff (a delivery re-staging a shared attachment while we decide). That one
  pass also takes blobs whose rows never committed (a crash between staging and commit), and
  the blobs of messages expunged or of inboxes deleted.
- Every path that adds a row naming a blob writes that blob first (delivery, APPEND, sending,
  local delivery from the queue, bounces), so a blob named again is always new.
- A dry run deletes nothing: it counts the rows it would delete, and the blobs no row names
  now (the blobs of those rows are only counted by the pass after they go).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import (
    ColumnElement,
    Integer,
    bindparam,
    case,
    delete,
    exists,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.blobs import BlobInfo, BlobStore
from mailboxkit.store.clock import Clock
from mailboxkit.store.db import Database
from mailboxkit.store.periodic import Periodic

log = logging.getLogger(__name__)

MIN_BLOB_AGE = timedelta(hours=1)
"""A blob younger than this may belong to a batch whose rows are not committed yet."""

SWEPT_DIRECTORIES = ("msg", "att")
"""Blob key prefixes rows refer to: raw messages and attachments."""

_CHUNK = 500
"""Rows deleted, or keys checked against the tables, per statement."""

_SWEEP_LOCK = 0x6D626B73  # pg_advisory_lock key: one sweeping process per database


@dataclass(frozen=True, slots=True)
class SweepPolicy:
    """How old what is unused must be before a pass deletes it (see the module notes)."""

    message_grace: timedelta  # since the message was received
    blob_grace: timedelta  # since the blob was written; the settings keep it >= MIN_BLOB_AGE


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one pass deleted (or, in a dry run, would delete)."""

    dry_run: bool = False
    messages: int = 0
    raw_blobs: int = 0
    raw_bytes: int = 0
    attachment_blobs: int = 0
    attachment_bytes: int = 0

    def log_fields(self) -> str:
        return (
            f"dry_run={self.dry_run} messages={self.messages} raw_blobs={self.raw_blobs} "
            f"raw_bytes={self.raw_bytes} attachment_blobs={self.attachment_blobs} "
            f"attachment_bytes={self.attachment_bytes}"
        )


async def message_blobs(conn: AsyncConnection, where: ColumnElement[bool]) -> set[str]:
    """The raw and attachment blob keys of the messages ``where`` selects (about to go)."""
    msg, att = m.messages.c, m.attachments.c
    keys = set(await conn.scalars(select(msg.raw_key).where(where)))
    keys.update(
        await conn.scalars(
            select(att.blob_key).join(m.messages, msg.id == att.message_id).where(where)
        )
    )
    return keys


async def unreferenced_blobs(conn: AsyncConnection, keys: Iterable[str]) -> list[str]:
    """Those of ``keys`` no message (raw), attachment or queued message row refers to."""
    wanted = sorted(set(keys))
    used: set[str] = set()
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        for column in (
            m.messages.c.raw_key,
            m.attachments.c.blob_key,
            m.outbound_messages.c.raw_key,
        ):
            used.update(await conn.scalars(select(column).where(column.in_(chunk)).distinct()))
    return [k for k in wanted if k not in used]


async def delete_unreferenced(
    db: Database, blobs: BlobStore, keys: Iterable[str], *, now: datetime
) -> list[str]:
    """Delete those of ``keys`` no row names any more (after a commit that dropped rows naming
    them); the keys deleted. Raw blobs go at once: their key is unique to the transaction that
    staged them, so no one names them again. A shared attachment blob could be re-staged by a
    delivery at this very moment: only those older than ``MIN_BLOB_AGE`` go, with
    ``delete_stale``; younger ones are the sweep's."""
    async with db.read() as conn:
        unused = await unreferenced_blobs(conn, keys)
    raw = [k for k in unused if k.startswith("msg/")]
    await blobs.delete_many(raw)
    shared = [k for k in unused if not k.startswith("msg/")]
    cutoff = (now - MIN_BLOB_AGE).timestamp()
    stale = await blobs.delete_stale(shared, written_before=cutoff)
    return raw + [info.key for info in stale]


async def messages_in_no_folder(
    conn: AsyncConnection, *, received_before: datetime, after: str = "", limit: int = _CHUNK
) -> list[str]:
    """Ids of messages no entry shows, received before ``received_before``, ascending after
    ``after`` (so a caller walks the table a chunk at a time)."""
    msg = m.messages.c
    rows = await conn.scalars(
        select(msg.id)
        .where(
            msg.id > after,
            msg.received_at < received_before,
            ~exists().where(m.entries.c.message_id == msg.id),
        )
        .order_by(msg.id)
        .limit(limit)
    )
    return list(rows)


async def delete_messages_in_no_folder(conn: AsyncConnection, ids: Sequence[str]) -> int:
    """Delete those of ``ids`` that still have no entry (attachment rows go by cascade) and
    count them out of their threads; how many were deleted. See the module notes."""
    if not ids:
        return 0
    msg = m.messages.c
    if conn.dialect.name == "postgresql":
        await conn.execute(select(msg.id).where(msg.id.in_(ids)).order_by(msg.id).with_for_update())
    deleted = (
        await conn.execute(
            delete(m.messages)
            .where(msg.id.in_(ids), ~exists().where(m.entries.c.message_id == msg.id))
            .returning(msg.id, msg.thread_id)
        )
    ).all()
    per_thread = Counter(row.thread_id for row in deleted if row.thread_id is not None)
    if per_thread:
        t = m.threads.c
        gone = bindparam("gone", type_=Integer)
        await conn.execute(
            update(m.threads)
            .where(t.id == bindparam("thread_id"))
            .values(message_count=case((t.message_count > gone, t.message_count - gone), else_=0)),
            [{"thread_id": tid, "gone": n} for tid, n in per_thread.items()],
        )
    return len(deleted)


async def sweep(
    db: Database, blobs: BlobStore, *, now: datetime, policy: SweepPolicy, dry_run: bool = False
) -> SweepReport:
    """One pass: messages in no folder, then blobs no row refers to. See the module notes."""
    report = SweepReport(dry_run=dry_run)
    report = await _sweep_messages(db, now - policy.message_grace, report)
    cutoff = (now - policy.blob_grace).timestamp()
    for under in SWEPT_DIRECTORIES:
        report = await _sweep_blobs(db, blobs, under, cutoff, report)
    return report


async def _sweep_messages(
    db: Database, received_before: datetime, report: SweepReport
) -> SweepReport:
    after, count = "", 0
    while True:
        async with db.read() as conn:
            ids = await messages_in_no_folder(conn, received_before=received_before, after=after)
        if not ids:
            return replace(report, messages=count)
        after = ids[-1]
        if report.dry_run:
            count += len(ids)
            continue
        async with db.write() as conn:
            count += await delete_messages_in_no_folder(conn, ids)


async def _sweep_blobs(
    db: Database, blobs: BlobStore, under: str, cutoff: float, report: SweepReport
) -> SweepReport:
    count = size = 0
    chunk: list[BlobInfo] = []
    async with contextlib.aclosing(blobs.list_blobs(under)) as listing:
        async for info in listing:
            if info.modified < cutoff:
                chunk.append(info)
            if len(chunk) >= _CHUNK:
                gone = await _settle(db, blobs, chunk, cutoff, report.dry_run)
                count, size, chunk = count + len(gone), size + sum(i.size for i in gone), []
    if chunk:
        gone = await _settle(db, blobs, chunk, cutoff, report.dry_run)
        count, size = count + len(gone), size + sum(i.size for i in gone)
    if under == "msg":
        return replace(report, raw_blobs=count, raw_bytes=size)
    return replace(report, attachment_blobs=count, attachment_bytes=size)


async def _settle(
    db: Database, blobs: BlobStore, chunk: list[BlobInfo], cutoff: float, dry_run: bool
) -> list[BlobInfo]:
    """Delete the blobs of ``chunk`` no row names (or, in a dry run, just say which)."""
    async with db.read() as conn:
        unused = set(await unreferenced_blobs(conn, [info.key for info in chunk]))
    doomed = [info for info in chunk if info.key in unused]
    if dry_run or not doomed:
        return doomed
    return await blobs.delete_stale([info.key for info in doomed], written_before=cutoff)


@contextlib.asynccontextmanager
async def exclusive(db: Database) -> AsyncIterator[bool]:
    """Whether this process may sweep now: on PostgreSQL one process at a time (a session
    advisory lock held for the pass); SQLite has one process."""
    if db.is_sqlite:
        yield True
        return
    async with db.engine.connect() as conn:
        mine = bool(await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": _SWEEP_LOCK}))
        try:
            yield mine
        finally:
            if mine:
                await conn.scalar(text("SELECT pg_advisory_unlock(:k)"), {"k": _SWEEP_LOCK})


async def sweep_once(
    db: Database, blobs: BlobStore, clock: Clock, policy: SweepPolicy, *, dry_run: bool = False
) -> SweepReport | None:
    """One logged pass, unless another process is sweeping (None)."""
    started = time.monotonic()
    async with exclusive(db) as mine:
        if not mine:
            log.info("event=store_sweep_skipped reason=another_process_sweeping")
            return None
        report = await sweep(db, blobs, now=clock.now(), policy=policy, dry_run=dry_run)
    log.info("event=store_sweep %s seconds=%.1f", report.log_fields(), time.monotonic() - started)
    return report


class Sweeper:
    """Runs :func:`sweep_once` every ``interval`` seconds (the first after one interval)."""

    def __init__(
        self, db: Database, blobs: BlobStore, clock: Clock, policy: SweepPolicy, interval: float
    ) -> None:
        self._periodic = Periodic(
            "store_sweep", interval, partial(sweep_once, db, blobs, clock, policy)
        )

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
