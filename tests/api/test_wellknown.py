"""Public routes for senders and mail clients: the MTA-STS policy by Host, Thunderbird's
autoconfig by address or Host, Outlook's autodiscover by the address in its XML request; 404
for domains that are not this server's, and nothing in the API document."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest

from api.apiserver import Api, start_api
from mailboxkit.api.wellknown import autodiscover_xml
from mailboxkit.dns.records import (
    DomainProfile,
    ServicePorts,
    autoconfig_xml,
    domain_records,
    mta_sts_id,
    mta_sts_policy,
)

from harness import free_port

SHARED = "example.test"  # server_settings' domain
HOST = "mx.example.test"
OUTLOOK_REQUEST = """<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>{address}</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>
"""
NS = {
    "a": "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006",
    "o": "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a",
}


def _profile(api: Api, domain: str) -> DomainProfile:
    return DomainProfile.from_settings(api.server.settings, domain)


def _get(api: Api, path: str, host: str, **params: str) -> httpx.Response:
    return httpx.get(api.server.http_url + path, headers={"Host": host}, params=params)


def _own_domain(api: Api, name: str) -> None:
    key = api.register(f"Owner {name}")["api_key"]
    with api.client(key) as c:
        assert c.post("/domains", json={"domain": name}).status_code == 201


def test_mta_sts_policy_for_each_domain_of_the_server(api: Api) -> None:
    _own_domain(api, "agents.example.com")
    for domain in (SHARED, "agents.example.com"):
        got = _get(api, "/.well-known/mta-sts.txt", f"MTA-STS.{domain}.:443")
        assert got.status_code == 200, got.text
        assert got.headers["content-type"].startswith("text/plain")
        profile = _profile(api, domain)
        assert got.text == mta_sts_policy(profile)
        assert got.text == f"version: STSv1\r\nmode: testing\r\nmx: {HOST}\r\nmax_age: 604800\r\n"
        [record] = [r for r in domain_records(profile) if r.name == f"_mta-sts.{domain}"]
        assert record.value == f"v=STSv1; id={mta_sts_id(got.text)}"  # the id matches the text


@pytest.mark.parametrize(
    "host", ["mta-sts.unknown.example", "example.test", "127.0.0.1:8025", "mta-sts.", "[::1]:80"]
)
def test_mta_sts_404_for_other_hosts(api: Api, host: str) -> None:
    got = _get(api, "/.well-known/mta-sts.txt", host)
    assert got.status_code == 404
    assert got.json()["error"]["code"] == "not_found"


def test_autoconfig_by_address_and_by_host(api: Api) -> None:
    expected = autoconfig_xml(_profile(api, SHARED))
    for path, host, params in [
        ("/mail/config-v1.1.xml", "autoconfig.example.test", {"emailaddress": "bot@example.test"}),
        ("/mail/config-v1.1.xml", "autoconfig.example.test", {}),
        ("/.well-known/autoconfig/mail/config-v1.1.xml", "example.test", {}),
        ("/.well-known/autoconfig/mail/config-v1.1.xml", "x", {"emailaddress": "A@Example.Test"}),
    ]:
        got = _get(api, path, host, **params)
        assert got.status_code == 200, (path, host, params, got.text)
        assert got.headers["content-type"].startswith("application/xml")
        assert got.text == expected
    provider = ElementTree.fromstring(expected).find("./emailProvider")
    assert provider is not None and provider.get("id") == SHARED


@pytest.mark.parametrize(
    ("host", "params", "status"),
    [
        ("autoconfig.example.test", {"emailaddress": "bot@elsewhere.example"}, 404),
        ("autoconfig.elsewhere.example", {}, 404),
        ("autoconfig.example.test", {"emailaddress": "no-at-sign"}, 400),
        ("autoconfig.example.test", {"emailaddress": "x@" + "a" * 400}, 422),
    ],
)
def test_autoconfig_refuses_other_domains_and_junk(
    api: Api, host: str, params: dict[str, str], status: int
) -> None:
    got = _get(api, "/mail/config-v1.1.xml", host, **params)
    assert got.status_code == status
    assert set(got.json()) == {"error"}


def test_autodiscover_answers_outlook_with_imap_and_smtp(tmp_path: Path, database_url: str) -> None:
    imaps, submissions = free_port(), free_port()
    server, clock = start_api(
        tmp_path, database_url, imaps_port=imaps, submissions_port=submissions
    )
    try:
        body = OUTLOOK_REQUEST.format(address="Bot@Example.test")
        got = httpx.post(
            server.http_url + "/autodiscover/autodiscover.xml",
            content=body,
            headers={"Host": "autodiscover.example.test", "Content-Type": "text/xml"},
        )
        assert got.status_code == 200, got.text
        assert got.headers["content-type"].startswith("application/xml")
        assert got.text == autodiscover_xml(
            _profile(Api(server, clock), SHARED), "Bot@Example.test"
        )
    finally:
        server.stop()
    root = ElementTree.fromstring(got.text)
    account = root.find("./o:Response/o:Account", NS)
    assert account is not None
    assert account.findtext("o:Action", namespaces=NS) == "settings"
    protocols = {
        p.findtext("o:Type", namespaces=NS): (
            p.findtext("o:Server", namespaces=NS),
            p.findtext("o:Port", namespaces=NS),
            p.findtext("o:LoginName", namespaces=NS),
        )
        for p in account.findall("o:Protocol", NS)
    }
    assert protocols == {
        "IMAP": (HOST, str(imaps), "Bot@Example.test"),
        "SMTP": (HOST, str(submissions), "Bot@Example.test"),
    }


def test_autodiscover_xml_prefers_implicit_tls_and_escapes() -> None:
    profile = DomainProfile("example.com", "mail.example.com", ports=ServicePorts(imaps=0))
    root = ElementTree.fromstring(autodiscover_xml(profile, "a&b@example.com"))
    protocols = {
        p.findtext("o:Type", namespaces=NS): (
            p.findtext("o:Port", namespaces=NS),
            p.findtext("o:Encryption", namespaces=NS),
            p.findtext("o:LoginName", namespaces=NS),
        )
        for p in root.iterfind(".//o:Protocol", NS)
    }
    assert protocols == {
        "IMAP": ("143", "TLS", "a&b@example.com"),
        "SMTP": ("465", "SSL", "a&b@example.com"),
    }


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (OUTLOOK_REQUEST.format(address="bot@elsewhere.example"), 404),
        ("<Autodiscover/>", 400),
        ('<!DOCTYPE x [<!ENTITY a "b">]><EMailAddress>&a;</EMailAddress>', 400),
    ],
)
def test_autodiscover_refuses_other_domains_and_junk(api: Api, body: str, status: int) -> None:
    got = httpx.post(api.server.http_url + "/autodiscover/autodiscover.xml", content=body)
    assert got.status_code == status
    assert set(got.json()) == {"error"}


def test_public_routes_are_not_in_the_api_document(api: Api) -> None:
    doc = httpx.get(api.url + "/openapi.json").json()
    assert not [p for p in doc["paths"] if "well-known" in p or "autod" in p or "/mail/" in p]
