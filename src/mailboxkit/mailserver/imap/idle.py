"""IDLE (RFC 2177): push mailbox changes until the client says DONE.

Implementation notes:

- The session's change watch rings on every committed change to the inbox (delivery, the
  API, other sessions); each ring is answered by reading the changes and sending them at
  once, EXPUNGE included (RFC 2177 §3 allows any untagged response while idling).
- The read of DONE runs alongside and is never cancelled while data may be arriving; the
  session's idle timeout (at least 29 minutes in practice, RFC 2177 §3) ends a silent IDLE.
"""

from __future__ import annotations

import asyncio

from mailboxkit.mailserver.imap import commands as c
from mailboxkit.mailserver.imap.context import Context, Outcome
from mailboxkit.mailserver.imap.errors import ClientDisconnected, CommandFailed
from mailboxkit.mailserver.imap.responses import Condition, Continuation
from mailboxkit.mailserver.imap.state import Authenticated, Selected
from mailboxkit.mailserver.imap.sync import report_changes
from mailboxkit.store.tasks import stop_tasks


async def handle_idle(ctx: Context, state: Authenticated | Selected, command: c.Idle) -> Outcome:
    """Wait for DONE, pushing changes meanwhile. State: Authenticated, Selected.
    RFC 2177 §3."""
    watch = ctx.watch
    assert watch is not None
    await ctx.conn.send(Continuation("idling"))
    await ctx.conn.flush()
    read = asyncio.ensure_future(ctx.conn.read_frame())
    try:
        while True:
            if watch.rung.is_set():
                watch.rung.clear()
                if isinstance(state, Selected):
                    await report_changes(ctx, state.view, allow_expunge=True)
                    await ctx.conn.flush()
            rung = asyncio.ensure_future(watch.rung.wait())
            try:
                await asyncio.wait({read, rung}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                rung.cancel()
            if read.done():
                break
    finally:
        if not read.done():
            await stop_tasks(read)
    frame = read.result()
    if frame is None:
        raise ClientDisconnected
    if not c.is_idle_done(frame):
        raise CommandFailed("Expected DONE", condition=Condition.BAD)
    return Outcome("IDLE terminated")
