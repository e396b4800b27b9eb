"""SELECT, EXAMINE, UNSELECT, CLOSE, CHECK (RFC 3501 §6.3.1-2, §6.4.1-2; RFC 3691;
RFC 7162 §3.1.8 CONDSTORE and §3.2.5 QRESYNC parameters; RFC 9051 §6.3.2-3).

Implementation notes:

- After ENABLE IMAP4rev2 SELECT answers as RFC 9051 §6.3.2 has it: no ``* n RECENT`` and no
  ``[UNSEEN n]`` (both gone from IMAP4rev2), a ``* LIST`` of the mailbox with its attributes,
  and ``[CLOSED]`` when it closes a previously selected mailbox (as under QRESYNC).
- Every SELECT, EXAMINE, CLOSE and UNSELECT leaves ``$`` empty (RFC 5182 §2.1): the search
  result lives in the view, which each of them replaces or drops.
"""

from __future__ import annotations

from mailboxkit.mailserver.imap import commands as c
from mailboxkit.mailserver.imap.context import Context, Outcome
from mailboxkit.mailserver.imap.errors import CommandFailed
from mailboxkit.mailserver.imap.list_handlers import list_entry
from mailboxkit.mailserver.imap.mailbox_commands import QResync
from mailboxkit.mailserver.imap.mailbox_view import MailboxView
from mailboxkit.mailserver.imap.responses import (
    Code,
    Condition,
    Exists,
    FlagsData,
    NumberCode,
    NumberCodeName,
    PermanentFlags,
    Recent,
    StatusResponse,
    Vanished,
)
from mailboxkit.mailserver.imap.state import Authenticated, Selected
from mailboxkit.store.entries import SystemFlag, changed_entries, expunged_since, snapshot
from mailboxkit.store.folders import find_folder
from mailboxkit.store.mailboxes import expunge


async def handle_select(
    ctx: Context, state: Authenticated | Selected, command: c.Select | c.Examine
) -> Outcome:
    """Open a mailbox, read-write (SELECT) or read-only (EXAMINE); a previously selected one
    is closed first, even if this fails. State: Authenticated, Selected.
    RFC 3501 §6.3.1-2, RFC 7162 §3.1.8, §3.2.5, §3.2.11."""
    read_only = isinstance(command, c.Examine)
    if command.qresync is not None and not ctx.qresync:
        raise CommandFailed("Enable QRESYNC first", condition=Condition.BAD)
    deselected = Authenticated(state.user)
    if isinstance(state, Selected) and (ctx.qresync or ctx.imap4rev2):
        await ctx.conn.send(
            StatusResponse(Condition.OK, "Previous mailbox closed", code=Code.CLOSED)
        )
    if command.condstore:
        ctx.enabled.add("CONDSTORE")
    async with ctx.services.db.read() as conn:
        folder = await find_folder(conn, state.user.inbox_id, command.mailbox)
        if folder is None:
            raise CommandFailed("Mailbox does not exist", Code.NONEXISTENT, state=deselected)
        snap = await snapshot(conn, folder.id)
    view = MailboxView.open(snap, read_only=read_only, condstore=ctx.condstore, qresync=ctx.qresync)
    if ctx.imap4rev2:
        await ctx.conn.send(await list_entry(ctx, state.user.inbox_id, folder))
    await _announce(ctx, view)
    if command.qresync is not None:
        await _resync(ctx, view, command.qresync)
    code = Code.READ_ONLY if read_only else Code.READ_WRITE
    name = "EXAMINE" if read_only else "SELECT"
    return Outcome(f"{name} completed", code, Selected(state.user, view))


async def _announce(ctx: Context, view: MailboxView) -> None:
    send = ctx.conn.send
    await send(FlagsData(view.flag_names()))
    permanent = () if view.read_only else (*(f.value for f in SystemFlag), "\\*")
    await send(StatusResponse(Condition.OK, "Flags permitted", code=PermanentFlags(permanent)))
    await send(Exists(view.exists))
    if not ctx.imap4rev2:
        await send(Recent(0))
    unseen = None if ctx.imap4rev2 else view.first_unseen()
    codes = [
        (NumberCodeName.UNSEEN, unseen),
        (NumberCodeName.UIDVALIDITY, view.uidvalidity),
        (NumberCodeName.UIDNEXT, view.known_uid + 1),
        (NumberCodeName.HIGHESTMODSEQ, view.modseq),
    ]
    for name, value in codes:
        if value is not None:
            await send(StatusResponse(Condition.OK, name.value, code=NumberCode(name, value)))


async def _resync(ctx: Context, view: MailboxView, qresync: QResync) -> None:
    """What changed since the client's last known state (RFC 7162 §3.2.5.1)."""
    if qresync.uidvalidity != view.uidvalidity:
        return
    async with ctx.services.db.read() as conn:
        vanished = await expunged_since(conn, view.folder_id, modseq=qresync.modseq)
        changed = await changed_entries(conn, view.folder_id, modseq=qresync.modseq, uids=view.uids)
    if qresync.known_uids is not None:
        largest = max(vanished, default=0)
        vanished = [u for u in vanished if qresync.known_uids.contains(u, largest)]
    if vanished:
        await ctx.conn.send(Vanished(tuple(vanished), earlier=True))
    for entry in changed:
        known = view.entry(entry.uid)
        if known is not None and entry.modseq <= view.modseq:
            await ctx.conn.send(view.fetch_flags(known, uid=True))


async def handle_unselect(ctx: Context, state: Selected, command: c.Unselect) -> Outcome:
    """Close the mailbox without expunging. State: Selected. RFC 3691 §2."""
    return Outcome("UNSELECT completed", state=Authenticated(state.user))


async def handle_close(ctx: Context, state: Selected, command: c.Close) -> Outcome:
    """Expunge ``\\Deleted`` messages silently (unless read-only), then close.
    State: Selected. RFC 3501 §6.4.2."""
    if not state.read_only:
        async with ctx.services.db.write() as conn:
            removed = await expunge(conn, folder_id=state.view.folder_id)
        if removed.uids:
            ctx.services.changes.notify(state.user.inbox_id)
    return Outcome("CLOSE completed", state=Authenticated(state.user))


async def handle_check(ctx: Context, state: Selected, command: c.Check) -> Outcome:
    """A checkpoint: every change is durable at commit already, so only the update the
    session sends after any command remains. State: Selected. RFC 3501 §6.4.1."""
    return Outcome("CHECK completed")
