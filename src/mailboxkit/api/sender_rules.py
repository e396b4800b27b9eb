"""``/sender-rules``: the account's allow and block lists of sender addresses and domains.

Implementation notes:

- Account keys only: a rule may name one inbox of the account (``inbox_id``), else it applies
  to every inbox. Matching and precedence are ``store.senderrules``'; what the MX does with a
  rule is in ``mailserver/smtp.py``.
- After a change the MX of this process drops its cached rules (``ApiContext.routing_changed``);
  other processes see the change within ten seconds.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mailboxkit.api import schemas as s
from mailboxkit.api.auth import AccountPrincipal
from mailboxkit.api.context import Ctx
from mailboxkit.api.errors import ApiError, not_found
from mailboxkit.api.params import ID_PATTERN, SenderRuleId
from mailboxkit.store import senderrules
from mailboxkit.store.inboxes import visible_inbox
from mailboxkit.store.senderrules import RuleAction

log = logging.getLogger(__name__)

router = APIRouter(tags=["sender-rules"], responses=s.AUTHENTICATED | s.error_responses(403))


def _examples(example: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [example]})


_EXAMPLE: dict[str, Any] = {
    "sender_rule_id": s.SENDER_RULE_ID,
    "action": "block",
    "sender": "news.example.org",
    "inbox_id": s.INBOX_ID,
    "created_at": s.EXAMPLE_TIME,
}


class SenderRuleCreate(BaseModel):
    model_config = _examples(
        {"action": "block", "sender": "news.example.org", "inbox_id": s.INBOX_ID}
    )
    action: RuleAction = Field(
        description="block: refuse the envelope sender at RCPT (550 5.7.1) and file mail "
        "From it in Junk. allow: never file it in Junk for DMARC quarantine nor label it "
        "unauthenticated (its verdicts are still recorded)."
    )
    sender: str = Field(
        max_length=senderrules.MAX_SENDER_LENGTH,
        description="An address (alice@example.org) or a domain (example.org, which also "
        "covers its subdomains).",
    )
    inbox_id: str | None = Field(
        None, max_length=64, description="Only for this inbox of the account; omit for all."
    )

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        return senderrules.normalize_sender(value)


class SenderRule(BaseModel):
    model_config = _examples(_EXAMPLE)
    sender_rule_id: str
    action: RuleAction
    sender: str = Field(description="The address or domain, in lower case.")
    inbox_id: str | None = Field(description="The one inbox it applies to; null: every inbox.")
    created_at: datetime


class SenderRuleList(BaseModel):
    model_config = _examples({"count": 1, "sender_rules": [_EXAMPLE]})
    count: int
    sender_rules: list[SenderRule]


def _rule(rule: senderrules.SenderRule) -> SenderRule:
    return SenderRule(
        sender_rule_id=rule.id,
        action=rule.action,
        sender=rule.sender,
        inbox_id=rule.inbox_id,
        created_at=rule.created_at,
    )


@router.post(
    "/sender-rules",
    status_code=201,
    response_model=SenderRule,
    summary="Allow or block a sender",
    description="Adds a rule on a sender address or a whole domain, for every inbox of the "
    "account or for one. The most specific rule decides: an address over a domain, a longer "
    "domain over a shorter one, an inbox's rule over the account's. One rule per sender and "
    "scope (409 for a second). A DMARC `reject` refusal is not lifted by an allow rule.",
    responses=s.error_responses(404, 409),
)
async def create_sender_rule(
    body: SenderRuleCreate, owner: AccountPrincipal, ctx: Ctx
) -> SenderRule:
    try:
        async with ctx.db.write() as conn:
            if body.inbox_id is not None and not await visible_inbox(
                conn, owner.scope, body.inbox_id
            ):
                raise not_found("inbox")
            made = await senderrules.create_rule(
                conn,
                owner.account_id,
                action=body.action,
                sender=body.sender,
                inbox_id=body.inbox_id,
                now=ctx.clock.now(),
            )
    except senderrules.RuleExists:
        raise ApiError(409, "conflict", "a rule for this sender exists already") from None
    ctx.routing_changed()
    log.info(
        "event=sender_rule_created account_id=%s rule_id=%s action=%s",
        owner.account_id,
        made.id,
        made.action,
    )
    return _rule(made)


@router.get(
    "/sender-rules",
    response_model=SenderRuleList,
    summary="List sender rules",
    description="The account's rules, oldest first; only one action's, or one inbox's own, "
    "when asked.",
)
async def list_sender_rules(
    owner: AccountPrincipal,
    ctx: Ctx,
    action: Annotated[RuleAction | None, Query(description="Only allow or block rules.")] = None,
    inbox_id: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="Only the rules of this inbox.")
    ] = None,
) -> SenderRuleList:
    async with ctx.db.read() as conn:
        found = await senderrules.list_rules(
            conn, owner.account_id, inbox_id=inbox_id, action=action
        )
    return SenderRuleList(count=len(found), sender_rules=[_rule(r) for r in found])


@router.get(
    "/sender-rules/{sender_rule_id}",
    response_model=SenderRule,
    summary="Get a sender rule",
    description="One rule of the account.",
    responses=s.error_responses(404),
)
async def get_sender_rule(
    sender_rule_id: SenderRuleId, owner: AccountPrincipal, ctx: Ctx
) -> SenderRule:
    async with ctx.db.read() as conn:
        found = await senderrules.get_rule(conn, owner.account_id, sender_rule_id)
    if found is None:
        raise not_found("sender rule")
    return _rule(found)


@router.delete(
    "/sender-rules/{sender_rule_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a sender rule",
    description="The sender is treated as before the rule at once on this server.",
    responses=s.error_responses(404),
)
async def delete_sender_rule(
    sender_rule_id: SenderRuleId, owner: AccountPrincipal, ctx: Ctx
) -> Response:
    async with ctx.db.write() as conn:
        deleted = await senderrules.delete_rule(conn, owner.account_id, sender_rule_id)
    if not deleted:
        raise not_found("sender rule")
    ctx.routing_changed()
    log.info("event=sender_rule_deleted account_id=%s rule_id=%s", owner.account_id, sender_rule_id)
    return Response(status_code=204)
