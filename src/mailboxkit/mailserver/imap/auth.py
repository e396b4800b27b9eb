"""IMAP credentials: the user name is an inbox address, the password an API key of that
inbox or of its account; and the throttle on failed attempts per client address.

Implementation notes:

- A key scoped to another inbox, or a key of another account, fails exactly like a wrong key
  (no oracle for which inboxes exist).
- Every failure is delayed by the session (``auth_failure_delay``) and counted per client
  address; past ``max_auth_failures`` within ``auth_failure_window`` seconds, that address's
  attempts are refused without checking (RFC 5530 ``UNAVAILABLE``). The table is bounded:
  the oldest addresses are forgotten first.
- SASL PLAIN (RFC 4616): ``authzid NUL authcid NUL passwd``; an authorization identity other
  than the authentication identity is refused (no proxy logins).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

from mailboxkit.mailserver.imap.state import User
from mailboxkit.store.accounts import authenticate_key, find_inbox, record_key_use
from mailboxkit.store.clock import Clock
from mailboxkit.store.db import Database

MAX_TRACKED_ADDRESSES = 100_000


async def check_credentials(db: Database, clock: Clock, username: str, secret: str) -> User | None:
    """The user ``username`` if ``secret`` is a live API key that may use that inbox."""
    async with db.read() as conn:
        owner = await authenticate_key(conn, secret)
        if owner is None:
            return None
        inbox = await find_inbox(conn, username)
    if inbox is None or inbox.account_id != owner.account_id:
        return None
    if owner.inbox_id is not None and owner.inbox_id != inbox.id:
        return None
    now = clock.now()
    if owner.use_is_stale(now):
        async with db.write() as conn:
            await record_key_use(conn, owner.key_id, now=now)
    return User(inbox.id, inbox.account_id, inbox.address)


def parse_plain(message: bytes) -> tuple[str, str] | None:
    """(authcid, passwd) of a SASL PLAIN message (RFC 4616 §2), or None if malformed."""
    parts = message.split(b"\x00")
    if len(parts) != 3:
        return None
    try:
        authzid, authcid, passwd = (part.decode("utf-8") for part in parts)
    except UnicodeDecodeError:
        return None
    if not authcid or not passwd or (authzid and authzid.lower() != authcid.lower()):
        return None
    return authcid, passwd


class AuthThrottle:
    """Failed authentications per client address within a sliding window."""

    def __init__(
        self, max_failures: int, window: float, now: Callable[[], float] = time.monotonic
    ) -> None:
        self._max = max_failures
        self._window = window
        self._now = now
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def blocked(self, address: str) -> bool:
        """Whether ``address`` has used up its failures."""
        failures = self._recent(address)
        return failures is not None and len(failures) >= self._max

    def failed(self, address: str) -> None:
        """Count one failure of ``address``."""
        failures = self._recent(address)
        if failures is None:
            failures = self._failures[address] = deque()
            while len(self._failures) > MAX_TRACKED_ADDRESSES:
                self._failures.popitem(last=False)
        failures.append(self._now())
        self._failures.move_to_end(address)

    def _recent(self, address: str) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        horizon = self._now() - self._window
        while failures and failures[0] < horizon:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures
