"""What the HTTP API is given: the database, the blob store, the clock and its own limits.

Built by the composition root (``mailboxkit.app``) from settings; the API never reads settings.
Routes reach it through :func:`context`, from the application's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from mailboxkit.store.blobs import BlobStore
from mailboxkit.store.clock import Clock, SystemClock
from mailboxkit.store.db import Database
from mailboxkit.store.mailboxes import MailboxChanges
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
    max_body_size: int = 10 * 1024 * 1024
    download_url_ttl: int = HOUR


@dataclass(frozen=True, slots=True)
class ApiContext:
    db: Database
    blobs: BlobStore
    clock: Clock = field(default_factory=SystemClock)
    config: ApiConfig = field(default_factory=ApiConfig)
    changes: MailboxChanges | None = None  # rung after the API changes flags (IMAP IDLE)


def context(request: Request) -> ApiContext:
    ctx = request.app.state.ctx
    assert isinstance(ctx, ApiContext)
    return ctx


Ctx = Annotated[ApiContext, Depends(context)]
