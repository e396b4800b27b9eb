"""SES feedback end to end: mail sent through the SES transport (moto's server mode over HTTP),
then SES's bounce, complaint and delivery notifications posted as SNS posts them, signed by a
test CA's certificate served over local HTTPS (``e2e.snsstandin``). What the sender sees: the
events, the delivery status in the API, the suppression list, and sends refused after."""

from __future__ import annotations

import json
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer
from moto.ses.models import ses_backends
from sqlalchemy import select

from e2e.sending import Sending, start_sending
from e2e.snsstandin import CERT_PATH, TOPIC, SnsStandIn, bounce, complaint, delivery
from mailboxkit.store import models as m
from mailboxkit.store.accounts import Inbox

from harness import free_port

REGION = "eu-west-1"
ALICE = "alice@remote.test"


@pytest.fixture
def moto_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    ses: Any = boto3.session.Session().client("ses", region_name=REGION, endpoint_url=endpoint)
    ses.verify_domain_identity(Domain="example.test")
    ses.close()
    yield endpoint
    server.stop()
    ses_backends[DEFAULT_ACCOUNT_ID][REGION].reset()


@pytest.fixture
def sns(tmp_path: Path) -> Iterator[SnsStandIn]:
    standin = SnsStandIn(tmp_path / "sns").start()
    yield standin
    standin.stop()


@pytest.fixture
def sending(
    tmp_path: Path, database_url: str, moto_endpoint: str, sns: SnsStandIn
) -> Iterator[Sending]:
    running = start_sending(
        tmp_path,
        database_url,
        outbound_transport="ses",
        ses_region=REGION,
        ses_endpoint_url=moto_endpoint,
        sns_cert_hosts="127.0.0.1",
        sns_ca_file=sns.ca_file,
        sns_topic_arns=TOPIC,
        submission_port=free_port(),
    )
    yield running
    running.stop()


def post(sending: Sending, message: dict[str, Any] | bytes) -> httpx.Response:
    """POST as SNS does: JSON sent as text/plain, the type in a header."""
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    kind = "" if isinstance(message, bytes) else message.get("Type", "")
    return httpx.post(
        sending.server.http_url + "/api/v1/ses/notifications",
        content=body,
        headers={"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": kind},
        timeout=30,
    )


def send(sending: Sending, inbox: Inbox, key: str, to: str = ALICE) -> httpx.Response:
    with sending.api(key) as api:
        return api.post(
            f"/inboxes/{inbox.id}/messages/send",
            json={"to": to, "subject": "Hello", "text": "hi"},
        )


def sent_via_ses(sending: Sending, inbox: Inbox, key: str, count: int = 1) -> tuple[str, str]:
    """Send to Alice through SES; the Sent copy's id and the SES message id."""
    r = send(sending, inbox, key)
    assert r.status_code == 200, r.text
    sending.settled(count)
    ses_id = ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages[-1].id
    return r.json()["message_id"], ses_id


def deliveries(sending: Sending, inbox: Inbox, key: str, message_id: str) -> dict[str, Any]:
    with sending.api(key) as api:
        r = api.get(f"/inboxes/{inbox.id}/messages/{message_id}/deliveries")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def suppressions(sending: Sending, key: str) -> list[dict[str, Any]]:
    with sending.api(key) as api:
        r = api.get("/suppressions")
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["suppressions"]
    return found


