"""The other two transports from the whole server: a smarthost (an aiosmtpd relay on
loopback) and Amazon SES (moto's server mode over HTTP). Both carry the signed bytes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer
from moto.ses.models import ses_backends

from e2e.sending import Sending, start_sending

REGION = "eu-west-1"


def test_smarthost_relays_everything_in_one_transaction(tmp_path: Path, database_url: str) -> None:
    sending = start_sending(
        tmp_path,
        database_url,
        outbound_transport="smarthost",
        smarthost_host="127.0.0.1",
        smarthost_tls="none",
    )
    try:
        inbox, key = sending.inbox("bot@example.test")
        with sending.api(key) as api:
            r = api.post(
                f"/inboxes/{inbox.id}/messages/send",
                json={"to": ["a@one.test", "b@two.test"], "subject": "Relay", "text": "x"},
            )
        assert r.status_code == 200
        got = sending.sink.next()
        assert sorted(got.rcpt_tos) == ["a@one.test", "b@two.test"]  # domains MX can't reach
        assert [ok for _, ok in sending.dkim_verdicts(got.data)] == [True, True]
    finally:
        sending.stop()


@pytest.fixture
def moto_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    ses_backends[DEFAULT_ACCOUNT_ID][REGION].reset()


def test_ses_gets_the_signed_raw_message(
    tmp_path: Path, database_url: str, moto_endpoint: str
) -> None:
    ses: Any = boto3.session.Session().client("ses", region_name=REGION, endpoint_url=moto_endpoint)
    ses.verify_domain_identity(Domain="example.test")
    ses.close()
    sending: Sending = start_sending(
        tmp_path,
        database_url,
        outbound_transport="ses",
        ses_region=REGION,
        ses_endpoint_url=moto_endpoint,
    )
    try:
        inbox, key = sending.inbox("bot@example.test")
        with sending.api(key) as api:
            r = api.post(
                f"/inboxes/{inbox.id}/messages/send",
                json={"to": "alice@remote.test", "subject": "Via SES", "text": "hello"},
            )
        assert r.status_code == 200
        sending.settled(1)
        [sent] = ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages
        raw = sent.raw_data.encode()
        assert sent.source == "bot@example.test"
        assert [ok for _, ok in sending.dkim_verdicts(raw)] == [True, True]
        [event] = sending.events("message.sent")
        assert event.message_id == r.json()["message_id"]
        assert sending.sink.empty()
    finally:
        sending.stop()
