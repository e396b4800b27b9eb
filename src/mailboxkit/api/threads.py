"""Threads: ``/inboxes/{inbox_id}/threads`` (a page, latest first) and ``/threads/{id}``."""

from __future__ import annotations

from fastapi import APIRouter

from mailboxkit.api import schemas as s
from mailboxkit.api.auth import Principal
from mailboxkit.api.context import Ctx
from mailboxkit.api.errors import not_found
from mailboxkit.api.messages import message_schema
from mailboxkit.api.params import InboxId, Limit, PageToken, ThreadId, cursor
from mailboxkit.store.conversations import ThreadRecord, get_thread, list_threads
from mailboxkit.store.inboxes import visible_inbox

router = APIRouter(tags=["threads"], responses=s.AUTHENTICATED | s.error_responses(404))


def _item_fields(t: ThreadRecord) -> dict[str, object]:
    return {
        "thread_id": t.id,
        "inbox_id": t.inbox_id,
        "subject": t.subject,
        "participants": [s.Address(name=p["name"], email=p["email"]) for p in t.participants],
        "message_count": t.message_count,
        "preview": t.preview,
        "created_at": t.created_at,
        "last_message_at": t.last_message_at,
    }


@router.get(
    "/inboxes/{inbox_id}/threads",
    response_model=s.ThreadList,
    summary="List threads",
    description="The inbox's conversations, latest activity first, one page at a time.",
)
async def list_inbox_threads(
    inbox_id: InboxId, owner: Principal, ctx: Ctx, limit: Limit = 50, page_token: PageToken = None
) -> s.ThreadList:
    start = cursor(page_token)
    async with ctx.db.read() as conn:
        if not await visible_inbox(conn, owner.scope, inbox_id):
            raise not_found("inbox")
        found, more = await list_threads(conn, inbox_id, limit=limit, cursor=start)
    return s.ThreadList(
        count=len(found),
        threads=[s.ThreadItem.model_validate(_item_fields(t)) for t in found],
        next_page_token=more.encode() if more else None,
    )


@router.get(
    "/threads/{thread_id}",
    response_model=s.Thread,
    summary="Get a thread",
    description="A conversation: subject, participants, counts and its messages, oldest first.",
)
async def get_one_thread(thread_id: ThreadId, owner: Principal, ctx: Ctx) -> s.Thread:
    async with ctx.db.read() as conn:
        found = await get_thread(conn, owner.scope, thread_id)
    if found is None:
        raise not_found("thread")
    return s.Thread.model_validate(
        {**_item_fields(found), "messages": [message_schema(r) for r in found.messages]}
    )
