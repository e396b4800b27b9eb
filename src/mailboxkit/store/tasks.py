"""Stopping the asyncio tasks a component runs."""

from __future__ import annotations

import asyncio
from typing import Any


async def stop_tasks(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel the tasks (``None`` is skipped) and wait until each has ended.

    Ending by its cancellation is what a task is expected to do; any other exception it ended
    with is raised. A cancellation of the caller while it waits is not swallowed.
    """
    live = [task for task in tasks if task is not None]
    for task in live:
        task.cancel()
    for task in live:
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
