"""SEARCH and UID SEARCH, with ESEARCH results (RFC 3501 §6.4.4, RFC 4731 §3.1, RFC 7162
§3.1.5 MODSEQ). How keys become SQL is in ``search_query``.

Implementation notes:

- CHARSET may be US-ASCII or UTF-8 (RFC 3501 §6.4.4 requires both); others are
  ``NO [BADCHARSET (US-ASCII UTF-8)]``.
- Only messages the session knows are searched (their sequence numbers must exist); a
  message expunged meanwhile is not found.
- With a MODSEQ key the results carry the highest mod-sequence among them (RFC 7162 §3.1.5).
"""

from __future__ import annotations

from mailboxkit.mailserver.imap import commands as c
from mailboxkit.mailserver.imap import search as s
from mailboxkit.mailserver.imap.context import Context, Outcome
from mailboxkit.mailserver.imap.errors import CommandFailed
from mailboxkit.mailserver.imap.responses import BadCharset, ESearchData, SearchData
from mailboxkit.mailserver.imap.search_query import (
    ROW_COLUMNS,
    Decoder,
    compile_key,
    matches,
    split_and,
)
from mailboxkit.mailserver.imap.state import Selected
from mailboxkit.mailserver.imap.sync import enable_condstore
from mailboxkit.store import models as m
from mailboxkit.store.entries import select_entries

CHARSETS = ("US-ASCII", "UTF-8")


def _uses_modseq(key: s.SearchKey) -> bool:
    if isinstance(key, s.SearchModSeq):
        return True
    if isinstance(key, s.SearchNot):
        return _uses_modseq(key.key)
    if isinstance(key, s.SearchOr):
        return _uses_modseq(key.left) or _uses_modseq(key.right)
    if isinstance(key, s.SearchAnd):
        return any(_uses_modseq(k) for k in key.keys)
    return False


async def handle_search(ctx: Context, state: Selected, command: c.Search) -> Outcome:
    """Find messages. State: Selected. RFC 3501 §6.4.4, RFC 4731 §3.1, RFC 7162 §3.1.5."""
    if command.charset is not None and command.charset not in CHARSETS:
        raise CommandFailed("Unsupported charset", BadCharset(CHARSETS))
    view, decode = state.view, Decoder(command.charset)
    with_modseq = _uses_modseq(command.key)
    if with_modseq:
        await enable_condstore(ctx, view)
    compiled = [compile_key(k, view, decode) for k in split_and(command.key)]
    conditions = [condition for condition in compiled if condition is not None]
    in_python = len(conditions) < len(compiled)
    async with ctx.services.db.read() as conn:
        rows = await select_entries(
            conn,
            view.folder_id,
            ROW_COLUMNS if in_python else (m.entries.c.uid, m.entries.c.modseq),
            conditions,
            last_uid=view.known_uid,
        )
    found = [
        (row.uid, row.modseq)
        for row in rows
        if view.sequence_number(row.uid) is not None
        and (not in_python or matches(command.key, row, view, decode))
    ]
    numbers = [uid if command.uid else view.sequence_number(uid) or 0 for uid, _ in sorted(found)]
    modseq = max((modseq for _, modseq in found), default=None) if with_modseq else None
    if command.return_options is None:
        await ctx.conn.send(SearchData(tuple(numbers), modseq if numbers else None))
    else:
        await ctx.conn.send(_esearch(command, numbers, modseq))
    return Outcome("SEARCH completed")


def _esearch(command: c.Search, numbers: list[int], modseq: int | None) -> ESearchData:
    options = set(command.return_options or ())
    return ESearchData(
        tag=command.tag,
        uid=command.uid,
        minimum=min(numbers) if numbers and s.SearchReturn.MIN in options else None,
        maximum=max(numbers) if numbers and s.SearchReturn.MAX in options else None,
        all=tuple(numbers) if numbers and s.SearchReturn.ALL in options else None,
        count=len(numbers) if s.SearchReturn.COUNT in options else None,
        modseq=modseq if numbers else None,
    )