def test_a_signed_bounce_suppresses_the_address_and_the_next_send_is_refused(
    sending: Sending, sns: SnsStandIn
) -> None:
    inbox, key = sending.inbox("bot@example.test")
    message_id, ses_id = sent_via_ses(sending, inbox, key)
    stored = sending.server.query(select(m.outbound_recipients.c.provider_message_id))
    assert [row.provider_message_id for row in stored] == [ses_id]
    assert [r["status"] for r in deliveries(sending, inbox, key, message_id)["recipients"]] == [
        "sent"
    ]

    signed = sns.notification(bounce(ses_id, "Alice@Remote.test"))
    r = post(sending, signed)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "recorded", "recipients": 1}

    [event] = sending.events("message.bounced")
    data = event.payload["data"]
    assert event.message_id == message_id and event.inbox_id == inbox.id
    assert data["recipients"] == [ALICE]
    assert data["bounces"] == [
        {"email": ALICE, "status": "5.1.1", "diagnostic": "smtp; 550 5.1.1 user unknown"}
    ]
    assert (data["provider"], data["provider_message_id"]) == ("ses", ses_id)
    assert data["bounce_type"] == "Permanent"
    [recipient] = deliveries(sending, inbox, key, message_id)["recipients"]
    assert (recipient["email"], recipient["status"]) == (ALICE, "bounced")
    assert recipient["last_reply"] == "smtp; 550 5.1.1 user unknown"
    [listed] = suppressions(sending, key)
    assert (listed["address"], listed["reason"], listed["message_id"]) == (
        ALICE,
        "bounce",
        message_id,
    )

    # SNS delivers at least once: the same notification again changes nothing.
    again = post(sending, signed)
    assert again.json() == {"status": "ignored", "recipients": 0}
    assert len(sending.events("message.bounced")) == 1
    assert sns.cert_fetches == 1  # the certificate is cached

    refused = send(sending, inbox, key, to=f"Alice <{ALICE.upper()}>")
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "recipient_suppressed"
    assert ALICE in refused.json()["error"]["message"]
    assert len(ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages) == 1

    with sending.api(key) as api:
        assert api.delete(f"/suppressions/{ALICE}").status_code == 204
        assert api.delete(f"/suppressions/{ALICE}").status_code == 404
    assert send(sending, inbox, key).status_code == 200


def test_delivery_and_complaint_in_the_event_publishing_form(
    sending: Sending, sns: SnsStandIn
) -> None:
    inbox, key = sending.inbox("bot@example.test")
    message_id, ses_id = sent_via_ses(sending, inbox, key)

    r = post(sending, sns.notification(delivery(ses_id, ALICE, event=True), version="1"))
    assert r.json() == {"status": "recorded", "recipients": 1}
    [delivered] = sending.events("message.delivered")
    assert delivered.message_id == message_id
    assert delivered.payload["data"]["recipients"] == [ALICE]
    assert delivered.payload["data"]["smtp_response"] == "250 2.6.0 Message received"
    assert deliveries(sending, inbox, key, message_id)["recipients"][0]["status"] == "delivered"
    assert suppressions(sending, key) == []

    r = post(sending, sns.notification(complaint(ses_id, ALICE, event=True), version="2"))
    assert r.json() == {"status": "recorded", "recipients": 1}
    [complained] = sending.events("message.complained")
    assert complained.message_id == message_id
    assert complained.payload["data"]["complaint_type"] == "abuse"
    assert deliveries(sending, inbox, key, message_id)["recipients"][0]["status"] == "complained"
    assert [(s["address"], s["reason"]) for s in suppressions(sending, key)] == [
        (ALICE, "complaint")
    ]


def test_a_transient_bounce_is_recorded_without_suppressing(
    sending: Sending, sns: SnsStandIn
) -> None:
    inbox, key = sending.inbox("bot@example.test")
    message_id, ses_id = sent_via_ses(sending, inbox, key)
    r = post(sending, sns.notification(bounce(ses_id, ALICE, kind="Transient")))
    assert r.json()["status"] == "recorded"
    [event] = sending.events("message.bounced")
    assert event.payload["data"]["bounce_type"] == "Transient"
    assert event.payload["data"]["bounces"][0]["status"] == "4.2.2"
    assert deliveries(sending, inbox, key, message_id)["recipients"][0]["status"] == "bounced"
    assert suppressions(sending, key) == []
    assert send(sending, inbox, key).status_code == 200

    # Retention (30 days by default): the queue lets go of the content, the log stays.
    retention = sending.server.app.retention
    assert retention is not None
    sending.settled(2)
    assert sending.server.call(retention.run_once()) == 0
    sending.clock.advance(31 * 86400)
    assert sending.server.call(retention.run_once()) == 2
    log = deliveries(sending, inbox, key, message_id)
    assert log["content_purged_at"] is not None
    assert [(r["email"], r["status"]) for r in log["recipients"]] == [(ALICE, "bounced")]


def test_feedback_about_messages_we_did_not_send_is_ignored(
    sending: Sending, sns: SnsStandIn
) -> None:
    inbox, key = sending.inbox("bot@example.test")
    _, ses_id = sent_via_ses(sending, inbox, key)
    for ses in (
        bounce("0100018c-not-ours-000000", ALICE),  # another sender on the SES account
        bounce(ses_id, "someone-else@remote.test"),  # not a recipient of ours
        {"eventType": "Open", "mail": {"messageId": ses_id}, "open": {}},  # not recorded
    ):
        r = post(sending, sns.notification(ses))
        assert r.status_code == 200 and r.json()["status"] == "ignored"
    assert sending.events("message.bounced") == []
    assert suppressions(sending, key) == []


