"""The draft scheduler: sends scheduled drafts when their ``send_at`` comes.

Implementation notes:

- Loop: claim the due drafts no other process holds (``store.drafts.claim_due``: a lease of
  ``lease`` seconds, ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL), send each as the API's
  ``…/send`` does, then wait until woken (a draft was scheduled here: :meth:`wake`), the next
  ``send_at`` comes, or ``poll_interval`` passed (drafts scheduled by other processes).
- Exactly once: the send's queue hook takes the draft only if it is still scheduled, due, and
  unchanged since it was claimed (``store.drafts.SendDraft``), in the transaction that queues
  the message. Two processes that both got it (a lease that ran out) queue it once; an update
  or a cancellation in between wins over the send.
- A draft that cannot be sent (no valid recipient, a suppressed one, an attachment gone) is
  marked ``failed`` with the reason; one that fails unexpectedly is logged and tried again when
  its lease ends. At start on SQLite (this process is the only one) leases are let go, so a
  draft due during a restart is sent at once.
- The clock is the injected one: tests move it, then wait on :meth:`look_now`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from mailboxkit.api.draftmail import send_draft
from mailboxkit.api.errors import ApiError
from mailboxkit.api.send import SendContext
from mailboxkit.store import drafts as store
from mailboxkit.store import outbox
from mailboxkit.store.accounts import Scope
from mailboxkit.store.blobs import BlobStore
from mailboxkit.store.clock import Clock
from mailboxkit.store.db import Database, log_failure
from mailboxkit.store.drafts import DraftRecord
from mailboxkit.store.inboxes import get_inbox
from mailboxkit.store.tasks import stop_tasks

log = logging.getLogger(__name__)

MIN_WAIT = 0.05  # seconds: never spin on a draft another process holds


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    poll_interval: float = 5.0
    lease: float = 60.0
    batch_size: int = 50
    exclusive: bool = False  # SQLite: the only scheduler, leases are let go at start


class DraftScheduler:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        clock: Clock,
        send: SendContext,
        config: SchedulerConfig,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._clock = clock
        self._send = send
        self._config = config
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = 0  # looks at the due drafts begun since start
        self._passes = 0  # and ended
        self._progress = asyncio.Condition()

    def wake(self) -> None:
        """Look for due drafts now (one was scheduled, or a test moved the clock)."""
        self._wakeup.set()

    async def look_now(self) -> None:
        """Wake the scheduler and wait until a look at the due drafts that began after this
        call has ended (tests and tools wait on this, never on a clock)."""
        target = self._started + 1
        self.wake()
        async with self._progress:
            await self._progress.wait_for(lambda: self._passes >= target)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="draft-scheduler")

    async def stop(self) -> None:
        await stop_tasks(self._task)
        self._task = None

    async def _run(self) -> None:
        if self._config.exclusive:
            async with self._db.write() as conn:
                released = await store.release_claims(conn)
            if released:
                log.info("event=draft_claims_released count=%d", released)
        while True:
            self._wakeup.clear()
            self._started += 1
            try:
                claimed = await self._claim()
            except Exception as error:
                log_failure(log, error, "event=draft_claim_failed")
                claimed = []
            for draft in claimed:
                await self._send_one(draft)
            async with self._progress:
                self._passes = self._started
                self._progress.notify_all()
            if len(claimed) >= self._config.batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(await self._wait_time()):
                    await self._wakeup.wait()

    async def _claim(self) -> list[DraftRecord]:
        now = self._clock.now()
        async with self._db.write() as conn:
            return await store.claim_due(
                conn,
                now=now,
                until=now + timedelta(seconds=self._config.lease),
                limit=self._config.batch_size,
            )

    async def _wait_time(self) -> float:
        try:
            async with self._db.read() as conn:
                due = await store.next_send_at(conn)
        except Exception as error:
            log_failure(log, error, "event=draft_next_due_failed")
            return self._config.poll_interval
        if due is None:
            return self._config.poll_interval
        until = (due - self._clock.now()).total_seconds()
        return min(self._config.poll_interval, max(MIN_WAIT, until))

    async def _send_one(self, draft: DraftRecord) -> None:
        try:
            async with self._db.read() as conn:
                inbox = await get_inbox(conn, Scope(draft.account_id), draft.inbox_id)
            if inbox is None:
                return  # deleted meanwhile: its drafts went with it
            queued = await send_draft(
                self._db, self._blobs, self._clock, self._send, inbox, draft, due=True
            )
        except outbox.NotQueued:
            log.info("event=draft_send_skipped draft_id=%s reason=changed", draft.id)
        except ApiError as error:
            await self._fail(draft, error)
        except Exception as error:
            log_failure(log, error, "event=draft_send_error draft_id=%s", draft.id)
        else:
            log.info(
                "event=draft_scheduled_sent draft_id=%s message_id=%s",
                draft.id,
                queued.message_id,
            )

    async def _fail(self, draft: DraftRecord, error: ApiError) -> None:
        try:
            async with self._db.write() as conn:
                await store.fail_draft(conn, draft, error=error.message, now=self._clock.now())
        except Exception as exc:
            log_failure(log, exc, "event=draft_fail_record_failed draft_id=%s", draft.id)
            return
        log.info("event=draft_send_failed draft_id=%s code=%s", draft.id, error.code)
