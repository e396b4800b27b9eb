"""CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE (RFC 3501 §6.3.3-7, RFC 6154 §3).

Implementation notes:

- Names: no empty level, none over :data:`MAX_NAME_LENGTH` characters; a trailing ``/`` on
  CREATE only declares the intent to create children (RFC 3501 §6.3.3) and is dropped.
- The folders every inbox starts with (INBOX, Sent, Drafts, Trash, Junk, Archive) cannot be
  deleted or renamed, other than RENAME INBOX, which moves its messages (RFC 3501 §6.3.5):
  the rest of MailboxKit files mail into them by name.
- A folder with children is not deleted (``NO``; RFC 3501 §6.3.4 would keep it as
  ``\\Noselect``, which we have no column for; Dovecot refuses too).
- Every change rings the inbox's change watch after commit.
"""

from __future__ import annotations

from mailboxkit.mailserver.imap import commands as c
from mailboxkit.mailserver.imap.context import Context, Outcome
from mailboxkit.mailserver.imap.errors import CommandFailed
from mailboxkit.mailserver.imap.responses import Code
from mailboxkit.mailserver.imap.state import Authenticated, Selected
from mailboxkit.store.accounts import DEFAULT_FOLDERS
from mailboxkit.store.folders import (
    DELIMITER,
    INBOX,
    FolderExists,
    FolderMissing,
    create_folder,
    find_folder,
    list_folders,
    set_subscribed,
)
from mailboxkit.store.mailboxes import delete_folder, rename_folder

MAX_NAME_LENGTH = 500
"""Longest mailbox name in characters (``folders.name``)."""

SYSTEM_FOLDERS = frozenset(name for name, _ in DEFAULT_FOLDERS)
CREATABLE_USES = frozenset({"\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash"})
"""RFC 6154 uses a folder can be created with; \\All and \\Flagged would be virtual."""


def checked_name(name: str) -> str:
    """``name`` if it is a valid new mailbox name, else ``NO``."""
    if not name or len(name) > MAX_NAME_LENGTH or name.startswith(DELIMITER):
        raise CommandFailed("Invalid mailbox name", Code.CANNOT)
    if any(not level for level in name.split(DELIMITER)):
        raise CommandFailed("Invalid mailbox name", Code.CANNOT)
    return name


async def handle_create(
    ctx: Context, state: Authenticated | Selected, command: c.Create
) -> Outcome:
    """Create a mailbox and its missing parents, with an optional special use.
    State: Authenticated, Selected. RFC 3501 §6.3.3, RFC 6154 §3."""
    name = command.mailbox.removesuffix(DELIMITER)
    if name == INBOX:
        raise CommandFailed("Mailbox already exists", Code.ALREADYEXISTS)
    checked_name(name)
    if len(command.special_use) > 1 or not set(command.special_use) <= CREATABLE_USES:
        raise CommandFailed("Unsupported special-use attribute", Code.USEATTR)
    use = command.special_use[0] if command.special_use else None
    inbox_id = state.user.inbox_id
    try:
        async with ctx.services.db.write() as conn:
            await create_folder(
                conn, inbox_id=inbox_id, name=name, now=ctx.services.clock.now(), special_use=use
            )
    except FolderExists:
        raise CommandFailed("Mailbox already exists", Code.ALREADYEXISTS) from None
    ctx.services.changes.notify(inbox_id)
    return Outcome("CREATE completed")


async def handle_delete(
    ctx: Context, state: Authenticated | Selected, command: c.Delete
) -> Outcome:
    """Delete a mailbox and its messages. State: Authenticated, Selected. RFC 3501 §6.3.4."""
    if command.mailbox in SYSTEM_FOLDERS:
        raise CommandFailed("This mailbox cannot be deleted", Code.CANNOT)
    inbox_id = state.user.inbox_id
    async with ctx.services.db.write() as conn:
        folder = await find_folder(conn, inbox_id, command.mailbox)
        if folder is None:
            raise CommandFailed("Mailbox does not exist", Code.NONEXISTENT)
        prefix = folder.name + DELIMITER
        if any(f.name.startswith(prefix) for f in await list_folders(conn, inbox_id)):
            raise CommandFailed("Mailbox has children; delete them first", Code.INUSE)
        await delete_folder(conn, folder_id=folder.id)
    ctx.services.changes.notify(inbox_id)
    return Outcome("DELETE completed")


async def handle_rename(
    ctx: Context, state: Authenticated | Selected, command: c.Rename
) -> Outcome:
    """Rename a mailbox with its children (INBOX: move its messages).
    State: Authenticated, Selected. RFC 3501 §6.3.5."""
    old, new = command.mailbox, checked_name(command.new_name)
    if old != INBOX and old in SYSTEM_FOLDERS:
        raise CommandFailed("This mailbox cannot be renamed", Code.CANNOT)
    if new == INBOX or new.startswith(old + DELIMITER):
        raise CommandFailed("Invalid new mailbox name", Code.CANNOT)
    inbox_id = state.user.inbox_id
    try:
        async with ctx.services.db.write() as conn:
            await rename_folder(
                conn, inbox_id=inbox_id, old=old, new=new, now=ctx.services.clock.now()
            )
    except FolderMissing:
        raise CommandFailed("Mailbox does not exist", Code.NONEXISTENT) from None
    except FolderExists:
        raise CommandFailed("Mailbox already exists", Code.ALREADYEXISTS) from None
    ctx.services.changes.notify(inbox_id)
    return Outcome("RENAME completed")


async def handle_subscribe(
    ctx: Context, state: Authenticated | Selected, command: c.Subscribe
) -> Outcome:
    """Mark a mailbox subscribed. State: Authenticated, Selected. RFC 3501 §6.3.6."""
    await _subscribe(ctx, state, command.mailbox, True)
    return Outcome("SUBSCRIBE completed")


async def handle_unsubscribe(
    ctx: Context, state: Authenticated | Selected, command: c.Unsubscribe
) -> Outcome:
    """Mark a mailbox unsubscribed. State: Authenticated, Selected. RFC 3501 §6.3.7."""
    await _subscribe(ctx, state, command.mailbox, False)
    return Outcome("UNSUBSCRIBE completed")


async def _subscribe(
    ctx: Context, state: Authenticated | Selected, name: str, subscribed: bool
) -> None:
    async with ctx.services.db.write() as conn:
        folder = await find_folder(conn, state.user.inbox_id, name)
        if folder is None:
            raise CommandFailed("Mailbox does not exist", Code.NONEXISTENT)
        await set_subscribed(conn, folder_id=folder.id, subscribed=subscribed)
