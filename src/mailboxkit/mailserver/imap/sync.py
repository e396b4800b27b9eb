"""Bringing a session's selected mailbox up to date: read the changes, send the responses.

See ``mailbox_view`` for what is reported when; this module is the store read around it.
"""

from __future__ import annotations

from mailboxkit.mailserver.imap.context import Context
from mailboxkit.mailserver.imap.mailbox_view import MailboxView
from mailboxkit.mailserver.imap.responses import (
    Condition,
    NumberCode,
    NumberCodeName,
    StatusResponse,
)
from mailboxkit.store.entries import changes_since
from mailboxkit.store.folders import FolderMissing


class MailboxGone(Exception):
    """The selected mailbox was deleted by someone else; the session ends (``* BYE``)."""


async def report_changes(ctx: Context, view: MailboxView, *, allow_expunge: bool) -> None:
    """Send what changed in ``view``'s folder since it was last brought up to date.

    Raises :class:`MailboxGone` if the folder no longer exists.
    """
    async with ctx.services.db.read() as conn:
        try:
            changes = await changes_since(
                conn, view.folder_id, modseq=view.modseq, last_uid=view.known_uid
            )
        except FolderMissing:
            raise MailboxGone(view.name) from None
    for response in view.apply(changes, allow_expunge=allow_expunge):
        await ctx.conn.send(response)


async def enable_condstore(ctx: Context, view: MailboxView | None) -> None:
    """Turn CONDSTORE on by use (RFC 7162 §3.1: FETCH MODSEQ, CHANGEDSINCE, UNCHANGEDSINCE,
    SEARCH MODSEQ); in a selected mailbox the client learns its HIGHESTMODSEQ now (§3.1.2)."""
    if ctx.condstore:
        return
    ctx.enabled.add("CONDSTORE")
    if view is not None:
        view.condstore = True
        code = NumberCode(NumberCodeName.HIGHESTMODSEQ, view.modseq)
        await ctx.conn.send(StatusResponse(Condition.OK, "CONDSTORE enabled", code=code))
