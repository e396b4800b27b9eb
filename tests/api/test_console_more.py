"""More of the web console through the whole server and a plain HTTP client, on both
databases: billing with billing on (Stripe stood in for as ``test_billing.py`` has it), a
webhook's page with its delivery log and replays, editing an inbox's display name, a domain's
catch-all inbox, and "More" links on the webhook list. Every change is checked through the
JSON API after."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.apiserver import Api, idle
from api.console_client import Browse, Browser, api_get, signed_in
from api.stripe_standin import StripeStandIn, start_billing
from api.webhook_receiver import Receiver

PLANS = {
    "small": {"price_id": "price_small", "inbox_limit": 2, "daily_send_limit": 100},
    "large": {"price_id": "price_large", "inbox_limit": 4},
}
CHECKOUT = re.compile(r"https://checkout\.stripe\.test/c/pay/cs_test_standin\d+")
LARGE_ROW = ("large", "unlimited", "4")  # storage unlimited, 4 inboxes
UNKNOWN_ID = "01a223ea-0000-7000-8000-000000000000"  # well-formed, nobody's
PORTAL = re.compile(r"https://billing\.stripe\.test/p/session/bps_standin\d+")


@pytest.fixture
def billing(tmp_path: Path, database_url: str, stripe_api: StripeStandIn) -> Iterator[Api]:
    free = {"storage_quota": 1_000_000, "inbox_limit": 1, "daily_send_limit": 10}
    api = start_billing(tmp_path, database_url, stripe_api, PLANS, free)
    yield api
    api.server.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def api_call(api: Api, key: str, method: str, path: str, **kw: Any) -> httpx.Response:
    with api.client(key) as c:
        return c.request(method, path, **kw)


def test_billing_shows_the_plans_and_sends_the_forms_to_stripe(
    billing: Api, stripe_api: StripeStandIn
) -> None:
    owner = billing.register("Payer")
    browser = Browser(billing)
    try:
        assert browser.signin(owner["api_key"]).status_code == 303
        page = browser.get("/billing")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "form-action 'self' https:;" in csp and "default-src 'none'" in csp
        rows = re.findall(r"<tr>\s*<td>(\w+)</td>\s*<td>([^<]*)</td>\s*<td>(\w+)</td>", page.text)
        assert rows == [("free", "976.6 KiB", "1"), ("small", "unlimited", "2"), LARGE_ROW]
        assert "Manage billing" not in page.text  # no Stripe customer yet
        assert page.text.count(">Subscribe</button>") == 2

        back = f"{billing.server.http_url}/console/billing"
        checkout = browser.post("/billing/checkout", {"plan": "small"})
        assert checkout.status_code == 303 and CHECKOUT.fullmatch(checkout.headers["location"])
        [made] = stripe_api.calls_to("/v1/checkout/sessions")
        assert (made.form["success_url"], made.form["cancel_url"]) == (back, back)
        assert made.form["line_items[0][price]"] == "price_small"

        assert "Manage billing" in browser.get("/billing").text  # a customer now
        portal = browser.post("/billing/portal")
        assert portal.status_code == 303 and PORTAL.fullmatch(portal.headers["location"])
        [opened] = stripe_api.calls_to("/v1/billing_portal/sessions")
        assert (opened.form["customer"], opened.form["return_url"]) == (made.form["customer"], back)

        unknown = browser.post("/billing/checkout", {"plan": "gold"})
        assert unknown.status_code == 422 and "no plan named &#39;gold&#39;" in unknown.text
        assert "<h2>Plans</h2>" in unknown.text  # the page again, with the API's error
        stripe_api.fail_with = 500
        refused = browser.post("/billing/portal")
        assert refused.status_code == 502
        assert "billing_error: the payment provider refused the request" in refused.text
    finally:
        browser.http.close()


def test_a_webhooks_page_shows_its_deliveries_and_replays_one(
    api: Api, browse: Browse, receiver: Receiver
) -> None:
    owner = api.register("Replayer")
    with api.client(owner["api_key"]) as c:
        hook = c.post("/webhooks", json={"url": receiver.url()}).json()
    hook_id = hook["webhook_id"]
    browser = signed_in(browse, owner["api_key"])
    listing = browser.get("/webhooks")
    assert f'href="/console/webhooks/{hook_id}"' in listing.text
    empty = browser.get(f"/webhooks/{hook_id}")
    assert empty.status_code == 200 and "Nothing sent to this endpoint yet." in empty.text

    receiver.answer = lambda _got: (500, {})
    tested = browser.post(f"/webhooks/{hook_id}/test")
    assert tested.headers["location"] == f"/console/webhooks/{hook_id}?notice=webhook-tested"
    first = receiver.next()
    idle(api)
    page = browser.get(f"/webhooks/{hook_id}?notice=webhook-tested")
    assert "its delivery is in the log below" in page.text
    [delivery] = api_get(api, owner["api_key"], f"/webhooks/{hook_id}/deliveries").json()[
        "deliveries"
    ]
    assert delivery["event_id"] == first.id and delivery["status"] == "pending"
    assert '<span class="status pending">pending</span>' in page.text and "HTTP 500" in page.text

    receiver.answer = lambda _got: (200, {})
    replay = f"/webhooks/{hook_id}/deliveries/{delivery['delivery_id']}/replay"
    replayed = browser.post(replay)
    assert replayed.headers["location"] == f"/console/webhooks/{hook_id}?notice=delivery-replayed"
    assert receiver.next().id == first.id  # the same event, sent again
    idle(api)
    detail = browser.get(f"/webhooks/{hook_id}/deliveries/{delivery['delivery_id']}")
    assert '<span class="status succeeded">succeeded</span>' in detail.text
    assert detail.text.count("<td>HTTP ") == 2 and "HTTP 500" in detail.text
    assert first.id in detail.text

    other = signed_in(browse, api.register("Stranger")["api_key"])
    assert other.get(f"/webhooks/{hook_id}").status_code == 404
    assert other.post(replay).status_code == 404
    assert browser.post(f"/webhooks/{hook_id}/deliveries/{UNKNOWN_ID}/replay").status_code == 404


def test_an_inboxs_display_name_is_edited_through_its_page(api: Api, browse: Browse) -> None:
    owner = api.register("Renamer")
    inbox_id = owner["inbox_id"]
    browser = signed_in(browse, owner["api_key"])
    assert f'href="/console/inboxes/{inbox_id}"' in browser.get("/inboxes").text
    page = browser.get(f"/inboxes/{inbox_id}")
    assert page.status_code == 200 and owner["email"] in page.text
    saved = browser.post(f"/inboxes/{inbox_id}", {"display_name": "  Front <Desk>  "})
    assert saved.headers["location"] == f"/console/inboxes/{inbox_id}?notice=inbox-updated"
    assert api_get(api, owner["api_key"], f"/inboxes/{inbox_id}").json()["display_name"] == (
        "Front <Desk>"
    )
    shown = browser.get(f"/inboxes/{inbox_id}?notice=inbox-updated")
    assert "The inbox was updated." in shown.text and 'value="Front &lt;Desk&gt;"' in shown.text

    too_long = "x" * 201
    refused = browser.post(f"/inboxes/{inbox_id}", {"display_name": too_long})
    assert refused.status_code == 422 and "validation_error" in refused.text
    assert f'value="{too_long}"' in refused.text  # what was typed, to correct
    assert api_get(api, owner["api_key"], f"/inboxes/{inbox_id}").json()["display_name"] == (
        "Front <Desk>"
    )
    theirs = api.register("Other Renamer")["inbox_id"]
    assert browser.get(f"/inboxes/{theirs}").status_code == 404
    assert browser.post(f"/inboxes/{theirs}", {"display_name": "mine"}).status_code == 404


def test_a_domains_catch_all_inbox_is_set_and_cleared(api: Api, browse: Browse) -> None:
    owner = api.register("Catcher")
    key = owner["api_key"]
    domain = api_call(api, key, "POST", "/domains", json={"domain": "catch.example.org"}).json()
    path = f"/domains/{domain['domain_id']}"
    browser = signed_in(browse, key)
    page = browser.get(path)
    assert "none: mail for unknown addresses is refused" in page.text
    assert f'<option value="{owner["inbox_id"]}">{owner["email"]}</option>' in page.text

    made = browser.post(f"{path}/catch-all", {"inbox_id": owner["inbox_id"]})
    assert made.headers["location"] == f"/console{path}?notice=catch-all-set"
    assert api_get(api, key, path).json()["catch_all_inbox_id"] == owner["inbox_id"]
    shown = browser.get(f"{path}?notice=catch-all-set")
    assert "The catch-all inbox was set." in shown.text
    assert f'<option value="{owner["inbox_id"]}" selected>' in shown.text

    theirs = api.register("Other Catcher")["inbox_id"]
    refused = browser.post(f"{path}/catch-all", {"inbox_id": theirs})
    assert refused.status_code == 404 and "not_found: inbox not found" in refused.text
    assert "catch.example.org" in refused.text  # the domain's page, with the API's error
    assert api_get(api, key, path).json()["catch_all_inbox_id"] == owner["inbox_id"]

    cleared = browser.post(f"{path}/catch-all", {"inbox_id": ""})
    assert cleared.headers["location"] == f"/console{path}?notice=catch-all-cleared"
    assert api_get(api, key, path).json()["catch_all_inbox_id"] is None

    shared = [d for d in api_get(api, key, "/domains").json()["domains"] if d["shared"]]
    for each in shared:  # the operator's: the API refuses to change them, no form
        assert '/catch-all"' not in browser.get(f"/domains/{each['domain_id']}").text
    assert browser.post(f"/domains/{UNKNOWN_ID}/catch-all", {"inbox_id": ""}).status_code == 404


def test_the_webhook_list_has_more_past_a_page(api: Api, browse: Browse) -> None:
    owner = api.register("Many Hooks")
    with api.client(owner["api_key"]) as c:
        for n in range(101):
            url = f"http://127.0.0.1:9/hook/{n}"
            assert c.post("/webhooks", json={"url": url}).status_code == 201
    browser = signed_in(browse, owner["api_key"])
    first = browser.get("/webhooks")
    urls = re.findall(r"<code>(http://127\.0\.0\.1:9/hook/\d+)</code>", first.text)
    assert len(urls) == 100
    [more] = re.findall(r'href="(/console/webhooks\?page_token=[^"]+)">More', first.text)
    rest = browser.http.get(more.replace("&amp;", "&"))
    last = re.findall(r"<code>(http://127\.0\.0\.1:9/hook/\d+)</code>", rest.text)
    assert len(last) == 1 and sorted(urls + last) == sorted(
        f"http://127.0.0.1:9/hook/{n}" for n in range(101)
    )
    assert "More…" not in rest.text
