"""A domain's verification state from its DNS checks, and the worker that re-checks verified
domains periodically.

Implementation notes:

- One function, :func:`record_result`, turns a check (by the API's ``verify`` or by the
  re-check) into the domain's state (``store.domains.record_check``) and its events, written in
  the same transaction: ``domain.verified`` the first time every required record is right and
  again when a failing domain is right again (``recovered``), ``domain.verification_failed``
  when a verified domain's required record is missing or wrong. A check that could not decide
  (DNS errors only) changes nothing. The operator's shared domains change state alike but have
  no account to tell. The caller publishes the events after the commit.
- :class:`DomainRechecker` checks every verified domain (failing ones too, so they recover)
  one after another every ``interval`` seconds, the first time one interval after start. A
  failing domain is logged as a warning at every pass. Several processes may re-check at
  once: the state changes are conditional updates, so only one of them tells the account.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailboxkit.dns import dkimkeys
from mailboxkit.dns.check import CheckStatus, DomainCheck, RecordResolver, check_domain
from mailboxkit.dns.records import DomainProfile, PublishedKey
from mailboxkit.store import domains
from mailboxkit.store.clock import Clock
from mailboxkit.store.db import Database
from mailboxkit.store.domains import Domain, Transition
from mailboxkit.store.events import Event, EventBus, EventType, record_event
from mailboxkit.store.periodic import Periodic

__all__ = ["CheckOutcome", "DomainRechecker", "ProfileFactory", "record_result"]

log = logging.getLogger(__name__)

ProfileFactory = Callable[[str, Sequence[PublishedKey]], DomainProfile]
"""The profile a domain's DNS records are made from, given its name and DKIM keys."""


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """What one check did to a domain."""

    domain: Domain  # as it is after the check
    transition: Transition
    events: tuple[Event, ...]


def is_broken(result: DomainCheck) -> bool:
    """Whether a required record is missing or wrong (not merely undecided)."""
    return any(
        c.required and c.status in (CheckStatus.MISSING, CheckStatus.WRONG) for c in result.checks
    )


def _problems(result: DomainCheck) -> list[dict[str, Any]]:
    return [
        {
            "purpose": str(c.purpose),
            "name": c.name,
            "type": c.type,
            "status": str(c.status),
            "expected": c.expected,
            "found": list(c.found),
            "detail": c.detail,
        }
        for c in result.checks
        if c.required and c.status is not CheckStatus.OK
    ]


async def record_result(
    db: Database, domain: Domain, result: DomainCheck, *, now: datetime
) -> CheckOutcome:
    """Record a check of ``domain``: its new state and the events saying so (not published)."""
    events: list[Event] = []
    async with db.write() as conn:
        transition = await domains.record_check(
            conn, domain.id, ok=result.ok, broken=is_broken(result), now=now
        )
        after = await domains.domain_state(conn, domain.id)
        if after is None:  # deleted meanwhile
            after = domain
        if domain.account_id is not None and transition is not Transition.NONE:
            events.append(await _record_event(conn, after, transition, result, now))
    level = logging.WARNING if after.dns_failing_since is not None else logging.INFO
    log.log(
        level,
        "event=domain_checked domain_id=%s domain=%s ok=%s status=%s transition=%s problems=%d",
        domain.id,
        domain.name,
        result.ok,
        after.dns_status,
        transition,
        len(result.problems),
    )
    return CheckOutcome(after, transition, tuple(events))


async def _record_event(
    conn: Any, domain: Domain, transition: Transition, result: DomainCheck, now: datetime
) -> Event:
    assert domain.account_id is not None
    data: dict[str, Any] = {"domain_id": domain.id, "domain": domain.name}
    if transition is Transition.FAILED:
        assert domain.dns_failing_since is not None
        data["failing_since"] = domain.dns_failing_since.isoformat()
        data["problems"] = _problems(result)
        kind = EventType.DOMAIN_VERIFICATION_FAILED
    else:
        assert domain.verified_at is not None
        data["verified_at"] = domain.verified_at.isoformat()
        data["recovered"] = transition is Transition.RECOVERED
        kind = EventType.DOMAIN_VERIFIED
    return await record_event(conn, kind, account_id=domain.account_id, data=data, now=now)


class DomainRechecker:
    """Re-checks the DNS of every verified domain every ``interval`` seconds."""

    def __init__(
        self,
        db: Database,
        resolver: RecordResolver,
        profile: ProfileFactory,
        clock: Clock,
        bus: EventBus,
        *,
        interval: float,
    ) -> None:
        self._db = db
        self._resolver = resolver
        self._profile = profile
        self._clock = clock
        self._bus = bus
        self._periodic = Periodic("dns_recheck", interval, self.run_once)

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def run_once(self) -> list[CheckOutcome]:
        """One pass over every verified domain; what each check did."""
        async with self._db.read() as conn:
            verified = await domains.verified_domains(conn)
        outcomes = []
        for domain in verified:
            try:
                outcome = await self.check(domain)
            except Exception:  # one domain's trouble does not stop the others
                log.exception("event=dns_recheck_failed domain=%s", domain.name)
                continue
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    async def check(self, domain: Domain) -> CheckOutcome | None:
        """Check one domain now and record the result (None: the domain is gone)."""
        try:
            keys = await dkimkeys.ensure_keys(
                self._db, domain.name, now=self._clock.now(), create_domain=False
            )
        except dkimkeys.UnknownDomain:
            return None
        profile = self._profile(domain.name, [k.published for k in keys])
        result = await check_domain(profile, self._resolver)
        outcome = await record_result(self._db, domain, result, now=self._clock.now())
        self._bus.publish(outcome.events)
        return outcome
