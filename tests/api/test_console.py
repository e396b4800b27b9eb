"""The web console at /console, through the whole server on loopback and a plain HTTP client
(a browser without scripts): sign-in with an account key, its session cookie and CSRF tokens,
and pages whose every change is the API's (seen through the JSON API after)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.apiserver import Api, start_api
from api.console_client import Browse, Browser, api_get, signed_in

FAILURES = 3
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}


@pytest.fixture
def api(tmp_path: Path, database_url: str) -> Iterator[Api]:
    server, clock = start_api(tmp_path, database_url, api_max_auth_failures=FAILURES)
    yield Api(server, clock)
    server.stop()


def is_signin(r: httpx.Response) -> bool:
    return r.status_code == 303 and r.headers["location"].startswith("/console/signin")


def test_a_wrong_key_is_refused_and_repeated_ones_are_rate_limited(
    api: Api, browse: Browse
) -> None:
    owner = api.register("Guarded")
    browser = browse({"X-Forwarded-For": "198.51.100.20"})
    page = browser.get("/signin")
    assert page.status_code == 200 and 'name="api_key"' in page.text
    answers = [browser.signin("mbk_wrong") for _ in range(FAILURES)]
    assert [r.status_code for r in answers] == [401] * FAILURES
    assert "invalid or revoked API key" in answers[0].text
    assert browser.cookie is None
    refused = browser.signin(owner["api_key"])  # the right key too, from that address
    assert refused.status_code == 429
    assert "too many failed authentications" in refused.text
    assert refused.headers["retry-after"]
    # The console's failures are the API's: the address is blocked there as well.
    blocked = httpx.get(
        api.url + "/account",
        headers={"Authorization": f"Bearer {owner['api_key']}", "X-Forwarded-For": "198.51.100.20"},
    )
    assert blocked.status_code == 429
    assert api_get(api, owner["api_key"], "/account").status_code == 200  # other addresses


def test_an_inbox_key_is_refused(api: Api, browse: Browse) -> None:
    owner = api.register("Scoped")
    with api.client(owner["api_key"]) as c:
        made = c.post("/api-keys", json={"inbox_id": owner["inbox_id"]}).json()
    browser = browse()
    r = browser.signin(made["api_key"])
    assert r.status_code == 403
    assert "limited to one inbox" in r.text and "account key" in r.text
    assert browser.cookie is None
    assert is_signin(browser.get(""))


def test_the_overview_shows_the_account_and_every_answer_is_guarded(
    api: Api, browse: Browse
) -> None:
    owner = api.register("Overview Corp")
    browser = signed_in(browse, owner["api_key"])
    page = browser.get("")
    assert page.status_code == 200
    account_id = api_get(api, owner["api_key"], "/account").json()["account_id"]
    assert "Overview Corp" in page.text and account_id in page.text
    assert "Messages sent today" in page.text and "API requests" in page.text
    for path in ("", "/inboxes", "/keys", "/domains", "/webhooks", "/billing", "/signin"):
        headers = browser.get(path).headers
        assert {k: headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS, path
    css = browser.get("/static/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    paths = httpx.get(api.url + "/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/console")]


def test_the_session_cookie_is_sealed_http_only_strict_and_secure_over_https(
    api: Api, browse: Browse
) -> None:
    owner = api.register("Cookies")
    r = browse().signin(owner["api_key"])
    cookie = r.headers["set-cookie"]
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
    assert {"httponly", "path", "samesite", "max-age"} <= attributes
    assert "path=/console" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert "secure" not in attributes  # plain HTTP here
    assert owner["api_key"] not in cookie  # sealed, not carried in the clear
    proxied = browse({"X-Forwarded-Proto": "https"}).signin(owner["api_key"])
    assert "secure" in {a.strip().lower() for a in proxied.headers["set-cookie"].split(";")}


def test_an_inbox_made_through_the_form_is_the_apis_and_names_are_escaped(
    api: Api, browse: Browse
) -> None:
    owner = api.register("Former")
    browser = signed_in(browse, owner["api_key"])
    browser.get("/inboxes")
    name = "<script>alert(1)</script>"
    r = browser.post("/inboxes", {"username": "support", "domain": "", "display_name": name})
    assert (r.status_code, r.headers["location"]) == (303, "/console/inboxes?notice=inbox-created")
    listed = api_get(api, owner["api_key"], "/inboxes").json()["inboxes"]
    [made] = [i for i in listed if i["username"] == "support"]
    assert made["display_name"] == name and made["email"] == "support@example.test"
    page = browser.get("/inboxes?notice=inbox-created")
    assert "The inbox was created." in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text and name not in page.text
    taken = browser.post("/inboxes", {"username": "support", "display_name": ""})
    assert taken.status_code == 409 and "conflict: this address is taken" in taken.text
    confirm = browser.get(f"/inboxes/{made['inbox_id']}/delete")
    assert confirm.status_code == 200 and "support@example.test" in confirm.text
    deleted = browser.post(f"/inboxes/{made['inbox_id']}/delete")
    assert deleted.status_code == 303
    assert api_get(api, owner["api_key"], f"/inboxes/{made['inbox_id']}").status_code == 404


def test_a_new_api_key_is_shown_once_works_and_revoked_stops(api: Api, browse: Browse) -> None:
    owner = api.register("Keyholder")
    browser = signed_in(browse, owner["api_key"])
    browser.get("/keys")
    shown = browser.post("/keys", {"name": "ci bot", "inbox_id": ""})
    assert shown.status_code == 200 and "will not be shown again" in shown.text
    [secret] = re.findall(r'<code class="secret">(mbk_[^<]+)</code>', shown.text)
    assert (
        api_get(api, secret, "/account").json() == api_get(api, owner["api_key"], "/account").json()
    )
    listing = browser.get("/keys")
    assert "ci bot" in listing.text and secret not in listing.text
    [made] = [
        k for k in api_get(api, secret, "/api-keys").json()["api_keys"] if k["name"] == "ci bot"
    ]
    assert browser.get(f"/keys/{made['api_key_id']}/revoke").status_code == 200
    revoked = browser.post(f"/keys/{made['api_key_id']}/revoke")
    assert (revoked.status_code, revoked.headers["location"]) == (
        303,
        "/console/keys?notice=key-revoked",
    )
    assert api_get(api, secret, "/account").status_code == 401
    assert browser.get("/keys").status_code == 200  # the session's own key still works


def test_a_domain_page_shows_the_records_the_api_gives_and_checks_them(
    api: Api, browse: Browse
) -> None:
    owner = api.register("Domainer")
    browser = signed_in(browse, owner["api_key"])
    browser.get("/domains")
    added = browser.post("/domains", {"domain": "agents.example.org"})
    assert added.status_code == 303
    domain_id = added.headers["location"].rsplit("/", 1)[1]
    records = api_get(api, owner["api_key"], f"/domains/{domain_id}/dns-records").json()
    page = browser.get(f"/domains/{domain_id}")
    assert page.status_code == 200 and "agents.example.org" in page.text
    rows = re.findall(r"<tr>\s*<td>(\w+)</td>\s*<td><code>([^<]*)</code></td>\s*<td><code "
                      r'class="value">([^<]*)</code>', page.text)  # fmt: skip
    expected = [(r["type"], r["name"], html.escape(r["value"])) for r in records["records"]]
    assert rows == expected and len(expected) >= 4
    checked = browser.post(f"/domains/{domain_id}/verify")
    assert checked.status_code == 200
    assert "not every required record is right" in checked.text and "missing" in checked.text
    listed = api_get(api, owner["api_key"], f"/domains/{domain_id}").json()
    assert listed["dns_checked_at"] is not None  # the check was the API's, recorded
    taken = browser.post("/domains", {"domain": "agents.example.org"})
    assert taken.status_code == 409 and "already on the server" in taken.text
    assert browser.post(f"/domains/{domain_id}/delete").status_code == 303
    assert api_get(api, owner["api_key"], f"/domains/{domain_id}").status_code == 404


def test_a_new_webhooks_secret_is_shown_once_and_actions_are_the_apis(
    api: Api, browse: Browse
) -> None:
    owner = api.register("Hooker")
    browser = signed_in(browse, owner["api_key"])
    browser.get("/webhooks")
    url = "http://127.0.0.1:9/hooks/mail"
    shown = browser.post(
        "/webhooks", {"url": url, "events": ["message.received", "message.bounced"]}
    )
    assert shown.status_code == 200 and "will not be shown again" in shown.text
    [secret] = re.findall(r'<code class="secret">(whsec_[^<]+)</code>', shown.text)
    [hook] = api_get(api, owner["api_key"], "/webhooks").json()["webhooks"]
    assert (hook["url"], hook["events"]) == (url, ["message.received", "message.bounced"])
    assert secret not in browser.get("/webhooks").text
    assert browser.post(f"/webhooks/{hook['webhook_id']}/disable").status_code == 303
    assert not api_get(api, owner["api_key"], f"/webhooks/{hook['webhook_id']}").json()["enabled"]
    tested = browser.post(f"/webhooks/{hook['webhook_id']}/test")
    assert tested.headers["location"] == (
        f"/console/webhooks/{hook['webhook_id']}?notice=webhook-tested"
    )
    deliveries = api_get(api, owner["api_key"], f"/webhooks/{hook['webhook_id']}/deliveries")
    assert [d["event_type"] for d in deliveries.json()["deliveries"]] == ["webhook.test"]
    rotated = browser.post(f"/webhooks/{hook['webhook_id']}/rotate")
    [new_secret] = re.findall(r'<code class="secret">(whsec_[^<]+)</code>', rotated.text)
    assert new_secret != secret and "will not be shown again" in rotated.text
    assert browser.get(f"/webhooks/{hook['webhook_id']}/delete").status_code == 200
    assert browser.post(f"/webhooks/{hook['webhook_id']}/delete").status_code == 303
    assert api_get(api, owner["api_key"], "/webhooks").json()["webhooks"] == []
    bad = browser.post("/webhooks", {"url": "not a url"})
    assert bad.status_code == 422 and "validation_error" in bad.text


def test_a_post_without_the_right_csrf_token_changes_nothing(api: Api, browse: Browse) -> None:
    owner = api.register("Guard")
    browser = signed_in(browse, owner["api_key"])
    form = {"username": "forged", "display_name": ""}
    missing = browser.raw_post("/inboxes", form)
    wrong = browser.raw_post("/inboxes", {**form, "csrf": browser.csrf[:-2] + "xx"})
    other_site = browser.post("/inboxes", form, headers={"Sec-Fetch-Site": "cross-site"})
    assert [r.status_code for r in (missing, wrong, other_site)] == [403] * 3
    assert "Forbidden" in wrong.text
    stranger = browse()  # another session's token is no good either
    stranger.csrf = browser.csrf
    assert is_signin(stranger.post("/inboxes", form))
    revoke = browser.raw_post(f"/keys/{owner['inbox_id']}/revoke", {"csrf": "x"})
    assert revoke.status_code == 403
    names = [i["username"] for i in api_get(api, owner["api_key"], "/inboxes").json()["inboxes"]]
    assert "forged" not in names


def test_another_accounts_inbox_and_domain_are_not_found(api: Api, browse: Browse) -> None:
    mine, theirs = api.register("Mine"), api.register("Theirs")
    with api.client(theirs["api_key"]) as c:
        domain = c.post("/domains", json={"domain": "theirs.example.org"}).json()
    browser = signed_in(browse, mine["api_key"])
    assert browser.get(f"/inboxes/{theirs['inbox_id']}/delete").status_code == 404
    gone = browser.post(f"/inboxes/{theirs['inbox_id']}/delete")
    assert gone.status_code == 404 and "not_found: inbox not found" in gone.text
    assert browser.get(f"/domains/{domain['domain_id']}").status_code == 404
    assert browser.post(f"/domains/{domain['domain_id']}/delete").status_code == 404
    assert browser.get("/domains/%2E%2E").status_code == 404  # never another API route
    assert api_get(api, theirs["api_key"], f"/inboxes/{theirs['inbox_id']}").status_code == 200
    assert api_get(api, theirs["api_key"], f"/domains/{domain['domain_id']}").status_code == 200


def test_a_tampered_or_expired_cookie_is_back_to_signin(api: Api, browse: Browse) -> None:
    owner = api.register("Timer")
    browser = signed_in(browse, owner["api_key"])
    sealed = browser.cookie
    assert sealed is not None
    flipped = sealed[:20] + ("A" if sealed[20] != "A" else "B") + sealed[21:]
    for value in (flipped, sealed[:-4], "", owner["api_key"]):
        browser.set_cookie(value)
        assert is_signin(browser.get("")), value
    browser.set_cookie(sealed)
    assert browser.get("").status_code == 200
    api.clock.advance(12 * 3600 + 1)
    expired = browser.get("")
    assert is_signin(expired) and "mbk_console=" in expired.headers["set-cookie"]
    assert browser.cookie is None  # cleared


def test_a_session_outlives_a_restart_but_not_another_install(
    tmp_path: Path, database_url: str
) -> None:
    first, clock = start_api(tmp_path, database_url)
    try:
        api = Api(first, clock)
        browser = Browser(api)
        assert browser.signin(api.register("Restarter")["api_key"]).status_code == 303
        sealed = browser.cookie
        browser.http.close()
    finally:
        first.stop()
    assert sealed is not None
    # The same data directory (so the same secret) and database: the session goes on. Another
    # install (its own secret) does not open it.
    for data, accepted in ((tmp_path, True), (tmp_path / "other", False)):
        server, clock = start_api(data, database_url)
        browser = Browser(Api(server, clock))
        try:
            browser.set_cookie(sealed)
            page = browser.get("")
            assert (page.status_code == 200) is accepted and is_signin(page) is not accepted
        finally:
            browser.http.close()
            server.stop()


def test_a_key_revoked_elsewhere_ends_the_session_and_signing_out_ends_it_too(
    api: Api, browse: Browse
) -> None:
    owner = api.register("Revoker")
    with api.client(owner["api_key"]) as c:
        second = c.post("/api-keys", json={"name": "console"}).json()
    browser = signed_in(browse, second["api_key"])
    with api.client(owner["api_key"]) as c:
        assert c.delete(f"/api-keys/{second['api_key_id']}").status_code == 204
    ended = browser.get("/inboxes")
    assert is_signin(ended) and ended.headers["location"] == "/console/signin?notice=ended"
    assert "was revoked" in browser.get("/signin?notice=ended").text
    other = signed_in(browse, owner["api_key"])
    signed_out = other.post("/signout")
    assert signed_out.headers["location"] == "/console/signin?notice=signed-out"
    assert other.cookie is None and is_signin(other.get(""))


def test_the_billing_page_says_billing_is_off(api: Api, browse: Browse) -> None:
    owner = api.register("Payer")
    browser = signed_in(browse, owner["api_key"])
    page = browser.get("/billing")
    assert page.status_code == 200 and "Billing is not enabled on this server" in page.text
    checkout = browser.post("/billing/checkout", {"plan": "pro"})
    assert checkout.status_code == 404 and "billing is not enabled" in checkout.text


def test_the_console_can_be_turned_off(tmp_path: Path, database_url: str) -> None:
    server, _ = start_api(tmp_path, database_url, console=False)
    try:
        assert httpx.get(server.http_url + "/console/signin").status_code == 404
        assert httpx.get(server.http_url + "/healthz").status_code == 200
    finally:
        server.stop()
