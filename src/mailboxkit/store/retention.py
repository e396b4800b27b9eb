"""Retention of outbound content: the queue lets go of a message once it is done with it.

Implementation notes:

- A queued message is *done* when none of its recipients is ``queued`` or ``sending``; it is
  *due* when, besides, the last change to any of its recipients is older than the cutoff
  (``MAILBOXKIT_OUTBOUND_RETENTION_DAYS``). Provider feedback (a late bounce) counts as a
  change, so the cutoff runs from the final word.
- A pass (:func:`purge_outbound`) takes due messages in batches. In one transaction per batch
  it marks them (``purged_at``, ``raw_key`` emptied; PostgreSQL takes them ``FOR UPDATE SKIP
  LOCKED`` so two processes never take one twice) and finds which of their raw blobs no
  message refers to. After the commit those blobs are deleted. The recipients' rows stay: they
  are the delivery log.
- The raw blob is shared: the Sent copy and every local recipient's copy refer to it (see
  ``store/outbox``). Those copies belong to their inboxes, so the blob is deleted only when
  none is left; while the Sent copy exists, purging only ends the queue's hold on it.
  Attachment blobs belong to the messages that list them and are not touched.
- A crash between the commit and the deletion leaves an unreferenced blob, never a reference
  to a missing one.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import exists, or_, select, update

from mailboxkit.store import models as m
from mailboxkit.store.blobs import BlobStore
from mailboxkit.store.clock import Clock
from mailboxkit.store.db import Database
from mailboxkit.store.outbox import RecipientStatus
from mailboxkit.store.periodic import Periodic
from mailboxkit.store.sweep import unreferenced_blobs

log = logging.getLogger(__name__)

BATCH = 200
UNFINISHED = (RecipientStatus.QUEUED.value, RecipientStatus.SENDING.value)


async def purge_outbound(
    db: Database, blobs: BlobStore, *, before: datetime, now: datetime, batch: int = BATCH
) -> int:
    """One pass: let go of every message done before ``before``; how many were purged."""
    total = 0
    while True:
        purged, orphans = await _purge_batch(db, before=before, now=now, batch=batch)
        if orphans:
            await blobs.delete_many(orphans)
        total += purged
        if purged:
            log.info("event=outbound_purged messages=%d blobs_deleted=%d", purged, len(orphans))
        if purged < batch:
            return total


async def _purge_batch(
    db: Database, *, before: datetime, now: datetime, batch: int
) -> tuple[int, list[str]]:
    o, r = m.outbound_messages.c, m.outbound_recipients.c
    pending_or_recent = exists().where(
        r.outbound_id == o.id, or_(r.status.in_(UNFINISHED), r.updated_at >= before)
    )
    query = (
        select(o.id, o.raw_key)
        .where(o.purged_at.is_(None), o.created_at < before, ~pending_or_recent)
        .order_by(o.created_at)
        .limit(batch)
    )
    async with db.write() as conn:
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(of=m.outbound_messages, skip_locked=True)
        rows = (await conn.execute(query)).all()
        if not rows:
            return 0, []
        await conn.execute(
            update(m.outbound_messages)
            .where(o.id.in_([row.id for row in rows]))
            .values(purged_at=now, raw_key="")
        )
        orphans = await unreferenced_blobs(conn, [row.raw_key for row in rows if row.raw_key])
    return len(rows), orphans


class RetentionJob:
    """Runs :func:`purge_outbound` every ``interval`` seconds with the cutoff ``days`` ago."""

    def __init__(
        self, db: Database, blobs: BlobStore, clock: Clock, *, days: int, interval: float
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._clock = clock
        self._age = timedelta(days=days)
        self._periodic = Periodic("outbound_retention", interval, self.run_once, first_now=True)

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def run_once(self) -> int:
        now = self._clock.now()
        return await purge_outbound(self._db, self._blobs, before=now - self._age, now=now)
