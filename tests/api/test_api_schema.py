"""A property run over the OpenAPI document: generated requests never get a 5xx, and every
response matches the documented schema and content type. Bounded, to keep the suite fast.

Half the cases keep their generated path ids (mostly 404s); the other half get the ids of real
objects (an inbox with a delivered message, its thread and attachment, a spare key, a domain,
a draft), so the routes' success paths are exercised too. Deleting operations run last.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from api.apiserver import Api, message

EXAMPLES_PER_OPERATION = 10


def _objects(api: Api, key: str, address: str, inbox_id: str) -> dict[str, str]:
    raw = message(address, "Fuzz me", "body\n", message_id="<f1@x>", attachment=("f.txt", b"x"))
    api.send(address, raw)
    with api.client(key) as c:
        [item] = c.get(f"/inboxes/{inbox_id}/messages").json()["messages"]
        full = c.get(f"/inboxes/{inbox_id}/messages/{item['message_id']}").json()
        spare = c.post("/api-keys", json={"name": "spare"}).json()
        domain = c.post("/domains", json={"domain": "fuzz.example.com"}).json()
        draft = c.post(
            f"/inboxes/{inbox_id}/drafts", json={"to": "a@example.org", "text": "fuzz"}
        ).json()
    return {
        "inbox_id": inbox_id,
        "message_id": item["message_id"],
        "thread_id": item["thread_id"],
        "attachment_id": full["attachments"][0]["attachment_id"],
        "api_key_id": spare["api_key_id"],
        "domain_id": domain["domain_id"],
        "draft_id": draft["draft_id"],
    }


def test_generated_requests_get_no_server_error_and_match_the_schema(api: Api) -> None:
    registered = api.register("Fuzz")
    key = registered["api_key"]
    real = _objects(api, key, registered["email"], registered["inbox_id"])
    schema = schemathesis.openapi.from_url(api.server.http_url + "/api/v1/openapi.json")
    schema.config.update(base_url=api.server.http_url)
    headers = {"Authorization": f"Bearer {key}"}
    checks: list[Any] = [not_a_server_error, response_schema_conformance, content_type_conformance]
    # The event stream and the wait hold the request open by design (tests/api/test_stream*.py).
    held = ("/api/v1/events", "/api/v1/inboxes/{inbox_id}/messages/wait")
    operations = [r.ok() for r in schema.get_all_operations() if r.ok().path not in held]
    operations.sort(key=lambda op: op.method.upper() == "DELETE")
    assert len(operations) > 10
    statuses: Counter[int] = Counter()
    for operation in operations:

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(), use_real=st.booleans())
        def run(case: Any, use_real: bool) -> None:
            params = case.path_parameters or {}
            if use_real and params and all(name in real for name in params):
                case.path_parameters = {name: real[name] for name in params}
            response = case.call_and_validate(headers=headers, checks=checks)
            statuses[response.status_code] += 1

        run()
    # The run did reach the routes, authenticated: not only 401s, 404s and 422s.
    assert sum(n for status, n in statuses.items() if status < 300) > len(operations)
    assert statuses[401] == 0
