"""The outbound queue: messages waiting to leave, their per-recipient state, idempotency keys.

Implementation notes (invariants the API, the submission server and the queue worker share):

- Queueing (:func:`submit`, :class:`OutboxWriter`) is "stage, commit": the signed message and
  its attachments are written durably to the blob store first, then one transaction stores the
  Sent copy (through ``messages.insert_messages``, direction ``outbound``, already \\Seen), the
  outbound row and one row per envelope recipient. A caller answers 2xx/250 only after it
  returns: nothing acknowledged is lost, and a crash before the commit leaves at most an
  unreferenced blob. The writer group-commits: concurrent sends share one blob write and one
  transaction.
- The Sent copy and every local recipient's copy share the one raw blob (blobs are shared by
  the recipients of one transaction, as for inbound mail; deletion checks references), except
  when the Sent copy has a Bcc field: the local copies, without it, get a blob of their own
  (``mailserver.outbound.worker``).
- ``message.sent`` is recorded when a transport accepts the message (or it is delivered to a
  local inbox), not when it is queued: the Sent copy is stored ``silent`` (no event).
- The worker's side (claims, leases, outcomes) is ``store.deliveries``.
- Idempotency keys are per account. The key row is inserted first in the queueing
  transaction with ``ON CONFLICT DO NOTHING``: a concurrent request with the same key waits on
  it (PostgreSQL) or runs after it (SQLite), then finds the original and sends nothing.
- The daily send limit (``store.quota``) is counted per message at the start of the queueing
  transaction, after the batch's accounts are locked (both in account order, so batches on
  several nodes cannot deadlock), and taken back for a message that is then not queued (a
  replayed idempotency key, a hook's refusal); a message over the limit is answered
  :class:`~mailboxkit.store.quota.SendQuotaExceeded` and nothing of it is queued.
- A :class:`QueueHook` does more in the queueing transaction: its ``claim`` runs first (after
  the idempotency key's) and may refuse, then nothing is queued (:class:`NotQueued`); its
  ``queued`` runs after, with the Sent copy's ids. Sending a draft takes the draft there (a
  conditional update: it is queued at most once) and a reply marks its original \\Answered,
  so what the message did to the store commits with it or not at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.accounts import Inbox
from mailboxkit.store.blobs import BlobStore
from mailboxkit.store.db import Database, log_failure, unavailable, upsert
from mailboxkit.store.entries import SystemFlag
from mailboxkit.store.ids import new_id
from mailboxkit.store.mailboxes import set_entry_flags
from mailboxkit.store.messages import NewMessage, insert_messages
from mailboxkit.store.mime import ParsedMessage
from mailboxkit.store.quota import (
    SendQuotaExceeded,
    count_send,
    lock_accounts,
    next_day,
    uncount_send,
)
from mailboxkit.store.sqlite_driver import run_on_thread
from mailboxkit.store.tasks import stop_tasks

log = logging.getLogger(__name__)


class RecipientStatus(StrEnum):
    QUEUED = "queued"  # waiting for next_attempt_at
    SENDING = "sending"  # claimed by a worker until lease_until
    SENT = "sent"  # accepted by the transport, or stored in a local inbox
    BOUNCED = "bounced"  # failed permanently or expired (a DSN), or the provider said it bounced
    DELIVERED = "delivered"  # the provider says the recipient's server accepted it
    COMPLAINED = "complained"  # the recipient marked it as spam (provider feedback)


class IdempotencyConflict(Exception):
    """The idempotency key was used before with another request."""


class NotQueued(Exception):
    """A :class:`QueueHook` refused the message in the queueing transaction: nothing was
    queued (e.g. the draft was sent or changed meanwhile)."""


def message_key(at: datetime, queue_id: str) -> str:
    """Blob key of a raw message: the layout inbound delivery uses."""
    return f"msg/{at:%Y/%m/%d}/{queue_id}.eml"


def attachment_key(sha256: str) -> str:
    return f"att/{sha256}"


def new_queue_id() -> str:
    return new_id().replace("-", "").upper()


def recipient_domain(address: str) -> str:
    return address.rpartition("@")[2].rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message ready to queue: signed bytes, parsed, and its envelope."""

    inbox: Inbox
    raw: bytes
    parsed: ParsedMessage
    envelope_from: str
    recipients: Sequence[str]
    labels: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    account_id: str
    key: str
    request_hash: str  # what the request said, so a reuse with another request is refused


