"""Stripe billing against the running server and a Stripe stand-in (``stripe_standin.py``):
Checkout and portal sessions made with the real stripe library, and signed webhook events that
set an account's limits from its plan, once per event, never undone by an older event."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from api.apiserver import Api
from api.stripe_standin import (
    SECRET_KEY,
    WEBHOOK_SECRET,
    StripeStandIn,
    checkout_session,
    event,
    signature,
    start_billing,
    subscription,
)
from mailboxkit.config import Settings
from mailboxkit.store import models as m

from harness import cli, serve_env

PLANS = {
    "small": {
        "price_id": "price_small",
        "storage_quota": 10_000_000,
        "inbox_limit": 2,
        "daily_send_limit": 100,
    },
    "large": {"price_id": "price_large", "inbox_limit": 4},  # the rest unlimited
}
FREE = {"storage_quota": 1_000_000, "inbox_limit": 1, "daily_send_limit": 10}
SMALL = {"storage_bytes": 10_000_000, "inboxes": 2, "sends_per_day": 100}
LARGE = {"storage_bytes": None, "inboxes": 4, "sends_per_day": None}
FREE_LIMITS = {"storage_bytes": 1_000_000, "inboxes": 1, "sends_per_day": 10}
UNLIMITED = {"storage_bytes": None, "inboxes": None, "sends_per_day": None}
T0 = 1_795_000_000  # event times (Stripe's "created"); signatures use the real clock
URLS = {"success_url": "https://app.example/done", "cancel_url": "https://app.example/back"}
BILLING_TABLES = (m.billing_customers, m.billing_subscriptions, m.billing_events)


@pytest.fixture
def billing(tmp_path: Path, database_url: str, stripe_api: StripeStandIn) -> Iterator[Api]:
    api = start_billing(tmp_path, database_url, stripe_api, PLANS, FREE)
    yield api
    api.server.stop()


def register(api: Api, name: str) -> dict[str, Any]:
    made = api.register(name)
    with api.client(made["api_key"]) as c:
        return {**made, "account_id": c.get("/account").json()["account_id"]}


def limits(api: Api, key: str) -> dict[str, Any]:
    with api.client(key) as c:
        found: dict[str, Any] = c.get("/account").json()["quota"]["limits"]
    return found


def checkout(api: Api, stripe_api: StripeStandIn, key: str, plan: str = "small") -> str:
    """Start a Checkout; the Stripe customer it was made for."""
    with api.client(key) as c:
        r = c.post("/billing/checkout", json={"plan": plan, **URLS})
    assert r.status_code == 200, r.text
    assert r.json()["url"].startswith("https://checkout.stripe.test/c/pay/cs_test_")
    return stripe_api.calls_to("/v1/checkout/sessions")[-1].form["customer"]


def deliver(api: Api, body: bytes, sig: str | None = None) -> httpx.Response:
    return httpx.post(
        api.url + "/billing/stripe/webhook",
        content=body,
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": signature(body) if sig is None else sig,
        },
        timeout=30,
    )


def applied(api: Api, body: bytes) -> str:
    r = deliver(api, body)
    assert r.status_code == 200, r.text
    status: str = r.json()["status"]
    return status


def sub_event(kind: str, customer: str, price: str, status: str, at: int, **kw: Any) -> bytes:
    return event(
        f"customer.subscription.{kind}",
        subscription("sub_1", customer, price, status, **kw),
        created=at,
    )


def operator_env(api: Api, stripe_api: StripeStandIn) -> dict[str, str]:
    """The environment of the ``mailboxkit`` CLI on the server's data, billing on as it is."""
    settings = api.server.settings
    return serve_env(
        settings.data_dir,
        settings.database_url,
        stripe_secret_key=SECRET_KEY,
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base=stripe_api.url,
        billing_plans=json.dumps(PLANS),
        billing_free_plan=json.dumps(FREE),
    )


