"""The selected mailbox as a session sees it: sequence numbers, the flags last reported, and
the untagged responses that bring it up to date (RFC 3501 §7.3, §7.4.1)."""

from __future__ import annotations

from mailboxkit.mailserver.imap.mailbox_view import MailboxView
from mailboxkit.mailserver.imap.responses import Exists, Expunged, FlagsData, serialize
from mailboxkit.store.entries import EntryFlags, FolderChanges, Snapshot, SystemFlag
from mailboxkit.store.folders import Folder

SEEN = frozenset({SystemFlag.SEEN})
NONE: frozenset[SystemFlag] = frozenset()


def _view(*entries: EntryFlags) -> MailboxView:
    modseq = max(e.modseq for e in entries)
    folder = Folder(1, "inbox", "INBOX", None, 7, entries[-1].uid + 1, modseq, True)
    return MailboxView.open(
        Snapshot(folder, entries), read_only=False, condstore=False, qresync=False
    )


def test_open_numbers_messages_and_keeps_their_flags() -> None:
    view = _view(
        EntryFlags(3, 10, SEEN, ("Work",)),
        EntryFlags(5, 11, NONE, ()),
        EntryFlags(9, 12, SEEN, ("work", "$Label1")),
    )
    assert view.exists == 3
    assert [view.sequence_number(uid) for uid in (3, 4, 5, 9)] == [1, None, 2, 3]
    assert view.entry(9) == EntryFlags(9, 12, SEEN, ("work", "$Label1"))
    assert view.entry(4) is None
    assert view.first_unseen() == 2
    # Keywords in the case first seen, in order of first use (RFC 3501 §7.2.6).
    assert view.flag_names()[-2:] == ("Work", "$Label1")


def test_changes_report_new_flags_new_messages_and_expunges() -> None:
    view = _view(*(EntryFlags(uid, uid, NONE, ()) for uid in range(1, 6)))
    changes = FolderChanges(
        highestmodseq=9,
        updated=(EntryFlags(2, 7, SEEN, ()), EntryFlags(3, 8, NONE, ())),  # 3: only MODSEQ
        added=(EntryFlags(6, 9, NONE, ("Urgent",)),),
        expunged=(4,),
    )
    out = view.apply(changes, allow_expunge=True)
    assert [serialize(r) for r in out] == [
        b"* 4 EXPUNGE\r\n",
        b"* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft Urgent)\r\n",
        b"* 2 FETCH (FLAGS (\\Seen))\r\n",
        b"* 5 EXISTS\r\n",
    ]
    assert [view.sequence_number(uid) for uid in (1, 2, 3, 4, 5, 6)] == [1, 2, 3, None, 4, 5]
    assert view.entry(2) == EntryFlags(2, 7, SEEN, ())
    assert view.entry(6) == EntryFlags(6, 9, NONE, ("Urgent",))
    assert view.modseq == 9 and view.first_unseen() == 1


def test_expunges_wait_while_numbers_must_not_shift() -> None:
    view = _view(*(EntryFlags(uid, uid, NONE, ()) for uid in range(1, 4)))
    held = view.apply(FolderChanges(5, (), (), (2,)), allow_expunge=False)
    assert held == [] and view.exists == 3 and view.sequence_number(3) == 3
    # An update to a message whose expunge is held is not reported (RFC 3501 §7.4.1).
    assert (
        view.apply(FolderChanges(6, (EntryFlags(2, 6, SEEN, ()),), (), ()), allow_expunge=False)
        == []
    )
    released = view.apply(FolderChanges(6, (), (), ()), allow_expunge=True)
    assert released == [Expunged(2)] and view.exists == 2 and view.entry(2) is None


def test_own_changes_are_recorded_without_echo_and_new_keywords_announced() -> None:
    view = _view(EntryFlags(1, 1, NONE, ()), EntryFlags(2, 2, NONE, ()))
    assert view.record([EntryFlags(1, 3, SEEN, ("Done",))]) == [FlagsData(view.flag_names())]
    assert "Done" in view.flag_names()
    # Reported already: the same state read back from the store is not sent again.
    assert (
        view.apply(
            FolderChanges(3, (EntryFlags(1, 3, SEEN, ("Done",)),), (), ()), allow_expunge=True
        )
        == []
    )
    assert view.apply(
        FolderChanges(4, (), (EntryFlags(3, 4, NONE, ()),), ()), allow_expunge=True
    ) == [Exists(3)]
