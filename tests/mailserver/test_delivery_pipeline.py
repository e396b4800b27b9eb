"""The inbound delivery pipeline: concurrent messages share transactions, and one that cannot be
stored fails alone while the others are stored (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from mailboxkit.mailserver.delivery import (
    DeliveryFailed,
    DeliveryPipeline,
    Inbound,
    Placement,
    new_queue_id,
    raw_key,
)
from mailboxkit.store.accounts import Inbox
from mailboxkit.store.db import Database
from mailboxkit.store.events import EventBus
from mailboxkit.store.listing import MessageFilter, list_messages
from mailboxkit.store.localblobs import LocalBlobStore
from mailboxkit.store.mime import parse_message

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _inbound(inbox: Inbox, n: int) -> Inbound:
    raw = f"From: s@sender.test\r\nSubject: m{n}\r\nMessage-ID: <m{n}@x>\r\n\r\nbody {n}\r\n"
    return Inbound(
        raw=raw.encode(),
        parsed=parse_message(raw.encode()),
        mail_from="s@sender.test",
        inboxes=[Placement(inbox, [inbox.address])],
        received_at=NOW,
        queue_id=new_queue_id(),
    )


async def test_concurrent_messages_are_stored_and_a_failing_one_fails_alone(
    db: Database, inbox: Inbox, tmp_path: Path
) -> None:
    blobs = LocalBlobStore(
        tmp_path / "blobs", signing_key=b"k" * 32, public_base_url="http://127.0.0.1/"
    )
    pipeline = DeliveryPipeline(db, blobs, EventBus(), batch_size=3)
    pipeline.start()
    messages = [_inbound(inbox, n) for n in range(40)]
    # A directory where message 17's raw file goes: its blob cannot be written (a real
    # filesystem error, as a full or broken disk would give).
    broken = messages[17]
    (tmp_path / "blobs" / raw_key(broken.received_at, broken.queue_id)).mkdir(parents=True)
    try:
        results = await asyncio.gather(
            *(pipeline.deliver(m) for m in messages), return_exceptions=True
        )
    finally:
        await pipeline.stop()
        await blobs.close()

    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [17] and isinstance(results[17], DeliveryFailed)
    async with db.read() as conn:
        page, _ = await list_messages(conn, inbox.id, MessageFilter(), limit=100)
    assert sorted(r.subject for r in page) == sorted(f"m{n}" for n in range(40) if n != 17)
    for n, message in enumerate(messages):
        if n != 17:
            key = raw_key(message.received_at, message.queue_id)
            assert (tmp_path / "blobs" / key).read_bytes() == message.raw
