"""Stripe stood in for by the test: a local HTTP server speaking Stripe's wire format for the
calls MailboxKit makes (form-encoded POSTs to ``/v1/customers``, ``/v1/checkout/sessions``,
``/v1/billing_portal/sessions``, DELETE of ``/v1/subscriptions/ID``; JSON objects back,
Stripe's error shape for errors), which records what it got; and webhook events signed as
Stripe signs them (``Stripe-Signature: t=TIMESTAMP,v1=HEX``, the HMAC-SHA256 of
``TIMESTAMP.BODY`` with the endpoint's secret).

Imported as ``api.stripe_standin`` (``tests`` is on the path).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from api.apiserver import Api, start_api

SECRET_KEY = "sk_test_standin"
WEBHOOK_SECRET = "whsec_standin_secret"


@dataclass
class Call:
    """One request the stand-in got: the path, the form fields (Stripe's ``a[b][0]`` names
    kept flat) and the headers."""

    path: str
    form: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"


class StripeStandIn:
    """Stripe's API on 127.0.0.1; ``fail_with`` makes every call answer that HTTP status."""

    def __init__(self, secret_key: str = SECRET_KEY) -> None:
        self.secret_key = secret_key
        self.calls: list[Call] = []
        self.fail_with: int | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StripeStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def calls_to(self, path: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.path == path]

    def _answer(self, method: str, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        n = next(self._ids)
        if path == "/v1/customers":
            return 200, {
                "id": f"cus_standin{n}",
                "object": "customer",
                "email": form.get("email"),
                "name": form.get("name"),
                "metadata": _metadata(form),
            }
        if path == "/v1/checkout/sessions":
            return 200, {
                "id": f"cs_test_standin{n}",
                "object": "checkout.session",
                "mode": form.get("mode"),
                "customer": form.get("customer"),
                "client_reference_id": form.get("client_reference_id"),
                "url": f"https://checkout.stripe.test/c/pay/cs_test_standin{n}",
            }
        if path == "/v1/billing_portal/sessions":
            return 200, {
                "id": f"bps_standin{n}",
                "object": "billing_portal.session",
                "customer": form.get("customer"),
                "return_url": form.get("return_url"),
                "url": f"https://billing.stripe.test/p/session/bps_standin{n}",
            }
        if method == "DELETE" and path.startswith("/v1/subscriptions/"):
            sub = path.rpartition("/")[2]
            return 200, {"id": sub, "object": "subscription", "status": "canceled"}
        return 404, _error("invalid_request_error", f"Unrecognized request URL ({method}: {path})")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with standin._lock:
                    standin.calls.append(Call(self.path, form, headers, method))
                if self.headers.get("Authorization") != f"Bearer {standin.secret_key}":
                    self._send(401, _error("invalid_request_error", "Invalid API Key provided"))
                elif standin.fail_with is not None:
                    self._send(standin.fail_with, _error("api_error", "Something went wrong"))
                else:
                    self._send(*standin._answer(method, self.path, form))

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", "req_standin")
                if status >= 500:
                    self.send_header("Stripe-Should-Retry", "false")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


def _metadata(form: dict[str, str]) -> dict[str, str]:
    return {k[len("metadata[") : -1]: v for k, v in form.items() if k.startswith("metadata[")}


# Webhook events, signed as Stripe signs them.

_event_ids = itertools.count(1)


def event(kind: str, obj: dict[str, Any], *, created: int, event_id: str | None = None) -> bytes:
    """A Stripe event body (API version 2025-03-31 and later shapes)."""
    body = {
        "id": event_id or f"evt_standin{next(_event_ids)}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "type": kind,
        "created": created,
        "livemode": False,
        "pending_webhooks": 1,
        "data": {"object": obj},
    }
    return json.dumps(body).encode()


def subscription(
    sub_id: str,
    customer: str,
    price: str,
    status: str = "active",
    *,
    period_end: int = 1_798_000_000,
    cancel_at_period_end: bool = False,
) -> dict[str, Any]:
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "cancel_at_period_end": cancel_at_period_end,
        "metadata": {},
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_{sub_id}",
                    "object": "subscription_item",
                    "price": {"id": price, "object": "price", "recurring": {"interval": "month"}},
                    "quantity": 1,
                    "current_period_start": period_end - 30 * 86400,
                    "current_period_end": period_end,
                }
            ],
        },
    }


def checkout_session(account_id: str, customer: str, sub_id: str) -> dict[str, Any]:
    return {
        "id": "cs_test_completed",
        "object": "checkout.session",
        "mode": "subscription",
        "status": "complete",
        "payment_status": "paid",
        "client_reference_id": account_id,
        "customer": customer,
        "subscription": sub_id,
    }


def signature(body: bytes, *, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    """The ``Stripe-Signature`` header of ``body`` signed at ``at`` (default: now)."""
    timestamp = int(time.time()) if at is None else at
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def start_billing(
    tmp_path: Path,
    database_url: str,
    standin: StripeStandIn,
    plans: dict[str, dict[str, Any]],
    free_plan: dict[str, Any],
) -> Api:
    """The whole server with billing on, its Stripe ``standin``; the caller stops it."""
    server, clock = start_api(
        tmp_path,
        database_url,
        stripe_secret_key=SECRET_KEY,
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base=standin.url,
        billing_plans=plans,
        billing_free_plan=free_plan,
    )
    return Api(server, clock)
