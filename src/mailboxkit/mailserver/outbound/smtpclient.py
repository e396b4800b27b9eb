"""The SMTP client side shared by the MX and smarthost transports (aiosmtplib), with a pool.

Implementation notes:

- One transaction per parcel (RFC 5321 §3.3): MAIL FROM (with BODY=8BITMIME for 8-bit content,
  RFC 6152, and SIZE, RFC 1870, when offered), one RCPT per recipient (each answered on its
  own), DATA only when at least one recipient was accepted. Every reply becomes the result of
  the recipients it concerns (``transport.classify``).
- Failures before MAIL FROM (no connection, a 4xx/5xx greeting, TLS or AUTH refused) raise
  :class:`Unreachable`: nothing was sent, so the caller may try another host. A connection lost
  or timing out during the transaction raises :class:`SessionLost`: the caller must not assume
  either way and retries later (at-least-once; RFC 5321 §6.1 accepts the rare duplicate).
- Connections are kept open after a transaction and reused for the next parcel to the same
  endpoint (at most ``max_idle`` per endpoint, for ``idle_seconds``). A reused connection that
  turns out dead before MAIL FROM is answered is replaced once by a fresh one.
- TLS modes: ``opportunistic`` (STARTTLS when offered, certificate not checked, and once in
  plaintext if the handshake fails: RFC 7435, what direct MX delivery does without MTA-STS),
  ``starttls`` (required, verified: chain and host name, for a smarthost and for an MX under
  an MTA-STS policy), ``implicit`` (RFC 8314, verified), ``none``. Required TLS that does not
  happen raises :class:`TlsRefused` (an :class:`Unreachable`: nothing was sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import aiosmtplib

from mailboxkit.mailserver.outbound.transport import Accepted, Parcel, Result, classify, every

log = logging.getLogger(__name__)

CLOSE_WAIT = 5.0  # seconds a closing connection may take to shut TLS down


class TlsMode(StrEnum):
    OPPORTUNISTIC = "opportunistic"
    STARTTLS = "starttls"
    IMPLICIT = "implicit"
    NONE = "none"


class Unreachable(Exception):
    """No transaction started: connection, greeting, TLS or AUTH failed."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class TlsRefused(Unreachable):
    """TLS was required and did not happen: STARTTLS not offered (``offered`` False), or the
    handshake or the certificate check failed."""

    def __init__(self, reason: str, *, offered: bool = True) -> None:
        super().__init__(reason)
        self.offered = offered


class SessionLost(Exception):
    """The connection broke or timed out in the middle of a transaction."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect: an address (or name), a port, and the name the server goes by."""

    address: str
    port: int
    server_name: str
    tls: TlsMode
    username: str = ""
    password: str = field(default="", repr=False)


def unverified_context() -> ssl.SSLContext:
    """A client context for opportunistic TLS (RFC 7435): encrypt, do not authenticate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class _Client(aiosmtplib.SMTP):
    """aiosmtplib's client, telling when its connection is really gone (TLS shut down and
    socket closed), so that closing can wait for it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lost = asyncio.Event()

    def _on_connection_lost(self, protocol: Any) -> None:
        self.lost.set()
        super()._on_connection_lost(protocol)

    async def discard(self, *, connected: bool = False) -> None:
        """Close the connection and wait (briefly) until it is closed."""
        connected = connected or self.transport is not None
        self.close()
        if connected and not self.lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_WAIT):
                    await self.lost.wait()


@dataclass(slots=True)
class _Idle:
    client: _Client
    since: float


