"""A job the server repeats on its own task: every ``interval`` seconds until stopped.

A run that fails is logged (``event=<name>_failed``) and the next one still happens; stopping
cancels the task, mid-run or asleep.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from mailboxkit.store.db import log_failure
from mailboxkit.store.tasks import stop_tasks

log = logging.getLogger(__name__)


class Periodic:
    """Runs ``job`` every ``interval`` seconds (0: never), the first time after one interval,
    or at once with ``first_now``."""

    def __init__(
        self,
        name: str,
        interval: float,
        job: Callable[[], Awaitable[object]],
        *,
        first_now: bool = False,
    ) -> None:
        self._name = name
        self._interval = interval
        self._job = job
        self._first_now = first_now
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        await stop_tasks(self._task)
        self._task = None

    async def _run(self) -> None:
        if not self._first_now:
            await asyncio.sleep(self._interval)
        while True:
            try:
                await self._job()
            except Exception as error:
                log_failure(log, error, "event=%s_failed", self._name)
            await asyncio.sleep(self._interval)
