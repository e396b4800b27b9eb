"""Retention of outbound content, one pass driven with an explicit cutoff, on SQLite and
PostgreSQL: done messages older than the cutoff let go of their raw copy (deleted once no
message uses it), the delivery log stays, and nothing still queued or recent is touched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from api.apiserver import FakeClock
from mailboxkit.store import deliveries, outbox
from mailboxkit.store import models as m
from mailboxkit.store.accounts import Inbox, create_account, create_inbox
from mailboxkit.store.blobs import BlobNotFound
from mailboxkit.store.db import Database
from mailboxkit.store.deliveries import Settlement
from mailboxkit.store.entries import SystemFlag
from mailboxkit.store.inboxes import unreferenced_blobs
from mailboxkit.store.localblobs import LocalBlobStore
from mailboxkit.store.mailboxes import FlagMode, expunge, update_flags
from mailboxkit.store.mime import parse_message
from mailboxkit.store.outbox import RecipientStatus
from mailboxkit.store.retention import purge_outbound


@dataclass
class Env:
    db: Database
    blobs: LocalBlobStore
    clock: FakeClock
    sender: Inbox


@pytest.fixture
async def env(database_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    db = Database.open(database_url)
    blobs = LocalBlobStore(tmp_path / "blobs", signing_key=b"k" * 32, public_base_url="http://x")
    clock = FakeClock()
    async with db.write() as conn:
        account = await create_account(conn, name="a", owner_email=None, now=clock.now())
        sender = await create_inbox(
            conn, account_id=account, address="bot@example.test", now=clock.now()
        )
    yield Env(db, blobs, clock, sender)
    await blobs.close()
    await db.close()


async def queue(env: Env, subject: str) -> outbox.Queued:
    raw = (
        f"From: bot@example.test\r\nTo: alice@remote.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@example.test>\r\n\r\nHi.\r\n"
    ).encode()
    return await outbox.submit(
        env.db,
        env.blobs,
        outbox.Outgoing(env.sender, raw, parse_message(raw), env.sender.address, ["a@r.test"]),
        now=env.clock.now(),
        max_age=timedelta(days=5),
    )


async def settle(env: Env, status: RecipientStatus, limit: int) -> None:
    """Claim ``limit`` due recipients (oldest first) and record ``status`` for them."""
    now = env.clock.now()
    async with env.db.write() as conn:
        claimed = await deliveries.claim(
            conn, now=now, lease_until=now + timedelta(minutes=15), limit=limit
        )
        retry = now + timedelta(days=10) if status is RecipientStatus.QUEUED else None
        items = [Settlement(c, status, "250 ok", retry) for c in claimed]
        await deliveries.settle(conn, items, now=now)


async def delete_sent_copy(env: Env, message_id: str) -> None:
    async with env.db.write() as conn:
        entry = (
            await conn.execute(
                select(m.entries.c.folder_id, m.entries.c.uid).where(
                    m.entries.c.message_id == message_id
                )
            )
        ).one()
        await update_flags(
            conn,
            folder_id=entry.folder_id,
            uids=[entry.uid],
            mode=FlagMode.ADD,
            flags=[SystemFlag.DELETED],
        )
        await expunge(conn, folder_id=entry.folder_id)


async def outbound(env: Env, queued: outbox.Queued) -> tuple[str, str, list[str]]:
    """(raw_key, purged?, recipient statuses) of a queued message."""
    assert queued.outbound_id is not None
    async with env.db.read() as conn:
        row = (
            await conn.execute(
                select(m.outbound_messages.c.raw_key, m.outbound_messages.c.purged_at).where(
                    m.outbound_messages.c.id == queued.outbound_id
                )
            )
        ).one()
        log = await deliveries.pending(conn, queued.outbound_id)
    purged = "purged" if row.purged_at is not None else "kept"
    return row.raw_key, purged, [status for _, status, _ in log]


async def test_a_pass_lets_go_of_done_messages_older_than_the_cutoff(env: Env) -> None:
    kept_copy = await queue(env, "sent-copy-kept")
    gone_copy = await queue(env, "sent-copy-deleted")
    await settle(env, RecipientStatus.SENT, limit=2)
    env.clock.advance(86400)
    retrying = await queue(env, "still-queued")
    await settle(env, RecipientStatus.QUEUED, limit=1)
    env.clock.advance(86400)
    recent = await queue(env, "recent")
    await settle(env, RecipientStatus.SENT, limit=1)
    async with env.db.read() as conn:
        rows = await conn.execute(select(m.outbound_messages.c.id, m.outbound_messages.c.raw_key))
        keys = {row.id: row.raw_key for row in rows}
    await delete_sent_copy(env, gone_copy.message_id)
    assert kept_copy.outbound_id and gone_copy.outbound_id
    async with env.db.read() as conn:  # no message uses it, but the queue still holds it
        assert await unreferenced_blobs(conn, [keys[gone_copy.outbound_id]]) == []

    # Cutoff: between the first two and the recent one; the queued one is not done.
    cutoff = env.clock.now() - timedelta(hours=12)
    purged = await purge_outbound(env.db, env.blobs, before=cutoff, now=env.clock.now())

    assert purged == 2
    assert await outbound(env, kept_copy) == ("", "purged", ["sent"])
    assert await outbound(env, gone_copy) == ("", "purged", ["sent"])
    assert await outbound(env, retrying) == (keys[retrying.outbound_id], "kept", ["queued"])
    assert await outbound(env, recent) == (keys[recent.outbound_id], "kept", ["sent"])
    # The Sent copy still uses its blob; the other one's blob is gone.
    assert await env.blobs.get(keys[kept_copy.outbound_id])
    with pytest.raises(BlobNotFound):
        await env.blobs.get(keys[gone_copy.outbound_id])
    assert await env.blobs.get(keys[retrying.outbound_id])

    # A second pass finds nothing more; a later one takes the recent message.
    assert await purge_outbound(env.db, env.blobs, before=cutoff, now=env.clock.now()) == 0
    later = env.clock.now() + timedelta(days=1)
    assert await purge_outbound(env.db, env.blobs, before=later, now=later) == 1
    assert await outbound(env, recent) == ("", "purged", ["sent"])


async def test_a_pass_works_in_batches(env: Env) -> None:
    queued = [await queue(env, f"m{i}") for i in range(5)]
    await settle(env, RecipientStatus.SENT, limit=5)
    later = env.clock.now() + timedelta(days=31)
    assert await purge_outbound(env.db, env.blobs, before=later, now=later, batch=2) == 5
    for q in queued:
        assert (await outbound(env, q))[1] == "purged"
