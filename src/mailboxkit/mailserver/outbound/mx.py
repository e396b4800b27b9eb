"""Direct delivery to the recipient domain's MX hosts (RFC 5321 §5), through the resolver seam.

Implementation notes:

- Route (RFC 5321 §5.1): the domain's MX records, lowest preference first, equal preferences
  in random order. No MX records (NODATA) means the domain itself is the host (the implicit
  MX). A null MX (RFC 7505, one record with exchange ".") and a domain that does not exist are
  permanent failures; a DNS error is temporary.
- Each host's IPv4 then IPv6 addresses are tried in order, at most ``MAX_ADDRESSES`` in all, until
  one completes a transaction. A host that cannot be reached, or greets with an error, is
  skipped; a connection lost mid-transaction ends this attempt (temporary: the queue retries).
- TLS follows the domain's MTA-STS policy (RFC 8461 §5, ``dns.mtasts``), looked up after the
  route is known and logged with each attempt:
  - enforce: only MX hosts matching the policy are tried (the others are logged and skipped),
    with STARTTLS required and the certificate verified (chain and the MX host name). A host
    failing that is skipped like an unreachable one; when no host qualifies the attempt is a
    temporary failure (4.7.x), retried by the queue, and nothing is sent in the clear.
  - testing: every MX host is tried as without a policy, but first with verified STARTTLS; a
    mismatching host or a TLS failure is logged (event=mta_sts_testing_failure) and the same
    address is then used opportunistically.
  - none, or no policy: opportunistic TLS (STARTTLS when offered, unauthenticated, and once in
    plaintext if the handshake fails: RFC 7435). DANE is not applied.
- ``port`` is 25 in production; tests point it at a local sink.
"""

from __future__ import annotations

import logging
import random

from mailboxkit.dns.mtasts import MtaStsPolicies, Policy
from mailboxkit.dns.records import MtaStsMode
from mailboxkit.dns.resolver import DnsNotFound, DnsTempError, Resolver
from mailboxkit.mailserver.outbound.smtpclient import (
    Endpoint,
    SessionLost,
    SmtpClientPool,
    TlsMode,
    TlsRefused,
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
NO_POLICY_MATCH = (
    "451 4.7.5 No MX host of {domain} matches its MTA-STS policy ({policy}); will retry"
)


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
        policies: MtaStsPolicies | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._resolver = resolver
        self._pool = pool
        self._port = port
        self._policies = policies
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

    async def policy(self, domain: str) -> Policy | None:
        """The MTA-STS policy that applies to ``domain`` (None: none, or mode none)."""
        if self._policies is None:
            return None
        policy = await self._policies.get(domain)
        if policy is None or policy.mode is MtaStsMode.NONE:
            log.info("event=outbound_mta_sts domain=%s policy=none", domain)
            return None
        log.info("event=outbound_mta_sts domain=%s %s", domain, policy.describe())
        return policy

    async def deliver(self, parcel: Parcel) -> dict[str, Result]:
        domain = parcel.domain or parcel.recipients[0].rpartition("@")[2]
        try:
            hosts = await self.exchanges(domain)
        except NoRoute as no_route:
            return every(parcel.recipients, no_route.result)
        policy = await self.policy(domain)
        if policy is not None:
            hosts = self._allowed(domain, hosts, policy)
            if not hosts:
                reply = NO_POLICY_MATCH.format(domain=domain, policy=policy.describe())
                return every(parcel.recipients, TemporaryFailure(reply))
        last = NO_ANSWER
        tried = 0
        for host in hosts:
            for address in await self._addresses(host):
                if tried >= MAX_ADDRESSES:
                    break
                tried += 1
                try:
                    return await self._attempt(domain, host, address, parcel, policy)
                except Unreachable as unreachable:
                    log.info(
                        "event=outbound_host_unreachable host=%s address=%s reason=%s",
                        host,
                        address,
                        unreachable.reason,
                    )
                    last = f"451 {_status(unreachable)} {host} [{address}]: {unreachable.reason}"
                except SessionLost as lost:
                    return every(
                        parcel.recipients,
                        TemporaryFailure(f"451 4.4.2 {host} [{address}]: {lost}", host),
                    )
        return every(parcel.recipients, TemporaryFailure(last))

    def _allowed(self, domain: str, hosts: list[str], policy: Policy) -> list[str]:
        """The hosts a policy lets us try (RFC 8461 §4.1): under enforce, the matching ones."""
        allowed = []
        for host in hosts:
            if policy.matches(host):
                allowed.append(host)
            elif policy.mode is MtaStsMode.ENFORCE:
                log.warning(
                    "event=mta_sts_mx_mismatch domain=%s host=%s %s: skipped",
                    domain,
                    host,
                    policy.describe(),
                )
            else:
                log.warning(
                    "event=mta_sts_testing_failure domain=%s host=%s reason=mx_mismatch",
                    domain,
                    host,
                )
                allowed.append(host)
        return allowed

    async def _attempt(
        self, domain: str, host: str, address: str, parcel: Parcel, policy: Policy | None
    ) -> dict[str, Result]:
        """One transaction with ``host`` at ``address``, TLS as the policy says."""
        if policy is None:
            endpoint = Endpoint(address, self._port, host, TlsMode.OPPORTUNISTIC)
            return await self._pool.send(endpoint, parcel)
        verified = Endpoint(address, self._port, host, TlsMode.STARTTLS)
        try:
            return await self._pool.send(verified, parcel)
        except TlsRefused as refused:
            if policy.mode is MtaStsMode.ENFORCE:
                reason = f"MTA-STS enforce: {refused.reason}"
                raise TlsRefused(reason, offered=refused.offered) from None
            log.warning(
                "event=mta_sts_testing_failure domain=%s host=%s address=%s reason=%s",
                domain,
                host,
                address,
                refused.reason,
            )
        opportunistic = Endpoint(address, self._port, host, TlsMode.OPPORTUNISTIC)
        return await self._pool.send(opportunistic, parcel)

    async def close(self) -> None:
        await self._pool.close()
        if self._policies is not None:
            await self._policies.close()


def _status(unreachable: Unreachable) -> str:
    """The enhanced status code (RFC 3463) of a host we could not use."""
    if isinstance(unreachable, TlsRefused):
        return "4.7.5" if unreachable.offered else "4.7.4"  # crypto failure; security missing
    return "4.4.1"
