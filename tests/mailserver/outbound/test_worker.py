"""The outbound queue and its worker over SQLite and PostgreSQL, with a fake transport and a
clock the tests move: acceptance, retries with backoff, bounces with a DSN, expiry, local
delivery, leases and the claim fence."""

from __future__ import annotations

import asyncio
import email
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from api.apiserver import FakeClock
from mailboxkit.mailserver.outbound.retry import RetryPolicy
from mailboxkit.mailserver.outbound.transport import (
    Accepted,
    FakeTransport,
    Parcel,
    PermanentFailure,
    Result,
    TemporaryFailure,
)
from mailboxkit.mailserver.outbound.worker import QueueWorker, WorkerConfig
from mailboxkit.store import deliveries, outbox
from mailboxkit.store import models as m
from mailboxkit.store.accounts import Inbox, create_account, create_inbox, ensure_domain
from mailboxkit.store.db import Database
from mailboxkit.store.events import Event, EventBus, EventType, Subscription
from mailboxkit.store.localblobs import LocalBlobStore
from mailboxkit.store.mime import parse_message


@dataclass
class Env:
    db: Database
    blobs: LocalBlobStore
    clock: FakeClock
    bus: EventBus
    sender: Inbox
    other: Inbox


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
        other = await create_inbox(
            conn, account_id=account, address="peer@example.test", now=clock.now()
        )
        await ensure_domain(conn, "example.test", now=clock.now())
    yield Env(db, blobs, clock, EventBus(), sender, other)
    await blobs.close()
    await db.close()


def raw_message(to: str, subject: str = "Hello") -> bytes:
    return (
        f"From: bot@example.test\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.test>\r\n"
        "Date: Sat, 28 Nov 2026 09:00:00 +0000\r\n\r\nHi.\r\n"
    ).encode()


async def queue(env: Env, *recipients: str, max_age: float = 5 * 86400) -> outbox.Queued:
    raw = raw_message(", ".join(recipients))
    return await outbox.submit(
        env.db,
        env.blobs,
        outbox.Outgoing(env.sender, raw, parse_message(raw), env.sender.address, recipients),
        now=env.clock.now(),
        max_age=timedelta(seconds=max_age),
    )


def worker(env: Env, transport: FakeTransport, **config: object) -> QueueWorker:
    settings = WorkerConfig(hostname="mx.example.test", **config)  # type: ignore[arg-type]
    running = QueueWorker(env.db, env.blobs, env.bus, env.clock, transport, settings)
    running.start()
    return running


async def next_event(sub: Subscription, kind: EventType) -> Event:
    while True:
        event = await asyncio.wait_for(sub.get(), 20)
        if event.type is kind:
            return event


async def states(env: Env, queued: outbox.Queued) -> list[tuple[str, str, str]]:
    assert queued.outbound_id is not None
    async with env.db.read() as conn:
        return await deliveries.pending(conn, queued.outbound_id)


async def test_accepted_message_is_sent_and_announced_once(env: Env) -> None:
    fake = FakeTransport()
    with env.bus.subscribe() as sub:
        queued = await queue(env, "alice@remote.test", "bob@remote.test")
        running = worker(env, fake)
        try:
            event = await next_event(sub, EventType.MESSAGE_SENT)
        finally:
            await running.stop()
    assert [p.recipients for p in fake.parcels] == [("alice@remote.test", "bob@remote.test")]
    assert fake.parcels[0].mail_from == "bot@example.test"
    assert event.message_id == queued.message_id
    assert event.payload["data"]["recipients"] == ["alice@remote.test", "bob@remote.test"]
    assert event.payload["data"]["thread_id"] == queued.thread_id
    assert [s for _, s, _ in await states(env, queued)] == ["sent", "sent"]
    async with env.db.read() as conn:
        kinds = (await conn.scalars(select(m.events.c.type))).all()
        sent = (
            await conn.execute(
                select(m.entries.c.seen, m.folders.c.name, m.messages.c.direction)
                .join(m.folders, m.folders.c.id == m.entries.c.folder_id)
                .join(m.messages, m.messages.c.id == m.entries.c.message_id)
                .where(m.messages.c.id == queued.message_id)
            )
        ).one()
    assert list(kinds) == ["message.sent"]  # none when queued: only on acceptance
    assert tuple(sent) == (True, "Sent", "outbound")


async def test_temporary_failure_is_retried_after_the_backoff(env: Env) -> None:
    answers: list[Result] = [TemporaryFailure("451 4.3.0 later"), Accepted("250 ok")]
    fake = FakeTransport(script=lambda _p: answers.pop(0))
    queued = await queue(env, "alice@remote.test")
    start = env.clock.now()
    running = worker(env, fake, policy=RetryPolicy(first_delay=60, jitter=0.2))
    try:
        await asyncio.wait_for(running.settled(1), 20)
        [(_, status, reply)] = await states(env, queued)
        assert (status, reply) == ("queued", "451 4.3.0 later")
        async with env.db.read() as conn:
            due = await deliveries.next_due(conn)
        assert due is not None
        assert timedelta(seconds=48) <= due - start <= timedelta(seconds=72)
        env.clock.advance(75)
        running.wake()
        await asyncio.wait_for(running.settled(2), 20)
    finally:
        await running.stop()
    assert len(fake.parcels) == 2
    assert [s for _, s, _ in await states(env, queued)] == ["sent"]


