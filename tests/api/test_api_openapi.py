"""The OpenAPI document: served at /api/v1/openapi.json, every route described and with an
example of its request body and its JSON success response; page tokens round-trip."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from api.apiserver import Api
from mailboxkit.store.listing import Cursor, InvalidCursor

# Routes under /api/v1 that take no API key: registration, and the SNS and Stripe endpoints
# (SNS and Stripe sign their requests).
UNAUTHENTICATED = {
    "/api/v1/register",
    "/api/v1/ses/notifications",
    "/api/v1/billing/stripe/webhook",
}


def _resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = doc["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _has_example(doc: dict[str, Any], media: dict[str, Any]) -> bool:
    return "example" in media or "examples" in _resolve(doc, media.get("schema", {}))


def test_every_route_has_a_description_and_examples(api: Api) -> None:
    doc = httpx.get(api.server.http_url + "/api/v1/openapi.json").json()
    assert doc["info"]["description"]
    assert doc["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    missing: list[str] = []
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            name = f"{method} {path}"
            if not op.get("description") or not op.get("summary"):
                missing.append(f"{name}: description")
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and not _has_example(doc, body):
                missing.append(f"{name}: request example")
            success = [r for code, r in op["responses"].items() if code.startswith("2")]
            for response in success:
                for media in response.get("content", {}).values():
                    if not _has_example(doc, media):
                        missing.append(f"{name}: response example")
            for param in op.get("parameters", []):
                examples = param.get("examples") or param["schema"].get("examples")
                if param["in"] == "path" and not examples:
                    missing.append(f"{name}: example of {param['name']}")
            authenticated = path.startswith("/api/v1/") and path not in UNAUTHENTICATED
            if authenticated and ("401" not in op["responses"] or not op.get("security")):
                missing.append(f"{name}: not documented as authenticated")
            if authenticated and "503" not in op["responses"]:
                missing.append(f"{name}: 503 when the store is out of reach not documented")
            if path in UNAUTHENTICATED and op.get("security"):
                missing.append(f"{name}: documented as needing an API key")
    assert missing == []


def test_cursor_round_trip_and_garbage() -> None:
    cursor = Cursor(datetime(2026, 11, 28, 9, 0, 0, 123456, tzinfo=UTC), "0193-abc")
    assert Cursor.decode(cursor.encode()) == cursor
    for junk in ["", "x", "bm90IGpzb24", Cursor(cursor.at.replace(tzinfo=None), "a").encode()]:
        with pytest.raises(InvalidCursor):
            Cursor.decode(junk)