def billing_rows(api: Api, account_id: str) -> dict[str, int]:
    found = {}
    for table in BILLING_TABLES:
        [(count,)] = api.server.query(
            select(func.count()).select_from(table).where(table.c.account_id == account_id)
        )
        found[table.name] = count
    return found


def test_checkout_makes_one_customer_and_a_session_for_the_plans_price(
    billing: Api, stripe_api: StripeStandIn
) -> None:
    agent = register(billing, "Buyer")
    with billing.client(agent["api_key"]) as c:
        before = c.get("/billing").json()
        assert before == {
            "plan": "free",
            "status": None,
            "current_period_end": None,
            "cancel_at_period_end": False,
            "has_customer": False,
            "plans": [{"name": "small", "limits": SMALL}, {"name": "large", "limits": LARGE}],
            "free_limits": FREE_LIMITS,
        }
        unknown = c.post("/billing/checkout", json={"plan": "gold", **URLS})
        assert unknown.status_code == 422
        assert unknown.json()["error"]["fields"][0]["field"] == "body.plan"
        bad_url = c.post("/billing/checkout", json={**URLS, "plan": "small", "cancel_url": "x"})
        assert bad_url.status_code == 422
    assert stripe_api.calls == []

    customer = checkout(billing, stripe_api, agent["api_key"], "large")
    [made] = stripe_api.calls_to("/v1/customers")
    assert made.form["metadata[mailboxkit_account_id]"] == agent["account_id"]
    assert made.form["email"] == "buyer@example.com"
    assert made.headers["authorization"] == f"Bearer {SECRET_KEY}"
    [session] = stripe_api.calls_to("/v1/checkout/sessions")
    assert session.form == {
        "mode": "subscription",
        "customer": customer,
        "client_reference_id": agent["account_id"],
        "line_items[0][price]": "price_large",
        "line_items[0][quantity]": "1",
        "success_url": URLS["success_url"],
        "cancel_url": URLS["cancel_url"],
        "subscription_data[metadata][mailboxkit_account_id]": agent["account_id"],
    }
    # A second Checkout (the first one abandoned) reuses the customer.
    assert checkout(billing, stripe_api, agent["api_key"]) == customer
    assert len(stripe_api.calls_to("/v1/customers")) == 1
    with billing.client(agent["api_key"]) as c:
        assert c.get("/billing").json()["has_customer"] is True
        portal = c.post("/billing/portal", json={"return_url": "https://app.example/billing"})
    assert portal.status_code == 200, portal.text
    assert portal.json()["url"].startswith("https://billing.stripe.test/p/session/")
    [opened] = stripe_api.calls_to("/v1/billing_portal/sessions")
    assert opened.form == {"customer": customer, "return_url": "https://app.example/billing"}

    inbox_key = billing.server.create_key(agent["account_id"], agent["inbox_id"])
    with billing.client(inbox_key) as c:
        assert c.get("/billing").status_code == 403
        assert c.post("/billing/checkout", json={"plan": "small", **URLS}).status_code == 403


