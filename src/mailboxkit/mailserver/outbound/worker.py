"""The queue worker: claims due recipients, delivers them, records what happened.

Implementation notes:

- Loop: claim up to ``batch_size`` due recipients (``store.deliveries.claim``, a lease of ``lease``
  seconds), group them, deliver the groups concurrently (at most ``concurrency`` at a time),
  then wait until woken (a message was queued: :meth:`QueueWorker.wake`), a delivery finished,
  the next retry falls due, or ``poll_interval`` passed (other nodes' messages).
- Groups: one per message and route. Recipients in one of our own domains are delivered
  locally (straight into the recipient inbox, the same signed bytes, so DKIM still verifies and
  threading works); an unknown mailbox in our domain bounces (550 5.1.1). Others go to the
  transport, one group per recipient domain when it delivers per domain (MX).
- Outcomes: accepted → ``sent``; temporary → ``queued`` again at the retry policy's next time
  (the clock is the injected :class:`~mailboxkit.store.clock.Clock`, so tests move it); past
  the message's expiry, or permanent → ``bounced`` with a DSN (RFC 3464) to the sender. A
  permanent failure that says the recipient's address is bad (:data:`BAD_ADDRESS`, from the
  transport, never for our own domains) also puts it on the account's suppression list.
- A local recipient whose account is over its storage quota (``store.quota``) is a temporary
  failure (452 4.2.2), retried like a remote one and bounced at expiry. A read before
  delivering turns most of them away; what counts is the check in the settling transaction,
  with the accounts locked: each copy against what the copies before it in the batch took
  (a message to several inboxes of one account, deliveries settling together or on two
  nodes). A copy found there without room is settled as that temporary failure instead,
  except at its last attempt, when it is stored over the limit rather than bounced (the read
  before delivering had found room for it).
- Settling is group-committed: every finished group waiting at that moment is recorded in one
  transaction (``store.deliveries.settle``), then its events are published and IMAP is told. If the
  batch fails, each group is retried alone; a group that still fails keeps its claim and is
  delivered again when the lease ends (at least once, never lost). If it failed because the
  database is out of reach, the batch is tried again, backing off, for up to half the lease:
  recipients that were delivered are recorded once it is back, not delivered twice. (Settling
  twice does nothing: ``settle`` records only rows whose claim is still this one.)
- A delivery that raises unexpectedly is logged once and treated as a temporary failure.
- With SQLite this process is the queue's only worker (``exclusive``): claims left by a
  previous run (killed mid-delivery) are released at start instead of waiting for their lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit import metrics
from mailboxkit.mailserver import replies
from mailboxkit.mailserver.outbound.dsn import FailedRecipient, build_report, original_header
from mailboxkit.mailserver.outbound.retry import RetryPolicy
from mailboxkit.mailserver.outbound.transport import (
    Accepted,
    Parcel,
    PermanentFailure,
    Result,
    TemporaryFailure,
    Transport,
    every,
    status_code,
)
from mailboxkit.mailserver.recipients import RecipientDirectory, Refusal
from mailboxkit.store import deliveries, outbox, quota
from mailboxkit.store.accounts import Inbox
from mailboxkit.store.blobs import BlobNotFound, BlobStore
from mailboxkit.store.clock import Clock
from mailboxkit.store.db import Database, log_failure, unavailable, when_available
from mailboxkit.store.deliveries import Bounce, Claimed, Settlement
from mailboxkit.store.events import EventBus
from mailboxkit.store.mailbox_changes import MailboxChanges
from mailboxkit.store.messages import NewMessage
from mailboxkit.store.mime import ParsedMessage, parse_message
from mailboxkit.store.outbox import RecipientStatus
from mailboxkit.store.rawheaders import without_bcc
from mailboxkit.store.tasks import stop_tasks

log = logging.getLogger(__name__)

LOCAL = "\x00local"  # the route of recipients in our own domains
MIN_WAIT = 0.05  # seconds: never spin when due work is held by another node
CONTENT_GONE = "554 5.3.0 The message content is no longer stored"
# Enhanced codes (RFC 3463 §3.2) that say the recipient's address is bad: no such mailbox, no
# such domain, bad syntax, moved, null MX (RFC 7505). Not 5.1.7/5.1.8: those are the sender's.
BAD_ADDRESS = frozenset({"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"})
INTERNAL_ERROR = "451 4.3.0 Internal error while delivering; will retry"
SETTLE_RETRY = (0.5, 30.0)  # seconds: first and longest wait to record outcomes again
# What a settlement counts as in mailboxkit_outbound_attempts_total.
METRIC_OUTCOMES = {
    RecipientStatus.SENT: "sent",
    RecipientStatus.QUEUED: "deferred",
    RecipientStatus.BOUNCED: "bounced",
}


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    hostname: str
    concurrency: int = 20
    batch_size: int = 100
    lease: float = 900.0
    poll_interval: float = 5.0
    exclusive: bool = False
    policy: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(slots=True)
class _Outcome:
    settlements: list[Settlement] = field(default_factory=list)
    local: list[tuple[int, NewMessage]] = field(default_factory=list)
    bounces: list[Bounce] = field(default_factory=list)


@dataclass(slots=True)
class _Pending:
    outcome: _Outcome
    done: asyncio.Future[None]


class QueueWorker:
    """Delivers the outbound queue through one transport (and locally for our domains)."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        bus: EventBus,
        clock: Clock,
        transport: Transport,
        config: WorkerConfig,
        *,
        changes: MailboxChanges | None = None,
        rng: random.Random | None = None,
        recipients: RecipientDirectory | None = None,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._bus = bus
        self._clock = clock
        self.transport = transport
        self._config = config
        self._changes = changes
        self._rng = rng or random.Random()
        self._recipients = recipients or RecipientDirectory(db)
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()  # cuts short the wait to record outcomes again
        self._slots = asyncio.Semaphore(config.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._settling: asyncio.Queue[_Pending] = asyncio.Queue()
        self._loops: list[asyncio.Task[None]] = []
        self.attempts_settled = 0  # recipients whose attempt was recorded, since start
        self._progress = asyncio.Condition()

    def wake(self) -> None:
        """Look for due work now (a message was queued, or a test moved the clock)."""
        self._wakeup.set()

    async def settled(self, at_least: int) -> None:
        """Wait until ``at_least`` recipient attempts have been recorded (for tests and
        operators' tools: wait on the worker, never on a clock)."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.attempts_settled >= at_least)

    def start(self) -> None:
        self._stopping.clear()
        self._loops = [
            asyncio.create_task(self._run(), name="outbound-claims"),
            asyncio.create_task(self._settle_loop(), name="outbound-settle"),
        ]

    async def stop(self, grace: float = 30.0) -> None:
        """Stop claiming; let deliveries in flight finish (up to ``grace``), then close."""
        self._stopping.set()
        if self._loops:
            await stop_tasks(self._loops[0])
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._settling.join()
        await stop_tasks(*self._loops[1:])
        self._loops = []
        await self.transport.close()

    # --- claiming ---------------------------------------------------------------------------

    async def _run(self) -> None:
        if self._config.exclusive:
            async with self._db.write() as conn:
                released = await deliveries.release_claims(conn, now=self._clock.now())
            if released:
                log.info("event=outbound_claims_released count=%d", released)
        while True:
            self._wakeup.clear()
            if len(self._tasks) < self._config.concurrency:
                try:
                    claimed = await self._claim()
                except Exception as error:
                    log_failure(log, error, "event=outbound_claim_failed")
                    claimed = []
                if claimed:
                    await self._dispatch(claimed)
                if len(claimed) >= self._config.batch_size:
                    continue  # more may be due now
            try:
                timeout = await self._wait_time()
            except Exception as error:
                log_failure(log, error, "event=outbound_next_due_failed")
                timeout = self._config.poll_interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()

    async def _claim(self) -> list[Claimed]:
        now = self._clock.now()
        async with self._db.write() as conn:
            return await deliveries.claim(
                conn,
                now=now,
                lease_until=now + timedelta(seconds=self._config.lease),
                limit=self._config.batch_size,
            )

    async def _wait_time(self) -> float:
        if len(self._tasks) >= self._config.concurrency:
            return self._config.poll_interval
        async with self._db.read() as conn:
            due = await deliveries.next_due(conn)
        if due is None:
            return self._config.poll_interval
        until = (due - self._clock.now()).total_seconds()
        return min(self._config.poll_interval, max(MIN_WAIT, until))

    async def _dispatch(self, claimed: Sequence[Claimed]) -> None:
        groups: dict[tuple[str, str], list[Claimed]] = {}
        targets: dict[int, Inbox | Refusal] = {}
        for c in claimed:
            target = await self._recipients.lookup(c.recipient)
            targets[c.id] = target
            if target is Refusal.NOT_LOCAL:
                route = c.domain if self.transport.per_domain else ""
            else:
                route = LOCAL
            groups.setdefault((c.outbound_id, route), []).append(c)
        for (_, route), group in groups.items():
            task = asyncio.create_task(self._deliver(route, group, targets))
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wakeup.set()

    # --- delivering -------------------------------------------------------------------------

    async def _deliver(
        self, route: str, group: list[Claimed], targets: dict[int, Inbox | Refusal]
    ) -> None:
        async with self._slots:
            try:
                outcome = await self._attempt(route, group, targets)
            except Exception:
                # Nothing recorded: the claims are delivered again when their lease ends.
                log.exception("event=outbound_attempt_failed outbound_id=%s", group[0].outbound_id)
                return
            await self._record(outcome)

    async def _attempt(
        self, route: str, group: list[Claimed], targets: dict[int, Inbox | Refusal]
    ) -> _Outcome:
        outcome = _Outcome()
        recipients = [c.recipient for c in group]
        try:
            stored = await self._blobs.get(group[0].raw_key)
        except BlobNotFound:
            log.error("event=outbound_content_missing outbound_id=%s", group[0].outbound_id)
            gone = every(recipients, PermanentFailure(CONTENT_GONE))
            await self._judge(group, gone, b"", outcome, remote=False)
            return outcome
        # Bcc is kept in the Sent copy, never in what goes out (RFC 5322 §3.6.3).
        raw = without_bcc(stored)
        try:
            if route == LOCAL:
                parsed = parse_message(raw)
                # The local copies name the attachment blobs: stage them (again) before their
                # rows commit, so a store sweep never takes one from under them. Without its
                # Bcc, the message is a blob of its own.
                key = group[0].raw_key
                blobs = [(outbox.attachment_key(a.sha256), a.data) for a in parsed.attachments]
                if raw is not stored:
                    key = key.removesuffix(".eml") + "-delivered.eml"
                    blobs.append((key, raw))
                await self._blobs.put_many(blobs)
                full = await self._full_accounts(targets.values(), len(raw))
                results = self._deliver_locally(group, targets, raw, key, parsed, outcome, full)
            else:
                parcel = Parcel(group[0].envelope_from, tuple(recipients), raw, route)
                results = await self.transport.deliver(parcel)
        except Exception:
            log.exception("event=outbound_delivery_error outbound_id=%s", group[0].outbound_id)
            outcome = _Outcome()
            results = every(recipients, TemporaryFailure(INTERNAL_ERROR))
        await self._judge(group, results, raw, outcome, remote=route != LOCAL)
        return outcome

    async def _full_accounts(self, targets: Iterable[Inbox | Refusal], size: int) -> set[str]:
        """The accounts among the targets' without room for ``size`` more bytes."""
        accounts = {t.account_id for t in targets if isinstance(t, Inbox)}
        full: set[str] = set()
        async with self._db.read() as conn:
            for account_id in sorted(accounts):
                found = await quota.storage(conn, account_id)
                if found is not None and not found.fits(size):
                    full.add(account_id)
        return full

    def _deliver_locally(
        self,
        group: list[Claimed],
        targets: dict[int, Inbox | Refusal],
        raw: bytes,
        raw_key: str,
        parsed: ParsedMessage,
        outcome: _Outcome,
        full: set[str],
    ) -> dict[str, Result]:
        keys = [outbox.attachment_key(a.sha256) for a in parsed.attachments]
        now = self._clock.now()
        host = self._config.hostname
        results: dict[str, Result] = {}
        stored: set[str] = set()
        for c in group:
            target = targets.get(c.id)
            if not isinstance(target, Inbox):
                results[c.recipient] = PermanentFailure(
                    "550 5.1.1 Recipient address rejected: no such mailbox here", host
                )
                continue
            if target.account_id in full:  # tried again later, as another MX would say
                results[c.recipient] = TemporaryFailure(replies.MAILBOX_FULL, host)
                continue
            results[c.recipient] = Accepted("250 2.0.0 Delivered to a local inbox", host)
            if target.id in stored:  # two addresses of one inbox: one copy
                continue
            stored.add(target.id)
            copy = NewMessage(
                inbox=target,
                parsed=parsed,
                raw_key=raw_key,
                size=len(raw),
                received_at=now,
                attachment_keys=keys,
                envelope_from=c.envelope_from,
                envelope_to=(c.recipient,),
            )
            outcome.local.append((c.id, copy))
        return results

    async def _judge(
        self,
        group: list[Claimed],
        results: dict[str, Result],
        raw: bytes,
        outcome: _Outcome,
        *,
        remote: bool,
    ) -> None:
        """Turn results into settlements, and permanent failures into one DSN (``remote``: the
        results came from the transport, so a bad address is suppressed)."""
        now = self._clock.now()
        failed: list[FailedRecipient] = []
        suppress: list[str] = []
        for c in group:
            result = results.get(c.recipient) or TemporaryFailure(INTERNAL_ERROR)
            if isinstance(result, Accepted):
                outcome.settlements.append(
                    Settlement(
                        c, RecipientStatus.SENT, result.reply, provider_id=result.provider_id
                    )
                )
                continue
            if isinstance(result, TemporaryFailure):
                retry = self._config.policy.next_attempt(now, c.attempts, c.expires_at, self._rng)
                if retry is not None:
                    outcome.settlements.append(
                        Settlement(c, RecipientStatus.QUEUED, result.reply, retry)
                    )
                    continue
                status = "4.4.7"
                diagnostic = f"delivery time expired; last reply: {result.reply}"
                from_remote = False
            else:
                status = status_code(result.reply, permanent=True)
                diagnostic, from_remote = result.reply, True
                if remote and status in BAD_ADDRESS:
                    suppress.append(c.recipient)
            outcome.settlements.append(Settlement(c, RecipientStatus.BOUNCED, diagnostic))
            failed.append(
                FailedRecipient(c.recipient, status, diagnostic, result.remote, from_remote)
            )
        if failed:
            outcome.bounces.append(await self._bounce(group[0], raw, failed, suppress))
        for c in group:
            log.info(
                "event=outbound_attempt outbound_id=%s recipient_id=%d attempt=%d result=%s",
                c.outbound_id,
                c.id,
                c.attempts,
                type(results.get(c.recipient)).__name__,
            )

    async def _bounce(
        self, c: Claimed, raw: bytes, failed: list[FailedRecipient], suppress: list[str]
    ) -> Bounce:
        now = self._clock.now()
        host = self._config.hostname
        original_id = parse_message(original_header(raw)).message_id if raw else None
        report = build_report(
            reporting_mta=host,
            postmaster=f"MAILER-DAEMON@{host}",
            recipient=c.envelope_from,
            original=raw,
            failures=failed,
            arrival=c.created_at,
            now=now,
            original_message_id=original_id,
        )
        parsed = parse_message(report)
        key = await outbox.stage(self._blobs, report, parsed, at=now)
        sender = Inbox(c.inbox_id, c.account_id, c.envelope_from, "")
        new = NewMessage(
            inbox=sender,
            parsed=parsed,
            raw_key=key,
            size=len(report),
            received_at=now,
            attachment_keys=[outbox.attachment_key(a.sha256) for a in parsed.attachments],
            envelope_to=(c.envelope_from,),
        )
        recipients = [
            {"email": f.recipient, "status": f.status, "diagnostic": f.diagnostic} for f in failed
        ]
        return Bounce(c.outbound_id, new, recipients, tuple(suppress))

    # --- settling ---------------------------------------------------------------------------

    async def _record(self, outcome: _Outcome) -> None:
        pending = _Pending(outcome, asyncio.get_running_loop().create_future())
        self._settling.put_nowait(pending)
        await pending.done

    async def _settle_loop(self) -> None:
        while True:
            batch = [await self._settling.get()]
            while not self._settling.empty():
                batch.append(self._settling.get_nowait())
            try:
                await self._commit(batch)
            except Exception as error:
                log_failure(log, error, "event=outbound_settle_failed size=%d", len(batch))
                if unavailable(error):
                    await self._commit_when_back(batch)
                elif len(batch) > 1:
                    await self._commit_one_by_one(batch)
            finally:
                for one in batch:
                    if not one.done.done():
                        one.done.set_result(None)
                    self._settling.task_done()

    async def _commit_when_back(self, batch: list[_Pending]) -> None:
        """The database out of reach: the batch again, backing off, until it is recorded or
        half the lease has passed (then its claims are delivered again when the lease ends).
        Stopping tries once more at once, then gives up."""
        try:
            recorded = await when_available(
                lambda: self._commit(batch),
                within=self._config.lease / 2,
                stopping=self._stopping,
                backoff=SETTLE_RETRY,
            )
        except Exception as error:
            log_failure(log, error, "event=outbound_settle_failed size=%d", len(batch))
            await self._commit_one_by_one(batch)
            return
        if recorded:
            log.info("event=outbound_settled_late size=%d", len(batch))
        else:
            log.warning("event=outbound_settle_abandoned size=%d", len(batch))

    async def _commit_one_by_one(self, batch: list[_Pending]) -> None:
        """After a failed batch: each group alone, so one bad group fails alone (its claims
        are then delivered again when their lease ends)."""
        for one in batch:
            try:
                await self._commit([one])
            except Exception as error:
                log_failure(log, error, "event=outbound_settle_failed size=1")

    async def _within_quota(
        self,
        conn: AsyncConnection,
        settlements: list[Settlement],
        local: list[tuple[int, NewMessage]],
        bounces: list[Bounce],
    ) -> tuple[list[Settlement], list[tuple[int, NewMessage]]]:
        """Lock the accounts the batch stores into (all at once, in order: ``store.quota``) and
        keep the local copies they have room for; the others' recipients are settled as a
        full mailbox, tried again later (see the module notes)."""
        accounts = {n.inbox.account_id for _, n in local} | {
            b.report.inbox.account_id for b in bounces
        }
        storage = await quota.lock_accounts(conn, accounts)
        claims = {s.claim.id: s.claim for s in settlements}
        now = self._clock.now()
        kept: list[tuple[int, NewMessage]] = []
        full: dict[int, Settlement] = {}
        for recipient_id, new in local:
            account = storage.get(new.inbox.account_id)
            if account is not None and not account.fits(new.size):
                c = claims[recipient_id]
                retry = self._config.policy.next_attempt(now, c.attempts, c.expires_at, self._rng)
                if retry is not None:
                    full[recipient_id] = Settlement(
                        c, RecipientStatus.QUEUED, replies.MAILBOX_FULL, retry
                    )
                    continue
            if account is not None:
                storage[new.inbox.account_id] = account.plus(new.size)
            kept.append((recipient_id, new))
        if full:
            log.info("event=outbound_local_over_quota recipient_ids=%s", sorted(full))
        return [full.get(s.claim.id, s) for s in settlements], kept

    async def _commit(self, batch: list[_Pending]) -> None:
        settlements = [s for p in batch for s in p.outcome.settlements]
        local = [item for p in batch for item in p.outcome.local]
        bounces = [b for p in batch for b in p.outcome.bounces]
        async with self._db.write() as conn:
            settlements, local = await self._within_quota(conn, settlements, local, bounces)
            settled = await deliveries.settle(
                conn, settlements, now=self._clock.now(), local=local, bounces=bounces
            )
        for p in batch:
            if not p.done.done():
                p.done.set_result(None)
        self._bus.publish(settled.events)
        if self._changes is not None:
            for inbox_id in {e.inbox_id for e in settled.events if e.inbox_id}:
                self._changes.notify(inbox_id)
        for settlement in settlements:
            metrics.OUTBOUND_ATTEMPTS.labels(METRIC_OUTCOMES[settlement.status]).inc()
        async with self._progress:
            self.attempts_settled += len(settlements)
            self._progress.notify_all()
