"""Inbound delivery: the durable path from a received message to the mailstore.

Implementation notes:

- Group commit. SMTP sessions hand messages to one :class:`DeliveryPipeline`; its worker takes
  whatever has queued up (up to ``batch_size``), writes every blob of the batch with one
  ``put_many`` (files fsynced, directories fsynced), stores all rows in one transaction, and only
  then resolves each session's future, so the session answers 250 after the data is durable.
  Under load, batches grow and the cost of fsync and commit is shared.
- Two stages overlap: while one transaction commits, the next batches' blobs are written. The
  committer then takes every batch staged meanwhile (up to ``MAX_MERGED``) into one
  transaction, whose statements cost about the same for one message as for fifty. Rows commit
  in arrival order, and only after their batch's blobs are durable.
- On SQLite the transaction's statements run as one block on the connection's thread
  (``sqlite_driver.run_on_thread``): each statement no longer waits for its turn on an event
  loop busy with the SMTP sessions, which had made a 4 ms transaction take 16.
- A failing batch is retried one message at a time, so one bad message cannot fail the others;
  a message that still fails gets a temporary error (451, or 452 when the disk is full) and the
  sender retries. A batch that failed because the store is out of reach or full fails whole.
- Storage quotas (``store.quota``): the transaction locks the recipients' accounts first, and
  a message that would take one over its storage limit is left out of it and answered
  ``452 4.2.2``, for all its recipients (one SMTP reply answers for all; the sender retries).
  Being locked until commit, the counters cannot be passed by two batches at once.
- Events are published after commit.
- Blob keys: raw messages ``msg/YYYY/MM/DD/<uuid>.eml`` (one per SMTP transaction, shared by its
  recipients); attachments ``att/<sha256>`` (content-addressed, so fan-out and duplicates share).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store.accounts import Inbox
from mailboxkit.store.blobs import BlobStore
from mailboxkit.store.db import Database, log_failure, unavailable
from mailboxkit.store.events import EventBus, EventType
from mailboxkit.store.ids import new_id
from mailboxkit.store.messages import NewMessage, StoredMessage, insert_messages
from mailboxkit.store.mime import ParsedMessage
from mailboxkit.store.quota import Storage, StorageQuotaExceeded, lock_accounts
from mailboxkit.store.sqlite_driver import run_on_thread
from mailboxkit.store.tasks import stop_tasks

log = logging.getLogger(__name__)

MAX_MERGED = 8  # staged batches committed in one transaction, at most


class DeliveryFailed(Exception):
    """A temporary failure: nothing was stored; the sender should try again."""


@dataclass(frozen=True, slots=True)
class Placement:
    """One inbox a message goes to: the RCPT addresses for it, its folder and its event."""

    inbox: Inbox
    rcpts: Sequence[str]
    folder: str = "INBOX"
    event: EventType = EventType.MESSAGE_RECEIVED


@dataclass(frozen=True, slots=True)
class Inbound:
    """One received message for one or more local inboxes."""

    raw: bytes
    parsed: ParsedMessage
    mail_from: str
    inboxes: Sequence[Placement]
    received_at: datetime
    queue_id: str
    auth: dict[str, Any] | None = None  # SPF/DKIM/DMARC verdicts, when checked


def raw_key(received_at: datetime, queue_id: str) -> str:
    return f"msg/{received_at:%Y/%m/%d}/{queue_id}.eml"


def attachment_key(sha256: str) -> str:
    return f"att/{sha256}"


@dataclass(slots=True)
class _Job:
    message: Inbound
    done: asyncio.Future[list[StoredMessage]]


def _fail(job: _Job, cause: Exception) -> None:
    if not job.done.done():
        failed = DeliveryFailed(job.message.queue_id)
        failed.__cause__ = cause
        job.done.set_exception(failed)


class DeliveryPipeline:
    """Two stages, so the blobs of one batch are written while the previous batch commits."""

    def __init__(
        self, db: Database, blobs: BlobStore, bus: EventBus, *, batch_size: int = 64
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._bus = bus
        self._batch_size = batch_size
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        # Batches whose blobs are being written or are written, in arrival order; bounded so
        # that under load messages wait in _queue and the next batch grows.
        self._staged: asyncio.Queue[tuple[list[_Job], asyncio.Task[None]]] = asyncio.Queue(
            MAX_MERGED
        )
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._stage_blobs(), name="delivery-blobs"),
            asyncio.create_task(self._commit_rows(), name="delivery-rows"),
        ]

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        await self._queue.join()
        await stop_tasks(*self._workers)

    async def deliver(self, message: Inbound) -> list[StoredMessage]:
        """Store ``message`` durably for each of its inboxes. Raises :class:`DeliveryFailed`."""
        if not self._workers or any(w.done() for w in self._workers):
            raise DeliveryFailed("delivery pipeline is not running")
        job = _Job(message, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        return await job.done

    async def _stage_blobs(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            writing = asyncio.create_task(self._write_blobs(batch))
            await self._staged.put((batch, writing))

    async def _commit_rows(self) -> None:
        while True:
            # Every batch staged by now goes into one transaction: a transaction's statements
            # cost the same for one message as for fifty, and small batches pile up here
            # while the previous transaction commits.
            staged = [await self._staged.get()]
            while not self._staged.empty() and len(staged) < MAX_MERGED:
                staged.append(self._staged.get_nowait())
            batch = [job for jobs, _ in staged for job in jobs]
            try:
                for _, writing in staged:
                    await writing
                await self._commit(batch)
            except Exception as error:
                for _, writing in staged:  # each message again, its blobs rewritten
                    with contextlib.suppress(Exception):
                        await writing
                if unavailable(error):  # it would fail each again, one connect wait after another
                    log_failure(log, error, "event=delivery_failed count=%d", len(batch))
                    for job in batch:
                        _fail(job, error)
                else:
                    await self._one_by_one(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _one_by_one(self, batch: list[_Job]) -> None:
        """After a failed batch: each message on its own, so one bad message fails alone."""
        if len(batch) > 1:
            log.warning("event=batch_failed size=%d: retrying one by one", len(batch))
        for job in batch:
            try:
                await self._write_blobs([job])
                await self._commit([job])
            except Exception as error:
                log_failure(log, error, "event=delivery_failed queue_id=%s", job.message.queue_id)
                _fail(job, error)

    async def _write_blobs(self, batch: list[_Job]) -> None:
        blobs: dict[str, bytes] = {}
        for job in batch:
            msg = job.message
            blobs[raw_key(msg.received_at, msg.queue_id)] = msg.raw
            for attachment in msg.parsed.attachments:
                blobs[attachment_key(attachment.sha256)] = attachment.data
        await self._blobs.put_many(list(blobs.items()))

    async def _commit(self, batch: list[_Job]) -> None:
        news = [_new_messages(job) for job in batch]
        async with self._db.write() as conn:
            flat, refused = await run_on_thread(conn, lambda c: _store(c, news))
        start = 0
        for index, (job, group) in enumerate(zip(batch, news, strict=True)):
            if index in refused:
                log.info(
                    "event=delivery_over_quota queue_id=%s accounts=%s",
                    job.message.queue_id,
                    ",".join(sorted(refused[index])),
                )
                _fail(job, StorageQuotaExceeded(job.message.queue_id))
                continue
            stored = flat[start : start + len(group)]
            start += len(group)
            self._bus.publish(event for s in stored for event in s.events)
            if not job.done.done():
                job.done.set_result(stored)


async def _store(
    conn: AsyncConnection, news: Sequence[Sequence[NewMessage]]
) -> tuple[list[StoredMessage], dict[int, set[str]]]:
    """Store the messages of each job whose every account has room for them, in order; the
    others are refused whole (position -> accounts over their limit), since one SMTP reply
    answers for every recipient. The accounts stay locked until commit (``store.quota``)."""
    storage = await lock_accounts(conn, {n.inbox.account_id for group in news for n in group})
    used = {account_id: s.used for account_id, s in storage.items()}
    refused: dict[int, set[str]] = {}
    for index, group in enumerate(news):
        need: dict[str, int] = {}
        for new in group:
            need[new.inbox.account_id] = need.get(new.inbox.account_id, 0) + new.size
        over = {
            account_id
            for account_id, size in need.items()
            if account_id in storage
            and not Storage(used[account_id], storage[account_id].limit).fits(size)
        }
        if over:
            refused[index] = over
            continue
        for account_id, size in need.items():
            if account_id in used:
                used[account_id] += size
    accepted = [new for index, group in enumerate(news) if index not in refused for new in group]
    return await insert_messages(conn, accepted), refused


def _new_messages(job: _Job) -> list[NewMessage]:
    msg = job.message
    keys = [attachment_key(a.sha256) for a in msg.parsed.attachments]
    return [
        NewMessage(
            inbox=place.inbox,
            parsed=msg.parsed,
            raw_key=raw_key(msg.received_at, msg.queue_id),
            size=len(msg.raw),
            received_at=msg.received_at,
            attachment_keys=keys,
            envelope_from=msg.mail_from,
            envelope_to=tuple(place.rcpts),
            folder=place.folder,
            auth=msg.auth,
            event=place.event,
        )
        for place in msg.inboxes
    ]


def new_queue_id() -> str:
    return new_id().replace("-", "").upper()
