"""What the HTTP API is given: the database, the blob store, the clock, its own limits, and for
the DNS routes the resolver and how a domain's records are made.

Built by the composition root (``mailboxkit.app``) from settings; the API never reads settings.
Routes reach it through :func:`context`, from the application's state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from mailboxkit.api.dispatcher import Dispatcher
from mailboxkit.api.payloads import PayloadLimits
from mailboxkit.dns.check import RecordResolver
from mailboxkit.dns.mtasts import PolicyFetcher
from mailboxkit.dns.records import DomainProfile, PublishedKey, normalize_domain
from mailboxkit.store.accounts import KeyOwner
from mailboxkit.store.blobs import BlobStore
from mailboxkit.store.clock import Clock, SystemClock
from mailboxkit.store.counters import Counters
from mailboxkit.store.db import Database
from mailboxkit.store.events import EventBus
from mailboxkit.store.mailbox_changes import MailboxChanges
from mailboxkit.store.quota import UNLIMITED, Limits
from mailboxkit.store.ratelimit import Limit

HOUR = 3600
MINUTE = 60


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The operator's choices the API enforces (see ``docs/config.md`` for each)."""

    domain: str = "localhost"
    registration_enabled: bool = False
    registration_per_ip: Limit = field(default_factory=lambda: Limit(5, HOUR))
    registration_per_email: Limit = field(default_factory=lambda: Limit(3, HOUR))
    requests_per_key: Limit = field(default_factory=lambda: Limit(600, MINUTE))
    auth_failures_per_ip: Limit = field(default_factory=lambda: Limit(20, 5 * MINUTE))
    key_cache_seconds: float = 0.0  # 0: every request reads its key
    max_body_size: int = 10 * 1024 * 1024
    download_url_ttl: int = HOUR
    metrics_token: str = field(default="", repr=False)  # empty: no /metrics (api/metrics.py)
    account_limits: Limits = UNLIMITED  # of accounts made by POST /register (the DEFAULT_*)
    console: bool = True  # the web console at /console (api/console/)
    # The server's secret, the console's session keys are derived from; empty: a random one
    # (sessions then end with the process).
    secret_key: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class EventsConfig:
    """Webhooks, the live stream and waits (``docs/config.md``, the ``EVENT_*`` settings)."""

    poll_interval: float = 1.0
    wait_max_timeout: float = 300.0
    stream_keepalive: float = 15.0
    allow_private_targets: bool = False
    payload: PayloadLimits = field(default_factory=PayloadLimits)


ProfileFactory = Callable[[str, Sequence[PublishedKey]], DomainProfile]
"""The profile a domain's DNS records are made from, given its name and DKIM keys."""


def default_profile(domain: str, keys: Sequence[PublishedKey]) -> DomainProfile:
    """Records for a server named ``localhost`` with the default choices (tests, tools)."""
    return DomainProfile(normalize_domain(domain), "localhost", tuple(keys))


class FailedClients:
    """Client addresses that failed to authenticate lately, as this process saw it.

    Requests from other addresses skip the database check of the failed-authentication limit
    (``api/auth.py``), so clean clients pay nothing for it. An address is remembered for a
    whole window after its last failure seen here; when too many are remembered the expired
    ones go, then all (every address is then checked again only after its next failure).
    """

    MAX_ENTRIES = 100_000

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def suspect(self, client: str, now: float) -> bool:
        until = self._until.get(client)
        return until is not None and until > now

    def note(self, client: str, now: float, window: float) -> None:
        if len(self._until) >= self.MAX_ENTRIES and client not in self._until:
            self._until = {k: v for k, v in self._until.items() if v > now}
            if len(self._until) >= self.MAX_ENTRIES:
                self._until.clear()
        self._until[client] = now + window


class KeyCache:
    """API keys this process has checked lately, by their hash: most requests then read none.

    Entries live ``ttl`` seconds (monotonic clock). Routes that revoke keys or delete what
    keys belong to call :meth:`clear`, so this process never accepts a key it has revoked;
    other processes notice within ``ttl``. Bounded: when full, it starts over.
    """

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._found: dict[str, tuple[float, KeyOwner]] = {}

    def get(self, key_hash: str, ttl: float) -> KeyOwner | None:
        found = self._found.get(key_hash)
        if found is None or time.monotonic() - found[0] >= ttl:
            return None
        return found[1]

    def put(self, key_hash: str, owner: KeyOwner) -> None:
        if len(self._found) >= self.MAX_ENTRIES:
            self._found.clear()
        self._found[key_hash] = (time.monotonic(), owner)

    def clear(self) -> None:
        self._found.clear()


@dataclass(frozen=True, slots=True)
class ApiContext:
    db: Database
    blobs: BlobStore
    clock: Clock = field(default_factory=SystemClock)
    config: ApiConfig = field(default_factory=ApiConfig)
    changes: MailboxChanges | None = None  # rung after the API changes flags (IMAP IDLE)
    bus: EventBus | None = None  # committed events are published here
    resolver: RecordResolver | None = None  # None: live DNS checks answer 503
    mta_sts: PolicyFetcher | None = None  # None: DNS checks do not fetch the MTA-STS policy
    profile: ProfileFactory = default_profile
    failed_clients: FailedClients = field(default_factory=FailedClients)
    counters: Counters = field(default_factory=Counters)  # key limits, usage: api/auth.py
    keys: KeyCache = field(default_factory=KeyCache)  # api/auth.py
    events: EventsConfig = field(default_factory=EventsConfig)
    dispatcher: Dispatcher | None = None  # this process's webhook worker, woken by the API
    # Called after a change to how mail is routed (a catch-all, a sender rule), so this
    # process's MX drops what it cached about it.
    routing_changed: Callable[[], None] = field(default=lambda: None)
    closing: asyncio.Event = field(default_factory=asyncio.Event)  # set: streams and waits end


async def context(request: Request) -> ApiContext:  # async: no threadpool hop per request
    ctx = request.app.state.ctx
    assert isinstance(ctx, ApiContext)
    return ctx


Ctx = Annotated[ApiContext, Depends(context)]