def test_the_plan_of_the_subscription_sets_the_limits_and_they_are_enforced(
    billing: Api, stripe_api: StripeStandIn
) -> None:
    agent = register(billing, "Subscriber")
    key = agent["api_key"]
    assert limits(billing, key) == FREE_LIMITS  # new accounts: the free plan's
    customer = checkout(billing, stripe_api, key)
    completed = event(
        "checkout.session.completed",
        checkout_session(agent["account_id"], customer, "sub_1"),
        created=T0,
    )
    assert applied(billing, completed) == "applied"
    assert applied(billing, sub_event("created", customer, "price_small", "active", T0)) == (
        "applied"
    )
    assert limits(billing, key) == SMALL
    with billing.client(key) as c:
        state = c.get("/billing").json()
        assert (state["plan"], state["status"]) == ("small", "active")
        assert state["current_period_end"] == "2026-12-23T04:26:40Z"
        assert c.post("/inboxes", json={"username": "second"}).status_code == 201
        over = c.post("/inboxes", json={"username": "third"})
        assert over.status_code == 403
        assert over.json()["error"]["code"] == "quota_exceeded"
        # A live subscription: a second Checkout would bill twice.
        again = c.post("/billing/checkout", json={"plan": "large", **URLS})
        assert again.status_code == 409

    # Upgraded in the portal.
    upgrade = sub_event("updated", customer, "price_large", "active", T0 + 60)
    assert applied(billing, upgrade) == "applied"
    assert limits(billing, key) == LARGE
    with billing.client(key) as c:
        assert c.post("/inboxes", json={"username": "third"}).status_code == 201
        assert c.get("/billing").json()["plan"] == "large"

    # A failed renewal keeps the plan until Stripe gives up.
    late = sub_event("updated", customer, "price_large", "past_due", T0 + 120)
    assert applied(billing, late) == "applied"
    assert limits(billing, key) == LARGE

    deleted = sub_event("deleted", customer, "price_large", "canceled", T0 + 180)
    assert applied(billing, deleted) == "applied"
    assert limits(billing, key) == FREE_LIMITS
    with billing.client(key) as c:
        state = c.get("/billing").json()
        assert (state["plan"], state["status"]) == ("free", "canceled")
        refused = c.post("/inboxes", json={"username": "fourth"})  # 3 inboxes, limit 1
        assert refused.status_code == 403
        # Nothing live any more: buying again is allowed.
        assert c.post("/billing/checkout", json={"plan": "small", **URLS}).status_code == 200


def test_unpaid_or_a_price_of_no_plan_gives_the_free_limits(
    billing: Api, stripe_api: StripeStandIn
) -> None:
    agent = register(billing, "Late Payer")
    customer = checkout(billing, stripe_api, agent["api_key"])
    assert applied(billing, sub_event("created", customer, "price_small", "active", T0)) == (
        "applied"
    )
    assert applied(billing, sub_event("updated", customer, "price_small", "unpaid", T0 + 1)) == (
        "applied"
    )
    assert limits(billing, agent["api_key"]) == FREE_LIMITS
    assert applied(billing, sub_event("updated", customer, "price_small", "active", T0 + 2)) == (
        "applied"
    )
    assert limits(billing, agent["api_key"]) == SMALL
    # Switched in the Dashboard to a price the operator did not configure.
    other = sub_event("updated", customer, "price_elsewhere", "active", T0 + 3)
    assert applied(billing, other) == "applied"
    assert limits(billing, agent["api_key"]) == FREE_LIMITS
    with billing.client(agent["api_key"]) as c:
        assert c.get("/billing").json()["plan"] == "free"


def test_concurrent_deliveries_of_one_event_apply_it_once(
    billing: Api, stripe_api: StripeStandIn
) -> None:
    agent = register(billing, "Racer")
    customer = checkout(billing, stripe_api, agent["api_key"])
    body = sub_event("created", customer, "price_small", "active", T0)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: deliver(billing, body), range(4)))
    assert sorted(r.json()["status"] for r in answers) == ["applied", *["duplicate"] * 3]
    assert limits(billing, agent["api_key"]) == SMALL


def test_a_redelivered_event_is_applied_once(billing: Api, stripe_api: StripeStandIn) -> None:
    agent = register(billing, "Twice")
    customer = checkout(billing, stripe_api, agent["api_key"])
    created = sub_event("created", customer, "price_small", "active", T0)
    assert applied(billing, created) == "applied"
    # The operator changes the limits by hand; the redelivery must not set them again.
    billing.server.execute(
        update(m.accounts).where(m.accounts.c.id == agent["account_id"]).values(inbox_limit=9)
    )
    assert applied(billing, created) == "duplicate"
    assert limits(billing, agent["api_key"])["inboxes"] == 9
    [(count,)] = billing.server.query(select(func.count()).select_from(m.billing_events))
    assert count == 1


