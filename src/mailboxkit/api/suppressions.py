"""``/suppressions``: the account's list of addresses it does not send to.

Addresses get there when they bounce permanently or complain (SES notifications, or a 5.1.x
reply from the recipient's server) or through ``POST``; sending to one is refused with 422
``recipient_suppressed``. Managing the list needs an account key.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from mailboxkit.api import schemas as s
from mailboxkit.api.auth import AccountPrincipal
from mailboxkit.api.compose import valid_address
from mailboxkit.api.context import Ctx
from mailboxkit.api.errors import ApiError, not_found
from mailboxkit.api.params import Limit, PageToken, cursor
from mailboxkit.store import suppressions as store
from mailboxkit.store.suppressions import NewSuppression, SuppressionReason

log = logging.getLogger(__name__)

router = APIRouter(tags=["suppressions"], responses=s.AUTHENTICATED | s.error_responses(403))

EXAMPLE_ADDRESS = "alice@example.org"
SUPPRESSION_EXAMPLE: dict[str, Any] = {
    "address": EXAMPLE_ADDRESS,
    "reason": "bounce",
    "detail": "smtp; 550 5.1.1 user unknown",
    "message_id": s.MESSAGE_ID,
    "created_at": s.EXAMPLE_TIME,
}

AddressParam = Annotated[
    str,
    Path(
        min_length=3,
        max_length=320,
        pattern=r"^[^\s/\x00]+@[^\s/@\x00]+$",
        examples=[EXAMPLE_ADDRESS],
        description="The suppressed address (case does not matter).",
    ),
]


class Suppression(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [SUPPRESSION_EXAMPLE]})
    address: str = Field(description="Lowercased.")
    reason: Literal["bounce", "complaint", "manual"] = Field(
        description="`bounce`: it bounced permanently; `complaint`: its owner marked mail as "
        "spam; `manual`: added through the API."
    )
    detail: str = Field(description="The bounce's diagnostic, or the note given when added.")
    message_id: str | None = Field(description="The sent message that bounced or was reported.")
    created_at: datetime


class SuppressionList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"count": 1, "suppressions": [SUPPRESSION_EXAMPLE], "next_page_token": None}
            ]
        }
    )
    count: int
    suppressions: list[Suppression]
    next_page_token: str | None


class SuppressionCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"address": EXAMPLE_ADDRESS, "detail": "asked us to stop"}]
        },
    )
    address: str = Field(min_length=3, max_length=320)
    detail: str = Field("", max_length=500, pattern=s.NO_NUL)


def _schema(found: store.Suppression) -> Suppression:
    return Suppression(
        address=found.address,
        reason=found.reason.value,
        detail=found.detail,
        message_id=found.message_id,
        created_at=found.created_at,
    )


@router.get(
    "/suppressions",
    response_model=SuppressionList,
    summary="List suppressed addresses",
    description="The account's suppression list, newest first. Sending to any of these "
    "addresses is refused (`recipient_suppressed`) until it is removed.",
)
async def list_suppressions(
    owner: AccountPrincipal, ctx: Ctx, limit: Limit = 50, page_token: PageToken = None
) -> SuppressionList:
    async with ctx.db.read() as conn:
        found, more = await store.list_page(
            conn, owner.account_id, limit=limit, after=cursor(page_token)
        )
    return SuppressionList(
        count=len(found),
        suppressions=[_schema(f) for f in found],
        next_page_token=more.encode() if more is not None else None,
    )


@router.post(
    "/suppressions",
    status_code=201,
    response_model=Suppression,
    summary="Suppress an address",
    description="Adds an address to the account's suppression list (reason `manual`): mail to "
    "it is refused from now on. 409 if it is already listed.",
    responses=s.error_responses(409),
)
async def add_suppression(
    body: SuppressionCreate, owner: AccountPrincipal, ctx: Ctx
) -> Suppression:
    if not valid_address(body.address):
        raise ApiError(
            422,
            "validation_error",
            "invalid request: body.address",
            fields=[{"field": "body.address", "message": "not an email address"}],
        )
    async with ctx.db.write() as conn:
        added = await store.add(
            conn,
            owner.account_id,
            [NewSuppression(body.address, SuppressionReason.MANUAL, body.detail)],
            now=ctx.clock.now(),
        )
        found = await store.get(conn, owner.account_id, body.address)
    if not added:
        raise ApiError(409, "conflict", "this address is already on the suppression list")
    assert found is not None
    log.info("event=suppression_added account_id=%s reason=manual", owner.account_id)
    return _schema(found)


@router.get(
    "/suppressions/{address}",
    response_model=Suppression,
    summary="Get a suppressed address",
    description="Whether, and why, an address is on the account's suppression list (404 if not).",
    responses=s.error_responses(404),
)
async def get_suppression(address: AddressParam, owner: AccountPrincipal, ctx: Ctx) -> Suppression:
    async with ctx.db.read() as conn:
        found = await store.get(conn, owner.account_id, address)
    if found is None:
        raise not_found("suppression")
    return _schema(found)


@router.delete(
    "/suppressions/{address}",
    status_code=204,
    response_class=Response,
    summary="Remove a suppressed address",
    description="Takes the address off the suppression list, so mail to it is sent again. If "
    "it bounces permanently or complains again, it is suppressed again.",
    responses=s.error_responses(404),
)
async def delete_suppression(address: AddressParam, owner: AccountPrincipal, ctx: Ctx) -> Response:
    async with ctx.db.write() as conn:
        removed = await store.remove(conn, owner.account_id, address)
    if not removed:
        raise not_found("suppression")
    log.info("event=suppression_removed account_id=%s", owner.account_id)
    return Response(status_code=204)
