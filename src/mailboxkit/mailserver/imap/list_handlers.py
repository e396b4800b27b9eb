"""LIST, LSUB and STATUS (RFC 3501 §6.3.8-10) with LIST-EXTENDED (RFC 5258), LIST-STATUS
(RFC 5819), SPECIAL-USE (RFC 6154) and CHILDREN (RFC 3348).

Implementation notes:

- One personal namespace with ``/`` as delimiter. The pattern is the reference followed by
  the mailbox argument; ``*`` matches anything, ``%`` anything but the delimiter (RFC 3501
  §6.3.8). ``INBOX`` matches case-insensitively (RFC 3501 §5.1).
- ``\\HasChildren``/``\\HasNoChildren`` and special-use attributes are always returned
  (Thunderbird and Apple Mail read special-use from a plain LIST); ``\\Subscribed`` only when
  asked for (RFC 5258 §3.2). A parent that does not exist (its child outlived it) is listed
  ``\\NonExistent \\Noselect`` (RFC 5258 §3, RFC 9051 §7.3.1), for rev1 and rev2 alike.
- IMAP4rev2's SELECT sends the ``* LIST`` of the mailbox it opens (:func:`list_entry`,
  RFC 9051 §6.3.2) with the same attributes a LIST gives.
- ``\\Recent`` is not kept (RFC 9051 dropped it): RECENT counts are always 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from mailboxkit.mailserver.imap import commands as c
from mailboxkit.mailserver.imap.context import Context, Outcome
from mailboxkit.mailserver.imap.errors import CommandFailed
from mailboxkit.mailserver.imap.mailbox_commands import (
    ListReturnOption,
    ListSelectOption,
    StatusItem,
)
from mailboxkit.mailserver.imap.responses import Code, ListData, StatusData
from mailboxkit.mailserver.imap.state import Authenticated, Selected
from mailboxkit.mailserver.imap.sync import enable_condstore
from mailboxkit.store.folders import (
    DELIMITER,
    INBOX,
    Folder,
    find_folder,
    folder_status,
    list_folders,
    parents,
)


@dataclass(frozen=True, slots=True)
class _Name:
    name: str
    folder: Folder | None  # None: a parent that does not exist


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A LIST pattern as a regular expression over full mailbox names."""
    if pattern.upper().startswith(INBOX) and pattern[5:6] in ("", DELIMITER, "%", "*"):
        pattern = INBOX + pattern[5:]
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "%":
            parts.append(f"[^{re.escape(DELIMITER)}]*")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


def _names(folders: list[Folder]) -> list[_Name]:
    names = {f.name: _Name(f.name, f) for f in folders}
    for folder in folders:
        for parent in parents(folder.name):
            names.setdefault(parent, _Name(parent, None))
    return sorted(names.values(), key=lambda n: (n.name != INBOX, n.name))


def _has_children(name: str, all_names: Iterable[str]) -> bool:
    prefix = name + DELIMITER
    return any(other.startswith(prefix) for other in all_names)


async def handle_list(ctx: Context, state: Authenticated | Selected, command: c.List) -> Outcome:
    """List mailboxes matching the patterns. State: Authenticated, Selected.
    RFC 3501 §6.3.8, RFC 5258 §3, RFC 6154 §2, RFC 5819 §2."""
    if command.patterns == ("",):
        await ctx.conn.send(ListData(("\\Noselect",), DELIMITER, ""))
        return Outcome("LIST completed")
    async with ctx.services.db.read() as conn:
        folders = await list_folders(conn, state.user.inbox_id)
    names = _names(folders)
    all_names = [n.name for n in names]
    regexes = [pattern_regex(command.reference + p) for p in command.patterns]
    select, returns = command.select_options, command.return_options
    subscribed_only = ListSelectOption.SUBSCRIBED in select
    listed: list[Folder] = []
    for entry in names:
        if not any(r.fullmatch(entry.name) for r in regexes):
            continue
        folder = entry.folder
        if subscribed_only and (folder is None or not folder.subscribed):
            continue
        if ListSelectOption.SPECIAL_USE in select and (folder is None or not folder.special_use):
            continue
        subscribed = subscribed_only or ListReturnOption.SUBSCRIBED in returns
        attributes = _attributes(entry.name, folder, all_names, subscribed=subscribed)
        if folder is not None:
            listed.append(folder)
        await ctx.conn.send(ListData(attributes, DELIMITER, entry.name))
        if command.status_items and folder is not None:
            await ctx.conn.send(await _status(ctx, folder, command.status_items))
    return Outcome("LIST completed")


