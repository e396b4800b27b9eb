"""``/domains/{id}/dns-records``, ``/zone-file`` and ``/verify``: the records the CLI prints, as
JSON and as a zone file, and a live check through the server's resolver (a FakeResolver here)
that marks the domain verified once, with one ``domain.verified`` event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from api.apiserver import START, Api, FakeClock, start_api
from api.test_stream import stream as sse_stream
from mailboxkit.api.app import ApiContext, create_app
from mailboxkit.dns import dkimkeys
from mailboxkit.dns.records import DomainProfile, domain_records, operator_notes, zone_fragment
from mailboxkit.dns.resolver import FakeResolver
from mailboxkit.store import models as m
from mailboxkit.store.accounts import create_account, create_api_key
from mailboxkit.store.db import Database
from mailboxkit.store.domains import create_domain
from mailboxkit.store.events import Event

from harness import ServerThread, free_port, server_settings

DOMAIN = "agents.example.com"
HOST = "mx.example.test"  # server_settings' hostname
HOST_IP = "203.0.113.7"


@pytest.fixture
def dns() -> FakeResolver:
    return FakeResolver({})


@pytest.fixture
def api(tmp_path: Path, database_url: str, dns: FakeResolver) -> Iterator[Api]:
    port = free_port()
    settings = server_settings(
        tmp_path / "data",
        database_url,
        http_port=port,
        public_url=f"http://127.0.0.1:{port}",
        registration_enabled=True,
        registration_limit_per_ip=1000,
        api_rate_limit=0,
    )
    server = ServerThread(settings, resolver=dns)
    clock = FakeClock()
    server.app.clock = clock
    server.start()
    yield Api(server, clock)
    server.stop()


@pytest.fixture
def owner(api: Api) -> dict[str, Any]:
    registered = api.register("Domains")
    with api.client(registered["api_key"]) as c:
        made = c.post("/domains", json={"domain": DOMAIN})
    assert made.status_code == 201, made.text
    return {**registered, "domain_id": made.json()["domain_id"]}


def _cli_profile(api: Api, domain: str) -> DomainProfile:
    """What ``mailboxkit dns records`` builds: the settings and the domain's stored keys."""

    async def keys() -> list[dkimkeys.DkimKey]:
        async with api.server.app.db.read() as conn:
            return await dkimkeys.domain_keys(conn, domain)

    published = [k.published for k in api.server.call(keys())]
    return DomainProfile.from_settings(api.server.settings, domain, published)


def _publish(dns: FakeResolver, records: list[dict[str, Any]]) -> None:
    """Put every required record into the fake DNS, plus the host's address."""
    dns.records.setdefault(HOST, {})["A"] = [HOST_IP]
    for r in records:
        if not r["required"]:
            continue
        entry = dns.records.setdefault(r["name"], {}).setdefault(r["type"], [])
        if r["type"] == "MX":
            preference, exchange = r["value"].split()
            entry.append((int(preference), exchange))
        else:
            entry.append(r["value"])


def _events(api: Api) -> list[Any]:
    return api.server.query(select(m.events).where(m.events.c.type == "domain.verified"))


def test_dns_records_are_what_the_cli_prints(api: Api, owner: dict[str, Any]) -> None:
    with api.client(owner["api_key"]) as c:
        got = c.get(f"/domains/{owner['domain_id']}/dns-records")
        again = c.get(f"/domains/{owner['domain_id']}/dns-records").json()
    assert got.status_code == 200, got.text
    body = got.json()
    profile = _cli_profile(api, DOMAIN)
    assert len(profile.dkim) == 2  # made on first use: RSA and Ed25519
    assert body["records"] == [asdict(r) for r in domain_records(profile)]
    assert body["notes"] == list(operator_notes(profile))
    assert (body["domain"], body["hostname"], body["domain_id"]) == (
        DOMAIN,
        HOST,
        owner["domain_id"],
    )
    assert again == body  # the keys are made once
    purposes = [r["purpose"] for r in body["records"] if r["required"]]
    assert purposes == ["mx", "spf", "dkim", "dkim", "dmarc"]


