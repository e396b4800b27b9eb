"""Webhooks through the real server: management routes, signed deliveries checked by the
``standardwebhooks`` and ``svix`` libraries, retries on the injected clock, 410, replay, test
events, the delivery log, and the payload cap."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks
import svix.webhooks

from api.apiserver import Api, idle, message, setup_hook, start_api
from api.webhook_receiver import Received, Receiver
from mailboxkit.api.signing import new_secret, signature
from mailboxkit.store.webhooks import matches


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def advance(api: Api, seconds: float) -> None:
    """Move the server's clock and let the dispatcher act on it."""
    idle(api)
    api.clock.advance(seconds)
    idle(api)


def verify(secret: str, got: Received) -> dict[str, Any]:
    """Both libraries accept the request; returns the payload."""
    payload: dict[str, Any] = standardwebhooks.Webhook(secret).verify(got.body, got.headers)
    svix_headers = {k: v for k, v in got.headers.items() if k.startswith("svix-")}
    svix.webhooks.Webhook(secret).verify(got.body, svix_headers)
    return payload


@pytest.mark.parametrize(
    ("patterns", "event", "expected"),
    [
        (["message.received"], "message.received", True),
        (["message.received"], "message.received.spam", True),
        (["message.received"], "message.received.unauthenticated", True),
        (["message.received.spam"], "message.received", False),
        (["message"], "message.bounced", True),
        (["message.rec"], "message.received", False),
        (["*"], "domain.verified", True),
        (["domain.verified", "message.sent"], "message.sent", True),
        ([], "message.sent", False),
    ],
)
def test_subscription_matches_on_dot_boundaries(
    patterns: list[str], event: str, expected: bool
) -> None:
    assert matches(patterns, event) is expected


def test_signed_delivery_verifies_with_both_libraries(api: Api, receiver: Receiver) -> None:
    owner, hook = setup_hook(api, receiver.url(), events=["message.received"])
    secret = hook["secret"]
    assert secret.startswith("whsec_")
    raw = message(
        owner["email"],
        "Your verification code",
        "Your verification code is 482913.\nOr confirm: https://app.example.com/verify/abc\n",
        attachment=("notes.txt", b"attached bytes"),
    )
    api.send(owner["email"], raw)
    got = receiver.next()
    payload = verify(secret, got)
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"] == got.headers["svix-id"] == payload["event_id"]
    assert payload["type"] == "message.received"
    data = payload["data"]
    assert data["inbox_id"] == owner["inbox_id"]
    assert data["subject"] == "Your verification code"
    assert data["codes"] == ["482913"]
    assert data["links"] == [{"url": "https://app.example.com/verify/abc", "text": "Or confirm:"}]
    assert "auth" in data
    [attachment] = data["attachments"]
    assert attachment["filename"] == "notes.txt" and "data" not in attachment
    assert httpx.get(attachment["download_url"]).content == b"attached bytes"

    # The message API shows the same codes and links.
    with api.client(owner["api_key"]) as c:
        shown = c.get(f"/inboxes/{owner['inbox_id']}/messages/{data['message_id']}").json()
    assert shown["codes"] == ["482913"] and shown["links"] == data["links"]

    tampered = Received(got.path, got.headers, got.body.replace(b"482913", b"000000"))
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(tampered.body, tampered.headers)
    with pytest.raises(svix.webhooks.WebhookVerificationError):
        svix.webhooks.Webhook(secret).verify(tampered.body, tampered.headers)
    stale = int(datetime.now().timestamp()) - 600
    old = {
        **got.headers,
        "webhook-timestamp": str(stale),
        "webhook-signature": signature(secret, got.id, stale, got.body),
    }
    with pytest.raises(standardwebhooks.WebhookVerificationError, match="too old"):
        standardwebhooks.Webhook(secret).verify(got.body, old)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(new_secret()).verify(got.body, got.headers)

    idle(api)
    with api.client(owner["api_key"]) as c:
        log = c.get(f"/webhooks/{hook['webhook_id']}/deliveries").json()
    [delivery] = log["deliveries"]
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 1
    assert delivery["event_id"] == payload["event_id"]
    assert delivery["last_status_code"] == 200