async def test_permanent_failure_files_one_dsn_and_a_bounced_event(env: Env) -> None:
    def script(parcel: Parcel) -> dict[str, Result]:
        return {
            "alice@remote.test": Accepted("250 ok", "mx.remote.test"),
            "nobody@remote.test": PermanentFailure("550 5.1.1 No such user", "mx.remote.test"),
        }

    fake = FakeTransport(script=script)
    with env.bus.subscribe() as sub:
        queued = await queue(env, "alice@remote.test", "nobody@remote.test")
        running = worker(env, fake)
        try:
            bounced = await next_event(sub, EventType.MESSAGE_BOUNCED)
        finally:
            await running.stop()
    data = bounced.payload["data"]
    assert bounced.message_id == queued.message_id
    assert data["recipients"] == ["nobody@remote.test"]
    assert data["bounces"] == [
        {"email": "nobody@remote.test", "status": "5.1.1", "diagnostic": "550 5.1.1 No such user"}
    ]
    async with env.db.read() as conn:
        report = (
            await conn.execute(
                select(m.messages.c.raw_key, m.messages.c.thread_id, m.folders.c.name)
                .join(m.entries, m.entries.c.message_id == m.messages.c.id)
                .join(m.folders, m.folders.c.id == m.entries.c.folder_id)
                .where(m.messages.c.id == data["report_message_id"])
            )
        ).one()
        sent_events = (
            await conn.scalars(select(m.events.c.payload).where(m.events.c.type == "message.sent"))
        ).all()
    assert report.name == "INBOX"
    assert report.thread_id == queued.thread_id  # the DSN joins the original's thread
    assert [e["data"]["recipients"] for e in sent_events] == [["alice@remote.test"]]
    dsn = email.message_from_bytes(await env.blobs.get(report.raw_key))
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["Auto-Submitted"] == "auto-replied"
    parts = [p.get_content_type() for p in dsn.get_payload()]
    assert parts == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    status = dsn.get_payload(1).as_string()
    assert "Final-Recipient: rfc822; nobody@remote.test" in status
    assert "Status: 5.1.1" in status
    assert "Remote-MTA: dns; mx.remote.test" in status
    assert "Diagnostic-Code: smtp; 550 5.1.1 No such user" in status
    assert "alice@remote.test" not in status
    assert [s for _, s, _ in await states(env, queued)] == ["sent", "bounced"]


async def test_a_message_that_stays_undeliverable_expires_with_4_4_7(env: Env) -> None:
    fake = FakeTransport(script=lambda _p: TemporaryFailure("421 4.4.2 busy"))
    with env.bus.subscribe() as sub:
        queued = await queue(env, "alice@remote.test", max_age=600)
        running = worker(env, fake, policy=RetryPolicy(first_delay=60, max_delay=60, jitter=0))
        try:
            settled = 0
            while True:
                settled += 1
                await asyncio.wait_for(running.settled(settled), 20)
                [(_, status, _)] = await states(env, queued)
                if status == "bounced":
                    break
                env.clock.advance(60)
                running.wake()
            bounced = await next_event(sub, EventType.MESSAGE_BOUNCED)
        finally:
            await running.stop()
    # Attempts at 0, 60, ... 600 s: the last one at the expiry, then the bounce.
    assert len(fake.parcels) == 11
    [failure] = bounced.payload["data"]["bounces"]
    assert failure["status"] == "4.4.7"
    assert "421 4.4.2 busy" in failure["diagnostic"]


async def test_recipients_in_our_domains_are_delivered_locally(env: Env) -> None:
    fake = FakeTransport()
    with env.bus.subscribe() as sub:
        queued = await queue(env, "peer+tag@example.test", "ghost@example.test")
        running = worker(env, fake)
        try:
            received = await next_event(sub, EventType.MESSAGE_RECEIVED)
            bounced = await next_event(sub, EventType.MESSAGE_BOUNCED)
        finally:
            await running.stop()
    assert fake.parcels == []
    assert received.inbox_id == env.other.id
    assert bounced.payload["data"]["bounces"][0]["status"] == "5.1.1"
    async with env.db.read() as conn:
        rows = (
            await conn.execute(
                select(m.messages.c.inbox_id, m.messages.c.raw_key, m.messages.c.direction)
                .where(m.messages.c.subject == "Hello")
                .order_by(m.messages.c.direction)
            )
        ).all()
    assert [(r.inbox_id, r.direction) for r in rows] == [
        (env.other.id, "inbound"),
        (env.sender.id, "outbound"),
    ]
    assert rows[0].raw_key == rows[1].raw_key  # one blob, shared
    assert [s for _, s, _ in await states(env, queued)] == ["sent", "bounced"]