@dataclass(frozen=True, slots=True)
class Queued:
    message_id: str  # the Sent copy
    thread_id: str
    outbound_id: str | None  # None when this is the answer remembered for an idempotency key
    queue_id: str = ""

    @property
    def replayed(self) -> bool:
        return self.outbound_id is None


async def find_idempotent(conn: AsyncConnection, key: IdempotencyKey) -> Queued | None:
    """The answer remembered for ``key``; raises :class:`IdempotencyConflict` on another body."""
    row = (
        await conn.execute(
            select(m.idempotency_keys).where(
                m.idempotency_keys.c.account_id == key.account_id,
                m.idempotency_keys.c.key == key.key,
            )
        )
    ).first()
    if row is None or not row.message_id:
        return None
    if row.request_hash != key.request_hash:
        raise IdempotencyConflict(key.key)
    return Queued(row.message_id, row.thread_id, None)


async def _claim_key(conn: AsyncConnection, key: IdempotencyKey, now: datetime) -> bool:
    """Insert the key row; False when it exists (after waiting for its writer to commit)."""
    statement = (
        upsert(conn, m.idempotency_keys)
        .values(
            account_id=key.account_id,
            key=key.key,
            request_hash=key.request_hash,
            message_id="",
            thread_id="",
            created_at=now,
        )
        .on_conflict_do_nothing()
        .returning(m.idempotency_keys.c.key)
    )
    return (await conn.scalar(statement)) is not None


async def stage(
    blobs: BlobStore, raw: bytes, parsed: ParsedMessage, *, at: datetime, queue_id: str = ""
) -> str:
    """Write a message and its attachments durably; the message's blob key."""
    key = message_key(at, queue_id or new_queue_id())
    items = {key: raw}
    items.update((attachment_key(a.sha256), a.data) for a in parsed.attachments)
    await blobs.put_many(list(items.items()))
    return key


class QueueHook(Protocol):
    """What else the queueing transaction does for one message (module notes)."""

    async def claim(self, conn: AsyncConnection) -> bool:
        """Before the message is queued; False: do not queue it."""
        ...

    async def queued(self, conn: AsyncConnection, queued: Queued) -> None:
        """After the message is queued, with its Sent copy's ids."""
        ...


@dataclass(frozen=True, slots=True)
class Submission:
    """One message to queue: what to send, the idempotency key it came with, if any, and what
    else its transaction does."""

    outgoing: Outgoing
    now: datetime
    idempotency: IdempotencyKey | None = None
    hook: QueueHook | None = None


@dataclass(frozen=True, slots=True)
class _Staged:
    submission: Submission
    raw_key: str
    queue_id: str


async def submit(
    db: Database,
    blobs: BlobStore,
    outgoing: Outgoing,
    *,
    now: datetime,
    max_age: timedelta,
    idempotency: IdempotencyKey | None = None,
    hook: QueueHook | None = None,
) -> Queued:
    """Queue one message durably: blobs first, then one transaction. See the module notes."""
    submission = Submission(outgoing, now, idempotency, hook)
    [result] = await submit_many(db, blobs, [submission], max_age)
    if isinstance(result, BaseException):
        raise result
    return result


Answer = Queued | IdempotencyConflict | NotQueued | SendQuotaExceeded


