"""Offload: small work inline, large work in worker processes that survive a worker's death."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from concurrent.futures.process import BrokenProcessPool

import pytest

from mailboxkit.store.mime import parse_message
from mailboxkit.store.offload import INLINE_BYTES, Offload

LARGE = INLINE_BYTES + 1


@pytest.fixture
async def offload() -> AsyncIterator[Offload]:
    pool = Offload(processes=1)
    yield pool
    await pool.close()


async def test_small_work_runs_inline(offload: Offload) -> None:
    assert await offload.run(INLINE_BYTES, os.getpid) == os.getpid()


async def test_large_work_runs_in_another_process(offload: Offload) -> None:
    worker = await offload.run(LARGE, os.getpid)
    assert worker != os.getpid()
    assert await offload.run(LARGE, os.getpid) == worker  # started once, then reused


async def test_a_large_message_parses_as_it_does_inline(offload: Offload) -> None:
    body = b"line of a long report\r\n" * 4000
    raw = b"From: a@example.test\r\nSubject: report\r\nMessage-ID: <r@example.test>\r\n\r\n" + body
    assert len(raw) > INLINE_BYTES
    assert await offload.run(len(raw), parse_message, raw) == parse_message(raw)


async def test_the_works_exception_is_raised(offload: Offload) -> None:
    with pytest.raises(ValueError, match="invalid literal"):
        await offload.run(LARGE, int, "not a number")


async def test_after_a_worker_dies_the_next_call_gets_a_new_pool(offload: Offload) -> None:
    first = await offload.run(LARGE, os.getpid)
    with pytest.raises(BrokenProcessPool):
        await offload.run(LARGE, os._exit, 3)
    second = await offload.run(LARGE, os.getpid)
    assert second not in (first, os.getpid())


async def test_close_stops_the_workers() -> None:
    offload = Offload(processes=1)
    worker = await offload.run(LARGE, os.getpid)
    await offload.close()
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)
