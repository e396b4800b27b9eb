"""The HTTP application factory: ``/api/v1`` by resource, health endpoints, Prometheus
``/metrics``, signed downloads, the MCP server at ``/mcp`` (``mcp_route.py``) and the web
console at ``/console`` (``console/``).

It holds no globals: everything arrives through :class:`ApiContext`, kept in the application's
state. Middleware, outermost first: the access log (one line per request, and its count in the
metrics by route template), the request body limit (413). Every error, expected or not, leaves
in the one shape of ``errors.py``.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy import text

from mailboxkit.api import (
    account,
    api_keys,
    attachments,
    billing,
    billing_webhook,
    console,
    deliveries,
    domains,
    drafts,
    export,
    inboxes,
    mcp_route,
    messages,
    metrics,
    register,
    send,
    sender_rules,
    sesfeedback,
    stream,
    suppressions,
    threads,
    webhooks,
    wellknown,
)
from mailboxkit.api.context import ApiConfig, ApiContext
from mailboxkit.api.errors import error, install_handlers
from mailboxkit.api.middleware import AccessLog, BodyLimit, route_templates
from mailboxkit.store.blobs import content_disposition
from mailboxkit.store.db import log_failure, storage_full
from mailboxkit.store.localblobs import LocalBlobStore

__all__ = ["ApiConfig", "ApiContext", "create_app", "error"]

log = logging.getLogger(__name__)

PREFIX = "/api/v1"

DESCRIPTION = """\
Email for AI agents: inboxes, messages, threads and attachments over HTTP.

Authenticate with an API key: `Authorization: Bearer mbk_…`. Account keys see the whole
account; inbox keys see only their inbox. Every object belongs to one account: another
account's id answers 404, like a missing one.

Errors have one shape, `{"error": {"code", "message"}}`, with stable codes:
`validation_error` (with `fields`), `unauthorized`, `forbidden`, `not_found`, `conflict`,
`payload_too_large`, `rate_limited` (with `Retry-After`), `internal_error`, `unavailable`;
sending to an address on the account's suppression list is `recipient_suppressed` (422); an
account limit the operator set is `quota_exceeded` (429 for the daily send limit, 403 for the
inbox limit); billing has `billing_error` (502), `billing_unavailable` (503) and, on Stripe's
webhook, `invalid_signature` (400).

Lists are newest first and paged by cursor: pass `next_page_token` back as `page_token`.
"""


def _operations(ctx: ApiContext) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get(
        "/healthz",
        summary="Liveness: the process answers.",
        description="Always 200 while the process serves HTTP; no authentication.",
        responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
    )
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness: the database answers and the blob store can take mail.",
        description="200 when the database answers a query and the blob store is in reach "
        "with space left, else 503; no authentication.",
        responses={
            200: {"content": {"application/json": {"example": {"status": "ready"}}}},
            503: {
                "description": "The database does not answer, or the blob store is out of "
                "reach or out of space.",
                "content": {
                    "application/json": {
                        "example": {
                            "error": {"code": "unavailable", "message": "database unavailable"}
                        }
                    }
                },
            },
        },
    )
    async def readyz() -> JSONResponse:
        try:
            async with ctx.db.read() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            log_failure(log, exc, "event=readyz_failed store=database")
            return error(503, "unavailable", "database unavailable")
        try:
            await ctx.blobs.check()
        except Exception as exc:
            log_failure(log, exc, "event=readyz_failed store=blobs")
            full = storage_full(exc)
            return error(
                503, "unavailable", f"blob store {'out of space' if full else 'unavailable'}"
            )
        return JSONResponse({"status": "ready"})

    @router.get("/blobs/{key:path}", include_in_schema=False)
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

    return router


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        title="MailboxKit",
        version="1",
        description=DESCRIPTION,
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx
    install_handlers(app)
    app.include_router(_operations(ctx))
    app.include_router(wellknown.router)  # MTA-STS, autoconfig, autodiscover: public
    app.include_router(metrics.router)  # for the operator's Prometheus, with its own token
    # stream before messages: /inboxes/{id}/messages/wait is not a message id.
    for module in (register, account, export, api_keys, domains, inboxes, stream, messages):
        app.include_router(module.router, prefix=PREFIX)
    for module in (
        threads,
        attachments,
        webhooks,
        send,
        drafts,
        sender_rules,
        deliveries,
        suppressions,
        sesfeedback,
        billing,
        billing_webhook,
    ):
        app.include_router(module.router, prefix=PREFIX)
    if ctx.config.console:  # HTML pages over the routes above, outside the OpenAPI document
        app.include_router(console.router(app, ctx, PREFIX))
    # Last: its tools are the routes above, read from the OpenAPI document.
    app.include_router(mcp_route.router(app, PREFIX, ctx.config.max_body_size))
    app.add_middleware(BodyLimit, max_size=ctx.config.max_body_size)
    app.add_middleware(AccessLog, routes=route_templates(app))
    return app