def test_an_older_event_after_a_newer_one_changes_nothing(
    billing: Api, stripe_api: StripeStandIn
) -> None:
    agent = register(billing, "Out Of Order")
    key = agent["api_key"]
    customer = checkout(billing, stripe_api, key)
    # Stripe sent created (small) then updated (large); they arrive the other way round.
    assert applied(billing, sub_event("updated", customer, "price_large", "active", T0 + 5))
    older = sub_event("created", customer, "price_small", "active", T0)
    assert applied(billing, older) == "stale"
    assert limits(billing, key) == LARGE
    # Same second: "incomplete" comes before "active" in a subscription's life.
    same_second = sub_event("created", customer, "price_small", "incomplete", T0 + 5)
    assert applied(billing, same_second) == "stale"
    assert limits(billing, key) == LARGE
    # Deleted, then a late "updated active" (even one stamped later): it stays ended.
    assert applied(billing, sub_event("deleted", customer, "price_large", "canceled", T0 + 9))
    late = sub_event("updated", customer, "price_large", "active", T0 + 9)
    assert applied(billing, late) == "stale"
    assert limits(billing, key) == FREE_LIMITS
    with billing.client(key) as c:
        assert c.get("/billing").json()["status"] == "canceled"


def test_a_bad_or_stale_signature_is_400_and_changes_nothing(
    billing: Api, stripe_api: StripeStandIn
) -> None:
    agent = register(billing, "Forged")
    customer = checkout(billing, stripe_api, agent["api_key"])
    body = sub_event("created", customer, "price_large", "active", T0)
    now = int(time.time())
    for sig in (
        signature(body, secret="whsec_someone_else"),
        signature(body, at=now - 600),  # older than Stripe's 5 minutes
        f"t={now},v1={'0' * 64}",
        "",
        "garbage",
    ):
        r = deliver(billing, body, sig)
        assert r.status_code == 400, sig
        assert r.json()["error"]["code"] == "invalid_signature"
    tampered = body.replace(b"price_large", b"price_small")
    r = deliver(billing, tampered, signature(body))
    assert r.status_code == 400
    not_json = b"not an event"
    r = deliver(billing, not_json)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "bad_request")
    assert limits(billing, agent["api_key"]) == FREE_LIMITS
    for table in (m.billing_events, m.billing_subscriptions):
        assert billing.server.query(select(table)) == []
    # An event type we do not handle is acknowledged and ignored.
    other = event("invoice.paid", {"id": "in_1", "object": "invoice"}, created=T0)
    assert applied(billing, other) == "ignored"


def test_another_accounts_customer_cannot_be_touched(
    billing: Api, stripe_api: StripeStandIn
) -> None:
    alice, bob = register(billing, "Alice"), register(billing, "Bob")
    alice_customer = checkout(billing, stripe_api, alice["api_key"])
    bob_customer = checkout(billing, stripe_api, bob["api_key"])
    assert alice_customer != bob_customer
    # A Checkout naming Alice with Bob's customer links nothing.
    stolen = event(
        "checkout.session.completed",
        checkout_session(alice["account_id"], bob_customer, "sub_x"),
        created=T0,
    )
    assert applied(billing, stolen) == "ignored"
    assert applied(billing, sub_event("created", bob_customer, "price_large", "active", T0))
    assert limits(billing, bob["api_key"]) == LARGE
    assert limits(billing, alice["api_key"]) == FREE_LIMITS
    with billing.client(alice["api_key"]) as c:
        assert c.get("/billing").json()["plan"] == "free"
        portal = c.post("/billing/portal", json={"return_url": "https://a.example/"})
        assert portal.status_code == 200, portal.text
    assert stripe_api.calls_to("/v1/billing_portal/sessions")[-1].form["customer"] == (
        alice_customer
    )
    # An event about a customer no account has is acknowledged and ignored.
    stranger = sub_event("created", "cus_stranger", "price_large", "active", T0)
    assert applied(billing, stranger) == "ignored"
    carol = register(billing, "Carol")
    with billing.client(carol["api_key"]) as c:
        r = c.post("/billing/portal", json={"return_url": "https://c.example/"})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "conflict")