class SmtpClientPool:
    """Sends parcels over pooled aiosmtplib connections."""

    def __init__(
        self,
        *,
        helo: str,
        timeout: float,
        verified_context: ssl.SSLContext | None = None,
        max_idle: int = 4,
        idle_seconds: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._helo = helo
        self._timeout = timeout
        self._verified = verified_context or ssl.create_default_context()
        self._unverified = unverified_context()
        self._max_idle = max_idle
        self._idle_seconds = idle_seconds
        self._monotonic = monotonic
        self._idle: dict[Endpoint, list[_Idle]] = {}

    async def send(self, endpoint: Endpoint, parcel: Parcel) -> dict[str, Result]:
        """Run one transaction; raises :class:`Unreachable` or :class:`SessionLost`."""
        client = await self._take(endpoint)
        if client is not None:
            try:
                results = await self._transaction(client, endpoint, parcel)
            except _StaleConnection:
                await client.discard()
            except BaseException:  # cancelled (shutdown) or a bug: never leave a socket open
                client.close()
                raise
            else:
                await self._give_back(endpoint, client)
                return results
        client = await self._connect(endpoint)
        try:
            results = await self._transaction(client, endpoint, parcel)
        except _StaleConnection as error:
            await client.discard()
            raise Unreachable(str(error.__cause__ or error)) from None
        except BaseException:
            client.close()
            raise
        await self._give_back(endpoint, client)
        return results

    async def close(self) -> None:
        idle, self._idle = self._idle, {}
        for items in idle.values():
            for item in items:
                await _quit(item.client)

    async def _take(self, endpoint: Endpoint) -> _Client | None:
        items = self._idle.get(endpoint)
        horizon = self._monotonic() - self._idle_seconds
        while items:
            item = items.pop()
            if item.since >= horizon and item.client.is_connected:
                return item.client
            await item.client.discard()
        return None

    async def _give_back(self, endpoint: Endpoint, client: _Client) -> None:
        if not client.is_connected:
            return
        items = self._idle.setdefault(endpoint, [])
        if len(items) >= self._max_idle:
            await client.discard()
            return
        items.append(_Idle(client, self._monotonic()))

    async def _connect(self, endpoint: Endpoint) -> _Client:
        if endpoint.tls is TlsMode.OPPORTUNISTIC:
            try:
                return await self._open(endpoint, tls=True)
            except _TlsFailed as error:
                log.info(
                    "event=outbound_tls_failed host=%s reason=%s: retrying in plaintext",
                    endpoint.server_name,
                    error,
                )
                return await self._open(endpoint, tls=False)
        try:
            return await self._open(endpoint, tls=endpoint.tls is not TlsMode.NONE)
        except _TlsFailed as error:
            raise TlsRefused(f"TLS with {endpoint.server_name} failed: {error}") from None

    async def _open(self, endpoint: Endpoint, *, tls: bool) -> _Client:
        implicit = endpoint.tls is TlsMode.IMPLICIT
        verified = endpoint.tls in (TlsMode.STARTTLS, TlsMode.IMPLICIT)
        context = self._verified if verified else self._unverified
        client = _Client(
            hostname=endpoint.address,
            port=endpoint.port,
            local_hostname=self._helo,
            timeout=self._timeout,
            use_tls=implicit,
            start_tls=False,
            tls_context=context if implicit else None,
        )
        try:
            await client.connect()
            await client.ehlo()
            if tls and not implicit:
                if client.supports_extension("starttls"):
                    try:
                        await client.starttls(
                            server_hostname=endpoint.server_name, tls_context=context
                        )
                    except (ssl.SSLError, aiosmtplib.SMTPException, OSError) as error:
                        await client.discard()
                        raise _TlsFailed(str(error)) from error
                elif endpoint.tls is TlsMode.STARTTLS:
                    raise TlsRefused(
                        f"{endpoint.server_name} does not offer STARTTLS", offered=False
                    )
            if endpoint.username:
                await client.login(endpoint.username, endpoint.password)
        except _TlsFailed:
            raise
        except Unreachable:
            await client.discard()
            raise
        except aiosmtplib.SMTPAuthenticationError as error:
            await client.discard()
            log.error(
                "event=outbound_auth_failed host=%s code=%d", endpoint.server_name, error.code
            )
            raise Unreachable(f"{error.code} {error.message}") from None
        except aiosmtplib.SMTPResponseException as error:
            await client.discard()
            raise Unreachable(
                f"{error.code} {error.message}", permanent=500 <= error.code < 600
            ) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            await client.discard()
            raise Unreachable(f"{type(error).__name__}: {error}") from None
        except BaseException:  # cancelled while connecting
            client.close()
            raise
        return client

    async def _transaction(
        self, client: _Client, endpoint: Endpoint, parcel: Parcel
    ) -> dict[str, Result]:
        remote = endpoint.server_name
        options = []
        if not parcel.data.isascii() and client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        if client.supports_extension("size"):
            options.append(f"SIZE={len(parcel.data)}")
        try:
            await client.mail(parcel.mail_from, options=options)
        except aiosmtplib.SMTPResponseException as error:
            if error.code == 421:
                raise _StaleConnection() from error
            with contextlib.suppress(aiosmtplib.SMTPException):
                await client.rset()
            return every(parcel.recipients, classify(error.code, error.message, remote))
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            raise _StaleConnection() from error
        results: dict[str, Result] = {}
        try:
            accepted = []
            for recipient in parcel.recipients:
                try:
                    await client.rcpt(recipient)
                except aiosmtplib.SMTPRecipientRefused as error:
                    results[recipient] = classify(error.code, error.message, remote)
                else:
                    accepted.append(recipient)
            if not accepted:
                await client.rset()
                return results
            try:
                response = await client.data(parcel.data)
            except aiosmtplib.SMTPDataError as error:
                results.update(every(accepted, classify(error.code, error.message, remote)))
                return results
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            await client.discard()
            raise SessionLost(f"{type(error).__name__}: {error}") from None
        reply = f"{response.code} {' '.join(response.message.split())}"
        results.update(every(accepted, Accepted(reply, remote)))
        return results


class _TlsFailed(Exception):
    pass


class _StaleConnection(Exception):
    pass


async def _quit(client: _Client) -> None:
    connected = client.transport is not None
    with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
        await client.quit()
    await client.discard(connected=connected)
