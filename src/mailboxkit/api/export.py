"""``GET /account/export``: all of the account's data as one zip, streamed while it is made.

Implementation notes:

- ``store.export.export_account`` writes the zip from worker threads; :class:`_Pipe` hands
  its bytes to the response body on the event loop, ``QUEUED`` chunks at most. A slow client
  slows the export instead of filling memory; a client that goes away makes the next write
  fail, which ends the export (and frees its worker thread) at once.
- The status and headers go before the export is done: an export that fails midway ends the
  body early, so the client holds a zip without its central directory, which no reader takes
  for a whole export; the failure is logged.
- One export at a time per process (they read every blob of an account): another asks again
  later (429). Counted while the body is sent, so a response never started holds nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from mailboxkit.api import schemas as s
from mailboxkit.api.auth import AccountPrincipal
from mailboxkit.api.context import Ctx
from mailboxkit.api.errors import ApiError
from mailboxkit.store.export import FORMAT, export_account

log = logging.getLogger(__name__)

router = APIRouter(tags=["account"], responses=s.AUTHENTICATED)

CHUNK = 1 << 16  # bytes handed to the response at a time
QUEUED = 16  # chunks waiting for a slow client, at most
_POLL = 1.0  # seconds between looks at whether the other side has gone
_running: set[asyncio.Task[None]] = set()  # this process's export, while its body is sent


class _Pipe:
    """The export's ``out``: written by its worker threads, read by the response body on the
    event loop. At most ``QUEUED`` chunks wait; a writer finding no room waits for the reader,
    and fails once the reader has gone."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._room = threading.Semaphore(QUEUED)
        self._pending = bytearray()
        self.abandoned = False  # set by the reader: nobody reads any more

    def write(self, data: bytes, /) -> int:
        self._pending += data
        if len(self._pending) >= CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if not self._pending:
            return
        while not self._room.acquire(timeout=_POLL):
            if self.abandoned:
                break
        if self.abandoned:
            raise BrokenPipeError("the client went away")
        self._loop.call_soon_threadsafe(self._chunks.put_nowait, bytes(self._pending))
        self._pending.clear()

    def end(self) -> None:
        """No more chunks (called on the event loop, after the last write)."""
        self._chunks.put_nowait(None)

    async def read(self) -> bytes | None:
        """The next chunk; None at the end."""
        chunk = await self._chunks.get()
        self._room.release()
        return chunk


@router.get(
    "/account/export",
    response_class=StreamingResponse,
    summary="Export all of the account's data",
    description="One zip (`"
    + FORMAT
    + "`), streamed: every inbox's folders as Maildir directories with each message exactly "
    "as stored, a `messages.jsonl` per inbox (folders, flags, keywords, threads, "
    "attachments), `outbound.jsonl` (the delivery log of sent mail) and `account.json` (the "
    "account, domains, inboxes, API keys, webhooks, sender rules, suppressions, drafts, "
    "usage, billing; no secrets). One export at a time per server process (429 meanwhile). "
    "Needs an account key.",
    responses={
        200: {
            "description": "The zip, its members named as in this example.",
            "content": {
                "application/zip": {
                    "schema": {"type": "string", "format": "binary"},
                    "example": "inboxes/agent@example.com/INBOX/cur/1764316800.42.mailboxkit:2,S"
                    "\ninboxes/agent@example.com/messages.jsonl\noutbound.jsonl\naccount.json",
                }
            },
        },
        **s.error_responses(403),
    },
)
async def export(owner: AccountPrincipal, ctx: Ctx) -> StreamingResponse:
    if _running:
        raise ApiError(
            429,
            "rate_limited",
            "another export is running; try again later",
            headers={"Retry-After": "60"},
        )
    pipe = _Pipe(asyncio.get_running_loop())

    async def produce() -> None:
        try:
            await export_account(ctx.db, ctx.blobs, owner.account_id, pipe, now=ctx.clock.now())
        finally:
            pipe.end()

    async def body() -> AsyncIterator[bytes]:
        task = asyncio.create_task(produce())
        _running.add(task)
        try:
            while (chunk := await pipe.read()) is not None:
                yield chunk
            await task  # its failure ends the body early (see the notes)
            log.info("event=account_exported account_id=%s", owner.account_id)
        except Exception:
            log.exception("event=account_export_failed account_id=%s", owner.account_id)
            raise
        finally:
            pipe.abandoned = True
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            _running.discard(task)

    name = f"mailboxkit-export-{owner.account_id}.zip"
    return StreamingResponse(
        body(),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
