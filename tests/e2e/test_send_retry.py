"""Retries and bounces end to end, with the server's clock moved by the test: a 451 from the
recipient's MX is retried after the backoff and delivered exactly once; a 550 files one DSN in
the sender's INBOX and records message.bounced."""

from __future__ import annotations

import email
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.sending import Sending, start_sending
from mailserver.outbound.sink import SinkHandler


@pytest.fixture
def flaky(tmp_path: Path, database_url: str) -> Iterator[Sending]:
    handler = SinkHandler(data_replies=["451 4.3.0 Greylisted, try again later"])
    running = start_sending(tmp_path, database_url, handler, outbound_retry_first=300)
    yield running
    running.stop()


@pytest.fixture
def refusing(tmp_path: Path, database_url: str) -> Iterator[Sending]:
    handler = SinkHandler(
        rcpt_reply=lambda a: (
            "550 5.1.1 <nobody@remote.test>: user unknown" if a.startswith("nobody@") else None
        )
    )
    running = start_sending(tmp_path, database_url, handler)
    yield running
    running.stop()


def test_a_temporary_failure_then_success_delivers_exactly_once(flaky: Sending) -> None:
    inbox, key = flaky.inbox("bot@example.test")
    with flaky.api(key) as api:
        r = api.post(
            f"/inboxes/{inbox.id}/messages/send",
            json={"to": "alice@remote.test", "subject": "Retry me", "text": "hi"},
        )
    assert r.status_code == 200
    flaky.settled(1)  # the 451, recorded as a retry
    assert flaky.sink.empty()
    assert flaky.events("message.sent") == []
    flaky.clock.advance(400)  # past the first backoff (300 s ± 20 %)
    worker = flaky.server.app.outbound
    assert worker is not None
    worker.wake()
    got = flaky.sink.next()
    flaky.settled(2)
    assert got.rcpt_tos == ("alice@remote.test",)
    assert flaky.sink.handler.attempts == 2
    assert flaky.sink.empty()
    [sent] = flaky.events("message.sent")
    assert sent.message_id == r.json()["message_id"]
    assert flaky.events("message.bounced") == []


def test_a_permanent_failure_files_one_dsn_and_a_bounced_event(refusing: Sending) -> None:
    inbox, key = refusing.inbox("bot@example.test")
    with refusing.api(key) as api:
        sent = api.post(
            f"/inboxes/{inbox.id}/messages/send",
            json={"to": ["alice@remote.test", "nobody@remote.test"], "subject": "Q", "text": "?"},
        ).json()
        assert refusing.sink.next().rcpt_tos == ("alice@remote.test",)
        refusing.settled(2)
        inbound = api.get(f"/inboxes/{inbox.id}/messages", params={"direction": "inbound"})
        [report] = inbound.json()["messages"]
        raw = api.get(f"/inboxes/{inbox.id}/messages/{report['message_id']}/raw").content
    [bounced] = refusing.events("message.bounced")
    assert bounced.message_id == sent["message_id"]
    assert bounced.payload["data"]["bounces"] == [
        {
            "email": "nobody@remote.test",
            "status": "5.1.1",
            "diagnostic": "550 5.1.1 <nobody@remote.test>: user unknown",
        }
    ]
    assert bounced.payload["data"]["report_message_id"] == report["message_id"]
    assert report["thread_id"] == sent["thread_id"]
    assert report["subject"] == "Undelivered Mail Returned to Sender"
    dsn = email.message_from_bytes(raw)
    assert dsn.get_content_type() == "multipart/report"
    status = dsn.get_payload(1).as_string()
    assert "Final-Recipient: rfc822; nobody@remote.test" in status
    assert "Remote-MTA: dns; mx.remote.test" in status
    [sent_event] = refusing.events("message.sent")
    assert sent_event.payload["data"]["recipients"] == ["alice@remote.test"]