def test_stripe_failing_or_unreachable_is_502_or_503(
    billing: Api, stripe_api: StripeStandIn
) -> None:
    agent = register(billing, "Unlucky")
    stripe_api.fail_with = 500
    with billing.client(agent["api_key"]) as c:
        r = c.post("/billing/checkout", json={"plan": "small", **URLS})
        assert (r.status_code, r.json()["error"]["code"]) == (502, "billing_error")
        stripe_api.stop()
        r = c.post("/billing/checkout", json={"plan": "small", **URLS})
        assert (r.status_code, r.json()["error"]["code"]) == (503, "billing_unavailable")
        assert r.headers["Retry-After"]
        assert c.get("/billing").json()["has_customer"] is False


def test_deleting_the_account_cancels_its_subscription_and_deletes_its_billing_rows(
    billing: Api, stripe_api: StripeStandIn
) -> None:
    leaving, staying = register(billing, "Leaving"), register(billing, "Staying")
    for agent in (leaving, staying):
        customer = checkout(billing, stripe_api, agent["api_key"])
        completed = checkout_session(agent["account_id"], customer, f"sub_{agent['account_id']}")
        assert applied(billing, event("checkout.session.completed", completed, created=T0))
        created = subscription(f"sub_{agent['account_id']}", customer, "price_small")
        body = event("customer.subscription.created", created, created=T0)
        assert applied(billing, body) == "applied"
    kept = billing_rows(billing, staying["account_id"])
    assert (
        billing_rows(billing, leaving["account_id"])
        == kept
        == {
            "billing_customers": 1,
            "billing_subscriptions": 1,
            "billing_events": 2,
        }
    )
    with billing.client(leaving["api_key"]) as c:
        # Stripe out of reach: its subscription cannot be canceled, so nothing is deleted.
        stripe_api.fail_with = 503
        refused = c.delete("/account", params={"confirm": leaving["account_id"]})
        assert (refused.status_code, refused.json()["error"]["code"]) == (502, "billing_error")
        assert billing_rows(billing, leaving["account_id"]) == kept
        stripe_api.fail_with = None
        assert c.delete("/account", params={"confirm": leaving["account_id"]}).status_code == 204
    # Its subscription was canceled first (it is never charged again), the other's was not.
    canceled = [c.path for c in stripe_api.calls if c.method == "DELETE"]
    leaving_sub = f"/v1/subscriptions/sub_{leaving['account_id']}"
    assert canceled == [leaving_sub, leaving_sub]  # the refused try, then the one that worked
    assert billing_rows(billing, leaving["account_id"]) == dict.fromkeys(kept, 0)
    assert billing_rows(billing, staying["account_id"]) == kept


