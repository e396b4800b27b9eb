"""A real HTTP endpoint for webhook tests: uvicorn on 127.0.0.1 in a thread, recording every
request and answering as the test says (status, headers, or holding the request).

The listening socket is bound before the server thread starts, so requests made before the
server loop runs wait in the backlog: no race at start, nothing to sleep on.
"""

from __future__ import annotations

import asyncio
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import uvicorn
from starlette.types import Receive, Scope, Send


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


Answer = tuple[int, dict[str, str]]


class Receiver:
    def __init__(self) -> None:
        self.requests: queue.Queue[Received] = queue.Queue()
        self.all: list[Received] = []
        self.answer: Callable[[Received], Answer] = lambda _r: (200, {})
        self.hold = threading.Event()  # set: requests are recorded and never answered
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.hold.clear()
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    def next(self, timeout: float = 20) -> Received:
        return self.requests.get(timeout=timeout)

    def take(self, count: int, timeout: float = 60) -> list[Received]:
        deadline = time.monotonic() + timeout
        return [self.next(max(0.1, deadline - time.monotonic())) for _ in range(count)]

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        got = Received(scope["path"], headers, body)
        self.all.append(got)
        self.requests.put(got)
        if self.hold.is_set():
            await asyncio.Event().wait()  # never answered; the client gives up or dies
        status, extra = self.answer(got)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in extra.items()],
            }
        )
        no_body = status in (204, 304) or status < 200  # HTTP forbids one (RFC 9110 §6.4.1)
        await send({"type": "http.response.body", "body": b"" if no_body else b"ok"})
