"""``POST /register``: the account, inbox and key it makes, the operator's switch, and its
limits per client address and per owner email."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.apiserver import Api, start_api
from mailboxkit.store.accounts import username_from


@pytest.fixture
def strict(tmp_path: Path, database_url: str) -> Iterator[Api]:
    server, clock = start_api(
        tmp_path, database_url, registration_limit_per_ip=5, registration_limit_per_email=3
    )
    yield Api(server, clock)
    server.stop()


def _register(api: Api, name: str, email: str, ip: str = "10.1.1.1") -> httpx.Response:
    return httpx.post(
        api.url + "/register",
        json={"name": name, "owner_email": email},
        headers={"X-Forwarded-For": ip},
    )


def test_register_makes_an_account_an_inbox_and_a_working_key(api: Api) -> None:
    first = _register(api, "Support Bot", "Ops@Example.com")
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["email"] == "support-bot@example.test"
    assert body["owner_email"] == "ops@example.com"
    assert body["api_key"].startswith("mbk_") and body["message"]
    second = _register(api, "Support Bot", "other@example.com").json()
    assert second["email"].startswith("support-bot-") and second["email"] != body["email"]
    with httpx.Client(headers={"Authorization": f"Bearer {body['api_key']}"}) as c:
        account = c.get(api.url + "/account").json()
        assert account["name"] == "Support Bot"
        inboxes = c.get(api.url + "/inboxes").json()["inboxes"]
        assert [i["inbox_id"] for i in inboxes] == [body["inbox_id"]]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Support Bot!", "support-bot"),
        ("  ", "agent"),
        ("Ünïcode Ágent", "unicode-agent"),
        ("a..b", "a.b"),
        ("x" * 100, "x" * 56),
    ],
)
def test_username_from_name(name: str, expected: str) -> None:
    assert username_from(name) == expected


def test_registration_can_be_turned_off(tmp_path: Path, database_url: str) -> None:
    server, clock = start_api(tmp_path, database_url, registration_enabled=False)
    try:
        refused = _register(Api(server, clock), "Nope", "nope@example.com")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
    finally:
        server.stop()


def test_five_per_address_per_hour(strict: Api) -> None:
    statuses = [
        _register(strict, f"bot {i}", f"o{i}@example.com", ip="10.9.9.9").status_code
        for i in range(6)
    ]
    assert statuses == [201] * 5 + [429]
    refused = _register(strict, "bot x", "x@example.com", ip="10.9.9.9")
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 0 < int(refused.headers["retry-after"]) <= 3600
    assert _register(strict, "bot y", "y@example.com", ip="10.9.9.10").status_code == 201
    strict.clock.advance(3600)
    assert _register(strict, "bot z", "z@example.com", ip="10.9.9.9").status_code == 201


def test_three_per_owner_email_per_hour(strict: Api) -> None:
    statuses = [
        _register(strict, f"bot {i}", "same@example.com", ip=f"10.8.0.{i}").status_code
        for i in range(4)
    ]
    assert statuses == [201, 201, 201, 429]
    assert _register(strict, "bot", "SAME@example.com", ip="10.8.1.1").status_code == 429
