"""Requests to this same application in-process, as a client made them.

The MCP server (``mcp_server.py``) and the web console (``console/``) answer their users by
calling the ``/api/v1`` routes, so each semantics has one implementation: validation, account
scoping, rate limits, quotas and errors are the routes'. A call carries the user's
``Authorization`` and the client's address (as the proxy headers resolved it), so a wrong key
counts as a failed authentication of that address, as over HTTP. A call made for a request
that was itself authenticated and counted (MCP's) is not counted again (``counted``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from mailboxkit.api.auth import ALREADY_COUNTED


@dataclass(frozen=True, slots=True)
class _Counted:
    """``app``, told that the request's key was counted by the request that made it."""

    app: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app({**scope, ALREADY_COUNTED: True}, receive, send)


@dataclass(frozen=True, slots=True)
class Caller:
    """Requests to ``app`` in-process with one ``Authorization``, from one client address.
    Straight through the ASGI transport: an httpx client would log each request at INFO
    (query included) beside the access log's line for it."""

    transport: httpx.ASGITransport
    base_url: str
    authorization: bytes  # as the client sent it, or made from the console's session

    @classmethod
    def of(
        cls, app: ASGIApp, request: Request, authorization: bytes, *, counted: bool = False
    ) -> Caller:
        """Calls as the client of ``request``: its address, and the scheme and host it used
        (signed URLs and Stripe's return links are made from them). ``counted``: ``request``
        was authenticated with the same ``authorization`` and counted for its key's rate
        limit and usage; the calls are not counted again."""
        peer = request.client
        transport = httpx.ASGITransport(
            app=_Counted(app) if counted else app,
            raise_app_exceptions=False,
            client=(peer.host, peer.port) if peer else ("127.0.0.1", 0),
        )
        return cls(transport, str(request.base_url).rstrip("/"), authorization)

    async def __call__(
        self, method: str, url: str, headers: Mapping[str, bytes] | None = None, body: Any = None
    ) -> httpx.Response:
        request = httpx.Request(
            method,
            self.base_url + url,
            headers={
                **{k.encode(): v for k, v in (headers or {}).items()},
                b"Authorization": self.authorization,
            },
            json=body,
        )
        response = await self.transport.handle_async_request(request)
        await response.aread()
        return response
