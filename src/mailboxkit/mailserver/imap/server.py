"""The IMAP listeners: STARTTLS and implicit-TLS sockets, connection limits, shutdown.

Implementation notes:

- ``app.py`` owns the sockets, the event bus and the change notices; this server only
  serves. Plain listeners offer STARTTLS and advertise LOGINDISABLED until TLS is active,
  unless ``allow_plaintext`` (the listener binds to loopback only; RFC 3501 §6.2.3).
- Connections are counted in all and per client address; one over the limit gets
  ``* BYE [UNAVAILABLE]`` and is closed before any command is read.
- Sessions learn of changes through their inbox's change watch; ``app.py`` rings it for
  committed events and for other processes' notices (``store.mailbox_changes``,
  ``store.notify``).
- Shutdown: stop accepting, end sessions waiting for a command or in IDLE at once (``* BYE``), let
  sessions in the middle of a command finish it for up to the grace period, then end them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter

from mailboxkit import metrics
from mailboxkit.mailserver.imap.commands import Idle
from mailboxkit.mailserver.imap.context import Services
from mailboxkit.mailserver.imap.session import Session

log = logging.getLogger(__name__)

TLS_HANDSHAKE_TIMEOUT = 30.0
"""Seconds an implicit-TLS client has to complete its handshake."""

LISTEN_BACKLOG = 1024
"""Connections the kernel queues before accept. asyncio would set its default of 100 again
on our socket, and a burst beyond it (every client reconnecting after a restart) leaves
clients connected that the server never accepts (found by bench/imap.py)."""


class ImapServer:
    """Every IMAP listener of the process and their sessions."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._servers: list[asyncio.Server] = []
        self._sessions: dict[asyncio.Task[None], Session] = {}
        self._per_ip: Counter[str] = Counter()

    async def listen(self, sock: socket.socket, *, implicit_tls: bool) -> int:
        """Serve on a bound, listening socket; returns its port."""
        context = self.services.tls_context if implicit_tls else None
        if implicit_tls and context is None:
            raise ValueError("implicit TLS needs a TLS context")
        server = await asyncio.start_server(
            lambda reader, writer: self._serve(reader, writer, secure=implicit_tls),
            sock=sock,
            ssl=context,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if context else None,
            limit=self.services.limits.max_line + 2,
            backlog=LISTEN_BACKLOG,
        )
        self._servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, secure: bool
    ) -> None:
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        limits = self.services.limits
        if (
            len(self._sessions) >= limits.max_connections
            or self._per_ip[ip] >= limits.max_connections_per_ip
        ):
            log.info("event=imap_connection_refused ip=%s reason=limit", ip)
            writer.write(b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n")
            with contextlib.suppress(Exception):
                await writer.drain()
                writer.close()
            return
        session = Session(self.services, reader, writer, secure=secure, peer_ip=ip)
        # The session runs in a task of its own that shutdown may cancel: cancelling the task
        # asyncio made for this callback would make asyncio log it as an error.
        task = asyncio.create_task(session.run(), name=f"imap-{session.session_id}")
        self._sessions[task] = session
        self._per_ip[ip] += 1
        metrics.IMAP_CONNECTIONS.inc()
        metrics.IMAP_CONNECTIONS_OPENED.inc()
        task.add_done_callback(lambda _: self._release(task, ip))
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                task.cancel()
                raise

    def _release(self, task: asyncio.Task[None], ip: str) -> None:
        self._sessions.pop(task, None)
        metrics.IMAP_CONNECTIONS.dec()
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]

    async def stop(self, grace: float) -> None:
        """Stop listening and end every session (see the module notes)."""
        for server in self._servers:
            server.close()
        for task, session in tuple(self._sessions.items()):
            session.closing = True
            if session.command is None or isinstance(session.command, Idle):
                task.cancel()
        busy = set(self._sessions)
        if busy:
            await asyncio.wait(busy, timeout=grace)
        for task in tuple(self._sessions):
            task.cancel()
        if self._sessions:
            await asyncio.wait(set(self._sessions), timeout=5)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
