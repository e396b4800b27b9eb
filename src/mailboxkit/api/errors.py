"""The API's one error shape, ``{"error": {"code", "message"}}``, and the handlers that make it.

Codes are stable and few: ``validation_error`` (with ``fields``), ``unauthorized``,
``forbidden``, ``not_found``, ``method_not_allowed``, ``conflict``, ``payload_too_large``,
``rate_limited``, ``internal_error``, ``unavailable``; one for sending:
``recipient_suppressed`` (422, the message names the addresses); and ``quota_exceeded`` for an
account limit the operator set: 429 with ``Retry-After`` for the daily send limit, 403 for the
inbox limit; for billing (``api.billing``): ``billing_error`` (502), ``billing_unavailable``
(503) and ``invalid_signature`` (400, Stripe's webhook). Messages are generic; details go to
the log, and a stack trace never reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from mailboxkit.store.db import brief, storage_full, unavailable

log = logging.getLogger(__name__)

CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An error the API answers with; raise it from routes and dependencies."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        fields: Sequence[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.fields = list(fields) if fields is not None else None


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def inbox_limit_error() -> ApiError:
    """403 ``quota_exceeded``: the account has as many inboxes as the operator allows."""
    return ApiError(
        403,
        "quota_exceeded",
        "this account has as many inboxes as its limit allows; delete one or ask the operator",
    )


def error(
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    fields: Sequence[dict[str, str]] | None = None,
) -> JSONResponse:
    """The one error shape of the API: ``{"error": {"code", "message"}}``."""
    body: dict[str, Any] = {"code": code, "message": message}
    if fields is not None:
        body["fields"] = list(fields)
    return JSONResponse({"error": body}, status_code=status, headers=dict(headers or {}))


def _field_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    out = []
    for item in exc.errors():
        location = ".".join(str(part) for part in item.get("loc", ()))
        out.append({"field": location, "message": str(item.get("msg", "invalid"))})
    return out


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error(exc.status, exc.code, exc.message, headers=exc.headers, fields=exc.fields)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    code = CODES.get(status, "bad_request" if status < 500 else "internal_error")
    message = exc.detail if isinstance(exc.detail, str) and status < 500 else code
    return error(status, code, message, headers=exc.headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = _field_errors(exc)
    names = ", ".join(f["field"] for f in fields[:5])
    return error(422, "validation_error", f"invalid request: {names}", fields=fields)


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    # A handler for these classes answers without the re-raise that Starlette's handler of
    # last resort does (which makes the server close the connection).
    if not unavailable(exc):
        raise exc
    log.warning(
        "event=http_store_unavailable method=%s path=%s error=%s",
        request.method,
        request.url.path,
        brief(exc),
    )
    if storage_full(exc):
        message = "the mail store is out of space; try again later"
    else:
        message = "the mail store is unavailable; try again shortly"
    return error(503, "unavailable", message, headers={"Retry-After": "5"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "event=http_unhandled method=%s path=%s error=%s",
        request.method,
        request.url.path,
        type(exc).__name__,
        exc_info=exc,
    )
    return error(500, "internal_error", "internal error")


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(SQLAlchemyError, _store_error)
    app.add_exception_handler(OSError, _store_error)  # ConnectionError, a full disk
    app.add_exception_handler(Exception, _unexpected)
