"""The outbound transport seam: what the queue worker hands over, and what it gets back.

A transport takes one *parcel* (envelope sender, recipients, signed bytes) and answers, for every
recipient, one of three results. Temporary and permanent failures are different types because
they drive different things: a temporary one is retried with backoff, a permanent one bounces
(a DSN to the sender, RFC 3464). SMTP replies keep their text, enhanced code included
(RFC 3463), since the DSN quotes them as the Diagnostic-Code.

Implementations: ``mx`` (direct delivery), ``smarthost`` (an SMTP relay), ``ses`` (Amazon SES
over HTTPS), and :class:`FakeTransport` for tests.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Parcel:
    """One delivery attempt: recipients of one message (one domain when the transport says so)."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    domain: str = ""  # the recipients' domain, for transports that deliver per domain


@dataclass(frozen=True, slots=True)
class Accepted:
    """The next hop took responsibility for the message (RFC 5321 §6.1)."""

    reply: str
    remote: str = ""  # the host that answered, e.g. "mx.example.com"
    provider_id: str = ""  # the provider's id of the message (SES MessageId), for its feedback


@dataclass(frozen=True, slots=True)
class TemporaryFailure:
    """Try again later: a 4xx reply, no answer, DNS trouble."""

    reply: str
    remote: str = ""


@dataclass(frozen=True, slots=True)
class PermanentFailure:
    """Do not try again: a 5xx reply, a domain that cannot receive mail."""

    reply: str
    remote: str = ""


Result = Accepted | TemporaryFailure | PermanentFailure


class Transport(Protocol):
    """Where outbound mail leaves through."""

    @property
    def per_domain(self) -> bool:
        """Whether a parcel may only hold recipients of one domain (direct MX delivery)."""
        ...

    async def deliver(self, parcel: Parcel) -> dict[str, Result]:
        """One result per recipient of ``parcel``. Never raises for delivery problems."""
        ...

    async def close(self) -> None:
        """Close pooled connections and clients."""
        ...


_REPLY = re.compile(r"^([245])\d\d(?:[ -]([245]\.\d{1,3}\.\d{1,3}))?")


def classify(code: int, text: str, remote: str = "") -> Result:
    """A result from an SMTP reply code and its text (RFC 5321 §4.2.1)."""
    reply = f"{code} {' '.join(text.split())}".strip()
    if 200 <= code < 300:
        return Accepted(reply, remote)
    if 500 <= code < 600:
        return PermanentFailure(reply, remote)
    return TemporaryFailure(reply, remote)


def status_code(reply: str, *, permanent: bool) -> str:
    """The enhanced status code of a reply (RFC 3463), or one made from its class."""
    found = _REPLY.match(reply)
    if found and found.group(2):
        return found.group(2)
    if found:
        return f"{found.group(1)}.0.0"
    return "5.0.0" if permanent else "4.0.0"


Script = Callable[[Parcel], Mapping[str, Result] | Result]


@dataclass
class FakeTransport:
    """A transport for tests: records parcels and answers from ``script``.

    ``script`` maps a parcel to one result for every recipient, or a dict per recipient; by
    default everything is accepted. ``delivered`` receives each parcel after it is answered.
    """

    script: Script | None = None
    per_domain: bool = False
    parcels: list[Parcel] = field(default_factory=list)
    delivered: asyncio.Queue[Parcel] = field(default_factory=asyncio.Queue)

    async def deliver(self, parcel: Parcel) -> dict[str, Result]:
        self.parcels.append(parcel)
        answer = Accepted("250 2.0.0 OK", "fake") if self.script is None else self.script(parcel)
        if isinstance(answer, Accepted | TemporaryFailure | PermanentFailure):
            results = dict.fromkeys(parcel.recipients, answer)
        else:
            results = {r: answer[r] for r in parcel.recipients}
        self.delivered.put_nowait(parcel)
        return results

    async def close(self) -> None:
        return None


def every(recipients: Sequence[str], result: Result) -> dict[str, Result]:
    return dict.fromkeys(recipients, result)