def test_retries_on_schedule_until_accepted_with_a_stable_id(api: Api, receiver: Receiver) -> None:
    failures = {"left": 3}

    def answer(_got: Received) -> tuple[int, dict[str, str]]:
        if failures["left"] > 0:
            failures["left"] -= 1
            return 503, {}
        return 200, {}

    receiver.answer = answer
    owner, hook = setup_hook(api, receiver.url())
    api.send(owner["email"], message(owner["email"], "retry me"))
    first = receiver.next()
    started = api.clock.now()
    ids = [first.id]
    # 5 s, 5 min, 30 min after each failure, ±10 %: nothing goes out before, it does after.
    for delay in (5, 300, 1800):
        advance(api, delay * 0.85)
        assert receiver.requests.empty()
        advance(api, delay * 0.3)
        ids.append(receiver.next().id)
    assert len(set(ids)) == 1
    for got in receiver.all:
        verify(hook["secret"], got)
    idle(api)
    with api.client(owner["api_key"]) as c:
        [delivery] = c.get(f"/webhooks/{hook['webhook_id']}/deliveries").json()["deliveries"]
        detail = c.get(f"/webhooks/{hook['webhook_id']}/deliveries/{delivery['delivery_id']}")
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 4
    log = detail.json()["attempt_log"]
    assert [a["status_code"] for a in log] == [503, 503, 503, 200]
    assert datetime.fromisoformat(log[0]["attempted_at"]) == started
    assert detail.json()["event_id"] == ids[0]


def test_retry_after_is_honoured_and_410_disables(api: Api, receiver: Receiver) -> None:
    answers = [(429, {"Retry-After": "3600"}), (410, {})]
    receiver.answer = lambda _got: answers.pop(0)
    owner, hook = setup_hook(api, receiver.url())
    api.send(owner["email"], message(owner["email"], "slow down"))
    receiver.next()
    advance(api, 1800)  # past the 5 s schedule, not past Retry-After
    assert receiver.requests.empty()
    advance(api, 1900)
    receiver.next()
    idle(api)
    with api.client(owner["api_key"]) as c:
        got = c.get(f"/webhooks/{hook['webhook_id']}").json()
        [delivery] = c.get(f"/webhooks/{hook['webhook_id']}/deliveries").json()["deliveries"]
    assert got["enabled"] is False and "410" in got["disabled_reason"]
    assert delivery["status"] == "failed" and delivery["last_status_code"] == 410

    # Disabled: events meanwhile are not for it; once enabled, new ones are.
    receiver.answer = lambda _got: (200, {})
    api.send(owner["email"], message(owner["email"], "while disabled"))
    advance(api, 60)
    assert receiver.requests.empty()
    with api.client(owner["api_key"]) as c:
        assert c.post(f"/webhooks/{hook['webhook_id']}/enable").json()["enabled"] is True
    api.send(owner["email"], message(owner["email"], "enabled again"))
    assert json.loads(receiver.next().body)["data"]["subject"] == "enabled again"


def test_events_while_disabled_are_not_sent_once_enabled_again(
    api: Api, receiver: Receiver
) -> None:
    owner, hook = setup_hook(api, receiver.url())
    url = f"/webhooks/{hook['webhook_id']}"
    with api.client(owner["api_key"]) as c:
        assert c.post(f"{url}/disable").json()["enabled"] is False
        api.send(owner["email"], message(owner["email"], "while disabled"))
        assert c.post(f"{url}/enable").json()["enabled"] is True  # before the fan-out moved on
    api.send(owner["email"], message(owner["email"], "enabled again"))
    assert json.loads(receiver.next().body)["data"]["subject"] == "enabled again"
    idle(api)
    assert receiver.requests.empty()


def test_gives_up_after_the_last_attempt_then_replay(api: Api, receiver: Receiver) -> None:
    receiver.answer = lambda _got: (500, {})
    owner, hook = setup_hook(api, receiver.url())
    api.send(owner["email"], message(owner["email"], "never accepted"))
    receiver.next()
    for delay in (5, 300, 1800, 7200, 18000, 36000, 36000):
        advance(api, delay * 1.15)
        receiver.next()
    advance(api, 10 * 24 * 3600)
    assert receiver.requests.empty()
    hook_id = hook["webhook_id"]
    with api.client(owner["api_key"]) as c:
        [delivery] = c.get(f"/webhooks/{hook_id}/deliveries?status=failed").json()["deliveries"]
        assert delivery["attempts"] == 8
        receiver.answer = lambda _got: (204, {})
        path = f"/webhooks/{hook_id}/deliveries/{delivery['delivery_id']}/replay"
        assert c.post(path).status_code == 202
    again = receiver.next()
    assert again.id == delivery["event_id"]
    idle(api)
    with api.client(owner["api_key"]) as c:
        done = c.get(f"/webhooks/{hook_id}/deliveries/{delivery['delivery_id']}").json()
    assert done["status"] == "succeeded" and len(done["attempt_log"]) == 9