def test_the_subscription_to_the_configured_topic_is_confirmed(
    sending: Sending, sns: SnsStandIn
) -> None:
    confirmation = sns.subscription_confirmation()
    r = post(sending, confirmation)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "subscribed"
    assert sns.confirmed == [confirmation["Token"]]

    stranger = sns.subscription_confirmation(topic="arn:aws:sns:eu-west-1:999999999999:theirs")
    r = post(sending, stranger)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    assert sns.confirmed == [confirmation["Token"]]  # never fetched


def test_unbelievable_messages_are_refused_and_change_nothing(
    sending: Sending, sns: SnsStandIn
) -> None:
    inbox, key = sending.inbox("bot@example.test")
    message_id, ses_id = sent_via_ses(sending, inbox, key)
    genuine = sns.notification(bounce(ses_id, ALICE))

    tampered = {**genuine, "Message": genuine["Message"].replace("Permanent", "Transient")}
    forged_signature = {
        **genuine,
        "Signature": sns.notification(delivery(ses_id, ALICE))["Signature"],
    }
    other_topic = sns.notification(bounce(ses_id, ALICE), topic=TOPIC + "-other")
    wrong_host = sns.notification(bounce(ses_id, ALICE), cert_url=sns.url(CERT_PATH, "localhost"))
    plain_http = sns.notification(
        bounce(ses_id, ALICE), cert_url=f"http://127.0.0.1:{sns.port}{CERT_PATH}"
    )
    not_pem = sns.notification(bounce(ses_id, ALICE), cert_url=sns.url("/cert.txt"))
    unknown_version = {**genuine, "SignatureVersion": "3"}
    not_base64 = {**genuine, "Signature": "EXAMPLEpH+…"}
    other_version = {**genuine, "SignatureVersion": "1"}  # signed with SHA-256, said SHA-1
    for message in (
        tampered,
        forged_signature,
        other_topic,
        wrong_host,
        plain_http,
        not_pem,
        unknown_version,
        not_base64,
        other_version,
    ):
        r = post(sending, message)
        assert r.status_code == 403, message
        assert r.json() == {
            "error": {"code": "forbidden", "message": "the SNS message could not be verified"}
        }
    for garbage in (b"not json", b"[]", json.dumps({"Type": "Notification"}).encode()):
        r = post(sending, garbage)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "bad_request"
    # Nothing but the allowed certificate URL was ever fetched, and that once.
    assert sns.requests == [CERT_PATH]
    assert sending.events("message.bounced") == []
    assert deliveries(sending, inbox, key, message_id)["recipients"][0]["status"] == "sent"
    assert suppressions(sending, key) == []

    assert post(sending, genuine).json()["status"] == "recorded"  # the genuine one still works


def test_submission_refuses_a_suppressed_recipient_at_rcpt(sending: Sending) -> None:
    inbox, key = sending.inbox("bot@example.test")
    with sending.api(key) as api:
        r = api.post("/suppressions", json={"address": "Blocked@Remote.test", "detail": "asked"})
        assert r.status_code == 201, r.text
        assert r.json()["address"] == "blocked@remote.test"
        assert r.json()["reason"] == "manual"
        assert api.post("/suppressions", json={"address": "blocked@remote.test"}).status_code == 409
        bad = api.post("/suppressions", json={"address": "not an address"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
    with smtplib.SMTP("127.0.0.1", sending.server.submission_port, timeout=30) as smtp:
        smtp.ehlo("client.test")
        smtp.starttls(context=sending.client_context())
        smtp.ehlo("client.test")
        smtp.login(inbox.address, key)
        assert smtp.mail(inbox.address)[0] == 250
        code, text = smtp.rcpt("blocked@remote.test")
        assert (code, text[:5]) == (550, b"5.7.1")
        assert b"suppression list" in text
        assert smtp.rcpt(ALICE)[0] == 250
        raw = f"From: {inbox.address}\r\nTo: {ALICE}\r\nSubject: Hi\r\n\r\nhi\r\n"
        assert smtp.data(raw.encode())[0] == 250
    sending.settled(1)
    [sent] = ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages
    assert set(sent.destinations) == {ALICE}  # moto lists the To header's addresses too