async def submit_many(
    db: Database, blobs: BlobStore, batch: Sequence[Submission], max_age: timedelta
) -> list[Answer]:
    """Queue a batch with one blob write and one transaction (group commit).

    Each item's answer, in order: its :class:`Queued`, the conflict of its idempotency key,
    its hook's refusal, or its account's daily send limit.
    Raises when the batch as a whole fails (the caller may retry items one by one).

    On SQLite the transaction's statements run as one block on the connection's thread
    (``sqlite_driver.run_on_thread``: one thread hop instead of one per statement, about a
    tenth less CPU per API send in ``bench/outbound.py``), so a hook may await the connection
    and nothing else.
    """
    answers: dict[int, Answer] = {}
    keyed = [(i, s.idempotency) for i, s in enumerate(batch) if s.idempotency is not None]
    if keyed:
        async with db.read() as conn:
            for i, known in keyed:
                answer = await _known(conn, known)
                if answer is not None:
                    answers[i] = answer
    todo = [i for i in range(len(batch)) if i not in answers]
    staged: dict[int, _Staged] = {}
    items: dict[str, bytes] = {}
    for i in todo:
        sub = batch[i]
        queue_id = new_queue_id()
        raw_key = message_key(sub.now, queue_id)
        staged[i] = _Staged(sub, raw_key, queue_id)
        items[raw_key] = sub.outgoing.raw
        items.update((attachment_key(a.sha256), a.data) for a in sub.outgoing.parsed.attachments)
    if items:
        await blobs.put_many(list(items.items()))
    replays: list[str] = []

    async def record(conn: AsyncConnection) -> None:
        # store.quota's lock order: the accounts (sorted), their send counts (sorted), then
        # folders; so group commits on several nodes cannot deadlock.
        await lock_accounts(conn, {_account_of(staged[i]) for i in todo})
        counted: set[int] = set()
        for i in sorted(todo, key=lambda i: (_account_of(staged[i]), i)):
            refused = await _count_send(conn, staged[i].submission)
            if refused is None:
                counted.add(i)
            else:
                answers[i] = refused
                replays.append(staged[i].raw_key)
        plain = [i for i in todo if i in counted and _plain(staged[i].submission)]
        if plain:
            queued = await enqueue_many(conn, [staged[i] for i in plain], max_age)
            answers.update(zip(plain, queued, strict=True))
        for i in todo:
            item = staged[i]
            if i not in counted or _plain(item.submission):
                continue
            one = await _enqueue_one(conn, item, max_age)
            if not isinstance(one, Queued) or one.replayed:  # nothing sent: not counted
                await uncount_send(conn, _account_of(item), now=item.submission.now)
                replays.append(item.raw_key)
            answers[i] = one

    async with db.write() as conn:
        await run_on_thread(conn, record)
    if replays:
        await blobs.delete_many(replays)  # staged for nothing; attachments may be shared
    return [answers[i] for i in range(len(batch))]


def _account_of(item: _Staged) -> str:
    return item.submission.outgoing.inbox.account_id


def _plain(submission: Submission) -> bool:
    return submission.idempotency is None and submission.hook is None


async def _enqueue_one(conn: AsyncConnection, item: _Staged, max_age: timedelta) -> Answer:
    """Queue one message that has an idempotency key or a hook, in the caller's transaction."""
    key, hook = item.submission.idempotency, item.submission.hook
    if key is not None:
        replay = await _replay(conn, key, item.submission.now)
        if replay is not None:
            return replay
    if hook is not None and not await hook.claim(conn):
        await _release_key(conn, key)
        return NotQueued()
    [one] = await enqueue_many(conn, [item], max_age)
    if key is not None:
        await conn.execute(
            update(m.idempotency_keys)
            .where(
                m.idempotency_keys.c.account_id == key.account_id,
                m.idempotency_keys.c.key == key.key,
            )
            .values(message_id=one.message_id, thread_id=one.thread_id)
        )
    if hook is not None:
        await hook.queued(conn, one)
    return one


async def _release_key(conn: AsyncConnection, key: IdempotencyKey | None) -> None:
    """Let go of the key this request claimed (nothing was queued for it)."""
    if key is not None:
        await conn.execute(
            delete(m.idempotency_keys).where(
                m.idempotency_keys.c.account_id == key.account_id,
                m.idempotency_keys.c.key == key.key,
            )
        )


async def _count_send(conn: AsyncConnection, submission: Submission) -> SendQuotaExceeded | None:
    """Count the message against its account's daily send limit (``store.quota``); the
    refusal when the limit is reached."""
    account_id = submission.outgoing.inbox.account_id
    if await count_send(conn, account_id, now=submission.now):
        return None
    log.info("event=send_over_quota account_id=%s", account_id)
    return SendQuotaExceeded(next_day(submission.now))


async def _known(conn: AsyncConnection, key: IdempotencyKey) -> Queued | IdempotencyConflict | None:
    try:
        return await find_idempotent(conn, key)
    except IdempotencyConflict as conflict:
        return conflict


async def _replay(
    conn: AsyncConnection, key: IdempotencyKey, now: datetime
) -> Queued | IdempotencyConflict | None:
    """Claim ``key`` for this request (None), or the answer of the request that has it."""
    if await _claim_key(conn, key, now):
        return None
    try:
        found = await find_idempotent(conn, key)  # committed with its answer: the row exists
    except IdempotencyConflict as conflict:
        return conflict
    return found if found is not None else IdempotencyConflict(key.key)


