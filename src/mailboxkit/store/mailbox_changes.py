"""Change notices: an in-process doorbell per inbox, rung after any commit that changes its
folders or entries (IMAP sessions, the HTTP API, delivery via the event bus).

A doorbell, not a log: it carries no data and may ring for nothing; a listener then reads
what changed (``mailboxes.changes_since``). Several processes sharing one PostgreSQL
database would need LISTEN/NOTIFY to ring each other's; that is not done yet.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass(eq=False, slots=True)
class ChangeWatch:
    """One listener's doorbell for one inbox: ``rung`` is set by every notice."""

    hub: MailboxChanges
    inbox_id: str
    rung: asyncio.Event = field(default_factory=asyncio.Event)

    def close(self) -> None:
        self.hub._remove(self)


class MailboxChanges:
    """The watches of every inbox; :meth:`notify` after commit (see the module notes)."""

    def __init__(self) -> None:
        self._watches: dict[str, set[ChangeWatch]] = {}

    def watch(self, inbox_id: str) -> ChangeWatch:
        watch = ChangeWatch(self, inbox_id)
        self._watches.setdefault(inbox_id, set()).add(watch)
        return watch

    def notify(self, inbox_id: str) -> None:
        for watch in self._watches.get(inbox_id, ()):
            watch.rung.set()

    def notify_all(self) -> None:
        for watches in self._watches.values():
            for watch in watches:
                watch.rung.set()

    def _remove(self, watch: ChangeWatch) -> None:
        watches = self._watches.get(watch.inbox_id)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watches[watch.inbox_id]
