"""FETCH and UID FETCH (RFC 3501 §6.4.5, §6.4.8; RFC 7162 §3.1.4 MODSEQ and CHANGEDSINCE,
§3.2.6 VANISHED).

Implementation notes:

- Message bytes come from the blob store, byte-exact; sections are ranges of them
  (``sections``), ENVELOPE and BODYSTRUCTURE are built from the same part tree
  (``body_builder``). Only items that need content read the blob; a few recent messages
  stay parsed in the session (clients fetch BODYSTRUCTURE, then parts).
- A non-PEEK body section, RFC822 or RFC822.TEXT sets ``\\Seen`` first (unless read-only);
  the messages whose flags this changed also get ``FLAGS`` in their response (RFC 3501
  §6.4.5).
- UID FETCH always returns UID (§6.4.8); CHANGEDSINCE adds MODSEQ (RFC 7162 §3.1.4.1).
- A FETCH of only UID, FLAGS and MODSEQ (what sync clients send for ``1:*``) reads the
  entries alone, without their messages: on 10,000 messages it takes half the time.
- A message expunged meanwhile (its expunge not yet reported) has nothing left to fetch and
  is skipped. A blob that cannot be read is logged and the message skipped.
- BINARY (RFC 3516 §4.1): ``binary_sections`` finds the part and undoes its transfer
  encoding, in the offload when the part is large; BINARY and BINARY.SIZE of one part in one
  FETCH decode it once. A non-PEEK BINARY sets ``\\Seen`` as BODY does. An encoding we cannot
  undo fails the FETCH with ``NO [UNKNOWN-CTE]`` (§4.3), after the messages before it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from mailboxkit.mailserver.imap import commands as c
from mailboxkit.mailserver.imap.binary_sections import UnknownEncoding, binary_source, decode_body
from mailboxkit.mailserver.imap.body_builder import body_structure, envelope
from mailboxkit.mailserver.imap.body_structure import body_structure_value, envelope_value
from mailboxkit.mailserver.imap.context import Context, Outcome
from mailboxkit.mailserver.imap.errors import CommandFailed
from mailboxkit.mailserver.imap.fetch import (
    BinarySection,
    BinarySize,
    BodySection,
    FetchAttribute,
    FetchItem,
    response_name,
)
from mailboxkit.mailserver.imap.mailbox_view import MailboxView, flags_value
from mailboxkit.mailserver.imap.message_parts import MimePart, parse_message
from mailboxkit.mailserver.imap.responses import Binary, Code, Condition, FetchData, Value, Vanished
from mailboxkit.mailserver.imap.sections import partial, section_bytes
from mailboxkit.mailserver.imap.state import Selected
from mailboxkit.mailserver.imap.sync import enable_condstore
from mailboxkit.store.blobs import BlobNotFound
from mailboxkit.store.entries import (
    EntryContent,
    EntryFlags,
    SystemFlag,
    changed_entries,
    entry_contents,
    expunged_since,
)
from mailboxkit.store.mailboxes import FlagMode, update_flags

log = logging.getLogger(__name__)

PARSED_CACHE_SIZE = 8
"""Messages kept parsed per session (a rendering aid, not a limit)."""

_ENTRY_ITEMS = frozenset({FetchItem.UID, FetchItem.FLAGS, FetchItem.MODSEQ})
"""Items an entry alone answers."""

_CONTENT_ITEMS = frozenset(
    {
        FetchItem.ENVELOPE,
        FetchItem.BODY,
        FetchItem.BODYSTRUCTURE,
        FetchItem.RFC822,
        FetchItem.RFC822_HEADER,
        FetchItem.RFC822_TEXT,
    }
)


def _marks_seen(attribute: FetchAttribute) -> bool:
    if isinstance(attribute, BodySection | BinarySection):
        return not attribute.peek
    return attribute in (FetchItem.RFC822, FetchItem.RFC822_TEXT)


def _needs_content(attribute: FetchAttribute) -> bool:
    return isinstance(attribute, BodySection | BinarySection | BinarySize) or (
        attribute in _CONTENT_ITEMS
    )


def _attributes(command: c.Fetch) -> list[FetchAttribute]:
    attributes = list(command.attributes)
    if command.uid and FetchItem.UID not in attributes:
        attributes.insert(0, FetchItem.UID)
    if command.changed_since is not None and FetchItem.MODSEQ not in attributes:
        attributes.append(FetchItem.MODSEQ)
    return attributes


async def handle_fetch(ctx: Context, state: Selected, command: c.Fetch) -> Outcome:
    """Message data. State: Selected. RFC 3501 §6.4.5, RFC 7162 §3.1.4, §3.2.6."""
    view = state.view
    uids = view.resolve(command.sequence_set, uid=command.uid)
    attributes = _attributes(command)
    if command.vanished and not ctx.qresync:
        raise CommandFailed("Enable QRESYNC first", condition=Condition.BAD)
    if FetchItem.MODSEQ in attributes:
        await enable_condstore(ctx, view)
    async with ctx.services.db.read() as conn:
        if command.vanished and command.changed_since is not None:
            gone = await expunged_since(conn, view.folder_id, modseq=command.changed_since)
            largest = max(gone, default=0)
            gone = [u for u in gone if command.sequence_set.contains(u, largest)]
            if gone:
                await ctx.conn.send(Vanished(tuple(gone), earlier=True))
        entry_only = _ENTRY_ITEMS.issuperset(attributes)
        if entry_only:
            since = command.changed_since or 0
            entries = await changed_entries(conn, view.folder_id, modseq=since, uids=uids)
        else:
            rows = await entry_contents(conn, view.folder_id, uids)
    if entry_only:
        await _send_entries(ctx, view, entries, attributes)
        return Outcome("FETCH completed")
    if command.changed_since is not None:
        rows = [r for r in rows if r.entry.modseq > command.changed_since]
    seen_now = await _mark_seen(ctx, state, rows, attributes)
    for row in rows:
        entry = seen_now.get(row.entry.uid, row.entry)
        if view.sequence_number(entry.uid) is None:
            continue
        items = await _items(ctx, view, row, entry, attributes, entry.uid in seen_now)
        if items is not None:
            await ctx.conn.send(FetchData(view.sequence_number(entry.uid) or 0, items))
    return Outcome("FETCH completed")


async def _send_entries(
    ctx: Context, view: MailboxView, entries: list[EntryFlags], attributes: list[FetchAttribute]
) -> None:
    """The responses of a FETCH of entry items only (see the module notes)."""
    names = [response_name(a) for a in attributes]
    for entry in entries:
        number = view.sequence_number(entry.uid)
        if number is not None:
            values = [_entry_value(a, entry) for a in attributes]
            await ctx.conn.send(FetchData(number, tuple(zip(names, values, strict=True))))


async def _mark_seen(
    ctx: Context, state: Selected, rows: list[EntryContent], attributes: list[FetchAttribute]
) -> dict[int, EntryFlags]:
    """Set ``\\Seen`` where a non-PEEK item reads the body; the entries it changed."""
    if state.read_only or not any(_marks_seen(a) for a in attributes):
        return {}
    unseen = [r.entry.uid for r in rows if SystemFlag.SEEN not in r.entry.flags]
    if not unseen:
        return {}
    async with ctx.services.db.write() as conn:
        changes = await update_flags(
            conn,
            folder_id=state.view.folder_id,
            uids=unseen,
            mode=FlagMode.ADD,
            flags=[SystemFlag.SEEN],
            now=ctx.services.clock.now(),
        )
    if changes.updated:
        ctx.services.changes.notify(state.user.inbox_id)
    for response in state.view.record(changes.updated):
        await ctx.conn.send(response)
    return {entry.uid: entry for entry in changes.updated}


async def _items(
    ctx: Context,
    view: MailboxView,
    row: EntryContent,
    entry: EntryFlags,
    attributes: list[FetchAttribute],
    flags_changed: bool,
) -> tuple[tuple[str, Value], ...] | None:
    message = None
    if any(_needs_content(a) for a in attributes):
        message = await _load(ctx, row)
        if message is None:
            return None
    items: list[tuple[str, Value]] = []
    decoded: dict[tuple[int, ...], bytes] = {}
    for attribute in attributes:
        value: Value
        if isinstance(attribute, BinarySection):
            assert message is not None
            data = await _decoded(ctx, message, attribute.part, decoded)
            value = Binary(partial(data, attribute.partial))
        elif isinstance(attribute, BinarySize):
            assert message is not None
            value = len(await _decoded(ctx, message, attribute.part, decoded))
        else:
            value = _value(attribute, row, entry, message)
        items.append((response_name(attribute), value))
    if flags_changed:  # RFC 3501 §6.4.5; with CONDSTORE, UID and MODSEQ too (RFC 7162 §3.1)
        extra = [FetchItem.FLAGS, *([FetchItem.UID, FetchItem.MODSEQ] if view.condstore else [])]
        for attribute in extra:
            if attribute not in attributes:
                items.append((attribute.value, _value(attribute, row, entry, message)))
    return tuple(items)


def _value(
    attribute: FetchAttribute, row: EntryContent, entry: EntryFlags, message: MimePart | None
) -> Value:
    if isinstance(attribute, BodySection):
        assert message is not None
        return partial(section_bytes(message, attribute.section), attribute.partial)
    if attribute in _ENTRY_ITEMS:
        return _entry_value(attribute, entry)
    if attribute is FetchItem.INTERNALDATE:
        return row.internal_date
    if attribute is FetchItem.RFC822_SIZE:
        return row.size
    assert message is not None
    if attribute is FetchItem.ENVELOPE:
        return envelope_value(envelope(message))
    if attribute is FetchItem.BODYSTRUCTURE:
        return body_structure_value(body_structure(message), extensible=True)
    if attribute is FetchItem.BODY:
        return body_structure_value(body_structure(message), extensible=False)
    if attribute is FetchItem.RFC822:
        return message.data
    if attribute is FetchItem.RFC822_HEADER:
        return message.header
    if attribute is FetchItem.RFC822_TEXT:
        return message.body
    raise AssertionError(f"unhandled fetch attribute {attribute!r}")


async def _decoded(
    ctx: Context, message: MimePart, part: tuple[int, ...], decoded: dict[tuple[int, ...], bytes]
) -> bytes:
    """``BINARY[part]`` of ``message``, decoded once per FETCH response (RFC 3516 §4.1)."""
    if part not in decoded:
        encoding, body = binary_source(message, part)
        try:
            decoded[part] = await ctx.services.offload.run(len(body), decode_body, encoding, body)
        except UnknownEncoding:
            raise CommandFailed("Unknown Content-Transfer-Encoding", Code.UNKNOWN_CTE) from None
    return decoded[part]


def _entry_value(attribute: FetchAttribute, entry: EntryFlags) -> Value:
    if attribute is FetchItem.UID:
        return entry.uid
    if attribute is FetchItem.FLAGS:
        return flags_value(entry)
    if attribute is FetchItem.MODSEQ:
        return (entry.modseq,)
    raise AssertionError(f"not an entry item {attribute!r}")


async def _load(ctx: Context, row: EntryContent) -> MimePart | None:
    cache: OrderedDict[str, MimePart] = ctx.parsed
    message = cache.get(row.raw_key)
    if message is not None:
        cache.move_to_end(row.raw_key)
        return message
    try:
        raw = await ctx.services.blobs.get(row.raw_key)
    except BlobNotFound:
        log.warning(
            "event=imap_blob_missing session=%s message=%s", ctx.conn.session_id, row.message_id
        )
        return None
    message = await ctx.services.offload.run(len(raw), parse_message, raw)
    cache[row.raw_key] = message
    while len(cache) > PARSED_CACHE_SIZE:
        cache.popitem(last=False)
    return message
