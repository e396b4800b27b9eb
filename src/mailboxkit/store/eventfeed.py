"""Reading the event outbox in ``seq`` order without ever skipping an event that may still commit.

The webhook fan-out, live streams and waits all read events "after seq N". A reader that simply
took ``seq > N`` and moved N to the largest seq it saw would lose events on PostgreSQL: a
sequence hands out numbers when rows are inserted, but transactions commit in any order, so
seq 11 can be visible while seq 10 is still being committed (or will roll back).

Implementation notes:

- :class:`EventFeed` keeps a cursor and only moves it over a run of consecutive seqs. A missing
  seq (a *gap*) stops it until the gap is *settled*: on PostgreSQL, when every transaction that
  was in progress when the gap was first seen has ended (``pg_current_snapshot()``; RFC-free,
  PostgreSQL 13+) and at least ``GAP_GRACE`` seconds have passed (a transaction may hold a seq a
  moment before it has a transaction id), and the seq still is not there: it was rolled back.
  Then the cursor moves past it.
- On SQLite every write goes through one connection (``store/db.py``), so rows commit in seq
  order and a gap is a deleted row: settled at once. ``events`` is AUTOINCREMENT there, so a
  deleted seq is never handed out again.
- The cursor is the *watermark* a client resumes from (SSE ``Last-Event-ID``): every event at or
  below it has been returned or never will exist.
- Readers filter (account, inbox, type) only the rows they fetch; gaps are judged on the whole
  outbox, so another account's uncommitted event still holds the cursor (briefly).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, exists, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.events import Event, EventType

log = logging.getLogger(__name__)

GAP_GRACE = 0.5  # seconds; see the notes above
BATCH = 500


@dataclass(slots=True)
class _Gap:
    seq: int
    seen_at: float
    xmax: int | None  # PostgreSQL: the snapshot's xmax when the gap was first seen


async def head(conn: AsyncConnection) -> int:
    """The largest seq so far (0 for an empty outbox): where a reader "from now" starts."""
    return int(await conn.scalar(select(func.coalesce(func.max(m.events.c.seq), 0))) or 0)


def event_from_row(row: Any) -> Event | None:
    try:
        kind = EventType(row.type)
    except ValueError:
        log.warning("event=unknown_event_type type=%s seq=%s", row.type, row.seq)
        return None
    return Event(
        int(row.seq),
        row.id,
        kind,
        row.account_id,
        row.inbox_id,
        row.message_id,
        dict(row.payload),
        row.created_at,
    )


class EventFeed:
    """The events after ``cursor``, in seq order, gap-safe (see the notes above)."""

    def __init__(
        self,
        cursor: int,
        *,
        is_sqlite: bool,
        grace: float = GAP_GRACE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cursor = cursor
        self._is_sqlite = is_sqlite
        self._grace = grace
        self._monotonic = monotonic
        self._gap: _Gap | None = None

    @property
    def held(self) -> bool:
        """Whether the cursor waits on an unsettled gap: read again soon (``GAP_GRACE``)."""
        return self._gap is not None

    async def read(
        self,
        conn: AsyncConnection,
        where: ColumnElement[bool] | None = None,
        *,
        limit: int = BATCH,
    ) -> tuple[list[Event], bool]:
        """The next events matching ``where``, and whether more may be waiting already.

        Moves the cursor over every settled seq read, matching or not.
        """
        e = m.events.c
        seqs = list(
            (
                await conn.execute(
                    select(e.seq).where(e.seq > self.cursor).order_by(e.seq).limit(limit)
                )
            ).scalars()
        )
        horizon = await self._horizon(conn, [int(s) for s in seqs])
        if horizon == self.cursor:
            return [], False
        query = select(m.events).where(e.seq > self.cursor, e.seq <= horizon)
        if where is not None:
            query = query.where(where)
        rows = (await conn.execute(query.order_by(e.seq))).all()
        self.cursor = horizon
        events = [ev for ev in map(event_from_row, rows) if ev is not None]
        return events, len(seqs) == limit and horizon == seqs[-1]

    async def _horizon(self, conn: AsyncConnection, seqs: list[int]) -> int:
        horizon = self.cursor
        for seq in seqs:
            if seq != horizon + 1 and not await self._settled(conn, horizon + 1, seq - 1):
                break
            horizon = seq
        if self._gap is not None and self._gap.seq <= horizon:
            self._gap = None
        return horizon

    async def _settled(self, conn: AsyncConnection, seq: int, last: int) -> bool:
        """Whether the missing seqs ``seq``..``last`` never will be there."""
        if self._is_sqlite:
            return True
        now = self._monotonic()
        gap = self._gap
        if gap is None or gap.seq != seq:
            xmax = await conn.scalar(text("SELECT pg_snapshot_xmax(pg_current_snapshot())::text"))
            self._gap = _Gap(seq, now, int(xmax) if xmax is not None else None)
            return False
        if now - gap.seen_at < self._grace:
            return False
        xmin = await conn.scalar(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"))
        if gap.xmax is not None and (xmin is None or int(xmin) < gap.xmax):
            return False
        # Every transaction that could hold the seq has ended; is the row there after all?
        if await conn.scalar(select(exists().where(m.events.c.seq.between(seq, last)))):
            return False  # it committed: the next read takes it in order
        log.info("event=event_gap_skipped first=%d last=%d", seq, last)
        self._gap = None
        return True