async def enqueue_many(
    conn: AsyncConnection, staged: Sequence[_Staged], max_age: timedelta
) -> list[Queued]:
    """Store Sent copies and queue rows in the caller's transaction (blobs are staged)."""
    news = [
        NewMessage(
            inbox=s.submission.outgoing.inbox,
            parsed=s.submission.outgoing.parsed,
            raw_key=s.raw_key,
            size=len(s.submission.outgoing.raw),
            received_at=s.submission.now,
            attachment_keys=[
                attachment_key(a.sha256) for a in s.submission.outgoing.parsed.attachments
            ],
            direction="outbound",
            folder="Sent",
            envelope_from=s.submission.outgoing.envelope_from,
            envelope_to=tuple(s.submission.outgoing.recipients),
            seen=True,
            silent=True,  # message.sent is the transport's to say (module notes)
        )
        for s in staged
    ]
    stored = await insert_messages(conn, news)
    outbound_rows: list[dict[str, Any]] = []
    recipient_rows: list[dict[str, Any]] = []
    answers = []
    for s, row in zip(staged, stored, strict=True):
        out, now = s.submission.outgoing, s.submission.now
        if out.labels:
            await set_entry_flags(
                conn,
                folder_id=row.folder_id,
                uid=row.uid,
                flags=[SystemFlag.SEEN],
                keywords=list(out.labels),
            )
        outbound_id = new_id()
        outbound_rows.append(
            {
                "id": outbound_id,
                "account_id": out.inbox.account_id,
                "inbox_id": out.inbox.id,
                "message_id": row.id,
                "raw_key": s.raw_key,
                "envelope_from": out.envelope_from,
                "created_at": now,
                "expires_at": now + max_age,
            }
        )
        recipient_rows.extend(
            {
                "outbound_id": outbound_id,
                "recipient": rcpt,
                "domain": recipient_domain(rcpt),
                "status": RecipientStatus.QUEUED.value,
                "attempts": 0,
                "next_attempt_at": now,
                "last_reply": "",
                "updated_at": now,
            }
            for rcpt in dict.fromkeys(out.recipients)
        )
        assert row.thread_id is not None  # a message sent joins a thread
        answers.append(Queued(row.id, row.thread_id, outbound_id, s.queue_id))
    await conn.execute(m.outbound_messages.insert(), outbound_rows)
    await conn.execute(m.outbound_recipients.insert(), recipient_rows)
    return answers


@dataclass(slots=True)
class _Job:
    submission: Submission
    done: asyncio.Future[Queued]


class OutboxWriter:
    """Group commit for queueing: every message submitted while the previous batch commits
    goes into the next batch (one blob write, one transaction), as inbound delivery does.

    A failing batch is retried item by item, so one bad message fails alone.
    """

    def __init__(
        self, db: Database, blobs: BlobStore, *, max_age: timedelta, batch_size: int = 64
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._max_age = max_age
        self._batch_size = batch_size
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-writer")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        await self._queue.join()
        await stop_tasks(self._task)
        self._task = None

    async def submit(
        self,
        outgoing: Outgoing,
        *,
        now: datetime,
        idempotency: IdempotencyKey | None = None,
        hook: QueueHook | None = None,
    ) -> Queued:
        """Queue ``outgoing`` durably; raises :class:`IdempotencyConflict` or
        :class:`NotQueued`."""
        if self._task is None or self._task.done():
            raise RuntimeError("the outbox writer is not running")
        job = _Job(
            Submission(outgoing, now, idempotency, hook),
            asyncio.get_running_loop().create_future(),
        )
        self._queue.put_nowait(job)
        return await job.done

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            except Exception as error:
                if unavailable(error):  # each alone would fail too, one connect wait after another
                    log_failure(log, error, "event=outbox_write_failed size=%d", len(batch))
                    for job in batch:
                        if not job.done.done():
                            job.done.set_exception(error)
                    continue
                if len(batch) > 1:
                    log.warning("event=outbox_batch_failed size=%d: one by one", len(batch))
                for job in batch:
                    await self._write_alone(job)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[_Job]) -> None:
        answers = await submit_many(
            self._db, self._blobs, [j.submission for j in batch], self._max_age
        )
        for job, answer in zip(batch, answers, strict=True):
            if job.done.done():
                continue
            if isinstance(answer, Exception):
                job.done.set_exception(answer)
            else:
                job.done.set_result(answer)

    async def _write_alone(self, job: _Job) -> None:
        if job.done.done():
            return
        try:
            await self._write([job])
        except Exception as error:
            log_failure(log, error, "event=outbox_write_failed size=1")
            if not job.done.done():
                job.done.set_exception(error)
