"""The SES transport against moto's server mode over HTTP: the signed bytes reach SES's
backend unchanged; refusals are permanent, throttling temporary."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.core import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer
from moto.ses.models import ses_backends

from mailboxkit.mailserver.outbound.ses import SesTransport, ses_client
from mailboxkit.mailserver.outbound.transport import (
    Accepted,
    Parcel,
    PermanentFailure,
    TemporaryFailure,
)

REGION = "eu-west-1"
DATA = (
    b"DKIM-Signature: v=1; a=ed25519-sha256; d=example.test; s=x; b=abc\r\n"
    b"From: bot@example.test\r\nTo: Alice <alice@remote.test>\r\nSubject: Hi\r\n\r\nHello\r\n"
)


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    ses_backends[DEFAULT_ACCOUNT_ID][REGION].reset()


def verify(endpoint: str, domain: str) -> None:
    client: Any = boto3.session.Session().client("ses", region_name=REGION, endpoint_url=endpoint)
    client.verify_domain_identity(Domain=domain)
    client.close()


async def test_raw_bytes_reach_ses_unchanged(endpoint: str) -> None:
    verify(endpoint, "example.test")
    transport = SesTransport(ses_client(REGION, endpoint))
    try:
        results = await transport.deliver(
            Parcel("bot@example.test", ("alice@remote.test", "hidden@remote.test"), DATA)
        )
    finally:
        await transport.close()
    assert all(isinstance(r, Accepted) for r in results.values())
    [sent] = ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages
    # The id SES answered is kept: its bounce and delivery notifications name the message by it.
    assert {r.provider_id for r in results.values() if isinstance(r, Accepted)} == {sent.id}
    assert sent.id
    assert sent.source == "bot@example.test"
    assert sent.raw_data.encode() == DATA
    assert "hidden@remote.test" in sent.destinations


async def test_an_unverified_sender_is_refused_permanently(endpoint: str) -> None:
    transport = SesTransport(ses_client(REGION, endpoint))
    try:
        results = await transport.deliver(Parcel("bot@unverified.test", ("a@remote.test",), DATA))
    finally:
        await transport.close()
    [result] = results.values()
    assert isinstance(result, PermanentFailure)
    assert "MessageRejected" in result.reply
    assert ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages == []


class _Throttled:
    def send_email(self, **_request: Any) -> dict[str, str]:
        error = {"Error": {"Code": "TooManyRequestsException", "Message": "Maximum sending rate"}}
        raise ClientError(error, "SendEmail")

    def close(self) -> None:
        return None


async def test_throttling_is_temporary() -> None:
    transport = SesTransport(_Throttled())
    results = await transport.deliver(Parcel("bot@example.test", ("a@remote.test",), DATA))
    [result] = results.values()
    assert isinstance(result, TemporaryFailure)
    assert "TooManyRequestsException" in result.reply
