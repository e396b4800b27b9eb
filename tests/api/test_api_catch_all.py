"""A domain's catch-all inbox (``PATCH /domains/{id}``) and ``postmaster@`` (RFC 5321 §4.5.1):
which inbox the MX delivers an address without an inbox to, changed through the API and obeyed
by the very next RCPT."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.apiserver import Api, message, start_api

DOMAIN = "agents.example.com"


@pytest.fixture
def owner(api: Api) -> dict[str, Any]:
    """An account with its own domain and two inboxes there: sales (older) and ops."""
    registered = api.register("Catcher")
    with api.client(registered["api_key"]) as c:
        domain = c.post("/domains", json={"domain": DOMAIN}).json()
        sales = c.post("/inboxes", json={"username": "sales", "domain": DOMAIN}).json()
        ops = c.post("/inboxes", json={"username": "ops", "domain": DOMAIN}).json()
    return {**registered, "domain_id": domain["domain_id"], "sales": sales, "ops": ops}


def send(api: Api, to: str, subject: str) -> tuple[int, bytes] | None:
    """One transaction to ``to``: None when accepted, else the RCPT reply."""
    with smtplib.SMTP("127.0.0.1", api.server.smtp_port) as client:
        try:
            client.sendmail("alice@sender.test", [to], message(to, subject))
        except smtplib.SMTPRecipientsRefused as refused:
            [reply] = refused.recipients.values()
            return reply
    return None


def subjects(c: httpx.Client, inbox: dict[str, Any]) -> list[str]:
    listed = c.get(f"/inboxes/{inbox['inbox_id']}/messages").json()["messages"]
    return sorted(m["subject"] for m in listed)


def set_catch_all(c: httpx.Client, domain_id: str, inbox_id: str | None) -> httpx.Response:
    return c.patch(f"/domains/{domain_id}", json={"catch_all_inbox_id": inbox_id})


def test_catch_all_takes_unknown_addresses_from_the_next_rcpt(
    api: Api, owner: dict[str, Any]
) -> None:
    domain_id, ops, sales = owner["domain_id"], owner["ops"], owner["sales"]
    no_such = send(api, f"nobody@{DOMAIN}", "Before")
    assert no_such is not None and no_such[0] == 550 and no_such[1].startswith(b"5.1.1 ")
    with api.client(owner["api_key"]) as c:
        changed = set_catch_all(c, domain_id, ops["inbox_id"])
        assert changed.status_code == 200, changed.text
        assert changed.json()["catch_all_inbox_id"] == ops["inbox_id"]
        assert c.get(f"/domains/{domain_id}").json()["catch_all_inbox_id"] == ops["inbox_id"]
        listed = {d["domain"]: d for d in c.get("/domains").json()["domains"]}
        assert listed[DOMAIN]["catch_all_inbox_id"] == ops["inbox_id"]
        assert listed["example.test"]["catch_all_inbox_id"] is None

        assert send(api, f"Nobody@{DOMAIN}", "Caught") is None  # the cached 550 was dropped
        assert send(api, f"sales+news@{DOMAIN}", "Tagged") is None  # an inbox comes first
        other = send(api, "nobody@example.test", "Elsewhere")  # another domain: refused
        assert other is not None and other[0] == 550
        assert subjects(c, ops) == ["Caught"]
        assert subjects(c, sales) == ["Tagged"]
        [caught] = c.get(f"/inboxes/{ops['inbox_id']}/messages").json()["messages"]
        assert caught["to"] == [{"name": "", "email": f"Nobody@{DOMAIN}"}]

        unchanged = c.patch(f"/domains/{domain_id}", json={})
        assert unchanged.json()["catch_all_inbox_id"] == ops["inbox_id"]
        cleared = set_catch_all(c, domain_id, None)
        assert cleared.status_code == 200 and cleared.json()["catch_all_inbox_id"] is None
    again = send(api, f"nobody@{DOMAIN}", "After")
    assert again is not None and again[0] == 550


def test_catch_all_must_be_the_accounts_inbox_on_its_own_domain(
    api: Api, owner: dict[str, Any]
) -> None:
    domain_id = owner["domain_id"]
    other = api.register("Other")
    with api.client(owner["api_key"]) as c:
        theirs = set_catch_all(c, domain_id, other["inbox_id"])
        assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "not_found"
        unknown = set_catch_all(c, domain_id, "0193a3c2-0000-7000-8000-000000000000")
        assert unknown.status_code == 404
        bad = c.patch(f"/domains/{domain_id}", json={"catch_all_inbox_id": 7})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
        shared = next(d for d in c.get("/domains").json()["domains"] if d["shared"])
        refused = set_catch_all(c, shared["domain_id"], owner["inbox_id"])
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        key = c.post("/api-keys", json={"inbox_id": owner["ops"]["inbox_id"]}).json()["api_key"]
        assert c.get(f"/domains/{domain_id}").json()["catch_all_inbox_id"] is None
    with api.client(key) as c:
        assert set_catch_all(c, domain_id, owner["ops"]["inbox_id"]).status_code == 403
    with api.client(other["api_key"]) as c:
        assert set_catch_all(c, domain_id, other["inbox_id"]).status_code == 404
    assert send(api, f"nobody@{DOMAIN}", "Still refused") is not None


def test_deleted_catch_all_inbox_stops_catching(api: Api, owner: dict[str, Any]) -> None:
    domain_id, ops = owner["domain_id"], owner["ops"]
    with api.client(owner["api_key"]) as c:
        set_catch_all(c, domain_id, ops["inbox_id"])
        assert send(api, f"nobody@{DOMAIN}", "Caught") is None
        assert c.delete(f"/inboxes/{ops['inbox_id']}").status_code == 204
        assert c.get(f"/domains/{domain_id}").json()["catch_all_inbox_id"] is None
    refused = send(api, f"nobody@{DOMAIN}", "Lost")
    assert refused is not None and refused[0] == 550


def test_postmaster_of_an_account_domain(api: Api, owner: dict[str, Any]) -> None:
    with api.client(owner["api_key"]) as c:
        # No postmaster inbox, no catch-all, no operator address: the account's oldest inbox
        # on the domain.
        assert send(api, f"PostMaster@{DOMAIN.upper()}", "To the owner") is None
        assert subjects(c, owner["sales"]) == ["To the owner"]
        set_catch_all(c, owner["domain_id"], owner["ops"]["inbox_id"])
        assert send(api, f"postmaster@{DOMAIN}", "To the catch-all") is None
        assert subjects(c, owner["ops"]) == ["To the catch-all"]
        pm = c.post("/inboxes", json={"username": "postmaster", "domain": DOMAIN}).json()
        assert send(api, f"postmaster@{DOMAIN}", "To its own inbox") is None
        assert subjects(c, pm) == ["To its own inbox"]
    # The operator's domain has no account to fall back on.
    refused = send(api, "postmaster@example.test", "Nobody")
    assert refused is not None and refused[0] == 550


@pytest.fixture
def operator_api(tmp_path: Path, database_url: str) -> Iterator[Api]:
    server, clock = start_api(tmp_path, database_url, postmaster="Abuse@Example.TEST")
    yield Api(server, clock)
    server.stop()


def test_postmaster_goes_to_the_operators_inbox(operator_api: Api) -> None:
    api = operator_api
    operator = api.register("Abuse")  # its inbox is abuse@example.test
    assert operator["email"] == "abuse@example.test"
    customer = api.register("Customer")
    with api.client(customer["api_key"]) as c:
        c.post("/domains", json={"domain": DOMAIN})
        own = c.post("/inboxes", json={"username": "sales", "domain": DOMAIN}).json()
    assert send(api, "postmaster@example.test", "Shared domain") is None
    assert send(api, "Postmaster", "Bare") is None  # RFC 5321 §4.5.1: the default domain's
    assert send(api, f"postmaster@{DOMAIN}", "Customer domain") is None
    with api.client(operator["api_key"]) as c:
        assert subjects(c, operator) == ["Bare", "Customer domain", "Shared domain"]
    with api.client(customer["api_key"]) as c:
        assert subjects(c, own) == []