def test_zone_file_is_the_cli_zone_fragment(api: Api, owner: dict[str, Any]) -> None:
    with api.client(owner["api_key"]) as c:
        got = c.get(f"/domains/{owner['domain_id']}/zone-file")
    assert got.status_code == 200, got.text
    assert got.headers["content-type"].startswith("text/plain")
    profile = _cli_profile(api, DOMAIN)
    expected = zone_fragment(domain_records(profile), DOMAIN, operator_notes(profile))
    assert got.text == expected
    assert f"$ORIGIN {DOMAIN}." in got.text and "IN MX    10 mx.example.test." in got.text


def test_verify_reports_each_record_then_verifies_once(
    api: Api, owner: dict[str, Any], dns: FakeResolver
) -> None:
    url = f"/domains/{owner['domain_id']}/verify"
    subscription = api.server.call(_subscribe(api))
    with api.client(owner["api_key"]) as c:
        first = c.post(url)
        assert first.status_code == 200, first.text
        report = first.json()
        assert (report["ok"], report["verified"], report["verified_at"]) == (False, False, None)
        statuses = {(x["purpose"], x["name"]): x["status"] for x in report["checks"]}
        assert statuses[("mx", DOMAIN)] == "missing"
        assert statuses[("mx-host", HOST)] == "missing"
        policy = ("mta-sts-policy", f"https://mta-sts.{DOMAIN}/.well-known/mta-sts.txt")
        assert statuses[policy] == "missing"
        assert _events(api) == []

        records = c.get(f"/domains/{owner['domain_id']}/dns-records").json()["records"]
        _publish(dns, records)
        dns.records[DOMAIN]["TXT"] = ["v=spf1 include:_spf.example.net ~all"]  # wrong SPF
        wrong = c.post(url).json()
        [spf] = [x for x in wrong["checks"] if x["purpose"] == "spf"]
        assert spf["status"] == "wrong"
        assert (spf["expected"], spf["found"]) == (
            "v=spf1 mx -all",
            ["v=spf1 include:_spf.example.net ~all"],
        )
        assert spf["detail"]
        assert wrong["ok"] is False and wrong["verified"] is False

        dns.records[DOMAIN]["TXT"] = ["v=spf1 mx -all"]
        api.clock.advance(60)
        good = c.post(url).json()
        assert good["ok"] is True and good["verified"] is True
        assert good["verified_at"] == "2026-11-28T09:01:00Z"
        required = [x for x in good["checks"] if x["required"]]
        assert {x["status"] for x in required} == {"ok"}
        assert c.get(f"/domains/{owner['domain_id']}").json()["verified"] is True

        del dns.records[DOMAIN]["MX"]  # broken later: reported and failing, once verified
        api.clock.advance(60)
        later = c.post(url).json()
        assert later["ok"] is False
        assert (later["verified"], later["verified_at"]) == (True, "2026-11-28T09:01:00Z")
        assert later["dns_status"] == "failing"
        shown = c.get(f"/domains/{owner['domain_id']}").json()
        assert (shown["dns_status"], shown["dns_failing_since"]) == (
            "failing",
            "2026-11-28T09:02:00Z",
        )

        account_id = c.get("/account").json()["account_id"]
    [row] = _events(api)
    assert row.account_id == account_id
    assert row.payload["data"] == {
        "domain_id": owner["domain_id"],
        "domain": DOMAIN,
        "verified_at": "2026-11-28T09:01:00+00:00",
        "recovered": False,
    }
    published: Event = api.server.call(asyncio.wait_for(subscription.get(), 5))
    assert (published.type, published.id) == ("domain.verified", row.id)
    subscription.close()


async def _subscribe(api: Api) -> Any:
    return api.server.app.bus.subscribe()


