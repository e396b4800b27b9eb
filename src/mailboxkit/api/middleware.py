"""ASGI middleware of the HTTP server: the request body limit and the access log.

Both are plain ASGI (no ``BaseHTTPMiddleware``): they wrap ``receive``/``send`` without
buffering, and streaming responses pass straight through.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("mailboxkit.api.access")


class BodyTooLarge(HTTPException):
    """Raised while reading an oversized body; an HTTPException so FastAPI passes it on."""

    def __init__(self, max_size: int) -> None:
        super().__init__(413, f"request body over {max_size} bytes")


async def _send_json(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuses request bodies over ``max_size`` bytes with 413, by header or while reading."""

    def __init__(self, app: ASGIApp, *, max_size: int) -> None:
        self.app = app
        self.max_size = max_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"request body over {self.max_size} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_size:
                    await _send_json(send, 413, "payload_too_large", too_large)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_size:
                    raise BodyTooLarge(self.max_size)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _send_json(send, 413, "payload_too_large", too_large)


class AccessLog:
    """One log line per request: method, path, status, duration, bytes, client, key id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        size = 0
        logged = False
        state: dict[str, Any] = scope.setdefault("state", {})

        def log_line() -> None:
            nonlocal logged
            logged = True
            client = scope.get("client") or ("-", 0)
            log.info(
                "event=http_request method=%s path=%s status=%d duration_ms=%.1f bytes=%d "
                "client=%s key_id=%s",
                scope.get("method", "-"),
                scope.get("path", "-"),
                status,
                (time.perf_counter() - start) * 1000,
                size,
                client[0],
                state.get("key_id", "-"),
            )

        async def logging_send(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
                if not message.get("more_body", False):
                    log_line()  # before the last byte leaves: the line precedes the client
            await send(message)

        try:
            await self.app(scope, receive, logging_send)
        finally:
            if not logged:
                log_line()
