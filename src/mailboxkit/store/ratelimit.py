"""Rate limits as fixed-window counters in the database, so every node of a cluster shares them.

Implementation notes:

- A limit is ``limit`` hits per ``window`` seconds for one *bucket* (a string naming what is
  limited: ``key:<id>``, ``register-ip:<address>``). Windows are aligned to multiples of
  ``window`` seconds since the Unix epoch; a burst of up to twice the limit can straddle a
  boundary, which is the usual price of fixed windows and fine for abuse control.
- A hit is one upsert in the caller's transaction (``INSERT … ON CONFLICT DO UPDATE … RETURNING``
  on both SQLite and PostgreSQL), so concurrent hits on PostgreSQL serialize on the row.
- Every hit is counted, refused ones too: a client that keeps hammering stays refused until the
  window ends, and ``retry_after`` says when that is.
- ``peek`` reads a bucket without counting, for limits on failures only (``auth-fail:<address>``:
  every request from a blocked address is refused, but only failures count).
- Expired rows of the bucket are deleted on each hit, and expired rows of any bucket once a
  ``PURGE_EVERY``-th hit, so the table stays small without a background task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.db import upsert

PURGE_EVERY = 100
"""Purge every expired row (of every bucket) when a hit count is a multiple of this."""


@dataclass(frozen=True, slots=True)
class Limit:
    """``hits`` allowed per ``window`` seconds; ``hits == 0`` means unlimited."""

    hits: int
    window: int

    def __post_init__(self) -> None:
        if self.hits < 0 or self.window <= 0:
            raise ValueError(f"invalid rate limit {self.hits}/{self.window}s")

    def window_start(self, t: float) -> int:
        """The start of the window that holds ``t`` (seconds since the Unix epoch)."""
        return int(t // self.window) * self.window

    def retry_after(self, t: float) -> int:
        """Whole seconds from ``t`` until its window ends (at least 1)."""
        return max(1, math.ceil(self.window_start(t) + self.window - t))


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    hits: int
    retry_after: int  # whole seconds until the window ends (0 when allowed)


async def hit(conn: AsyncConnection, bucket: str, limit: Limit, *, now: datetime) -> Verdict:
    """Count one hit on ``bucket``; whether it is within ``limit``."""
    if limit.hits == 0:
        return Verdict(True, 0, 0)
    t = now.timestamp()
    start = limit.window_start(t)
    counted = (
        upsert(conn, m.rate_limits)
        .values(bucket=bucket, window_start=start, hits=1, expires_at=start + limit.window)
        .on_conflict_do_update(
            index_elements=[m.rate_limits.c.bucket, m.rate_limits.c.window_start],
            set_={"hits": m.rate_limits.c.hits + 1},
        )
        .returning(m.rate_limits.c.hits)
    )
    hits = int(await conn.scalar(counted) or 0)
    await conn.execute(
        delete(m.rate_limits).where(
            m.rate_limits.c.bucket == bucket, m.rate_limits.c.window_start < start
        )
    )
    if hits % PURGE_EVERY == 0:
        await conn.execute(delete(m.rate_limits).where(m.rate_limits.c.expires_at <= int(t)))
    if hits <= limit.hits:
        return Verdict(True, hits, 0)
    return Verdict(False, hits, limit.retry_after(t))


async def peek(conn: AsyncConnection, bucket: str, limit: Limit, *, now: datetime) -> Verdict:
    """Whether one more hit on ``bucket`` would be within ``limit``, without counting one."""
    if limit.hits == 0:
        return Verdict(True, 0, 0)
    t = now.timestamp()
    found = await conn.scalar(
        select(m.rate_limits.c.hits).where(
            m.rate_limits.c.bucket == bucket, m.rate_limits.c.window_start == limit.window_start(t)
        )
    )
    hits = int(found or 0)
    if hits < limit.hits:
        return Verdict(True, hits, 0)
    return Verdict(False, hits, limit.retry_after(t))
