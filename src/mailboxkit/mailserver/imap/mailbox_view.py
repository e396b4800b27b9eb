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
- Compact: per message a UID, a MODSEQ and the index of its combination of flags and keywords,
  in three arrays (16 bytes a message), since a session keeps its view as long as the mailbox
  is selected; a mailbox's messages share few combinations, each kept once.
- ``saved`` is the search result variable of SEARCHRES (RFC 5182 §2.1), as UIDs: a new view
  starts with it empty, which is the reset SELECT, EXAMINE, CLOSE and UNSELECT call for, and
  an expunged message leaves it when it leaves the view (``resolve`` reads only UIDs still
  here).
- A FETCH of flags is sent when they differ from what this session last reported, so a
  session's own STORE is not echoed twice; with CONDSTORE a new MODSEQ alone is reported
  too, and every such FETCH carries UID and MODSEQ (RFC 7162 §3.1).
"""

from __future__ import annotations

import bisect
from array import array
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
from mailboxkit.store.entries import (
    EntryFlags,
    FolderChanges,
    Snapshot,
    SystemFlag,
    imap_flags,
)

SYSTEM_FLAGS: tuple[str, ...] = tuple(flag.value for flag in SystemFlag)


def flags_value(entry: EntryFlags) -> Encoded:
    """The FLAGS item of ``entry``'s FETCH response."""
    return _encoded_flags(entry.flags, entry.keywords)


@lru_cache(maxsize=1024)
def _encoded_flags(flags: frozenset[SystemFlag], keywords: tuple[str, ...]) -> Encoded:
    # The messages of a folder share a few combinations of flags: a FETCH 1:* (FLAGS) of
    # 10,000 messages encodes each combination once.
    return Encoded(encode_value(tuple(Atom(flag) for flag in imap_flags(flags, keywords))))


class InvalidSequence(ValueError):
    """A message sequence number above the message count (RFC 3501 §9 ``seq-number``)."""


FlagSet = tuple[frozenset[SystemFlag], tuple[str, ...]]  # an entry's flags and keywords


@dataclass(slots=True, eq=False)
class MailboxView:
    folder_id: int
    name: str
    uidvalidity: int
    read_only: bool
    modseq: int
    known_uid: int
    uids: array[int] = field(default_factory=lambda: array("I"))  # ascending
    modseqs: array[int] = field(default_factory=lambda: array("Q"))  # of uids[i]
    flag_sets: array[int] = field(default_factory=lambda: array("I"))  # of uids[i]: _sets index
    keywords: dict[str, str] = field(default_factory=dict)  # lower-case -> as first seen
    pending_expunges: set[int] = field(default_factory=set)
    saved: tuple[int, ...] = ()  # ascending UIDs: ``$`` (RFC 5182)
    condstore: bool = False
    qresync: bool = False
    _sets: list[FlagSet] = field(default_factory=list)
    _set_index: dict[FlagSet, int] = field(default_factory=dict)

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
            folder.highestmodseq,
            folder.uidnext - 1,
            condstore=condstore or qresync,
            qresync=qresync,
        )
        entries = snapshot.entries
        view.uids = array("I", [entry.uid for entry in entries])
        view.modseqs = array("Q", [entry.modseq for entry in entries])
        view.flag_sets = array("I", map(view._flag_set, entries))
        for _, keywords in view._sets:  # in order of first use, as entry by entry
            view._learn_keywords(keywords)
        return view

    # -- numbers ---------------------------------------------------------------------

    @property
    def exists(self) -> int:
        return len(self.uids)

    def sequence_number(self, uid: int) -> int | None:
        index = bisect.bisect_left(self.uids, uid)
        return index + 1 if index < len(self.uids) and self.uids[index] == uid else None

    def __contains__(self, uid: int) -> bool:
        return self.sequence_number(uid) is not None

    def entry(self, uid: int) -> EntryFlags | None:
        """The message's flags as last reported to this session; None if not in the view."""
        number = self.sequence_number(uid)
        return None if number is None else self._entry_at(number)

    def _entry_at(self, number: int) -> EntryFlags:
        flags, keywords = self._sets[self.flag_sets[number - 1]]
        return EntryFlags(self.uids[number - 1], self.modseqs[number - 1], flags, keywords)

    def first_unseen(self) -> int | None:
        """The sequence number of the first message without ``\\Seen``."""
        unseen = {i for i, (flags, _) in enumerate(self._sets) if SystemFlag.SEEN not in flags}
        return next((n for n, s in enumerate(self.flag_sets, 1) if s in unseen), None)

    def resolve(self, sequence_set: SequenceSet, *, uid: bool) -> list[int]:
        """The UIDs a sequence set names, ascending (RFC 3501 §6.4.8 for UID sets).

        Raises :class:`InvalidSequence` for a sequence number above the message count. ``$``
        names the saved messages still in the view, with UID or not (RFC 5182 §2.2).
        """
        if sequence_set.saved:
            return [u for u in self.saved if u in self]
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

    def _flag_set(self, entry: EntryFlags) -> int:
        key = (entry.flags, entry.keywords)
        index = self._set_index.get(key)
        if index is None:
            index = self._set_index[key] = len(self._sets)
            self._sets.append(key)
        return index

    def _append(self, entry: EntryFlags) -> bool:
        """Add a message above every UID in the view; whether it brought new keywords."""
        self.uids.append(entry.uid)
        self.modseqs.append(entry.modseq)
        self.flag_sets.append(self._flag_set(entry))
        return self._learn_keywords(entry.keywords)

    def _replace(self, number: int, entry: EntryFlags) -> bool:
        """Take ``entry`` as what the session knows of message ``number``; whether it brought
        new keywords."""
        self.modseqs[number - 1] = entry.modseq
        self.flag_sets[number - 1] = self._flag_set(entry)
        return self._learn_keywords(entry.keywords)

    def _learn_keywords(self, keywords: tuple[str, ...]) -> bool:
        grew = False
        for keyword in keywords:
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
            number = self.sequence_number(entry.uid)
            if number is not None:
                grew = self._replace(number, entry) or grew
        return [FlagsData(self.flag_names())] if grew else []

    def apply(self, changes: FolderChanges, *, allow_expunge: bool) -> list[Response]:
        """Responses that report ``changes`` (read from the store after :attr:`modseq` for
        UIDs up to :attr:`known_uid`), updating the view to match."""
        self.pending_expunges.update(u for u in changes.expunged if u in self)
        out: list[Response] = []
        if allow_expunge and self.pending_expunges:
            out.extend(self._expunge(sorted(self.pending_expunges)))
            self.pending_expunges.clear()
        grew = False
        updates: list[Response] = []
        for entry in changes.updated:
            number = self.sequence_number(entry.uid)
            if number is None or entry.uid in self.pending_expunges:
                continue
            before = self._entry_at(number)
            grew = self._replace(number, entry) or grew
            if (before.flags, before.keywords) != (entry.flags, entry.keywords) or (
                self.condstore and before.modseq != entry.modseq
            ):
                updates.append(self.fetch_flags(entry))
        for entry in changes.added:
            grew = self._append(entry) or grew
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
        number = self.sequence_number(uid)
        if number is not None:
            del self.uids[number - 1]
            del self.modseqs[number - 1]
            del self.flag_sets[number - 1]
