"""In-memory key limits and API request counts, flushed to SQLite and PostgreSQL: limits shared
by processes through the table, usage summed (deleted accounts skipped), old windows gone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from mailboxkit.store import models as m
from mailboxkit.store.accounts import create_account
from mailboxkit.store.counters import Counters
from mailboxkit.store.db import Database
from mailboxkit.store.ratelimit import Limit
from mailboxkit.store.usage import usage

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # the start of a minute window
PER_MINUTE = Limit(5, 60)


async def flush(db: Database, counters: Counters, now: datetime = T0) -> None:
    async with db.write() as conn:
        await counters.flush(conn, now=now)


async def test_processes_share_a_limit_through_the_table(db: Database) -> None:
    a, b = Counters(), Counters()
    assert [a.hit("key:k", PER_MINUTE, now=T0).allowed for _ in range(3)] == [True] * 3
    await flush(db, a)
    await flush(db, b)  # b learns nothing yet: it has no window of its own for the key
    assert b.hit("key:k", PER_MINUTE, now=T0).hits == 1  # before b's next flush
    await flush(db, b)
    verdicts = [b.hit("key:k", PER_MINUTE, now=T0 + timedelta(seconds=15)) for _ in range(2)]
    assert [(v.allowed, v.hits) for v in verdicts] == [(True, 5), (False, 6)]
    assert verdicts[-1].retry_after == 45
    await flush(db, b)
    # a sees b's hits at its next flush, so it lets through at most one interval's worth more
    assert a.hit("key:k", PER_MINUTE, now=T0 + timedelta(seconds=20)).allowed
    await flush(db, a)
    assert not a.hit("key:k", PER_MINUTE, now=T0 + timedelta(seconds=21)).allowed
    assert a.hit("key:k", PER_MINUTE, now=T0 + timedelta(seconds=60)).allowed  # a new window


async def test_api_requests_add_up_in_usage(db: Database) -> None:
    async with db.write() as conn:
        account = await create_account(conn, name="n", owner_email=None, now=T0)
    a, b = Counters(), Counters()
    for counters, n in ((a, 3), (b, 2)):
        for _ in range(n):
            counters.count_api_request(account, now=T0)
    a.count_api_request(account, now=T0 + timedelta(days=1))
    assert a.dirty
    await flush(db, a)
    await flush(db, b)
    await flush(db, a)  # nothing new: adds nothing
    assert not a.dirty
    async with db.read() as conn:
        today = await usage(conn, account, since=T0, until=T0 + timedelta(hours=1))
        both = await usage(conn, account, since=T0, until=T0 + timedelta(days=2))
    assert (today.api_requests, both.api_requests) == (5, 6)


async def test_requests_of_a_deleted_account_do_not_block_the_others(db: Database) -> None:
    async with db.write() as conn:
        account = await create_account(conn, name="n", owner_email=None, now=T0)
        gone = await create_account(conn, name="gone", owner_email=None, now=T0)
    counters = Counters()
    counters.count_api_request(account, now=T0)
    counters.count_api_request(gone, now=T0)
    async with db.write() as conn:
        await conn.execute(delete(m.accounts).where(m.accounts.c.id == gone))
    await flush(db, counters)
    assert not counters.dirty
    async with db.read() as conn:
        counted = await usage(conn, account, since=T0, until=T0 + timedelta(hours=1))
    assert counted.api_requests == 1


async def test_ended_windows_leave_the_table_and_memory(db: Database) -> None:
    counters = Counters()
    counters.hit("key:old", PER_MINUTE, now=T0)
    await flush(db, counters)
    later = T0 + timedelta(minutes=5)
    counters.hit("key:new", PER_MINUTE, now=later)
    await flush(db, counters, now=later)
    async with db.read() as conn:
        buckets = (await conn.scalars(select(m.rate_limits.c.bucket))).all()
    assert buckets == ["key:new"]
    assert counters.hit("key:old", PER_MINUTE, now=later).hits == 1
