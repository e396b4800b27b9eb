"""The HTTP application factory: health endpoints and signed blob downloads for now.

The full ``/api/v1`` surface is built on this factory; it holds no globals, everything arrives
through :class:`ApiContext`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy import text

from mailboxkit.store.blobs import BlobStore, LocalBlobStore, content_disposition
from mailboxkit.store.db import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ApiContext:
    db: Database
    blobs: BlobStore


def error(status: int, code: str, message: str) -> JSONResponse:
    """The one error shape of the API: ``{"error": {"code", "message"}}``."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        title="MailboxKit",
        description="Email for AI agents: inboxes, messages, threads and events over HTTP.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process answers.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness: the database answers.")
    async def readyz() -> JSONResponse:
        try:
            async with ctx.db.read() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            log.exception("event=readyz_failed")
            return error(503, "unavailable", "database unavailable")
        return JSONResponse({"status": "ready"})

    @app.get("/blobs/{key:path}", include_in_schema=False)
    async def blob(key: str, request: Request) -> Response:
        """A time-limited download URL made by the local blob store's ``signed_url``."""
        store = ctx.blobs
        if not isinstance(store, LocalBlobStore):
            return error(404, "not_found", "not found")
        q = request.query_params
        filename, content_type = q.get("filename"), q.get("type")
        try:
            expires = int(q.get("expires", ""))
            valid = store.verify_signature(key, expires, filename, content_type, q.get("sig", ""))
        except ValueError:
            valid = False
        if not valid:
            return error(403, "forbidden", "the link is invalid or has expired")
        path = store.path_for(key)
        if not path.is_file():
            return error(404, "not_found", "not found")
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store"}
        if filename:
            headers["Content-Disposition"] = content_disposition(filename)
        return FileResponse(
            path, media_type=content_type or "application/octet-stream", headers=headers
        )

    return app
