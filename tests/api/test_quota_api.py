"""Quotas through the HTTP API, against the running server: new accounts take the server's
defaults, GET /account and /usage show the limits and use, creating an inbox over the limit is
403 ``quota_exceeded``, and sending (send, draft send) over the daily limit is 429
``quota_exceeded`` with nothing queued."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from e2e.sending import Sending, start_sending
from mailboxkit.store import models as m

STORAGE = 1_000_000


@pytest.fixture
def sending(tmp_path: Path, database_url: str) -> Iterator[Sending]:
    running = start_sending(
        tmp_path,
        database_url,
        registration_enabled=True,
        default_storage_quota=STORAGE,
        default_inbox_limit=2,
        default_daily_send_limit=2,
    )
    yield running
    running.stop()


def register(sending: Sending) -> dict[str, Any]:
    with httpx.Client(base_url=sending.server.http_url + "/api/v1", timeout=30) as client:
        r = client.post("/register", json={"name": "Agent", "owner_email": "ops@example.com"})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def stored_sum(sending: Sending, account_id: str) -> int:
    e, msg, f, i = m.entries.c, m.messages.c, m.folders.c, m.inboxes.c
    [(total,)] = sending.server.query(
        select(func.coalesce(func.sum(msg.size), 0))
        .select_from(
            m.entries.join(m.messages, msg.id == e.message_id)
            .join(m.folders, f.id == e.folder_id)
            .join(m.inboxes, i.id == f.inbox_id)
        )
        .where(i.account_id == account_id)
    )
    return int(total)


def queued(sending: Sending) -> int:
    return len(sending.server.query(select(m.outbound_messages.c.id)))


MAIL = {"to": "alice@remote.test", "subject": "Hi", "text": "Hello."}


def test_limits_and_use_are_shown_and_the_inbox_limit_is_enforced(sending: Sending) -> None:
    made = register(sending)
    with sending.api(made["api_key"]) as api:
        account = api.get("/account").json()
        assert account["quota"] == {
            "limits": {"storage_bytes": STORAGE, "inboxes": 2, "sends_per_day": 2},
            "used": {"storage_bytes": 0, "inboxes": 1, "sends_today": 0},
        }
        second = api.post("/inboxes", json={"username": "second"})
        assert second.status_code == 201, second.text
        third = api.post("/inboxes", json={"username": "third"})
        assert third.status_code == 403
        assert third.json()["error"]["code"] == "quota_exceeded"
        assert len(api.get("/inboxes").json()["inboxes"]) == 2
        assert api.delete(f"/inboxes/{second.json()['inbox_id']}").status_code == 204
        assert api.post("/inboxes", json={"username": "third"}).status_code == 201
        assert api.get("/usage").json()["quota"]["used"]["inboxes"] == 2


def test_sending_over_the_daily_limit_is_429_and_queues_nothing(sending: Sending) -> None:
    made = register(sending)
    inbox_id = made["inbox_id"]
    with sending.api(made["api_key"]) as api:
        for _ in range(2):
            r = api.post(f"/inboxes/{inbox_id}/messages/send", json=MAIL)
            assert r.status_code == 200, r.text
        over = api.post(f"/inboxes/{inbox_id}/messages/send", json=MAIL)
        assert over.status_code == 429
        assert over.json()["error"]["code"] == "quota_exceeded"
        assert 0 < int(over.headers["Retry-After"]) <= 24 * 3600
        draft = api.post(f"/inboxes/{inbox_id}/drafts", json=MAIL).json()
        refused = api.post(f"/inboxes/{inbox_id}/drafts/{draft['draft_id']}/send")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "quota_exceeded"
        assert api.get(f"/inboxes/{inbox_id}/drafts/{draft['draft_id']}").json()["status"] == (
            "draft"
        )
        assert queued(sending) == 2
        quota = api.get("/usage").json()["quota"]
        assert quota["used"]["sends_today"] == 2
        # The Sent copies and the draft's copy are stored: counted, and the counter is their sum.
        account_id = api.get("/account").json()["account_id"]
        assert quota["used"]["storage_bytes"] == stored_sum(sending, account_id) > 0
        sending.clock.advance(24 * 3600)  # a new UTC day
        sent = api.post(f"/inboxes/{inbox_id}/drafts/{draft['draft_id']}/send")
        assert sent.status_code == 200, sent.text
        assert api.get("/account").json()["quota"]["used"]["sends_today"] == 1
    assert queued(sending) == 3
