"""The webhook dispatcher: fans events out to endpoints and delivers them, at least once.

Implementation notes:

- One loop per process. A *round* runs in one write transaction: move the fan-out cursor over
  the new outbox events (``store/webhook_dispatch.fan_out``, which claims the new deliveries at
  once so a fresh event goes straight out), then claim due retries with ``FOR UPDATE SKIP
  LOCKED``.
  Rounds are woken by the event bus (events committed in this process), by a finished request,
  by the API (test event, replay), and at least every ``poll_interval`` (events and retries of
  other processes sharing PostgreSQL). On SQLite there is one process and one worker.
- Each claimed delivery is one request, at most ``concurrency`` at once, bounded in total by
  ``timeout`` (httpx's own timeouts are per read). The claim's lease is twice the timeout: a
  process killed mid-request leaves the delivery due again when the lease ends, so an event is
  sent twice only across a crash. Endpoints de-duplicate on ``webhook-id``. An attempt that
  cannot be recorded because the database is out of reach is recorded again, backing off, for
  up to half the lease (``store.db.when_available``), so an outage does not resend it either.
- Outcome: 2xx delivered; 410 Gone fails the delivery and disables the endpoint; anything else
  (3xx included: redirects are not followed) is retried on ``RETRY_DELAYS`` (attempt 1 at once,
  then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h after each failure) with ±10 % jitter, never
  sooner than the endpoint's ``Retry-After``; after the last, the delivery has failed.
- SSRF: the URL's host is resolved through the resolver seam before every request, and the
  request goes to the address that was checked (``Host`` and TLS SNI keep the name), so a DNS
  answer that changes between the check and the connection (rebinding) cannot reach a
  private, loopback or link-local address. ``allow_private`` turns the check off (development).
- Time: scheduling uses the injected clock (tests move it and call :meth:`Dispatcher.wake`);
  ``webhook-timestamp`` uses the wall clock, which receivers compare with theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ipaddress
import logging
import math
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from mailboxkit import metrics
from mailboxkit.api.payloads import PayloadLimits, capped, with_download_urls
from mailboxkit.api.signing import signed_headers
from mailboxkit.dns.resolver import DnsNotFound, DnsTempError, Resolver
from mailboxkit.store import webhook_dispatch as dispatch
from mailboxkit.store import webhooks as store
from mailboxkit.store.blobs import BlobStore
from mailboxkit.store.clock import Clock, SystemClock
from mailboxkit.store.db import Database, log_failure, unavailable, when_available
from mailboxkit.store.eventfeed import EventFeed
from mailboxkit.store.events import EventBus, Subscription
from mailboxkit.store.tasks import stop_tasks

log = logging.getLogger(__name__)

RETRY_DELAYS = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)  # seconds before attempt 1, 2, …
MAX_ATTEMPTS = len(RETRY_DELAYS)
JITTER = 0.1
MAX_RETRY_AFTER = 24 * 3600
RESPONSE_LOGGED = 1024  # bytes of the endpoint's answer kept in the delivery log
USER_AGENT = "MailboxKit-Webhooks/1"
# What an attempt counts as in mailboxkit_webhook_attempts_total.
METRIC_OUTCOMES = {
    store.DeliveryStatus.SUCCEEDED: "succeeded",
    store.DeliveryStatus.PENDING: "retrying",
    store.DeliveryStatus.FAILED: "failed",
}


class TargetRefused(Exception):
    """The URL may not be called: not http(s), or its host is (or resolves to) a private,
    loopback or link-local address. The message is fit for the client."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request really goes: the URL with the checked address, and the name it keeps."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)


