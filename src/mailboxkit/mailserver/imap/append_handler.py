"""APPEND, with MULTIAPPEND (RFC 3501 §6.3.11, RFC 3502, RFC 4315 APPENDUID, RFC 7889).

Implementation notes (the store path of every new message, STYLE.md "stage, commit,
publish"):

- Every blob (raw message, attachments) is written durably first, then all messages are
  stored in one transaction (all or none, RFC 3502 §6.3.11), then the events are published
  and the change watch rung; ``OK [APPENDUID]`` is sent only after the commit.
- The raw message is kept byte-exact; its INTERNALDATE is the date given or now.
- Messages filed into \\Sent or \\Drafts are stored as outbound (a client saving what it
  sent), others as inbound. An appended message records ``message.received`` in other folders
  and no event in \\Sent or \\Drafts: saving a copy is not sending (``message.sent`` and the
  usage count of sent mail come from our transports). A message appended to \\Drafts with
  \\Draft becomes a draft the API lists (``store.drafts.record_appended``; expunging it
  deletes that draft).
- A client that submits through us and then saves its copy in \\Sent (most do) would file
  every message twice: we file one when we send it. A message appended to \\Sent whose
  Message-ID is that of one of our copies there is not stored again; APPENDUID gives the
  copy's UID. Our copy keeps a Bcc field the client submitted (only what goes out is without
  it); a client that left Bcc out of what it submitted but kept it in its own copy has that
  copy filed too, as the only record of whom it went to.
- The literal size limit (APPENDLIMIT) is enforced by the framer before any octet is read.
- The account's storage quota (``store.quota``) is checked before the blobs are staged and
  again with the account row locked in the storing transaction: over it, ``NO [OVERQUOTA]``
  (RFC 9208 §4.4) and nothing is stored (blobs staged meanwhile go with the store sweep).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from mailboxkit.mailserver.delivery import attachment_key, new_queue_id, raw_key
from mailboxkit.mailserver.imap import commands as c
from mailboxkit.mailserver.imap.context import Context, Outcome
from mailboxkit.mailserver.imap.errors import CommandFailed
from mailboxkit.mailserver.imap.mailbox_commands import AppendMessage
from mailboxkit.mailserver.imap.message_handlers import split_flags
from mailboxkit.mailserver.imap.responses import AppendUid, Code
from mailboxkit.mailserver.imap.state import Authenticated, Selected
from mailboxkit.store import quota
from mailboxkit.store.accounts import Inbox
from mailboxkit.store.drafts import record_appended
from mailboxkit.store.entries import SystemFlag
from mailboxkit.store.folders import Folder, find_folder
from mailboxkit.store.mailboxes import set_entry_flags
from mailboxkit.store.messages import NewMessage, insert_messages, sent_copies
from mailboxkit.store.mime import ParsedMessage, parse_message

log = logging.getLogger(__name__)

OUTBOUND_USES = frozenset({"\\Sent", "\\Drafts"})


@dataclass(frozen=True, slots=True)
class _Staged:
    """One message to append: its row-to-be, its flags, and its blobs."""

    new: NewMessage
    flags: list[SystemFlag]
    keywords: list[str]
    blobs: dict[str, bytes]
    draft: bool  # a draft a client saves: filed into \\Drafts with \\Draft


def _stage(
    message: AppendMessage, parsed: ParsedMessage, inbox: Inbox, folder: Folder, now: datetime
) -> _Staged:
    system, keywords = split_flags(message.flags)
    key = raw_key(now, new_queue_id())
    keys = [attachment_key(a.sha256) for a in parsed.attachments]
    blobs = {
        key: message.data,
        **dict(zip(keys, (a.data for a in parsed.attachments), strict=True)),
    }
    draft = folder.special_use == "\\Drafts" and SystemFlag.DRAFT in system
    new = NewMessage(
        inbox=inbox,
        parsed=parsed,
        raw_key=key,
        size=len(message.data),
        received_at=message.internal_date or now,
        attachment_keys=keys,
        direction="outbound" if folder.special_use in OUTBOUND_USES else "inbound",
        folder=folder.name,
        silent=folder.special_use in OUTBOUND_USES,  # a copy saved, not mail sent
        seen=SystemFlag.SEEN in system,
        threaded=not draft,  # a draft joins its conversation when it is sent
    )
    return _Staged(new, system, keywords, blobs, draft)


async def _sent_copies(ctx: Context, folder: Folder, staged: list[_Staged]) -> dict[int, int]:
    """Which of the messages appended to Sent are copies we filed there: position -> UID.

    A client's copy with a Bcc field is kept when ours has none: clients that leave Bcc out
    of what they submit keep it in their own copy, the only record of whom it went to."""
    ids = {
        position: s.new.parsed.message_id
        for position, s in enumerate(staged)
        if s.new.parsed.message_id
    }
    if not ids:
        return {}
    async with ctx.services.db.read() as conn:
        found = await sent_copies(conn, folder.inbox_id, folder.id, list(ids.values()))
    return {
        position: found[i].uid
        for position, i in ids.items()
        if i in found and (found[i].has_bcc or not staged[position].new.parsed.bcc)
    }


async def handle_append(
    ctx: Context, state: Authenticated | Selected, command: c.Append
) -> Outcome:
    """Store messages in a mailbox: blobs first, then one transaction, then the events.
    State: Authenticated, Selected. RFC 3501 §6.3.11, RFC 3502, RFC 4315 §3."""
    services, user = ctx.services, state.user
    async with services.db.read() as conn:
        folder = await find_folder(conn, user.inbox_id, command.mailbox)
    if folder is None:
        raise CommandFailed("Mailbox does not exist", Code.TRYCREATE)
    inbox = Inbox(user.inbox_id, user.account_id, user.address, "")
    now = services.clock.now()
    staged = []
    for message in command.messages:
        parsed = await services.offload.run(len(message.data), parse_message, message.data)
        staged.append(_stage(message, parsed, inbox, folder, now))
    # Position in the command -> UID: a copy we filed in Sent when we sent it keeps its own.
    uids = await _sent_copies(ctx, folder, staged) if folder.special_use == "\\Sent" else {}
    new = [(i, s) for i, s in enumerate(staged) if i not in uids]
    size = sum(s.new.size for _, s in new)
    async with services.db.read() as conn:  # before staging: refused early, nothing written
        storage = await quota.storage(conn, user.account_id)
    if new and storage is not None and not storage.fits(size):
        raise _over_quota(ctx, user.inbox_id)
    await services.blobs.put_many([item for _, s in new for item in s.blobs.items()])
    stored = []
    if new:
        async with services.db.write() as conn:
            locked = await quota.lock_accounts(conn, [user.account_id])
            if not all(s.fits(size) for s in locked.values()):  # raced: rolled back
                raise _over_quota(ctx, user.inbox_id)
            stored = await insert_messages(conn, [s.new for _, s in new])
            for row, (position, s) in zip(stored, new, strict=True):
                uids[position] = row.uid
                if set(s.flags) - {SystemFlag.SEEN} or s.keywords:
                    await set_entry_flags(
                        conn,
                        folder_id=row.folder_id,
                        uid=row.uid,
                        flags=s.flags,
                        keywords=s.keywords,
                    )
                if s.draft:
                    await record_appended(
                        conn, inbox=inbox, stored=row, parsed=s.new.parsed, now=now
                    )
    services.bus.publish(event for row in stored for event in row.events)
    if stored:
        services.changes.notify(user.inbox_id)
    log.info(
        "event=imap_append session=%s inbox=%s count=%d",
        ctx.conn.session_id,
        user.inbox_id,
        len(stored),
    )
    return Outcome(
        "APPEND completed",
        AppendUid(folder.uidvalidity, tuple(uids[i] for i in range(len(staged)))),
    )


def _over_quota(ctx: Context, inbox_id: str) -> CommandFailed:
    """APPEND over the account's storage limit: NO [OVERQUOTA] (RFC 9208 §4.4, RFC 5530)."""
    log.info("event=imap_append_over_quota session=%s inbox=%s", ctx.conn.session_id, inbox_id)
    return CommandFailed("Over quota: delete some mail first", Code.OVERQUOTA)