def test_the_operator_deleting_an_account_cancels_its_subscription_too(
    billing: Api, stripe_api: StripeStandIn
) -> None:
    agent = register(billing, "Operated")
    customer = checkout(billing, stripe_api, agent["api_key"])
    created = subscription("sub_cli", customer, "price_small")
    assert applied(billing, event("customer.subscription.created", created, created=T0))
    env = operator_env(billing, stripe_api)
    stripe_api.fail_with = 400
    refused = cli(env, "account", "delete", agent["account_id"], "--yes")
    assert refused.returncode == 1 and "Stripe did not cancel" in refused.stderr
    assert billing_rows(billing, agent["account_id"])["billing_subscriptions"] == 1
    stripe_api.fail_with = None
    done = cli(env, "account", "delete", agent["account_id"], "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("canceled 1 Stripe subscription(s)\n")
    assert [c.path for c in stripe_api.calls if c.method == "DELETE"][-1] == (
        "/v1/subscriptions/sub_cli"
    )
    assert billing_rows(billing, agent["account_id"])["billing_subscriptions"] == 0


def test_billing_is_off_without_a_secret_key(api: Api) -> None:
    agent = api.register("No Billing")
    with api.client(agent["api_key"]) as c:
        assert c.get("/billing").status_code == 404
        r = c.post("/billing/checkout", json={"plan": "small", **URLS})
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
        assert c.post("/billing/portal", json={"return_url": "https://x.example/"}).status_code == (
            404
        )
    body = event("customer.subscription.created", subscription("s", "c", "p"), created=T0)
    assert deliver(api, body).status_code == 404


def test_plans_come_from_the_environment_as_json_or_from_the_toml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILBOXKIT_STRIPE_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("MAILBOXKIT_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("MAILBOXKIT_BILLING_PLANS", json.dumps(PLANS))
    monkeypatch.setenv("MAILBOXKIT_BILLING_FREE_PLAN", "{}")
    settings = Settings()
    assert settings.billing_plans["large"].inbox_limit == 4
    assert settings.billing_free_plan is not None
    assert settings.billing_free_plan.inbox_limit is None
    for name in ("BILLING_PLANS", "BILLING_FREE_PLAN"):
        monkeypatch.delenv(f"MAILBOXKIT_{name}")
    config = tmp_path / "mailboxkit.toml"
    config.write_text(
        '[billing_plans.pro]\nprice_id = "price_pro"\ninbox_limit = 10\n'
        "[billing_free_plan]\ninbox_limit = 1\n"
    )
    settings = Settings.load(config)
    assert settings.billing_plans["pro"].price_id == "price_pro"
    assert settings.billing_free_plan is not None
    assert settings.billing_free_plan.inbox_limit == 1
    monkeypatch.delenv("MAILBOXKIT_STRIPE_WEBHOOK_SECRET")
    with pytest.raises(ValueError, match="MAILBOXKIT_STRIPE_WEBHOOK_SECRET"):
        Settings.load(config)
    for bad in (
        {"billing_plans": {"free": {"price_id": "price_1"}}},
        {"billing_plans": {"a": {"price_id": "price_1"}, "b": {"price_id": "price_1"}}},
        {"stripe_secret_key": "pk_test_publishable", "stripe_webhook_secret": WEBHOOK_SECRET},
    ):
        with pytest.raises(ValueError):
            Settings(**bad)


def test_a_new_account_starts_with_the_free_plans_limits(
    billing: Api, stripe_api: StripeStandIn
) -> None:
    """Registered through the API or made by the operator, an account has no subscription
    yet: it gets the free plan's limits, not the unlimited defaults."""
    agent = register(billing, "Newcomer")
    assert limits(billing, agent["api_key"]) == FREE_LIMITS
    with billing.client(agent["api_key"]) as c:
        assert c.get("/billing").json()["plan"] == "free"
        second = c.post("/inboxes", json={"username": "second"})
    assert second.status_code == 403 and second.json()["error"]["code"] == "quota_exceeded"
    env = operator_env(billing, stripe_api)
    made = cli(env, "account", "create", "Operated", "--json")
    assert made.returncode == 0, made.stderr
    with billing.client(json.loads(made.stdout)["api_key"]) as c:
        assert c.get("/account").json()["quota"]["limits"] == FREE_LIMITS


def test_the_export_holds_the_accounts_billing(billing: Api, stripe_api: StripeStandIn) -> None:
    """Its Stripe customer, subscriptions and the events received about it are the
    account's data too; another account's are not in it."""
    agent, other = register(billing, "Exported"), register(billing, "Other Payer")
    customer = checkout(billing, stripe_api, agent["api_key"])
    checkout(billing, stripe_api, other["api_key"])
    created = sub_event("created", customer, "price_small", "active", T0)
    assert applied(billing, created) == "applied"
    with billing.client(agent["api_key"]) as c:
        archive = zipfile.ZipFile(io.BytesIO(c.get("/account/export").content))
    exported = json.loads(archive.read("account.json"))["billing"]
    assert exported["customer"]["customer_id"] == customer
    [sub] = exported["subscriptions"]
    assert (sub["subscription_id"], sub["status"], sub["price_id"]) == (
        "sub_1",
        "active",
        "price_small",
    )
    assert [e["type"] for e in exported["events"]] == ["customer.subscription.created"]
    assert json.loads(created)["id"] == exported["events"][0]["event_id"]
