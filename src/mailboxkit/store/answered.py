"""Marking the original of a reply ``\\Answered`` (RFC 9051 §2.3.2) and of a forward
``$Forwarded`` (RFC 5788's keyword registry), on every IMAP entry of the message, in the
transaction that queues the reply or forward (an :class:`~mailboxkit.store.outbox.QueueHook`).

The API shows keywords as labels, so ``$Forwarded`` is also a label; ``\\Answered`` is a flag
only IMAP shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.entries import SystemFlag
from mailboxkit.store.mailboxes import FlagMode, update_flags
from mailboxkit.store.outbox import Queued

FORWARDED = "$Forwarded"


class Answer(StrEnum):
    REPLY = "reply"
    FORWARD = "forward"


async def mark_original(conn: AsyncConnection, message_id: str, answer: Answer) -> None:
    """Add ``\\Answered`` (a reply) or ``$Forwarded`` (a forward) to each entry of the
    message; nothing when it is gone."""
    rows = await conn.execute(
        select(m.entries.c.folder_id, m.entries.c.uid).where(m.entries.c.message_id == message_id)
    )
    by_folder: dict[int, list[int]] = {}
    for row in rows:
        by_folder.setdefault(int(row.folder_id), []).append(int(row.uid))
    reply = answer is Answer.REPLY
    for folder_id in sorted(by_folder):  # lock order: folders by id
        await update_flags(
            conn,
            folder_id=folder_id,
            uids=by_folder[folder_id],
            mode=FlagMode.ADD,
            flags=[SystemFlag.ANSWERED] if reply else [],
            keywords=[] if reply else [FORWARDED],
        )


@dataclass(frozen=True, slots=True)
class MarkOriginal:
    """The queue hook of a reply or forward: marks its original when it is queued."""

    message_id: str
    answer: Answer

    async def claim(self, conn: AsyncConnection) -> bool:
        return True

    async def queued(self, conn: AsyncConnection, queued: Queued) -> None:
        await mark_original(conn, self.message_id, self.answer)
