"""Inbound authentication of one message: SPF, DKIM and the peer's reverse name concurrently,
then DMARC over SPF and DKIM.

Check order (RFC 7489 §6.6.2): SPF on the SMTP identities and DKIM on the content are
independent; DMARC needs both results and the RFC5322.From domain. The disposition returned is
DMARC's; local policy (what to do with quarantine, overrides) belongs to the caller.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from publicsuffixlist import PublicSuffixList

from mailboxkit.dns.authresults import AuthVerdicts
from mailboxkit.dns.dkimverify import verify_dkim
from mailboxkit.dns.dmarc import check_dmarc, from_domain
from mailboxkit.dns.resolver import Resolver
from mailboxkit.dns.reverse import confirmed_name
from mailboxkit.dns.spf import check_spf

__all__ = ["verify_inbound"]


async def verify_inbound(
    message: bytes,
    *,
    ip: str,
    mail_from: str,
    helo: str,
    resolver: Resolver,
    receiver: str = "unknown",
    psl: PublicSuffixList | None = None,
    sample: Callable[[], float] = random.random,
) -> AuthVerdicts:
    """SPF, DKIM and DMARC verdicts for a message received from `ip` (after DATA).

    DNS trouble never raises (it becomes temperror results); ValueError means `ip` is bad.
    """
    try:
        async with asyncio.TaskGroup() as group:
            spf_task = group.create_task(
                check_spf(ip, mail_from, helo, resolver, receiver=receiver)
            )
            dkim_task = group.create_task(verify_dkim(message, resolver))
            name_task = group.create_task(confirmed_name(resolver, ip))
    except ExceptionGroup as failed:  # only a bad `ip` or a bug: re-raise it plainly
        raise failed.exceptions[0] from failed
    spf, dkim = spf_task.result(), dkim_task.result()
    dmarc = await check_dmarc(from_domain(message), spf, dkim, resolver, psl=psl, sample=sample)
    return AuthVerdicts(spf, tuple(dkim), dmarc, dmarc.disposition, name_task.result())
