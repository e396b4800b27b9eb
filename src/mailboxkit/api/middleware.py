"""ASGI middleware of the HTTP server: the request body limit, and the access log with the
request metrics.

Both are plain ASGI (no ``BaseHTTPMiddleware``): they wrap ``receive``/``send`` without
buffering, and streaming responses pass straight through.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import fastapi.routing
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailboxkit import metrics

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


def route_templates(app: Starlette) -> dict[int, str]:
    """The whole path template of each route of ``app``, by the id of the route object that
    routing puts in ``scope["route"]``.

    FastAPI 0.137 and later put there the route as its router declared it, without the prefix
    given to ``include_router`` (``/inboxes/{inbox_id}``, not ``/api/v1/inboxes/{inbox_id}``);
    their route contexts know the whole path. Earlier versions copy each included route with
    its whole path: the map is then empty and :func:`route_label` takes the route's own.
    """
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if contexts is None:
        return {}
    return {id(c.original_route): c.path_format for c in contexts(app.routes) if c.path_format}


def route_label(scope: Scope, templates: Mapping[int, str]) -> str:
    """The matched route's path template, never the raw path (ids would make a series each);
    ``unmatched`` when no route matched (404, or refused before routing)."""
    route = scope.get("route")
    if route is None:
        return "unmatched"
    template = templates.get(id(route)) or getattr(route, "path_format", None)
    return template if isinstance(template, str) else "unmatched"


class AccessLog:
    """One log line per request: method, path, status, duration, bytes, client, key id; and
    the request's metrics (``mailboxkit_http_*``), its route given by ``routes``
    (:func:`route_templates`)."""

    def __init__(self, app: ASGIApp, *, routes: Mapping[int, str] | None = None) -> None:
        self.app = app
        self.routes = routes or {}

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
            method = scope.get("method", "-")
            elapsed = time.perf_counter() - start
            metrics.http_request(method, route_label(scope, self.routes), status, elapsed)
            log.info(
                "event=http_request method=%s path=%s status=%d duration_ms=%.1f bytes=%d "
                "client=%s key_id=%s",
                method,
                scope.get("path", "-"),
                status,
                elapsed * 1000,
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
