"""Every route, read from the OpenAPI document, called with another account's key (and with an
inbox key on its account's other inbox) on objects it may not see: always 404 (or 403 for an
inbox key on routes only account keys may use), never their data. A route added without
scoping fails here, because the list of routes comes from the document, not from this file.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from api.apiserver import Api, message
from mailboxkit.api import schemas as s

# The example id of each path parameter and body field, as the document shows them.
EXAMPLE_IDS = {
    "inbox_id": s.INBOX_ID,
    "message_id": s.MESSAGE_ID,
    "thread_id": s.THREAD_ID,
    "attachment_id": s.ATTACHMENT_ID,
    "api_key_id": s.KEY_ID,
    "domain_id": s.DOMAIN_ID,
    "sender_rule_id": s.SENDER_RULE_ID,
    "draft_id": s.DRAFT_ID,
}
UNAUTHENTICATED = {("post", "/api/v1/register"), ("get", "/healthz"), ("get", "/readyz")}
# Called by Amazon SNS, authenticated by the SNS signature, never by an account's key: it acts
# only on the messages its SES notification names (tests/e2e/test_ses_feedback.py).
SNS = {("post", "/api/v1/ses/notifications")}
# Held open by design; its scoping is tested in tests/api/test_stream.py.
STREAMS = {("get", "/api/v1/events")}


def _resolve(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = doc["components"]["schemas"][name]
    return node


def _body_example(doc: dict[str, Any], operation: dict[str, Any]) -> Any:
    body = operation.get("requestBody")
    if body is None:
        return None
    media = body["content"]["application/json"]
    if "example" in media:
        return media["example"]
    return _resolve(doc, media["schema"])["examples"][0]


def _objects_of(api: Api, owner: dict[str, Any]) -> dict[str, str]:
    """An inbox with a message (attachment, thread) and a draft, an inbox key, a domain (with
    the inbox as its catch-all) and a sender rule of that inbox."""
    with api.client(owner["api_key"]) as c:
        inbox = c.post("/inboxes", json={"username": f"victim{len(owner['email'])}"}).json()
        address = inbox["email"]
        raw = message(address, "Secret", "secret text\n", attachment=("s.txt", b"secret"))
        api.send(address, raw)
        [item] = c.get(f"/inboxes/{inbox['inbox_id']}/messages").json()["messages"]
        full = c.get(f"/inboxes/{inbox['inbox_id']}/messages/{item['message_id']}").json()
        key = c.post("/api-keys", json={"name": "k", "inbox_id": inbox["inbox_id"]}).json()
        domain = c.post("/domains", json={"domain": "victim.example.com"}).json()
        c.patch(f"/domains/{domain['domain_id']}", json={"catch_all_inbox_id": inbox["inbox_id"]})
        rule = c.post(
            "/sender-rules",
            json={"action": "block", "sender": "spam.example", "inbox_id": inbox["inbox_id"]},
        ).json()
        hook = c.post("/webhooks", json={"url": "http://127.0.0.1:9/hook"}).json()
        c.post(f"/webhooks/{hook['webhook_id']}/disable")  # the test event stays queued
        test = c.post(f"/webhooks/{hook['webhook_id']}/test").json()
        draft = c.post(
            f"/inboxes/{inbox['inbox_id']}/drafts",
            json={"to": "alice@example.org", "subject": "Secret draft", "text": "draft text"},
        ).json()
        suppressed = f"suppressed{len(owner['email'])}@example.org"
        assert c.post("/suppressions", json={"address": suppressed}).status_code == 201
    return {
        "inbox_id": inbox["inbox_id"],
        "message_id": item["message_id"],
        "thread_id": item["thread_id"],
        "attachment_id": full["attachments"][0]["attachment_id"],
        "api_key_id": key["api_key_id"],
        "domain_id": domain["domain_id"],
        "sender_rule_id": rule["sender_rule_id"],
        "draft_id": draft["draft_id"],
        "webhook_id": hook["webhook_id"],
        "delivery_id": test["delivery_id"],
        "email": address,
        "address": suppressed,
    }


def _substitute(value: Any, ids: dict[str, str]) -> tuple[Any, bool]:
    """``value`` with every example id replaced by the matching real id; whether any was."""
    text = json.dumps(value)
    replaced = False
    for name, example in EXAMPLE_IDS.items():
        if example in text:
            text = text.replace(example, ids[name])
            replaced = True
    return json.loads(text), replaced


def _walk(api: Api, key: str, theirs: dict[str, str], *, inbox_key: bool) -> list[str]:
    """Call every route with ``key`` on ``theirs``; the list of routes that misbehaved."""
    doc = httpx.get(api.server.http_url + "/api/v1/openapi.json").json()
    secrets = set(theirs.values())
    failures: list[str] = []
    calls = 0
    with api.client(key) as c:
        for path, operations in doc["paths"].items():
            for method, operation in operations.items():
                if (method, path) in UNAUTHENTICATED | STREAMS | SNS:
                    continue
                names = re.findall(r"{(\w+)}", path)
                unknown = [n for n in names if n not in theirs]
                if unknown:
                    failures.append(f"{method} {path}: no object for {unknown}; add one here")
                    continue
                url = path.removeprefix("/api/v1")
                for name in names:
                    url = url.replace(f"{{{name}}}", theirs[name])
                body, in_body = _substitute(_body_example(doc, operation), theirs)
                response = c.request(method, url, json=body)
                calls += 1
                allowed = {404} | ({403} if inbox_key else set())
                if not names and not in_body:
                    allowed |= {200, 201, 204, 409}
                if any(
                    p["in"] == "query" and p.get("required")
                    for p in operation.get("parameters", [])
                ):
                    allowed |= {422}  # not given here (DELETE /account's confirm)
                if response.status_code not in allowed:
                    failures.append(f"{method} {path}: {response.status_code} {response.text}")
                elif response.status_code >= 400:
                    assert set(response.json()) == {"error"}
                leaked = [v for v in secrets if v in response.text]
                if leaked:
                    failures.append(f"{method} {path}: shows {leaked}")
    assert calls > 10
    return failures


@pytest.fixture
def victim(api: Api) -> tuple[dict[str, Any], dict[str, str]]:
    owner = api.register("Victim")
    return owner, _objects_of(api, owner)


def _still_there(api: Api, owner: dict[str, Any], theirs: dict[str, str]) -> None:
    with api.client(owner["api_key"]) as c:
        inbox, message_id = theirs["inbox_id"], theirs["message_id"]
        assert c.get(f"/inboxes/{inbox}").status_code == 200
        got = c.get(f"/inboxes/{inbox}/messages/{message_id}").json()
        assert got["labels"] == [] and got["read"] is False
        domain = c.get(f"/domains/{theirs['domain_id']}").json()
        assert domain["catch_all_inbox_id"] == inbox
        assert c.get(f"/sender-rules/{theirs['sender_rule_id']}").status_code == 200
        keys = {k["api_key_id"]: k for k in c.get("/api-keys").json()["api_keys"]}
        assert keys[theirs["api_key_id"]]["revoked_at"] is None
        account = c.get("/account").json()
        assert account["name"] == "Victim"
        assert c.get(f"/suppressions/{theirs['address']}").status_code == 200
        draft = c.get(f"/inboxes/{inbox}/drafts/{theirs['draft_id']}").json()
        assert draft["status"] == "draft" and draft["text"] == "draft text"


def test_another_account_gets_404_on_every_route(
    api: Api, victim: tuple[dict[str, Any], dict[str, str]]
) -> None:
    owner, theirs = victim
    intruder = api.register("Intruder")
    assert _walk(api, intruder["api_key"], theirs, inbox_key=False) == []
    _still_there(api, owner, theirs)


def test_inbox_key_sees_nothing_of_its_accounts_other_inboxes(
    api: Api, victim: tuple[dict[str, Any], dict[str, str]]
) -> None:
    owner, theirs = victim
    with api.client(owner["api_key"]) as c:
        key = c.post("/api-keys", json={"inbox_id": owner["inbox_id"]}).json()["api_key"]
    other = {**theirs, "api_key_id": "0193a3c2-0000-7000-8000-000000000000"}
    assert _walk(api, key, other, inbox_key=True) == []
    _still_there(api, owner, theirs)