def test_management_routes(api: Api, receiver: Receiver) -> None:
    owner = api.register("Manager")
    key = owner["api_key"]
    with api.client(key) as c:
        bad = c.post("/webhooks", json={"url": receiver.url(), "events": ["message.nope"]})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
        assert c.post("/webhooks", json={"url": "ftp://example.com/x"}).status_code == 422
        other = api.register("Other")["inbox_id"]
        foreign = c.post("/webhooks", json={"url": receiver.url(), "inbox_ids": [other]})
        assert foreign.status_code == 422
        made = c.post(
            "/webhooks",
            json={
                "url": receiver.url(),
                "events": ["message.received"],
                "inbox_ids": [owner["inbox_id"]],
                "description": "mine",
            },
        ).json()
        hook_id = made["webhook_id"]
        shown = c.get(f"/webhooks/{hook_id}").json()
        assert "secret" not in shown and shown["inbox_ids"] == [owner["inbox_id"]]
        assert made["secret"] not in c.get("/webhooks").text
        patched = c.patch(f"/webhooks/{hook_id}", json={"events": ["message"], "inbox_ids": None})
        assert patched.json()["events"] == ["message"] and patched.json()["inbox_ids"] is None
        assert c.post(f"/webhooks/{hook_id}/disable").json()["enabled"] is False
        assert c.patch(f"/webhooks/{hook_id}", json={"enabled": True}).json()["enabled"]
        rotated = c.post(f"/webhooks/{hook_id}/secret/rotate").json()
        assert rotated["secret"].startswith("whsec_") and rotated["secret"] != made["secret"]

        test = c.post(f"/webhooks/{hook_id}/test")
        assert test.status_code == 202
        got = receiver.next()
        # During the rotation grace both secrets sign: old and new verifiers both accept.
        assert verify(made["secret"], got)["type"] == "webhook.test"
        assert verify(rotated["secret"], got)["event_id"] == test.json()["event_id"]
        api.clock.advance(25 * 3600)
        c.post(f"/webhooks/{hook_id}/test")
        late = receiver.next()
        verify(rotated["secret"], late)
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(made["secret"]).verify(late.body, late.headers)

        inbox_key = c.post("/api-keys", json={"inbox_id": owner["inbox_id"]}).json()["api_key"]
        with api.client(inbox_key) as scoped:
            assert scoped.get("/webhooks").status_code == 403
        assert c.delete(f"/webhooks/{hook_id}").status_code == 204
        assert c.get(f"/webhooks/{hook_id}").status_code == 404
        assert c.get("/webhooks").json()["count"] == 0


def test_only_matching_events_and_inboxes(api: Api, receiver: Receiver) -> None:
    owner = api.register("Picky")
    with api.client(owner["api_key"]) as c:
        second = c.post("/inboxes", json={"username": "second"}).json()
        c.post("/webhooks", json={"url": receiver.url("/bounces"), "events": ["message.bounced"]})
        c.post(
            "/webhooks",
            json={"url": receiver.url("/second"), "inbox_ids": [second["inbox_id"]]},
        )
    api.send(owner["email"], message(owner["email"], "to the first inbox"))
    api.send(second["email"], message(second["email"], "to the second inbox"))
    got = receiver.next()
    assert got.path == "/second"
    assert json.loads(got.body)["data"]["subject"] == "to the second inbox"
    idle(api)
    assert receiver.requests.empty()


def test_big_events_are_cut_with_a_pointer(tmp_path: Path, database_url: str) -> None:
    server, clock = start_api(tmp_path, database_url, event_max_payload_size=4096)
    api = Api(server, clock)
    receiver = Receiver().start()
    try:
        owner, hook = setup_hook(api, receiver.url())
        api.send(owner["email"], message(owner["email"], "long", "word " * 5000))
        got = receiver.next()
        assert len(got.body) <= 4096
        data = verify(hook["secret"], got)["data"]
        assert data["truncated"] is True
        assert data["message_url"] == (
            f"{server.http_url}/api/v1/inboxes/{owner['inbox_id']}/messages/{data['message_id']}"
        )
        with api.client(owner["api_key"]) as c:
            full = c.get(data["message_url"].removeprefix(api.url)).json()
        assert full["extracted_text"].startswith("word word")
    finally:
        receiver.stop()
        server.stop()


def test_timeout_counts_as_a_failure(tmp_path: Path, database_url: str) -> None:
    server, clock = start_api(tmp_path, database_url, webhook_timeout=0.3)
    api = Api(server, clock)
    receiver = Receiver().start()
    receiver.hold.set()
    try:
        owner, hook = setup_hook(api, receiver.url())
        api.send(owner["email"], message(owner["email"], "slow endpoint"))
        receiver.next()
        idle(api)
        with api.client(owner["api_key"]) as c:
            [d] = c.get(f"/webhooks/{hook['webhook_id']}/deliveries").json()["deliveries"]
        assert d["status"] == "pending" and "timeout" in d["last_error"]
        due = datetime.fromisoformat(d["next_attempt_at"]) - clock.now()
        assert timedelta(seconds=4) < due < timedelta(seconds=6)
    finally:
        receiver.stop()
        server.stop()
