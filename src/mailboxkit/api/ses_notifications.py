"""Amazon SES bounce, complaint and delivery notifications, as SNS carries them in ``Message``.

Two forms name the kind differently and are otherwise the same (AWS, "Amazon SES notification
contents" and "event publishing data"): identity notifications say ``notificationType``,
configuration-set event publishing says ``eventType``. Both carry ``mail.messageId`` (the id
SESv2 ``SendEmail`` answered) and a ``bounce``, ``complaint`` or ``delivery`` object. Other
kinds (``Send``, ``Reject``, ``Open``, ``DeliveryDelay``, …) are not feedback we record.

Bounce types: ``Permanent`` (the address is bad: suppressed), ``Transient`` and
``Undetermined`` (SES gave up on this message; the address may work another time).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mailboxkit.store.feedback import Feedback, FeedbackKind, FeedbackRecipient

PROVIDER = "ses"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Mail(_Model):
    message_id: str = Field(alias="messageId", min_length=1, max_length=255)


class _BouncedRecipient(_Model):
    email: str = Field(alias="emailAddress", min_length=1, max_length=320)
    status: str | None = None
    diagnostic: str | None = Field(None, alias="diagnosticCode")


class _Bounce(_Model):
    type: str = Field(alias="bounceType")
    subtype: str | None = Field(None, alias="bounceSubType")
    recipients: list[_BouncedRecipient] = Field(alias="bouncedRecipients", max_length=1000)
    feedback_id: str | None = Field(None, alias="feedbackId")


class _ComplainedRecipient(_Model):
    email: str = Field(alias="emailAddress", min_length=1, max_length=320)


class _Complaint(_Model):
    recipients: list[_ComplainedRecipient] = Field(alias="complainedRecipients", max_length=1000)
    feedback_type: str | None = Field(None, alias="complaintFeedbackType")
    subtype: str | None = Field(None, alias="complaintSubType")
    feedback_id: str | None = Field(None, alias="feedbackId")


class _Delivery(_Model):
    recipients: list[str] = Field(max_length=1000)
    smtp_response: str | None = Field(None, alias="smtpResponse")
    processing_time_ms: int | None = Field(None, alias="processingTimeMillis")


class _Notification(_Model):
    notification_type: str | None = Field(None, alias="notificationType")
    event_type: str | None = Field(None, alias="eventType")
    mail: _Mail
    bounce: _Bounce | None = None
    complaint: _Complaint | None = None
    delivery: _Delivery | None = None


def ses_feedback(message: str) -> Feedback | None:
    """The feedback in an SNS ``Message``; None when it is not SES feedback we record."""
    try:
        n = _Notification.model_validate_json(message)
    except ValidationError:
        return None
    kind = n.notification_type or n.event_type
    ses_id = n.mail.message_id
    if kind == "Bounce" and n.bounce is not None:
        return _bounce(ses_id, n.bounce)
    if kind == "Complaint" and n.complaint is not None:
        c = n.complaint
        return Feedback(
            FeedbackKind.COMPLAINT,
            PROVIDER,
            ses_id,
            [FeedbackRecipient(r.email) for r in c.recipients],
            details={
                "complaint_type": c.feedback_type,
                "complaint_subtype": c.subtype,
                "feedback_id": c.feedback_id,
            },
        )
    if kind == "Delivery" and n.delivery is not None:
        d = n.delivery
        reply = d.smtp_response or ""
        return Feedback(
            FeedbackKind.DELIVERY,
            PROVIDER,
            ses_id,
            [FeedbackRecipient(email, diagnostic=reply) for email in d.recipients],
            details={"smtp_response": reply, "processing_time_ms": d.processing_time_ms},
        )
    return None


def _bounce(ses_id: str, b: _Bounce) -> Feedback:
    permanent = b.type == "Permanent"
    default = "5.0.0" if permanent else "4.0.0"
    return Feedback(
        FeedbackKind.BOUNCE,
        PROVIDER,
        ses_id,
        [
            FeedbackRecipient(r.email, r.status or default, r.diagnostic or f"SES {b.type} bounce")
            for r in b.recipients
        ],
        permanent=permanent,
        details={"bounce_type": b.type, "bounce_subtype": b.subtype, "feedback_id": b.feedback_id},
    )
