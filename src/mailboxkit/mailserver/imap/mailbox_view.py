"""The selected mailbox as one session sees it: sequence numbers, last reported flags, and
the untagged responses that bring the client up to date (RFC 3501 §7.3, §7.4.1; RFC 7162).

Pure: the handlers read :class:`~mailboxkit.store.entries.FolderChanges` from the store
and :meth:`MailboxView.apply` turns them into responses while updating the view.

Implementation notes:

- Sequence number ``n`` is ``uids[n - 1]``. Messages join at the end (EXISTS) and leave only
  when an EXPUNGE (or VANISHED, once QRESYNC is enabled, RFC 7162 §3.2.10) is sent.
- RFC 3501 §7.4.1: no EXPUNGE while answering FETCH, STORE or SEARCH (sequence numbers
  would shift under the client). Such expunges are held in ``pending_expunges`` and the
  message keeps its number until a later command may report them; fetching it meanwhile
  gives nothing.
- ``known_uid`` is the largest UID the view has accounted for; every entry above it is new.
- A FETCH of flags is sent when they differ from what this session last reported, so a
  session's own STORE is not echoed twice; with CONDSTORE a new MODSEQ alone is reported
  too, and every such FETCH carries UID and MODSEQ (RFC 7162 §3.1).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from mailboxkit.mailserver.imap.responses import (
    Atom,
    Encoded,
    Exists,
    Expunged,
    FetchData,
    FlagsData,
    Response,
    Value,
    Vanished,
    encode_value,
)
from mailboxkit.mailserver.imap.sequence_set import SequenceSet
from mailboxkit.store.entries import EntryFlags, FolderChanges, Snapshot, SystemFlag

SYSTEM_FLAGS: tuple[str, ...] = tuple(flag.value for flag in SystemFlag)


def flags_value(entry: EntryFlags) -> Encoded:
    """The FLAGS item of ``entry``'s FETCH response."""
    return _encoded_flags(entry.flags, entry.keywords)


@lru_cache(maxsize=1024)
def _encoded_flags(flags: frozenset[SystemFlag], keywords: tuple[str, ...]) -> Encoded:
    # The messages of a folder share a few combinations of flags: a FETCH 1:* (FLAGS) of
    # 10,000 messages encodes each combination once.
    entry = EntryFlags(0, 0, flags, keywords)
    return Encoded(encode_value(tuple(Atom(flag) for flag in entry.imap_flags())))


class InvalidSequence(ValueError):
    """A message sequence number above the message count (RFC 3501 §9 ``seq-number``)."""