def test_shared_domain_records_and_verification_without_an_event(
    api: Api, owner: dict[str, Any], dns: FakeResolver
) -> None:
    with api.client(owner["api_key"]) as c:
        shared = next(d for d in c.get("/domains").json()["domains"] if d["shared"])
        records = c.get(f"/domains/{shared['domain_id']}/dns-records").json()["records"]
        assert records[0]["name"] == "example.test"
        _publish(dns, records)
        verified = c.post(f"/domains/{shared['domain_id']}/verify").json()
    assert verified["ok"] is True and verified["verified"] is True
    assert _events(api) == []


def test_inbox_keys_and_other_accounts_see_no_dns(api: Api, owner: dict[str, Any]) -> None:
    with api.client(owner["api_key"]) as c:
        inbox_key = c.post("/api-keys", json={"inbox_id": owner["inbox_id"]}).json()["api_key"]
    intruder = api.register("Intruder")["api_key"]
    domain_id = owner["domain_id"]
    for key, status in ((inbox_key, 403), (intruder, 404)):
        with api.client(key) as c:
            assert c.get(f"/domains/{domain_id}/dns-records").status_code == status
            assert c.get(f"/domains/{domain_id}/zone-file").status_code == status
            assert c.post(f"/domains/{domain_id}/verify").status_code == status
    with api.client(owner["api_key"]) as c:
        assert c.delete(f"/domains/{domain_id}").status_code == 204
        assert c.get(f"/domains/{domain_id}/dns-records").status_code == 404
        assert c.post(f"/domains/{domain_id}/verify").status_code == 404


async def test_verify_without_a_resolver_is_503(database_url: str) -> None:
    db = Database.open(database_url)
    try:
        async with db.write() as conn:
            account_id = await create_account(conn, name="n", owner_email=None, now=START)
            key = await create_api_key(conn, account_id=account_id, now=START)
            domain = await create_domain(conn, account_id, DOMAIN, now=START)
        app = create_app(ApiContext(db=db, blobs=None))  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key.secret}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
            got = await c.post(f"/api/v1/domains/{domain.id}/verify", headers=headers)
            records = await c.get(f"/api/v1/domains/{domain.id}/dns-records", headers=headers)
        assert got.status_code == 503
        assert got.json()["error"]["code"] == "unavailable"
        assert records.status_code == 200  # the default profile: a server named localhost
        assert records.json()["records"][0]["value"] == "10 localhost."
    finally:
        await db.close()


# The periodic re-check (dns/verification.py), driven one pass at a time.


def _recheck(api: Api) -> list[Any]:
    rechecker = api.server.app.rechecker
    assert rechecker is not None
    outcomes: list[Any] = api.server.call(rechecker.run_once())
    return outcomes


def _verified(api: Api, c: httpx.Client, dns: FakeResolver, domain_id: str) -> None:
    _publish(dns, c.get(f"/domains/{domain_id}/dns-records").json()["records"])
    assert c.post(f"/domains/{domain_id}/verify").json()["dns_status"] == "verified"


