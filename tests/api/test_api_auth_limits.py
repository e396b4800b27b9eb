"""Failed authentication is limited per client address: after the allowed 401s, every request
from that address gets 429 with Retry-After until the window ends, a valid key's too; other
addresses are not affected. IPv6 addresses count by /64; only trusted proxies name the client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.apiserver import START, Api, FakeClock, start_api
from mailboxkit.api.app import ApiConfig, ApiContext, create_app
from mailboxkit.api.context import FailedClients
from mailboxkit.config import Settings
from mailboxkit.store.accounts import create_account, create_api_key
from mailboxkit.store.db import Database
from mailboxkit.store.ratelimit import Limit

FAILURES = 3
WINDOW = 300


@pytest.fixture
def guarded(tmp_path: Path, database_url: str) -> Iterator[Api]:
    server, clock = start_api(
        tmp_path, database_url, api_max_auth_failures=FAILURES, api_auth_failure_window=WINDOW
    )
    yield Api(server, clock)
    server.stop()


def _get(api: Api, key: str | None, ip: str, path: str = "/account") -> httpx.Response:
    headers = {"X-Forwarded-For": ip}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.get(api.url + path, headers=headers)


def test_defaults_are_twenty_failures_per_five_minutes() -> None:
    settings = Settings()
    assert (settings.api_max_auth_failures, settings.api_auth_failure_window) == (20, 300)


def test_failures_then_429_for_every_key_until_the_window_ends(guarded: Api) -> None:
    good = guarded.register("Target")["api_key"]
    ip = "198.51.100.7"
    assert _get(guarded, good, ip).status_code == 200  # successes count for nothing
    guarded.clock.advance(10)
    statuses = [_get(guarded, "mbk_wrong", ip).status_code for _ in range(FAILURES - 1)]
    statuses.append(_get(guarded, None, ip).status_code)  # a missing key is a failure too
    assert statuses == [401] * FAILURES
    refused = _get(guarded, "mbk_wrong", ip)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.headers["retry-after"] == str(WINDOW - 10)
    valid = _get(guarded, good, ip)  # blocked means blocked: a right guess is not told apart
    assert (valid.status_code, valid.headers["retry-after"]) == (429, str(WINDOW - 10))
    assert _get(guarded, good, "198.51.100.8").status_code == 200
    guarded.clock.advance(WINDOW - 20)
    assert _get(guarded, good, ip).headers["retry-after"] == "10"  # refusals do not extend it
    guarded.clock.advance(10)
    assert _get(guarded, good, ip).status_code == 200
    assert _get(guarded, "mbk_wrong", ip).status_code == 401


def test_blocked_requests_do_not_touch_the_key(guarded: Api) -> None:
    owner = guarded.register("Quiet")
    ip = "203.0.113.9"
    for _ in range(FAILURES):
        assert _get(guarded, "mbk_wrong", ip).status_code == 401
    assert _get(guarded, owner["api_key"], ip).status_code == 429
    with guarded.client(owner["api_key"]) as c:
        assert c.get("/usage").json()["api_requests"] == 1  # only this request


def test_ipv6_counts_by_its_64(guarded: Api) -> None:
    good = guarded.register("Six")["api_key"]
    for host in range(1, FAILURES + 1):
        assert _get(guarded, "mbk_wrong", f"2001:db8:1:2::{host}").status_code == 401
    assert _get(guarded, good, "2001:db8:1:2:ffff::1").status_code == 429
    assert _get(guarded, good, "2001:db8:1:3::1").status_code == 200


def test_every_route_of_a_blocked_address_is_refused_but_health_is_not(guarded: Api) -> None:
    ip = "192.0.2.44"
    for _ in range(FAILURES):
        assert _get(guarded, "mbk_wrong", ip, "/inboxes").status_code == 401
    assert _get(guarded, None, ip, "/domains").status_code == 429
    assert httpx.get(guarded.server.http_url + "/healthz").status_code == 200


def test_zero_turns_the_limit_off(tmp_path: Path, database_url: str) -> None:
    server, clock = start_api(tmp_path, database_url, api_max_auth_failures=0)
    try:
        api = Api(server, clock)
        statuses = {_get(api, "mbk_wrong", "192.0.2.1").status_code for _ in range(25)}
        assert statuses == {401}
    finally:
        server.stop()


def test_forwarded_for_counts_only_from_a_trusted_proxy(tmp_path: Path, database_url: str) -> None:
    server, clock = start_api(
        tmp_path,
        database_url,
        api_max_auth_failures=FAILURES,
        http_trusted_proxies="192.0.2.0/24",  # not the test's own 127.0.0.1
    )
    try:
        api = Api(server, clock)
        statuses = [
            _get(api, "mbk_wrong", f"198.51.100.{n}").status_code for n in range(FAILURES + 1)
        ]
        assert statuses == [401] * FAILURES + [429]  # one client, whatever it claims
    finally:
        server.stop()


@pytest.mark.parametrize("bad", ["localhost", "10.0.0.0/33", "1.2.3.4, nope"])
def test_trusted_proxies_must_be_addresses(bad: str) -> None:
    with pytest.raises(ValueError, match="http_trusted_proxies"):
        Settings(http_trusted_proxies=bad)


async def test_failures_count_across_processes(database_url: str) -> None:
    """Two API processes on one database: failures add up; each refuses valid keys from the
    address once it has seen a failure from it itself."""
    db = Database.open(database_url)
    try:
        async with db.write() as conn:
            account_id = await create_account(conn, name="n", owner_email=None, now=START)
            key = (await create_api_key(conn, account_id=account_id, now=START)).secret
        config = ApiConfig(auth_failures_per_ip=Limit(FAILURES, WINDOW))
        clock = FakeClock()
        a, b = (
            create_app(ApiContext(db=db, blobs=None, clock=clock, config=config))  # type: ignore[arg-type]
            for _ in "ab"
        )
        good, bad = {"Authorization": f"Bearer {key}"}, {"Authorization": "Bearer mbk_nope"}
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://a") as on_a,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=b), base_url="http://b") as on_b,
        ):
            for _ in range(FAILURES):
                assert (await on_a.get("/api/v1/account", headers=bad)).status_code == 401
            assert (await on_a.get("/api/v1/account", headers=good)).status_code == 429
            assert (await on_b.get("/api/v1/account", headers=good)).status_code == 200
            assert (await on_b.get("/api/v1/account", headers=bad)).status_code == 429
            assert (await on_b.get("/api/v1/account", headers=good)).status_code == 429
    finally:
        await db.close()


def test_failed_clients_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FailedClients, "MAX_ENTRIES", 3)
    seen = FailedClients()
    for n, client in enumerate("abc"):
        seen.note(client, now=n, window=10)
    assert all(seen.suspect(c, now=5) for c in "abc")
    seen.note("d", now=10.5, window=10)  # "a" has expired and goes
    assert [c for c in "abcd" if seen.suspect(c, now=10.6)] == ["b", "c", "d"]
    seen.note("e", now=10.7, window=10)  # nothing expired: all are forgotten
    assert [c for c in "abcde" if seen.suspect(c, now=10.8)] == ["e"]
    assert not seen.suspect("e", now=20.7)
