"""Change notices: a doorbell per inbox, rung after any commit that changes its folders or
entries (IMAP sessions, the HTTP API, the outbound worker, delivery via the event bus).

A doorbell, not a log: it carries no data and may ring for nothing; a listener then reads
what changed (``entries.changes_since``).

Implementation notes:

- :meth:`MailboxChanges.notify` is the one path every change takes: it rings this process's
  watches and hands the inbox id to :attr:`MailboxChanges.relay`, which ``store.notify``
  sets on PostgreSQL to ring the other server processes (LISTEN/NOTIFY). Notices that
  arrive from other processes ring local watches only (:meth:`MailboxChanges.ring`), so a
  notice is never sent on twice.
- Committed events carry an inbox id; :func:`relay_events` turns each into a notice. A bus
  subscription that overflowed lost some: every inbox is rung, here and elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from mailboxkit.store.events import EventBus

Relay = Callable[[str | None], None]
"""Takes each local notice: an inbox id, or None for every inbox."""


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
        self.relay: Relay | None = None

    def watch(self, inbox_id: str) -> ChangeWatch:
        watch = ChangeWatch(self, inbox_id)
        self._watches.setdefault(inbox_id, set()).add(watch)
        return watch

    def notify(self, inbox_id: str) -> None:
        """``inbox_id`` changed here: ring its watches in this and every other process."""
        self.ring(inbox_id)
        if self.relay is not None:
            self.relay(inbox_id)

    def notify_all(self) -> None:
        """Any inbox may have changed: ring every watch in this and every other process."""
        self.ring_all()
        if self.relay is not None:
            self.relay(None)

    def ring(self, inbox_id: str) -> None:
        """Ring the watches of ``inbox_id`` in this process only."""
        for watch in self._watches.get(inbox_id, ()):
            watch.rung.set()

    def ring_all(self) -> None:
        """Ring every watch of this process only."""
        for watches in self._watches.values():
            for watch in watches:
                watch.rung.set()

    def _remove(self, watch: ChangeWatch) -> None:
        watches = self._watches.get(watch.inbox_id)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watches[watch.inbox_id]


async def relay_events(bus: EventBus, changes: MailboxChanges) -> None:
    """Turn every committed event with an inbox id into a notice, until cancelled."""
    with bus.subscribe() as subscription:
        while True:
            event = await subscription.get()
            if subscription.overflowed:
                subscription.overflowed = False
                changes.notify_all()
            if event.inbox_id is not None:
                changes.notify(event.inbox_id)