async def suppressed(env: Env) -> list[tuple[str, str, str | None]]:
    async with env.db.read() as conn:
        rows = await conn.execute(
            select(m.suppressions.c.address, m.suppressions.c.reason, m.suppressions.c.message_id)
            .where(m.suppressions.c.account_id == env.sender.account_id)
            .order_by(m.suppressions.c.address)
        )
        return [tuple(r) for r in rows]


async def test_a_bad_address_reply_from_the_remote_suppresses_it(env: Env) -> None:
    def script(parcel: Parcel) -> dict[str, Result]:
        return {
            "gone@remote.test": PermanentFailure("550 5.1.1 No such user", "mx.remote.test"),
            "Moved@remote.test": PermanentFailure("551 5.1.6 User has moved", "mx.remote.test"),
            "spam@remote.test": PermanentFailure("550 5.7.1 Looks like spam", "mx.remote.test"),
            "sender@remote.test": PermanentFailure("553 5.1.7 Bad sender", "mx.remote.test"),
            "ok@remote.test": Accepted("250 ok", "mx.remote.test", provider_id="Q123"),
        }

    fake = FakeTransport(script=script)
    rcpts = ("gone@remote.test", "Moved@remote.test", "spam@remote.test", "sender@remote.test")
    with env.bus.subscribe() as sub:
        queued = await queue(env, *rcpts, "ok@remote.test", "ghost@example.test")
        running = worker(env, fake)
        try:
            await next_event(sub, EventType.MESSAGE_BOUNCED)
            await next_event(sub, EventType.MESSAGE_BOUNCED)  # the remote's, and ours (local)
        finally:
            await running.stop()
    # Only the remote's verdicts on the recipient's address; never the local 5.1.1 of ghost@
    # (an inbox may be made there later), a policy refusal, or a complaint about our sender.
    assert await suppressed(env) == [
        ("gone@remote.test", "bounce", queued.message_id),
        ("moved@remote.test", "bounce", queued.message_id),
    ]
    async with env.db.read() as conn:
        ids = (
            await conn.execute(
                select(
                    m.outbound_recipients.c.recipient, m.outbound_recipients.c.provider_message_id
                ).where(m.outbound_recipients.c.status == "sent")
            )
        ).all()
    assert [tuple(r) for r in ids] == [("ok@remote.test", "Q123")]


async def test_a_claim_whose_worker_died_is_delivered_after_its_lease(env: Env) -> None:
    queued = await queue(env, "alice@remote.test")
    now = env.clock.now()
    async with env.db.write() as conn:  # a worker that claims, then vanishes
        [gone] = await deliveries.claim(
            conn, now=now, lease_until=now + timedelta(seconds=900), limit=5
        )
    fake = FakeTransport()
    running = worker(env, fake, lease=900)
    try:
        env.clock.advance(901)
        running.wake()
        await asyncio.wait_for(running.settled(1), 20)
    finally:
        await running.stop()
    assert len(fake.parcels) == 1
    assert [s for _, s, _ in await states(env, queued)] == ["sent"]
    # The dead worker's late result is fenced off: its attempt number is no longer current.
    async with env.db.write() as conn:
        late = await deliveries.settle(
            conn, [deliveries.Settlement(gone, outbox.RecipientStatus.BOUNCED, "late")], now=now
        )
    assert late.settled == set()
    assert [s for _, s, _ in await states(env, queued)] == ["sent"]


async def test_the_only_worker_releases_claims_left_by_a_killed_run(env: Env) -> None:
    await queue(env, "alice@remote.test")
    now = env.clock.now()
    async with env.db.write() as conn:
        await deliveries.claim(conn, now=now, lease_until=now + timedelta(seconds=900), limit=5)
    fake = FakeTransport()
    running = worker(env, fake, exclusive=True)
    try:
        await asyncio.wait_for(running.settled(1), 20)
    finally:
        await running.stop()
    assert len(fake.parcels) == 1


async def test_concurrent_claims_never_take_the_same_recipient(env: Env) -> None:
    for n in range(6):
        await queue(env, f"r{n}@remote.test")
    now = env.clock.now()
    lease = now + timedelta(seconds=60)
    if env.db.is_sqlite:  # one writer: claims simply run one after the other
        async with env.db.write() as a:
            first = await deliveries.claim(a, now=now, lease_until=lease, limit=4)
        async with env.db.write() as b:
            second = await deliveries.claim(b, now=now, lease_until=lease, limit=4)
    else:  # SKIP LOCKED: the second claim passes over rows the first holds uncommitted
        async with env.db.engine.begin() as a, env.db.engine.begin() as b:
            first = await deliveries.claim(a, now=now, lease_until=lease, limit=4)
            second = await deliveries.claim(b, now=now, lease_until=lease, limit=4)
    assert len(first) == 4
    assert len(second) == 2
    assert not {c.id for c in first} & {c.id for c in second}
