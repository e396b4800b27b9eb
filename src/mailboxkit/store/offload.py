"""Work over large inputs, kept off the event loop and out of its process's GIL.

Parsing or composing a 20 MB message takes about a second of CPU. Run on the event loop, it
would stop every other session for that second; run on a thread, it would still hold the GIL,
and the loop would get it back only every few milliseconds, between the thread's turns.

Implementation notes:

- Inputs up to ``INLINE_BYTES`` run inline: a round trip to another process costs more than
  the work.
- Larger ones run in a pool of worker processes, started on first use (a server that never sees
  a large message starts none) and off the event loop, with the ``forkserver`` method: the
  server's own threads are never forked. The work and its arguments travel by pickle, so the
  work is a module-level function.
- A worker that dies (killed, out of memory) breaks the pool: the call raises
  ``BrokenProcessPool`` and the next call starts a new pool.
- Workers ignore SIGINT: the server stops them itself, after its sessions ended. A server
  killed outright (SIGKILL, the OOM killer) cannot: each worker holds the read end of a pipe
  whose only write end the server holds, and exits when it reads end of file. Without this, a
  pool's workers (and the forkserver) would wait for work forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from multiprocessing.connection import Connection
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

INLINE_BYTES = 64 * 1024  # up to this, parsing a message takes about a millisecond


def default_processes() -> int:
    """One core for the server's event loop, the others (up to four) for large inputs."""
    return max(1, min(4, (os.cpu_count() or 1) - 1))


def _start_worker(server_alive: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_server, args=(server_alive,), daemon=True).start()


def _exit_with_server(server_alive: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        server_alive.recv()  # nothing is ever sent: this returns when the server is gone
    os._exit(0)


class Offload:
    """Runs work inline when its input is small and in worker processes when it is large."""

    def __init__(self, processes: int = 0) -> None:
        """``processes`` workers at most (0: ``default_processes()``)."""
        self._processes = processes or default_processes()
        self._pool: ProcessPoolExecutor | None = None
        self._alive: tuple[Connection, Connection] | None = None  # read end, write end

    async def run(self, size: int, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``work(*args, **kwargs)``, where ``size`` (the bytes it reads) says."""
        if size <= INLINE_BYTES:
            return work(*args, **kwargs)
        pool = self._pool or self._start()
        try:
            # submit starts worker processes as needed (the first time, the forkserver too,
            # about 150 ms): on a thread, so that the event loop never waits for that.
            future = await asyncio.to_thread(pool.submit, partial(work, *args, **kwargs))
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            if self._pool is pool:
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            raise

    def _start(self) -> ProcessPoolExecutor:
        if self._alive is None:
            self._alive = multiprocessing.Pipe(duplex=False)
        self._pool = ProcessPoolExecutor(
            self._processes,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=_start_worker,
            initargs=(self._alive[0],),
        )
        return self._pool

    async def close(self) -> None:
        """Stop the workers, once the work they were given is done."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
        alive, self._alive = self._alive, None
        for end in alive or ():
            end.close()
