"""Direct delivery to the recipient domain's MX hosts (RFC 5321 §5), through the resolver seam.

Implementation notes:

- Route (RFC 5321 §5.1): the domain's MX records, lowest preference first, equal preferences
  in random order. No MX records (NODATA) means the domain itself is the host (the implicit
  MX). A null MX (RFC 7505, one record with exchange ".") and a domain that does not exist are
  permanent failures; a DNS error is temporary.
- Each host's IPv4 then IPv6 addresses are tried in order, at most ``MAX_ADDRESSES`` in all, until
  one completes a transaction. A host that cannot be reached, or greets with an error, is
  skipped; a connection lost mid-transaction ends this attempt (temporary: the queue retries).
- TLS is opportunistic (STARTTLS when offered, unauthenticated, RFC 7435). MTA-STS (RFC 8461)
  and DANE are not applied yet.
- ``port`` is 25 in production; tests point it at a local sink.
"""

from __future__ import annotations

import logging
import random

from mailboxkit.dns.resolver import DnsNotFound, DnsTempError, Resolver
from mailboxkit.mailserver.outbound.smtpclient import (
    Endpoint,
    SessionLost,
    SmtpClientPool,
    TlsMode,
    Unreachable,
)
from mailboxkit.mailserver.outbound.transport import (
    Parcel,
    PermanentFailure,
    Result,
    TemporaryFailure,
    every,
)

log = logging.getLogger(__name__)

MAX_ADDRESSES = 8
"""Addresses tried per attempt, over all MX hosts (RFC 5321 §5.1 asks for at least two)."""

NULL_MX = "556 5.1.10 The recipient domain accepts no mail (null MX, RFC 7505)"
NO_SUCH_DOMAIN = "550 5.1.2 The recipient domain does not exist"
DNS_TROUBLE = "451 4.4.3 DNS lookup for the recipient domain failed; will retry"
NO_ANSWER = "451 4.4.1 No MX host of the recipient domain answered; will retry"


class NoRoute(Exception):
    def __init__(self, result: Result) -> None:
        super().__init__(result.reply)
        self.result = result


class MxTransport:
    """Delivers each domain's recipients to that domain's mail exchangers."""

    per_domain = True

    def __init__(
        self,
        resolver: Resolver,
        pool: SmtpClientPool,
        *,
        port: int = 25,
        rng: random.Random | None = None,
    ) -> None:
        self._resolver = resolver
        self._pool = pool
        self._port = port
        self._rng = rng or random.Random()

    async def exchanges(self, domain: str) -> list[str]:
        """The hosts to try for ``domain``, in order. Raises :class:`NoRoute`."""
        try:
            records = await self._resolver.mx(domain)
        except DnsTempError:
            raise NoRoute(TemporaryFailure(DNS_TROUBLE)) from None
        except DnsNotFound as missing:
            if missing.nxdomain:
                raise NoRoute(PermanentFailure(NO_SUCH_DOMAIN)) from None
            return [domain]  # RFC 5321 §5.1: the implicit MX
        if any(host.rstrip(".") in ("", ".") for _, host in records):
            raise NoRoute(PermanentFailure(NULL_MX))
        shuffled = [(pref, self._rng.random(), host.rstrip(".")) for pref, host in records]
        return [host for _, _, host in sorted(shuffled)]

    async def _addresses(self, host: str) -> list[str]:
        found: list[str] = []
        for lookup in (self._resolver.a, self._resolver.aaaa):
            try:
                found.extend(await lookup(host))
            except DnsNotFound:
                continue
            except DnsTempError:
                log.info("event=outbound_dns_error host=%s", host)
        return found

    async def deliver(self, parcel: Parcel) -> dict[str, Result]:
        domain = parcel.domain or parcel.recipients[0].rpartition("@")[2]
        try:
            hosts = await self.exchanges(domain)
        except NoRoute as no_route:
            return every(parcel.recipients, no_route.result)
        last = NO_ANSWER
        tried = 0
        for host in hosts:
            for address in await self._addresses(host):
                if tried >= MAX_ADDRESSES:
                    break
                tried += 1
                endpoint = Endpoint(address, self._port, host, TlsMode.OPPORTUNISTIC)
                try:
                    return await self._pool.send(endpoint, parcel)
                except Unreachable as unreachable:
                    log.info(
                        "event=outbound_host_unreachable host=%s address=%s reason=%s",
                        host,
                        address,
                        unreachable.reason,
                    )
                    last = f"451 4.4.1 {host} [{address}]: {unreachable.reason}"
                except SessionLost as lost:
                    return every(
                        parcel.recipients,
                        TemporaryFailure(f"451 4.4.2 {host} [{address}]: {lost}", host),
                    )
        return every(parcel.recipients, TemporaryFailure(last))

    async def close(self) -> None:
        await self._pool.close()
