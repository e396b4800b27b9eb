"""Inbound delivery: the durable path from a received message to the mailstore.

Implementation notes:

- Group commit. SMTP sessions hand messages to one :class:`DeliveryPipeline`; its worker takes
  whatever has queued up (up to ``batch_size``), writes every blob of the batch with one
  ``put_many`` (files fsynced, directories fsynced), stores all rows in one transaction, and only
  then resolves each session's future, so the session answers 250 after the data is durable.
  Under load, batches grow and the cost of fsync and commit is shared.
- A failing batch is retried one message at a time, so one bad message cannot fail the others;
  a message that still fails gets a temporary error (451) and the sender retries.
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

from mailboxkit.store.accounts import Inbox
from mailboxkit.store.blobs import BlobStore
from mailboxkit.store.db import Database
from mailboxkit.store.events import EventBus, EventType
from mailboxkit.store.ids import new_id
from mailboxkit.store.messages import NewMessage, StoredMessage, insert_messages
from mailboxkit.store.mime import ParsedMessage

log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """A temporary failure: nothing was stored; the sender should try again."""


@dataclass(frozen=True, slots=True)
class Inbound:
    """One received message for one or more local inboxes."""

    raw: bytes
    parsed: ParsedMessage
    mail_from: str
    inboxes: Sequence[tuple[Inbox, Sequence[str]]]  # each inbox with the RCPT addresses for it
    received_at: datetime
    queue_id: str
    folder: str = "INBOX"
    auth: dict[str, Any] | None = None  # SPF/DKIM/DMARC verdicts, when checked
    event: EventType = EventType.MESSAGE_RECEIVED


def raw_key(received_at: datetime, queue_id: str) -> str:
    return f"msg/{received_at:%Y/%m/%d}/{queue_id}.eml"


def attachment_key(sha256: str) -> str:
    return f"att/{sha256}"


@dataclass(slots=True)
class _Job:
    message: Inbound
    done: asyncio.Future[list[StoredMessage]]


class DeliveryPipeline:
    def __init__(
        self, db: Database, blobs: BlobStore, bus: EventBus, *, batch_size: int = 64
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._bus = bus
        self._batch_size = batch_size
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="delivery-pipeline")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        await self._queue.join()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def deliver(self, message: Inbound) -> list[StoredMessage]:
        """Store ``message`` durably for each of its inboxes. Raises :class:`DeliveryFailed`."""
        if self._worker is None or self._worker.done():
            raise DeliveryFailed("delivery pipeline is not running")
        job = _Job(message, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        return await job.done

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._process(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _process(self, batch: list[_Job]) -> None:
        try:
            await self._store(batch)
        except Exception:
            if len(batch) == 1:
                log.exception("event=delivery_failed queue_id=%s", batch[0].message.queue_id)
                _fail(batch[0])
                return
            log.warning("event=batch_failed size=%d: retrying one by one", len(batch))
            for job in batch:
                await self._process([job])

    async def _store(self, batch: list[_Job]) -> None:
        blobs: dict[str, bytes] = {}
        for job in batch:
            msg = job.message
            blobs[raw_key(msg.received_at, msg.queue_id)] = msg.raw
            for attachment in msg.parsed.attachments:
                blobs[attachment_key(attachment.sha256)] = attachment.data
        await self._blobs.put_many(list(blobs.items()))
        news = [_new_messages(job) for job in batch]
        async with self._db.write() as conn:
            flat = await insert_messages(conn, [new for group in news for new in group])
        results, start = [], 0
        for group in news:
            results.append(flat[start : start + len(group)])
            start += len(group)
        for job, stored in zip(batch, results, strict=True):
            self._bus.publish(event for s in stored for event in s.events)
            if not job.done.done():
                job.done.set_result(stored)


def _new_messages(job: _Job) -> list[NewMessage]:
    msg = job.message
    keys = [attachment_key(a.sha256) for a in msg.parsed.attachments]
    return [
        NewMessage(
            inbox=inbox,
            parsed=msg.parsed,
            raw_key=raw_key(msg.received_at, msg.queue_id),
            size=len(msg.raw),
            received_at=msg.received_at,
            attachment_keys=keys,
            envelope_from=msg.mail_from,
            envelope_to=tuple(rcpts),
            folder=msg.folder,
            auth=msg.auth,
            event=msg.event,
        )
        for inbox, rcpts in msg.inboxes
    ]


def _fail(job: _Job) -> None:
    if not job.done.done():
        job.done.set_exception(DeliveryFailed(job.message.queue_id))


def new_queue_id() -> str:
    return new_id().replace("-", "").upper()
