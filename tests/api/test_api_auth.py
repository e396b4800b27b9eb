"""Keys (missing, wrong, revoked, inbox-scoped, last use), the per-key rate limit, the request
body limit, the error shape of every kind of failure, and the access log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.apiserver import Api, start_api
from mailboxkit.api.app import ApiContext, create_app


@pytest.fixture
def limited(tmp_path: Path, database_url: str) -> Iterator[Api]:
    server, clock = start_api(tmp_path, database_url, api_rate_limit=3, api_max_body_size=2048)
    yield Api(server, clock)
    server.stop()


def _error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert "Traceback" not in response.text
    error: dict[str, object] = body["error"]
    return error


@pytest.mark.parametrize(
    "header",
    [None, "Bearer mbk_nope", "Bearer " + "mbk_" + "A" * 40, "Basic Zm9vOmJhcg==", "Bearer x"],
)
def test_missing_or_wrong_key_is_401(api: Api, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = httpx.get(api.url + "/inboxes", headers=headers)
    _error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


def test_revoked_key_stops_working_and_last_use_is_recorded(api: Api) -> None:
    owner = api.register("Keys")
    with api.client(owner["api_key"]) as c:
        made = c.post("/api-keys", json={"name": "temp"})
        assert made.status_code == 201
        secret = made.json()["api_key"]
        assert made.json()["prefix"] == secret[:12]
        api.clock.advance(30)
        with api.client(secret) as temp:
            assert temp.get("/account").status_code == 200
        listed = {k["api_key_id"]: k for k in c.get("/api-keys").json()["api_keys"]}
        entry = listed[made.json()["api_key_id"]]
        assert "api_key" not in entry
        assert entry["last_used_at"] == "2026-11-28T09:00:30Z"
        assert c.delete(f"/api-keys/{entry['api_key_id']}").status_code == 204
        assert c.delete(f"/api-keys/{entry['api_key_id']}").status_code == 204
    with api.client(secret) as temp:
        _error(temp.get("/account"), 401, "unauthorized")


def test_last_use_is_kept_to_the_minute(api: Api) -> None:
    owner = api.register("Minute")

    def last_used(c: httpx.Client) -> str:
        keys = c.get("/api-keys").json()["api_keys"]
        return str(next(k["last_used_at"] for k in keys if k["prefix"] == owner["api_key"][:12]))

    with api.client(owner["api_key"]) as c:
        first = last_used(c)
        api.clock.advance(59)
        assert last_used(c) == first  # a minute has not passed: not written again
        api.clock.advance(1)
        assert last_used(c) == "2026-11-28T09:01:00Z"


def test_inbox_key_sees_only_its_inbox_and_cannot_manage_the_account(api: Api) -> None:
    owner = api.register("Scoped")
    with api.client(owner["api_key"]) as c:
        other = c.post("/inboxes", json={"username": "other"}).json()
        key = c.post("/api-keys", json={"inbox_id": owner["inbox_id"]}).json()["api_key"]
    with api.client(key) as scoped:
        listed = scoped.get("/inboxes").json()
        assert [i["inbox_id"] for i in listed["inboxes"]] == [owner["inbox_id"]]
        assert scoped.get(f"/inboxes/{owner['inbox_id']}").status_code == 200
        _error(scoped.get(f"/inboxes/{other['inbox_id']}"), 404, "not_found")
        _error(scoped.get(f"/inboxes/{other['inbox_id']}/messages"), 404, "not_found")
        _error(scoped.post("/api-keys", json={}), 403, "forbidden")
        _error(scoped.post("/inboxes", json={}), 403, "forbidden")
        _error(scoped.delete(f"/inboxes/{owner['inbox_id']}"), 403, "forbidden")


def test_rate_limit_per_key_answers_429_with_retry_after(limited: Api) -> None:
    owner = limited.register("Busy")
    limited.clock.advance(60 - limited.clock.now().second)  # the start of a minute window
    with limited.client(owner["api_key"]) as c:
        assert [c.get("/account").status_code for _ in range(3)] == [200, 200, 200]
        limited.clock.advance(20)
        refused = c.get("/account")
        _error(refused, 429, "rate_limited")
        assert refused.headers["retry-after"] == "40"
        limited.clock.advance(40)
        assert c.get("/account").status_code == 200
        usage = c.get("/usage").json()
    assert usage["api_requests"] == 5  # the refused request is not counted as used


def test_body_over_the_limit_is_413(limited: Api) -> None:
    owner = limited.register("Big")
    with limited.client(owner["api_key"]) as c:
        big = {"display_name": "x", "metadata": {"blob": "y" * 4096}}
        _error(c.post("/inboxes", json=big), 413, "payload_too_large")

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
            yield b'{"metadata": {"a": "'
            yield b"z" * 4096
            yield b'"}}'

        _error(
            c.post("/inboxes", content=chunks(), headers={"content-type": "application/json"}),
            413,
            "payload_too_large",
        )


def test_errors_share_one_shape(api: Api) -> None:
    owner = api.register("Errors")
    with api.client(owner["api_key"]) as c:
        _error(c.get("/nothing-here"), 404, "not_found")
        _error(c.put("/account"), 405, "method_not_allowed")
        invalid = _error(
            c.post("/inboxes", json={"username": "bad name!"}), 422, "validation_error"
        )
        assert invalid["fields"] == [
            {"field": "body.username", "message": invalid["fields"][0]["message"]}  # type: ignore[index]
        ]
        _error(
            c.post("/inboxes", content=b"{", headers={"content-type": "application/json"}),
            422,
            "validation_error",
        )
        _error(
            c.get(f"/inboxes/{owner['inbox_id']}/messages", params={"limit": 0}),
            422,
            "validation_error",
        )
        _error(
            c.get(f"/inboxes/{owner['inbox_id']}/messages", params={"page_token": "x"}),
            422,
            "validation_error",
        )
        _error(c.post("/inboxes", json={"username": "errors"}), 409, "conflict")
        _error(c.post("/domains", json={"domain": "example.test"}), 409, "conflict")


def test_every_request_is_logged_once(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    owner = api.register("Logged")
    caplog.set_level(logging.INFO, logger="mailboxkit.api.access")
    caplog.clear()
    with api.client(owner["api_key"]) as c:
        c.get("/account")
    lines = [r.getMessage() for r in caplog.records if r.name == "mailboxkit.api.access"]
    assert len(lines) == 1
    assert "method=GET path=/api/v1/account status=200" in lines[0]
    assert "key_id=" in lines[0] and owner["api_key"] not in lines[0]


async def test_unexpected_failure_is_a_generic_500_without_a_trace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = create_app(ApiContext(db=None, blobs=None))  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=broken, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        response = await c.get("/api/v1/account", headers={"Authorization": "Bearer mbk_x"})
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal_error", "message": "internal error"}}
    assert any("event=http_unhandled" in r.getMessage() for r in caplog.records)
