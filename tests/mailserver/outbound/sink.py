"""An aiosmtpd server in its own thread, standing in for a remote MX or a smarthost.

Imported by the outbound tests as ``mailserver.outbound.sink`` (``tests`` is on the path).
Tests wait on :meth:`Sink.next` (the queue of accepted messages), never on a clock.
"""

from __future__ import annotations

import asyncio
import queue
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    tls: bool
    login: str | None


@dataclass
class SinkHandler:
    """Replies: ``data_replies`` are used one per DATA, in order (then 250);
    ``rcpt_reply`` may refuse a recipient by returning a reply."""

    data_replies: list[str] = field(default_factory=list)
    rcpt_reply: Callable[[str], str | None] = lambda _address: None
    received: queue.Queue[Received] = field(default_factory=queue.Queue)
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refusal = self.rcpt_reply(address)
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.attempts += 1
            reply = self.data_replies.pop(0) if self.data_replies else "250 2.0.0 OK"
        if reply.startswith("250"):
            assert isinstance(envelope.original_content, bytes)
            data = session.auth_data
            login = data.login.decode() if isinstance(data, LoginPassword) else None
            self.received.put(
                Received(
                    envelope.mail_from or "",
                    tuple(envelope.rcpt_tos),
                    envelope.original_content,
                    session.ssl is not None,
                    login,
                )
            )
        return reply


class _Session(SMTP):
    """aiosmtpd's session, counted so that the sink can wait for every connection to end."""

    def __init__(self, sink: Sink, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sink = sink

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # not again after STARTTLS
            self._sink.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self._sink.sessions.discard(self)
        if not self._sink.sessions:
            self._sink.idle.set()


class Sink:
    """``start()`` returns the port; ``stop()`` closes everything."""

    def __init__(
        self,
        handler: SinkHandler | None = None,
        *,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.handler = handler or SinkHandler()
        self._tls = tls_context
        self._implicit = implicit_tls
        self._credentials = credentials
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None
        self.port = 0
        self.sessions: set[SMTP] = set()
        self.idle = asyncio.Event()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and self._credentials is not None
            and (data.login.decode(), data.password.decode()) == self._credentials
        )
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    def _protocol(self) -> SMTP:
        kwargs: dict[str, Any] = {"decode_data": False, "enable_SMTPUTF8": True}
        if self._credentials is not None:
            kwargs.update(authenticator=self._authenticate, auth_require_tls=not self._implicit)
        if self._tls is not None and not self._implicit:
            kwargs["tls_context"] = self._tls
        smtp = _Session(self, self.handler, hostname="sink.test", loop=self.loop, **kwargs)
        if self._implicit:
            smtp._auth_require_tls = False
        return smtp

    def start(self) -> int:
        self.thread.start()

        async def serve() -> int:
            self.server = await self.loop.create_server(
                self._protocol, "127.0.0.1", 0, ssl=self._tls if self._implicit else None
            )
            return int(self.server.sockets[0].getsockname()[1])

        self.port = asyncio.run_coroutine_threadsafe(serve(), self.loop).result(10)
        return self.port

    def next(self, timeout: float = 20) -> Received:
        return self.handler.received.get(timeout=timeout)

    def empty(self) -> bool:
        return self.handler.received.empty()

    def stop(self) -> None:
        async def close() -> None:
            if self.server is not None:
                self.server.close()
            if self.sessions:  # let every connection finish closing before the loop stops
                self.idle.clear()
                for session in tuple(self.sessions):
                    if session.transport is not None:
                        session.transport.close()
                await asyncio.wait_for(self.idle.wait(), 10)

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
