"""Delivery through an SMTP relay (a "smarthost": SES SMTP, a provider's relay, a local MTA).

Implementation notes:

- Every parcel goes to the one configured host, all recipients in one transaction, over a
  pooled connection (``smtpclient``). AUTH (RFC 4954) when a user name is configured, only
  after TLS unless the operator chose ``none``.
- TLS: ``starttls`` (port 587, RFC 3207) or ``implicit`` (port 465, RFC 8314), both with the
  relay's certificate verified; ``none`` for a relay on the same host or network.
- A relay that cannot be reached, or refuses our credentials, is a temporary failure for every
  recipient: mail waits in the queue until the relay (or its configuration) is back.
"""

from __future__ import annotations

import logging

from mailboxkit.mailserver.outbound.smtpclient import (
    Endpoint,
    SessionLost,
    SmtpClientPool,
    TlsMode,
    Unreachable,
)
from mailboxkit.mailserver.outbound.transport import Parcel, Result, TemporaryFailure, every

log = logging.getLogger(__name__)


class SmarthostTransport:
    per_domain = False

    def __init__(
        self,
        pool: SmtpClientPool,
        *,
        host: str,
        port: int,
        tls: TlsMode,
        username: str = "",
        password: str = "",
    ) -> None:
        if tls is TlsMode.OPPORTUNISTIC:
            raise ValueError("a smarthost's TLS is starttls, implicit or none")
        self._pool = pool
        self._endpoint = Endpoint(host, port, host, tls, username, password)

    async def deliver(self, parcel: Parcel) -> dict[str, Result]:
        host = self._endpoint.server_name
        try:
            return await self._pool.send(self._endpoint, parcel)
        except Unreachable as unreachable:
            log.warning("event=smarthost_unreachable host=%s reason=%s", host, unreachable.reason)
            reply = f"451 4.4.1 relay {host}: {unreachable.reason}"
        except SessionLost as lost:
            reply = f"451 4.4.2 relay {host}: {lost}"
        return every(parcel.recipients, TemporaryFailure(reply, host))

    async def close(self) -> None:
        await self._pool.close()