@dataclass(slots=True, eq=False)
class MailboxView:
    folder_id: int
    name: str
    uidvalidity: int
    read_only: bool
    uids: list[int]
    flags: dict[int, EntryFlags]
    modseq: int
    known_uid: int
    keywords: dict[str, str] = field(default_factory=dict)  # lower-case -> as first seen
    pending_expunges: set[int] = field(default_factory=set)
    condstore: bool = False
    qresync: bool = False

    @classmethod
    def open(
        cls, snapshot: Snapshot, *, read_only: bool, condstore: bool, qresync: bool
    ) -> MailboxView:
        folder = snapshot.folder
        view = cls(
            folder.id,
            folder.name,
            folder.uidvalidity,
            read_only,
            [entry.uid for entry in snapshot.entries],
            {entry.uid: entry for entry in snapshot.entries},
            folder.highestmodseq,
            folder.uidnext - 1,
            condstore=condstore or qresync,
            qresync=qresync,
        )
        for entry in snapshot.entries:
            view._learn_keywords(entry)
        return view

    # -- numbers ---------------------------------------------------------------------

    @property
    def exists(self) -> int:
        return len(self.uids)

    def sequence_number(self, uid: int) -> int | None:
        index = bisect.bisect_left(self.uids, uid)
        return index + 1 if index < len(self.uids) and self.uids[index] == uid else None

    def resolve(self, sequence_set: SequenceSet, *, uid: bool) -> list[int]:
        """The UIDs a sequence set names, ascending (RFC 3501 §6.4.8 for UID sets).

        Raises :class:`InvalidSequence` for a sequence number above the message count.
        """
        if not uid:
            if sequence_set.largest_explicit() > self.exists:
                raise InvalidSequence("Invalid message sequence number")
            return [self.uids[n - 1] for n in sequence_set.iter_numbers(self.exists)]
        if not self.uids:
            return []
        found: list[int] = []
        for low, high in sequence_set.resolve(self.uids[-1]):
            start = bisect.bisect_left(self.uids, low)
            stop = bisect.bisect_right(self.uids, high)
            found.extend(self.uids[start:stop])
        return found

    def flag_names(self) -> tuple[str, ...]:
        """The FLAGS of the mailbox: system flags and every keyword in use (RFC 3501 §7.2.6)."""
        return (*SYSTEM_FLAGS, *self.keywords.values())

    # -- updates ---------------------------------------------------------------------

    def _learn_keywords(self, entry: EntryFlags) -> bool:
        grew = False
        for keyword in entry.keywords:
            if keyword.lower() not in self.keywords:
                self.keywords[keyword.lower()] = keyword
                grew = True
        return grew

    def fetch_flags(self, entry: EntryFlags, *, uid: bool = False, flags: bool = True) -> FetchData:
        """``* n FETCH (FLAGS (...))`` for a message of the view whose flags changed. Once
        CONDSTORE is on it carries UID and MODSEQ too (RFC 7162 §3.1); ``flags=False`` is the
        MODSEQ-only form of a ``.SILENT`` STORE (§3.1.3)."""
        sequence = self.sequence_number(entry.uid)
        assert sequence is not None
        items: list[tuple[str, Value]] = []
        if uid or self.condstore:
            items.append(("UID", entry.uid))
        if flags:
            items.append(("FLAGS", flags_value(entry)))
        if self.condstore:
            items.append(("MODSEQ", (entry.modseq,)))
        return FetchData(sequence, tuple(items))

    def record(self, entries: Iterable[EntryFlags]) -> list[Response]:
        """Take entries this session changed itself as reported; a FLAGS response first if
        they brought new keywords (RFC 3501 §7.2.6)."""
        grew = False
        for entry in entries:
            if entry.uid in self.flags:
                self.flags[entry.uid] = entry
                grew = self._learn_keywords(entry) or grew
        return [FlagsData(self.flag_names())] if grew else []

    def apply(self, changes: FolderChanges, *, allow_expunge: bool) -> list[Response]:
        """Responses that report ``changes`` (read from the store after :attr:`modseq` for
        UIDs up to :attr:`known_uid`), updating the view to match."""
        self.pending_expunges.update(u for u in changes.expunged if u in self.flags)
        out: list[Response] = []
        if allow_expunge and self.pending_expunges:
            out.extend(self._expunge(sorted(self.pending_expunges)))
            self.pending_expunges.clear()
        grew = False
        updates: list[Response] = []
        for entry in changes.updated:
            before = self.flags.get(entry.uid)
            if before is None or entry.uid in self.pending_expunges:
                continue
            grew = self._learn_keywords(entry) or grew
            self.flags[entry.uid] = entry
            if (before.flags, before.keywords) != (entry.flags, entry.keywords) or (
                self.condstore and before.modseq != entry.modseq
            ):
                updates.append(self.fetch_flags(entry))
        for entry in changes.added:
            grew = self._learn_keywords(entry) or grew
            self.uids.append(entry.uid)
            self.flags[entry.uid] = entry
            self.known_uid = max(self.known_uid, entry.uid)
        if grew:
            out.append(FlagsData(self.flag_names()))
        out.extend(updates)
        if changes.added:
            out.append(Exists(self.exists))
        self.modseq = max(self.modseq, changes.highestmodseq)
        return out

    def _expunge(self, uids: list[int]) -> list[Response]:
        if self.qresync:
            for uid in uids:
                self._drop(uid)
            return [Vanished(tuple(uids))]
        out: list[Response] = []
        for uid in reversed(uids):  # highest first: no renumbering between responses
            sequence = self.sequence_number(uid)
            if sequence is not None:
                out.append(Expunged(sequence))
                self._drop(uid)
        return out

    def _drop(self, uid: int) -> None:
        index = bisect.bisect_left(self.uids, uid)
        if index < len(self.uids) and self.uids[index] == uid:
            del self.uids[index]
        self.flags.pop(uid, None)
