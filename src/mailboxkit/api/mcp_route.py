"""``POST /mcp``, the MCP server's route: authenticated as every API route, answered by the MCP
SDK through ``mcp_server.py``.

That module and the SDK are imported at the first request, not with the application: they
are about a third of a second of every server start and every CLI command that loads the
server, for a surface many installations never serve.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends, FastAPI, Response

from mailboxkit.api.auth import authenticate

PATH = "/mcp"


def router(app: FastAPI, prefix: str, max_body_size: int) -> APIRouter:
    """The ``/mcp`` route of ``app``, whose API routes are under ``prefix``."""
    answer: Callable[[], Response] | None = None
    api = APIRouter()

    @api.post(PATH, include_in_schema=False, dependencies=[Depends(authenticate)])
    async def mcp() -> Response:
        nonlocal answer
        if answer is None:
            from mailboxkit.api import mcp_server

            answer = mcp_server.exchanges(app, prefix, max_body_size)
        return answer()

    return api