def public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_target(url: str, resolver: Resolver | None, *, allow_private: bool) -> Target:
    """Check ``url`` against SSRF (see the notes) and pin it to the address checked."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise TargetRefused("not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise TargetRefused("the URL must be http:// or https:// with a host")
    if allow_private:
        return Target(str(parsed))
    host = parsed.host
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = await _resolve(host, resolver)
    if not all(public_address(a) for a in addresses):
        raise TargetRefused("the URL's host is a private, loopback or link-local address")
    ip = str(addresses[0])
    extensions: dict[str, Any] = {"sni_hostname": host} if parsed.scheme == "https" else {}
    return Target(
        str(parsed.copy_with(host=ip)), {"Host": parsed.netloc.decode("ascii")}, extensions
    )


async def _resolve(
    host: str, resolver: Resolver | None
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    if resolver is None:
        raise TargetRefused("the URL's host cannot be resolved here")
    found: list[str] = []
    for lookup in (resolver.a, resolver.aaaa):
        try:
            found.extend(await lookup(host))
        except DnsNotFound:
            pass
        except DnsTempError:
            raise TargetRefused("the URL's host could not be resolved, try again") from None
    addresses = []
    for value in found:
        with contextlib.suppress(ValueError):
            addresses.append(ipaddress.ip_address(value))
    if not addresses:
        raise TargetRefused("the URL's host does not resolve")
    return addresses


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delay-seconds or HTTP-date, RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


ROUND_GAP = 0.02
"""Seconds at least between the starts of two rounds (see ``Dispatcher._run``)."""


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    timeout: float = 15.0
    concurrency: int = 32
    poll_interval: float = 1.0
    allow_private_targets: bool = False
    payload: PayloadLimits = field(default_factory=PayloadLimits)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=2 * self.timeout)


class Dispatcher:
    """Delivers webhooks for this process (see the notes atop the module)."""

    def __init__(
        self,
        db: Database,
        bus: EventBus,
        http: httpx.AsyncClient,
        blobs: BlobStore,
        *,
        clock: Clock,
        resolver: Resolver | None,
        config: DispatchConfig,
        wall_clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._db = db
        self._bus = bus
        self._http = http
        self._blobs = blobs
        self._clock = clock
        self._resolver = resolver
        self.config = config
        self._wall = wall_clock or SystemClock()
        self._rng = rng or random.Random()  # jitter, not secrets
        self._fan_out = dispatch.FanOutProgress(EventFeed(0, is_sqlite=db.is_sqlite))
        self._wakeup = asyncio.Event()
        self._parked = asyncio.Event()
        self._stopping = asyncio.Event()  # cuts short the wait to record attempts again
        self._inflight: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._sub: Subscription | None = None
        self._waiting = False  # the loop sleeps until woken or due
        # Whether any endpoint is enabled, and when that was read.
        self._endpoints = True
        self._endpoints_read_at = -math.inf

    async def start(self) -> None:
        self._stopping.clear()
        async with self._db.write() as conn:
            await dispatch.ensure_cursor(conn)
        self._sub = self._bus.subscribe()
        self._tasks = [
            asyncio.create_task(self._run(), name="webhooks"),
            asyncio.create_task(self._follow_bus(self._sub), name="webhooks-bus"),
        ]

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking work; let requests in flight finish for up to ``grace`` seconds."""
        self._stopping.set()
        await stop_tasks(*self._tasks)
        self._tasks = []
        if self._sub is not None:
            self._sub.close()
        if self._inflight:
            _, late = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    def wake(self) -> None:
        """Look for work now (new events, due deliveries)."""
        self._parked.clear()
        self._wakeup.set()

    def endpoints_changed(self) -> None:
        """An endpoint was made, enabled or disabled here: read them again, and look now."""
        self._endpoints_read_at = -math.inf
        self.wake()

    async def _idle_without_endpoints(self) -> bool:
        """With no endpoint enabled: keep the cursor at the newest event (about once a second,
        see ``store.webhook_dispatch.FanOutProgress``) and say there is nothing to do.

        Mail arriving then costs no fan-out transaction: on SQLite it would queue behind and
        ahead of the deliveries for the one writer, on PostgreSQL it took a sixth of the CPU
        of receiving mail. Whether endpoints exist is read again every ``poll_interval`` and
        whenever this process changes one. An endpoint made by another process sharing
        PostgreSQL is seen within ``poll_interval`` (that process fans out meanwhile), and
        ``skip_to_head`` checks in its own statement that none is enabled, so the cursor never
        moves past events an endpoint wants.
        """
        now = time.monotonic()
        if now - self._endpoints_read_at >= self.config.poll_interval:
            async with self._db.read() as conn:
                self._endpoints = await store.any_enabled(conn)
            self._endpoints_read_at = now
        if self._endpoints:
            return False
        if self._fan_out.due():
            async with self._db.write() as conn:
                await dispatch.skip_to_head(conn, self._fan_out)
        return True

    async def idle(self) -> None:
        """Return once nothing is in flight and nothing is due (tests synchronize on it)."""
        self.wake()
        await self._parked.wait()

    async def _follow_bus(self, sub: Subscription) -> None:
        while True:
            await sub.get()
            while not sub.queue.empty():
                sub.queue.get_nowait()
            sub.overflowed = False
            self.wake()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = -ROUND_GAP
        while True:
            # Each round is a write transaction. Mail arriving steadily wakes this after every
            # delivered batch; spacing the rounds lets each take all the events so far instead
            # of one commit per batch competing with the deliveries for the writer.
            pause = started + ROUND_GAP - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            started = loop.time()
            self._wakeup.clear()
            try:
                busy = await self._round()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log_failure(log, error, "event=webhook_round_failed")
                busy = False
            if busy:
                continue
            timeout = await self._sleep_time()
            if not self._inflight and not self._wakeup.is_set():
                self._parked.set()
            self._waiting = True
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wakeup.wait()
            finally:
                self._waiting = False

    async def _sleep_time(self) -> float:
        timeout = self.config.poll_interval
        if self._fan_out.feed.held:
            return min(timeout, 0.2)
        if not self._endpoints:
            return timeout  # nothing can be due
        try:
            async with self._db.read() as conn:
                due = await dispatch.next_due(conn)
        except Exception as error:
            log_failure(log, error, "event=webhook_next_due_failed")
            return timeout
        if due is not None:
            timeout = min(timeout, max(0.0, (due - self._clock.now()).total_seconds()))
        return timeout

    async def _round(self) -> bool:
        """One fan-out and claim; whether to go again at once."""
        if await self._idle_without_endpoints():
            return False
        capacity = self.config.concurrency - len(self._inflight)
        now = self._clock.now()
        lease_until = now + self.config.lease
        postgres = not self._db.is_sqlite
        async with self._db.write() as conn:
            claimed, more = await dispatch.fan_out(
                conn,
                self._fan_out,
                now=now,
                lease_until=lease_until,
                claim=capacity,
                lock=postgres,
            )
            due = await dispatch.claim_due(
                conn,
                now=now,
                lease_until=lease_until,
                limit=capacity - len(claimed),
                skip_locked=postgres,
            )
        for c in (*claimed, *due):
            self._parked.clear()
            task = asyncio.create_task(self._deliver(c), name=f"webhook-{c.delivery_id}")
            self._inflight.add(task)
            task.add_done_callback(self._done)
        full = capacity > 0 and len(claimed) + len(due) >= capacity
        return more or (full and len(self._inflight) < self.config.concurrency)

    def _done(self, task: asyncio.Task[None]) -> None:
        """A request is over: room for another claim if all were busy; idle if it was the last.
        (A retry it scheduled is found by the loop's next look, at most ``poll_interval`` on.)"""
        self._inflight.discard(task)
        if len(self._inflight) == self.config.concurrency - 1:
            self.wake()
        elif not self._inflight and self._waiting and not self._wakeup.is_set():
            self._parked.set()

    async def _body(self, c: dispatch.Claimed) -> bytes:
        payload = c.payload
        data = payload.get("data")
        if isinstance(data, dict) and data.get("attachments"):
            async with self._db.read() as conn:
                payload = await with_download_urls(
                    conn,
                    self._blobs,
                    payload,
                    ttl=self.config.payload.url_ttl,
                    now=self._clock.now(),
                )
        return capped(payload, self.config.payload)

    async def _deliver(self, c: dispatch.Claimed) -> None:
        attempted_at = self._clock.now()
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        answer = b""
        wait: float | None = None
        try:
            body = await self._body(c)
            target = await check_target(
                c.url, self._resolver, allow_private=self.config.allow_private_targets
            )
            stamp = int(self._wall.now().timestamp())
            headers = {
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                **signed_headers(c.event_id, stamp, body, c.secrets),
                **target.headers,
            }
            async with asyncio.timeout(self.config.timeout):
                async with self._http.stream(
                    "POST", target.url, content=body, headers=headers, extensions=target.extensions
                ) as response:
                    status_code = response.status_code
                    wait = retry_after(response.headers.get("retry-after"), time.time())
                    async for chunk in response.aiter_bytes():
                        answer += chunk
                        if len(answer) >= RESPONSE_LOGGED:
                            break
        except TargetRefused as exc:
            error = f"refused: {exc}"
        except TimeoutError:
            error = f"timeout after {self.config.timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        except Exception as exc:
            log.exception("event=webhook_attempt_crashed delivery_id=%s", c.delivery_id)
            error = f"internal error: {type(exc).__name__}"
        outcome = dispatch.Outcome(
            attempted_at,
            status_code,
            error,
            answer[:RESPONSE_LOGGED].decode("utf-8", "replace").replace("\x00", ""),
            int((time.perf_counter() - started) * 1000),
        )
        await self._record(c, outcome, wait)

    def _next_delay(self, attempt: int, wait: float | None) -> float:
        delay = RETRY_DELAYS[attempt] * self._rng.uniform(1 - JITTER, 1 + JITTER)
        if wait is not None:
            delay = max(delay, min(wait, MAX_RETRY_AFTER))
        return delay

    async def _record(
        self, c: dispatch.Claimed, outcome: dispatch.Outcome, wait: float | None
    ) -> None:
        code = outcome.status_code
        next_at: datetime | None = None
        if code is not None and 200 <= code < 300:
            status = store.DeliveryStatus.SUCCEEDED
        elif code == 410 or c.attempt >= MAX_ATTEMPTS:
            status = store.DeliveryStatus.FAILED
        else:
            status = store.DeliveryStatus.PENDING
            next_at = self._clock.now() + timedelta(seconds=self._next_delay(c.attempt, wait))
        log.info(
            "event=webhook_attempt delivery_id=%s webhook_id=%s event_id=%s attempt=%d "
            "status=%s code=%s error=%s duration_ms=%d",
            c.delivery_id,
            c.webhook_id,
            c.event_id,
            c.attempt,
            status,
            code,
            outcome.error,
            outcome.duration_ms,
        )
        metrics.WEBHOOK_ATTEMPTS.labels(METRIC_OUTCOMES[status]).inc()

        async def write() -> None:
            async with self._db.write() as conn:
                current = await dispatch.record_attempt(
                    conn, c, outcome, status=status, next_attempt_at=next_at
                )
                if code == 410 and current:
                    await store.disable_gone(conn, c.webhook_id, now=self._clock.now())

        # Not recorded, the claim's lease runs out and the delivery is tried again.
        try:
            await write()
        except Exception as error:
            log_failure(log, error, "event=webhook_record_failed delivery_id=%s", c.delivery_id)
            if not unavailable(error):
                return
            try:
                late = await when_available(
                    write, within=self.config.lease.total_seconds() / 2, stopping=self._stopping
                )
            except Exception as again:
                log_failure(log, again, "event=webhook_record_failed delivery_id=%s", c.delivery_id)
                return
            if late:
                log.info("event=webhook_recorded_late delivery_id=%s", c.delivery_id)