def _attributes(
    name: str, folder: Folder | None, all_names: Iterable[str], *, subscribed: bool
) -> tuple[str, ...]:
    attributes = ["\\HasChildren" if _has_children(name, all_names) else "\\HasNoChildren"]
    if folder is None:
        return ("\\NonExistent", "\\Noselect", *attributes)
    if folder.special_use:
        attributes.append(folder.special_use)
    if folder.subscribed and subscribed:
        attributes.append("\\Subscribed")
    return tuple(attributes)


async def list_entry(ctx: Context, inbox_id: str, folder: Folder) -> ListData:
    """The ``* LIST`` of one mailbox, as IMAP4rev2's SELECT sends it (RFC 9051 §6.3.2)."""
    async with ctx.services.db.read() as conn:
        names = [f.name for f in await list_folders(conn, inbox_id)]
    return ListData(
        _attributes(folder.name, folder, names, subscribed=False), DELIMITER, folder.name
    )


async def handle_lsub(ctx: Context, state: Authenticated | Selected, command: c.Lsub) -> Outcome:
    """List subscribed mailboxes matching the pattern. State: Authenticated, Selected.
    RFC 3501 §6.3.9."""
    async with ctx.services.db.read() as conn:
        folders = await list_folders(conn, state.user.inbox_id)
    regex = pattern_regex(command.reference + command.pattern)
    for folder in folders:
        if folder.subscribed and regex.fullmatch(folder.name):
            await ctx.conn.send(ListData((), DELIMITER, folder.name, lsub=True))
    return Outcome("LSUB completed")


async def handle_status(
    ctx: Context, state: Authenticated | Selected, command: c.Status
) -> Outcome:
    """Counters of a mailbox. State: Authenticated, Selected. RFC 3501 §6.3.10,
    RFC 7162 §3.1.6 (HIGHESTMODSEQ), RFC 8438 (SIZE), RFC 7889 (APPENDLIMIT)."""
    async with ctx.services.db.read() as conn:
        folder = await find_folder(conn, state.user.inbox_id, command.mailbox)
    if folder is None:
        raise CommandFailed("Mailbox does not exist", Code.NONEXISTENT)
    if StatusItem.HIGHESTMODSEQ in command.items:
        await enable_condstore(ctx, state.view if isinstance(state, Selected) else None)
    await ctx.conn.send(await _status(ctx, folder, command.items))
    return Outcome("STATUS completed")


async def _status(ctx: Context, folder: Folder, items: tuple[StatusItem, ...]) -> StatusData:
    async with ctx.services.db.read() as conn:
        counts = await folder_status(conn, folder.id)
    values: dict[StatusItem, int | None] = {
        StatusItem.MESSAGES: counts.messages,
        StatusItem.RECENT: 0,
        StatusItem.UIDNEXT: folder.uidnext,
        StatusItem.UIDVALIDITY: folder.uidvalidity,
        StatusItem.UNSEEN: counts.unseen,
        StatusItem.HIGHESTMODSEQ: folder.highestmodseq,
        StatusItem.SIZE: counts.size,
        StatusItem.APPENDLIMIT: ctx.services.limits.max_literal,
        StatusItem.DELETED: counts.deleted,
    }
    return StatusData(folder.name, tuple((item.value, values[item]) for item in items))
