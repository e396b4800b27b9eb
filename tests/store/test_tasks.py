"""stop_tasks: cancel, wait, and tell a task's expected end from a failure or our own cancel."""

from __future__ import annotations

import asyncio

import pytest

from mailboxkit.store.tasks import stop_tasks


async def test_running_tasks_are_cancelled_and_waited_for() -> None:
    ended: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.append(name)

    tasks = [asyncio.create_task(forever(n)) for n in ("a", "b")]
    await asyncio.sleep(0)  # both started
    await stop_tasks(tasks[0], None, tasks[1])
    assert ended == ["a", "b"]
    assert all(t.cancelled() for t in tasks)


async def test_a_task_that_failed_raises_its_error() -> None:
    async def fail() -> None:
        raise ValueError("broken")

    task = asyncio.create_task(fail())
    await asyncio.wait({task})
    with pytest.raises(ValueError, match="broken"):
        await stop_tasks(task)


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    slow_to_stop = asyncio.Event()
    stopping = asyncio.Event()

    async def lingers() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopping.set()
            await slow_to_stop.wait()  # a cleanup that takes a while

    worker = asyncio.create_task(lingers())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(stop_tasks(worker))
    await stopping.wait()
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    slow_to_stop.set()
    await asyncio.wait({worker})
