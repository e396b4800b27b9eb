"""The SNS and SES parsers on anything: an SNS body is an SnsMessage or SnsInvalid, an SES
``Message`` is feedback or None, never another exception; and the string SNS signs."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailboxkit.api.ses_notifications import ses_feedback
from mailboxkit.api.sns import SnsInvalid, SnsType, allowed_url, parse_sns
from mailboxkit.store.feedback import FeedbackKind

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=20,
)
SNS_KEYS = st.sampled_from(
    [
        "Type",
        "Message",
        "MessageId",
        "Subject",
        "Timestamp",
        "TopicArn",
        "Token",
        "SubscribeURL",
        "SignatureVersion",
        "Signature",
        "SigningCertURL",
    ]
)


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_are_invalid(body: bytes) -> None:
    with contextlib.suppress(SnsInvalid):
        parse_sns(body)


SNS_VALUES = (
    st.none()
    | st.integers()
    | st.text(max_size=10)
    | st.sampled_from(
        ["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation", "1", "2"]
    )
)


@given(st.dictionaries(SNS_KEYS, SNS_VALUES, max_size=11))
def test_any_object_parses_or_is_invalid(data: dict[str, object]) -> None:
    try:
        message = parse_sns(json.dumps(data).encode())
    except SnsInvalid:
        return
    assert message.string_to_sign().endswith(f"Type\n{message.type.value}\n".encode())


@given(JSON)
def test_any_ses_message_is_feedback_or_none(data: object) -> None:
    ses_feedback(json.dumps(data))


def test_the_string_to_sign_is_the_documented_one() -> None:
    fields = {
        "Type": "Notification",
        "MessageId": "m-1",
        "TopicArn": "arn:aws:sns:us-east-1:1:t",
        "Message": "hello\nworld",
        "Timestamp": "2026-11-28T09:30:00.000Z",
        "SignatureVersion": "1",
        "Signature": "x",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/c.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }
    message = parse_sns(json.dumps(fields).encode())
    assert message.type is SnsType.NOTIFICATION
    assert message.string_to_sign() == (
        b"Message\nhello\nworld\nMessageId\nm-1\nTimestamp\n2026-11-28T09:30:00.000Z\n"
        b"TopicArn\narn:aws:sns:us-east-1:1:t\nType\nNotification\n"
    )
    with_subject = parse_sns(json.dumps({**fields, "Subject": "S"}).encode())
    assert b"MessageId\nm-1\nSubject\nS\nTimestamp\n" in with_subject.string_to_sign()


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://sns.us-east-1.amazonaws.com/x.pem", True),
        ("https://SNS.us-east-1.amazonaws.com:443/x.pem", True),
        ("http://sns.us-east-1.amazonaws.com/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com.evil.test/x.pem", False),
        ("https://evil.test/sns.us-east-1.amazonaws.com/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com@evil.test/x.pem", False),
        ("https://user@sns.us-east-1.amazonaws.com/x.pem", False),
        ("https://sns.s3.amazonaws.com/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com:99999/x.pem", False),
    ],
)
def test_only_https_on_an_allowed_host(url: str, allowed: bool) -> None:
    assert allowed_url(url, frozenset({"sns.us-east-1.amazonaws.com"})) is allowed


def test_both_ses_forms_name_the_same_feedback() -> None:
    mail = {"messageId": "ses-1"}
    classic = {
        "notificationType": "Complaint",
        "mail": mail,
        "complaint": {"complainedRecipients": [{"emailAddress": "a@b.test"}]},
    }
    event = {**classic, "eventType": "Complaint"}
    del event["notificationType"]
    for form in (classic, event):
        feedback = ses_feedback(json.dumps(form))
        assert feedback is not None
        assert (feedback.kind, feedback.provider_message_id) == (FeedbackKind.COMPLAINT, "ses-1")
        assert [r.email for r in feedback.recipients] == ["a@b.test"]
