"""Hot counters kept in memory and merged into the database in the background: the per-key
request limit and the per-account count of API requests.

Counting those in the database on every request would make every API call a write, which on
SQLite (one writer) caps the whole API at the speed of its commits. Here a request only touches
a dict; :meth:`Counters.flush`, run about once a second and before usage is read, adds what was
counted since into ``rate_limits`` and ``usage_counters`` in one transaction.

Implementation notes:

- Limits are the same fixed windows as ``store/ratelimit.py`` and share its table, so several
  processes (PostgreSQL) still share one limit: each process allows a hit when the window's
  total as of its last flush plus its own hits since stays within the limit. Between flushes a
  process does not see the others' hits, so a cluster of N processes may let through up to
  N - 1 flush intervals' worth of extra hits; for abuse control that is fine.
- A refused hit is counted like an allowed one (a client that keeps hammering stays refused
  until the window ends), as in ``store/ratelimit.py``.
- What a failed flush had taken is put back, so it is retried at the next one; windows that
  have ended are forgotten, so memory is bounded by the keys active in the current window, and
  their rows are deleted from the table about once a minute.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.db import upsert
from mailboxkit.store.ratelimit import Limit, Verdict
from mailboxkit.store.usage import day_of

PURGE_INTERVAL = 60.0
"""Seconds between deletions of every ended window (of every bucket) from ``rate_limits``."""

Window = tuple[str, int, int]
"""A bucket's window: (bucket, start, length in seconds)."""


class Counters:
    """One process's counts (see the notes above); :meth:`flush` writes them."""

    def __init__(self) -> None:
        self._pending: Counter[Window] = Counter()  # hits since the last flush began
        self._writing: Counter[Window] = Counter()  # hits a flush is writing right now
        # Each window's total in the database as the last flush found it.
        self._flushed: dict[Window, int] = {}
        self._requests: Counter[tuple[str, str]] = Counter()  # (account id, day) since the flush
        self._next_purge = 0.0

    def hit(self, bucket: str, limit: Limit, *, now: datetime) -> Verdict:
        """Count one hit on ``bucket``; whether it is within ``limit``."""
        if limit.hits == 0:
            return Verdict(True, 0, 0)
        t = now.timestamp()
        window = (bucket, limit.window_start(t), limit.window)
        self._pending[window] += 1
        hits = self._flushed.get(window, 0) + self._writing[window] + self._pending[window]
        if hits <= limit.hits:
            return Verdict(True, hits, 0)
        return Verdict(False, hits, limit.retry_after(t))

    def count_api_request(self, account_id: str, *, now: datetime) -> None:
        self._requests[(account_id, day_of(now))] += 1

    @property
    def dirty(self) -> bool:
        return bool(self._pending or self._requests)

    async def flush(self, conn: AsyncConnection, *, now: datetime) -> None:
        """Add the counts since the last flush to the database, in ``conn``'s transaction.

        What was taken is put back if writing fails here; if the caller's transaction fails
        after this returned, those counts are lost (a second's worth at most).
        """
        self._writing, self._pending = self._pending, Counter()
        requests, self._requests = self._requests, Counter()
        try:
            totals = await _write(conn, self._writing, requests)
            t = now.timestamp()
            if t >= self._next_purge:
                self._next_purge = t + PURGE_INTERVAL
                await conn.execute(delete(m.rate_limits).where(m.rate_limits.c.expires_at <= t))
        except BaseException:
            self._pending.update(self._writing)
            self._requests.update(requests)
            raise
        finally:
            self._writing = Counter()
        self._flushed = {w: n for w, n in self._flushed.items() if w[1] + w[2] > t}
        self._flushed.update(totals)


async def _write(
    conn: AsyncConnection, pending: Counter[Window], requests: Counter[tuple[str, str]]
) -> dict[Window, int]:
    """Add the counts; each window's total in the database afterwards."""
    totals = {}
    for (bucket, start, length), hits in sorted(pending.items()):
        statement = upsert(conn, m.rate_limits).values(
            bucket=bucket, window_start=start, hits=hits, expires_at=start + length
        )
        total = await conn.scalar(
            statement.on_conflict_do_update(
                index_elements=[m.rate_limits.c.bucket, m.rate_limits.c.window_start],
                set_={"hits": m.rate_limits.c.hits + hits},
            ).returning(m.rate_limits.c.hits)
        )
        totals[(bucket, start, length)] = int(total or 0)
    accounts = {account_id for account_id, _ in requests}
    if accounts:  # those deleted since are skipped (their rows are gone with them)
        found = await conn.scalars(select(m.accounts.c.id).where(m.accounts.c.id.in_(accounts)))
        accounts = set(found)
    for (account_id, day), count in sorted(requests.items()):
        if account_id not in accounts:
            continue
        statement = upsert(conn, m.usage_counters).values(
            account_id=account_id, day=day, api_requests=count
        )
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=[m.usage_counters.c.account_id, m.usage_counters.c.day],
                set_={"api_requests": m.usage_counters.c.api_requests + count},
            )
        )
    return totals