def test_recheck_marks_a_broken_domain_failing_then_verified_again(
    api: Api, owner: dict[str, Any], dns: FakeResolver, caplog: pytest.LogCaptureFixture
) -> None:
    domain_id = owner["domain_id"]
    with api.client(owner["api_key"]) as c:
        _verified(api, c, dns, domain_id)
        with sse_stream(api, owner["api_key"], params={"type": "domain"}) as sse:
            dmarc = dns.records.pop(f"_dmarc.{DOMAIN}")
            api.clock.advance(3600)
            with caplog.at_level(logging.WARNING, logger="mailboxkit.dns.verification"):
                _recheck(api)
            assert f"domain={DOMAIN}" in caplog.text and "status=failing" in caplog.text
            failed = sse.event()
            assert failed["type"] == "domain.verification_failed"
            assert failed["data"]["domain_id"] == domain_id
            assert failed["data"]["failing_since"] == "2026-11-28T10:00:00+00:00"
            [problem] = failed["data"]["problems"]
            assert (problem["purpose"], problem["status"]) == ("dmarc", "missing")
            shown = c.get(f"/domains/{domain_id}").json()
            assert (shown["dns_status"], shown["verified"]) == ("failing", True)
            assert shown["dns_failing_since"] == shown["dns_checked_at"] == "2026-11-28T10:00:00Z"

            api.clock.advance(3600)  # still broken: checked again, told once
            _recheck(api)
            shown = c.get(f"/domains/{domain_id}").json()
            assert shown["dns_failing_since"] == "2026-11-28T10:00:00Z"
            assert shown["dns_checked_at"] == "2026-11-28T11:00:00Z"

            dns.servfail.add(DOMAIN)  # DNS trouble proves nothing either way
            api.clock.advance(3600)
            _recheck(api)
            assert c.get(f"/domains/{domain_id}").json()["dns_status"] == "failing"
            dns.servfail.clear()

            dns.records[f"_dmarc.{DOMAIN}"] = dmarc
            api.clock.advance(3600)
            _recheck(api)
            recovered = sse.event()  # the next event: no second verification_failed before it
            assert (recovered["type"], recovered["data"]["recovered"]) == ("domain.verified", True)
            assert recovered["data"]["verified_at"] == "2026-11-28T09:00:00+00:00"
        shown = c.get(f"/domains/{domain_id}").json()
        assert (shown["dns_status"], shown["dns_failing_since"]) == ("verified", None)

        dns.servfail.add(DOMAIN)  # a verified domain is not failed by DNS errors either
        _recheck(api)
        assert c.get(f"/domains/{domain_id}").json()["dns_status"] == "verified"
    assert (
        len(api.server.query(select(m.events.c.seq).where(m.events.c.type.like("domain.%")))) == 3
    )


def test_recheck_skips_unverified_and_tells_no_account_of_shared_domains(
    api: Api, owner: dict[str, Any], dns: FakeResolver
) -> None:
    with api.client(owner["api_key"]) as c:
        shared = next(d for d in c.get("/domains").json()["domains"] if d["shared"])
        _verified(api, c, dns, shared["domain_id"])
        dns.records.pop(shared["domain"])
        outcomes = _recheck(api)
        assert [o.domain.name for o in outcomes] == [shared["domain"]]  # not the unverified one
        assert c.get(f"/domains/{shared['domain_id']}").json()["dns_status"] == "failing"
        assert c.get(f"/domains/{owner['domain_id']}").json()["dns_status"] == "unverified"
    assert api.server.query(select(m.events.c.seq).where(m.events.c.type.like("domain.%"))) == []


@pytest.fixture
def fast_api(tmp_path: Path, database_url: str, dns: FakeResolver) -> Iterator[Api]:
    server, clock = start_api(tmp_path, database_url, resolver=dns, dns_recheck_interval=0.05)
    yield Api(server, clock)
    server.stop()


def test_recheck_worker_runs_on_its_own(fast_api: Api, dns: FakeResolver) -> None:
    owner = fast_api.register("Rechecked")
    with fast_api.client(owner["api_key"]) as c:
        domain_id = c.post("/domains", json={"domain": DOMAIN}).json()["domain_id"]
        _verified(fast_api, c, dns, domain_id)
        with sse_stream(fast_api, owner["api_key"], params={"type": "domain"}) as sse:
            dns.records[DOMAIN]["TXT"] = ["v=spf1 -all"]  # SPF no longer authorizes this host
            failed = sse.event()  # sent by the worker, one interval later
        assert failed["type"] == "domain.verification_failed"
        assert [p["purpose"] for p in failed["data"]["problems"]] == ["spf"]
        assert c.get(f"/domains/{domain_id}").json()["dns_status"] == "failing"
