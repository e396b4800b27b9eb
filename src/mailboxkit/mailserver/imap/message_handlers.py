"""STORE, COPY, MOVE, EXPUNGE and UID EXPUNGE (RFC 3501 §6.4.3, §6.4.6-8; RFC 4315 UIDPLUS;
RFC 6851 MOVE; RFC 7162 §3.1.3 UNCHANGEDSINCE).

Implementation notes:

- Changes commit, then ring the inbox's change watch; this session's own EXPUNGEs (and
  those of MOVE) reach the client through the session's update after the command, like
  anyone else's, so the numbering logic lives in one place (``mailbox_view``).
- STORE answers with the flags of every message it matched (RFC 3501 §6.4.6), except with
  ``.SILENT``; with CONDSTORE on, ``.SILENT`` still reports the new MODSEQ of the changed
  messages when UNCHANGEDSINCE was given (RFC 7162 §3.1.3).
- ``\\Recent`` cannot be stored and is ignored (RFC 3501 §2.3.2); any other unknown
  ``\\`` flag is refused, keywords are free (PERMANENTFLAGS has ``\\*``).
"""

from __future__ import annotations

from mailboxkit.mailserver.imap import commands as c
from mailboxkit.mailserver.imap.context import Context, Outcome
from mailboxkit.mailserver.imap.errors import CommandFailed
from mailboxkit.mailserver.imap.responses import (
    Code,
    Condition,
    CopyUid,
    Modified,
    StatusResponse,
)
from mailboxkit.mailserver.imap.state import Selected
from mailboxkit.mailserver.imap.sync import enable_condstore
from mailboxkit.store.entries import SystemFlag
from mailboxkit.store.folders import find_folder
from mailboxkit.store.mailboxes import (
    Copied,
    FlagMode,
    copy_entries,
    expunge,
    move_entries,
    update_flags,
)
from mailboxkit.store.quota import StorageQuotaExceeded

_MODES = {
    c.StoreMode.ADD: FlagMode.ADD,
    c.StoreMode.REMOVE: FlagMode.REMOVE,
    c.StoreMode.REPLACE: FlagMode.REPLACE,
}


def split_flags(flags: tuple[str, ...]) -> tuple[list[SystemFlag], list[str]]:
    """System flags and keywords of a flag list; ``NO`` for an unknown ``\\`` flag."""
    system: list[SystemFlag] = []
    keywords: list[str] = []
    for flag in flags:
        if flag == "\\Recent":
            continue
        if flag.startswith("\\"):
            try:
                system.append(SystemFlag(flag))
            except ValueError:
                raise CommandFailed("Unknown system flag", Code.CANNOT) from None
        else:
            keywords.append(flag)
    return system, keywords


def _writable(state: Selected) -> None:
    if state.read_only:
        raise CommandFailed("Mailbox is read-only", Code.READ_ONLY)


async def handle_store(ctx: Context, state: Selected, command: c.Store) -> Outcome:
    """Change flags. State: Selected. RFC 3501 §6.4.6, RFC 7162 §3.1.3."""
    _writable(state)
    view = state.view
    uids = view.resolve(command.sequence_set, uid=command.uid)
    system, keywords = split_flags(command.flags)
    if command.unchanged_since is not None:
        await enable_condstore(ctx, view)
    async with ctx.services.db.write() as conn:
        changes = await update_flags(
            conn,
            folder_id=view.folder_id,
            uids=uids,
            mode=_MODES[command.mode],
            flags=system,
            keywords=keywords,
            unchanged_since=command.unchanged_since,
            now=ctx.services.clock.now(),
        )
    if changes.updated:
        ctx.services.changes.notify(state.user.inbox_id)
    for response in view.record(changes.updated):
        await ctx.conn.send(response)
    if not command.silent:
        conflicts = set(changes.conflicts)
        shown = [e for e in (*changes.updated, *changes.unchanged) if e.uid not in conflicts]
        for entry in sorted(shown, key=lambda e: e.uid):
            if entry.uid in view:
                await ctx.conn.send(view.fetch_flags(entry, uid=command.uid))
    elif view.condstore and command.unchanged_since is not None:
        for entry in changes.updated:
            if entry.uid in view:
                await ctx.conn.send(view.fetch_flags(entry, uid=True, flags=False))
    code = None
    if changes.conflicts:
        numbers = changes.conflicts
        if not command.uid:
            numbers = tuple(n for n in map(view.sequence_number, numbers) if n is not None)
        code = Modified(numbers)
    return Outcome("STORE completed", code)


async def _target(ctx: Context, state: Selected, name: str) -> int:
    async with ctx.services.db.read() as conn:
        folder = await find_folder(conn, state.user.inbox_id, name)
    if folder is None:
        raise CommandFailed("Mailbox does not exist", Code.TRYCREATE)
    return folder.id


def _copy_uid(copied: Copied) -> CopyUid | None:
    if not copied.pairs:
        return None
    source, destination = zip(*copied.pairs, strict=True)
    return CopyUid(copied.uidvalidity, source, destination)


async def handle_copy(ctx: Context, state: Selected, command: c.Copy) -> Outcome:
    """Copy messages to another mailbox; NO [OVERQUOTA] when the copies would take the
    account over its storage limit. State: Selected. RFC 3501 §6.4.7, RFC 4315 §3,
    RFC 9208 §4.4."""
    view = state.view
    uids = view.resolve(command.sequence_set, uid=command.uid)
    target = await _target(ctx, state, command.mailbox)
    try:
        async with ctx.services.db.write() as conn:
            copied = await copy_entries(
                conn,
                source_folder_id=view.folder_id,
                uids=uids,
                target_folder_id=target,
                enforce_quota=True,
            )
    except StorageQuotaExceeded:  # RFC 9208 §4.4: nothing is copied
        raise CommandFailed("Over quota: delete some mail first", Code.OVERQUOTA) from None
    if copied.pairs:
        ctx.services.changes.notify(state.user.inbox_id)
    return Outcome("COPY completed", _copy_uid(copied))


async def handle_move(ctx: Context, state: Selected, command: c.Move) -> Outcome:
    """Move messages to another mailbox: COPYUID untagged, then the EXPUNGEs. Never over
    quota: a move within the account stores nothing more. State: Selected. RFC 6851 §3,
    §4.3."""
    _writable(state)
    view = state.view
    uids = view.resolve(command.sequence_set, uid=command.uid)
    target = await _target(ctx, state, command.mailbox)
    async with ctx.services.db.write() as conn:
        moved = await move_entries(
            conn, source_folder_id=view.folder_id, uids=uids, target_folder_id=target
        )
    code = _copy_uid(moved.copied)
    if code is not None:
        ctx.services.changes.notify(state.user.inbox_id)
        await ctx.conn.send(StatusResponse(Condition.OK, "Moved", code=code))
    return Outcome("MOVE completed")


async def handle_expunge(ctx: Context, state: Selected, command: c.Expunge) -> Outcome:
    """Remove ``\\Deleted`` messages (of a UID set with UID EXPUNGE). State: Selected.
    RFC 3501 §6.4.3, RFC 4315 §2.1."""
    _writable(state)
    view = state.view
    uids = None if command.uid_set is None else view.resolve(command.uid_set, uid=True)
    async with ctx.services.db.write() as conn:
        removed = await expunge(conn, folder_id=view.folder_id, uids=uids)
    if removed.uids:
        ctx.services.changes.notify(state.user.inbox_id)
    return Outcome("EXPUNGE completed")
