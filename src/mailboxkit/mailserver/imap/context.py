"""What a handler works with: the server's services, the client connection, the session's
enabled extensions, and the outcome it returns.

Handlers never touch sockets: they send response values through :class:`Connection` and
return an :class:`Outcome` (or raise ``CommandFailed``); the session adds the tag.
"""

from __future__ import annotations

import ssl
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

from mailboxkit.mailserver.imap.auth import AuthThrottle
from mailboxkit.mailserver.imap.message_parts import MimePart
from mailboxkit.mailserver.imap.responses import Response, ResponseCode
from mailboxkit.mailserver.imap.state import State
from mailboxkit.mailserver.imap.wire import Frame
from mailboxkit.store.blobs import BlobStore
from mailboxkit.store.clock import Clock
from mailboxkit.store.db import Database
from mailboxkit.store.events import EventBus
from mailboxkit.store.mailbox_changes import ChangeWatch, MailboxChanges
from mailboxkit.store.offload import Offload


@dataclass(frozen=True, slots=True)
class ImapLimits:
    """Per-connection and per-client limits; every value comes from settings."""

    max_line: int
    max_literal: int
    max_command: int
    login_timeout: float
    idle_timeout: float
    auth_failure_delay: float
    max_auth_failures: int
    auth_failure_window: float
    max_connections: int
    max_connections_per_ip: int


@dataclass(frozen=True, slots=True)
class Services:
    """Shared by every session of one server."""

    db: Database
    blobs: BlobStore
    clock: Clock
    bus: EventBus
    changes: MailboxChanges
    limits: ImapLimits
    throttle: AuthThrottle
    tls_context: ssl.SSLContext | None
    allow_plaintext: bool
    """Whether LOGIN/AUTHENTICATE work without TLS (the listener faces loopback only)."""
    offload: Offload
    """Where large messages are parsed."""


class Connection(Protocol):
    """The client connection as handlers see it."""

    session_id: str
    peer_ip: str

    @property
    def secure(self) -> bool:
        """Whether TLS is active (implicit TLS or after STARTTLS)."""
        ...

    async def send(self, response: Response) -> None:
        """Queue a response; it is written by :meth:`flush` or when the buffer fills."""
        ...

    async def flush(self) -> None:
        """Write everything queued."""
        ...

    async def read_frame(self) -> Frame | None:
        """The next line (with literals) from the client; None at end of input. Used for
        AUTHENTICATE responses and IDLE's DONE."""
        ...

    async def start_tls(self) -> None:
        """Upgrade the connection (after the tagged OK to STARTTLS has been written)."""
        ...


@dataclass(slots=True, eq=False)
class Context:
    """One session's view for handlers."""

    services: Services
    conn: Connection
    enabled: set[str] = field(default_factory=set)
    """Extensions turned on by ENABLE or use (RFC 5161; CONDSTORE, QRESYNC, IMAP4REV2),
    upper-cased."""
    watch: ChangeWatch | None = None
    """Rings when the logged-in inbox changes (set on login)."""
    after_reply: list[str] = field(default_factory=list)
    """Actions the session runs after the tagged response ("starttls")."""
    parsed: OrderedDict[str, MimePart] = field(default_factory=OrderedDict)
    """Recently fetched messages, parsed, by blob key (see ``fetch_handler``)."""

    @property
    def condstore(self) -> bool:
        return "CONDSTORE" in self.enabled or "QRESYNC" in self.enabled

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.enabled

    @property
    def imap4rev2(self) -> bool:
        """Whether the client enabled IMAP4rev2 (RFC 9051 §6.3.1): no ``\\Recent``, ESEARCH
        for SEARCH, UTF-8 mailbox names."""
        return "IMAP4REV2" in self.enabled


@dataclass(frozen=True, slots=True)
class Outcome:
    """A handler's success: ``tag OK [code] text``, and the next state if it changes."""

    text: str
    code: ResponseCode | None = None
    state: State | None = None
