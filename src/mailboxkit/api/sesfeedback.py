"""``POST /ses/notifications``: SES bounce, complaint and delivery notifications through SNS.

Not bearer-authenticated: Amazon SNS calls it. What authenticates a request is the SNS
signature (``api/sns.py``), checked before anything else is done with it. Then:

- ``SubscriptionConfirmation``: confirmed by fetching its ``SubscribeURL`` (only for the
  configured topics, when some are configured: the signature alone proves AWS sent it, not
  that it is our topic).
- ``Notification``: SES feedback (``api/ses_notifications.py``) is recorded
  (``store/feedback.py``) and its event published after the commit. A notification about a
  message we do not know, or of a kind we do not record, is answered 200 and ignored, so SNS
  does not retry it.
- Answers: 200 done; 400 not an SNS message; 403 not believed (topic, certificate URL,
  signature); 503 the certificate or the subscription URL could not be fetched (SNS retries).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from mailboxkit.api import schemas as s
from mailboxkit.api.context import Ctx
from mailboxkit.api.errors import ApiError
from mailboxkit.api.ses_notifications import ses_feedback
from mailboxkit.api.sns import (
    SnsInvalid,
    SnsMessage,
    SnsRefused,
    SnsType,
    SnsUnavailable,
    SnsVerifier,
    parse_sns,
)
from mailboxkit.store.feedback import apply_feedback

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FeedbackContext:
    """Put in ``app.state.sns`` by the composition root."""

    verifier: SnsVerifier


def feedback_context(request: Request) -> FeedbackContext:
    found = getattr(request.app.state, "sns", None)
    if not isinstance(found, FeedbackContext):
        raise ApiError(503, "unavailable", "SES notifications are not configured on this server")
    return found


class SnsAnswer(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "recorded", "recipients": 1}]}
    )
    status: Literal["recorded", "ignored", "subscribed"]
    recipients: int = 0


EXAMPLE_SES_MESSAGE = (
    '{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bounceSubType":"General",'
    '"bouncedRecipients":[{"emailAddress":"alice@example.org","status":"5.1.1",'
    '"diagnosticCode":"smtp; 550 5.1.1 user unknown"}],"feedbackId":"0100018c-…"},'
    '"mail":{"messageId":"0100018c5f4b7a2e-…-000000","source":"bot@example.com"}}'
)
EXAMPLE: dict[str, Any] = {
    "Type": "Notification",
    "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
    "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-feedback",
    "Message": EXAMPLE_SES_MESSAGE,
    "Timestamp": "2026-11-28T09:30:00.000Z",
    "SignatureVersion": "2",
    "Signature": "EXAMPLEpH+…",
    "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-….pem",
    "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&…",
}
REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "description": "An SNS message as SNS posts it (JSON, sent as text/plain).",
        "content": {"application/json": {"schema": {"type": "object"}, "example": EXAMPLE}},
    }
}
SNS_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": s.Error, "description": "Not an SNS message (`bad_request`)."},
    403: {
        "model": s.Error,
        "description": "Bad signature, a certificate or subscription URL on a host that is "
        "not allowed, or a topic that is not configured (`forbidden`).",
    },
    503: {
        "model": s.Error,
        "description": "The signing certificate or the subscription URL could not be fetched "
        "(`unavailable`); SNS retries.",
    },
}

router = APIRouter(tags=["ses"])


@router.post(
    "/ses/notifications",
    response_model=SnsAnswer,
    summary="Receive SES notifications (Amazon SNS)",
    description="The HTTPS endpoint to subscribe to the SNS topic(s) SES publishes bounce, "
    "complaint and delivery notifications to (identity notifications or a configuration set's "
    "event destination). Not bearer-authenticated: every message must carry a valid SNS "
    "signature (versions 1 and 2) by a certificate from an allowed host "
    "(`MAILBOXKIT_SNS_CERT_HOSTS`), and its topic must be one of `MAILBOXKIT_SNS_TOPIC_ARNS` "
    "when that is set. Subscriptions are confirmed automatically. A bounce or complaint moves "
    "the recipient's delivery status, fires `message.bounced` or `message.complained` and, "
    "for permanent bounces and complaints, adds the address to the account's suppression "
    "list; a delivery fires `message.delivered`.",
    responses=SNS_ERRORS,
    openapi_extra=REQUEST_BODY,
)
async def ses_notification(request: Request, ctx: Ctx) -> SnsAnswer:
    verifier = feedback_context(request).verifier
    try:
        message = parse_sns(await request.body())
        await verifier.check(message)
    except SnsInvalid as error:
        raise ApiError(400, "bad_request", f"not an SNS message: {error}") from None
    except SnsRefused as error:
        log.warning("event=sns_refused reason=%s", error)
        raise ApiError(403, "forbidden", "the SNS message could not be verified") from None
    except SnsUnavailable as error:
        log.warning("event=sns_unavailable reason=%s", error)
        raise ApiError(503, "unavailable", "the signing certificate is unreachable") from None
    if message.type is SnsType.SUBSCRIPTION_CONFIRMATION:
        return await _confirm(verifier, message)
    if message.type is SnsType.UNSUBSCRIBE_CONFIRMATION:
        log.info("event=sns_unsubscribed topic=%s", message.topic_arn)
        return SnsAnswer(status="ignored")
    feedback = ses_feedback(message.message)
    if feedback is None:
        log.info("event=sns_ignored topic=%s sns_id=%s", message.topic_arn, message.message_id)
        return SnsAnswer(status="ignored")
    async with ctx.db.write() as conn:
        applied = await apply_feedback(conn, feedback, now=ctx.clock.now())
    if ctx.bus is not None:
        ctx.bus.publish(applied.events)
    log.info(
        "event=ses_feedback kind=%s recipients=%d suppressed=%d",
        feedback.kind,
        len(applied.recipients),
        len(applied.suppressed),
    )
    status: Literal["recorded", "ignored"] = "recorded" if applied.recipients else "ignored"
    return SnsAnswer(status=status, recipients=len(applied.recipients))


async def _confirm(verifier: SnsVerifier, message: SnsMessage) -> SnsAnswer:
    try:
        await verifier.confirm(message)
    except SnsRefused as error:
        log.warning("event=sns_refused reason=%s", error)
        raise ApiError(403, "forbidden", "the subscription URL is not allowed") from None
    except SnsUnavailable as error:
        log.warning("event=sns_unavailable reason=%s", error)
        raise ApiError(503, "unavailable", "the subscription could not be confirmed") from None
    return SnsAnswer(status="subscribed")
