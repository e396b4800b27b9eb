"""The live event stream (SSE) and the server-side wait, through the real server and SMTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.apiserver import Api, message, start_api


class Sse:
    """An open event stream, read frame by frame (a read waits on the server, not a clock)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.iter_lines()

    def frame(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        for line in self.lines:
            if not line:
                if fields:
                    return fields
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        raise AssertionError("stream ended")

    def event(self) -> dict[str, Any]:
        while True:
            fields = self.frame()
            if "data" in fields:
                payload: dict[str, Any] = json.loads(fields["data"])
                assert fields["event"] == payload["type"]
                payload["seq"] = int(fields["id"])
                return payload


@contextmanager
def stream(api: Api, key: str, **kwargs: Any) -> Iterator[Sse]:
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    with (
        httpx.Client(base_url=api.url, headers=headers, timeout=30) as c,
        c.stream("GET", "/events", **kwargs) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        sse = Sse(response)
        assert sse.frame() == {"retry": "2000"}  # the stream is open: its start is fixed
        yield sse


def test_stream_follows_new_mail_and_resumes_without_gaps(api: Api) -> None:
    owner = api.register("Streamer")
    key, address = owner["api_key"], owner["email"]
    with stream(api, key) as sse:
        api.send(address, message(address, "one", "Your code is 551903\n"))
        first = sse.event()
        assert first["type"] == "message.received"
        assert first["data"]["subject"] == "one" and first["data"]["codes"] == ["551903"]
        api.send(address, message(address, "two"))
        second = sse.event()
        assert second["data"]["subject"] == "two" and second["seq"] > first["seq"]
    # Disconnected: mail keeps coming.
    for n in range(3, 7):
        api.send(address, message(address, f"missed {n}"))
    with stream(api, key, headers={"Last-Event-ID": str(second["seq"])}) as sse:
        replayed = [sse.event() for _ in range(4)]
        assert [e["data"]["subject"] for e in replayed] == [f"missed {n}" for n in range(3, 7)]
        api.send(address, message(address, "live again"))
        assert sse.event()["data"]["subject"] == "live again"
    with stream(api, key, params={"last_event_id": replayed[1]["seq"]}) as sse:
        assert sse.event()["event_id"] == replayed[2]["event_id"]


def test_stream_filters_and_scope(api: Api) -> None:
    owner = api.register("Filtered")
    other = api.register("Neighbour")
    with api.client(owner["api_key"]) as c:
        second = c.post("/inboxes", json={"username": "side"}).json()
        inbox_key = c.post("/api-keys", json={"inbox_id": second["inbox_id"]}).json()["api_key"]
        assert c.get("/events", params={"inbox_id": other["inbox_id"]}).status_code == 404
        assert c.get("/events", params={"type": "message.nope"}).status_code == 422
    with api.client(inbox_key) as c:
        assert c.get("/events", params={"inbox_id": owner["inbox_id"]}).status_code == 404
    with (
        stream(api, owner["api_key"], params={"inbox_id": second["inbox_id"]}) as by_inbox,
        stream(api, owner["api_key"], params={"type": "message.sent,domain"}) as by_type,
        stream(api, inbox_key) as scoped,
        stream(api, other["api_key"]) as neighbour,
    ):
        api.send(owner["email"], message(owner["email"], "first inbox"))
        api.send(second["email"], message(second["email"], "second inbox"))
        api.send(other["email"], message(other["email"], "neighbour's"))
        assert by_inbox.event()["data"]["subject"] == "second inbox"
        assert scoped.event()["data"]["subject"] == "second inbox"
        assert neighbour.event()["data"]["subject"] == "neighbour's"
        # by_type matches none of them; a later matching one proves nothing was skipped wrongly.
        api.send(second["email"], message(second["email"], "after"))
        assert by_inbox.event()["data"]["subject"] == "after"
        assert scoped.event()["data"]["subject"] == "after"
        del by_type


def _wait(api: Api, key: str, inbox_id: str, **params: Any) -> httpx.Response:
    with api.client(key) as c:
        return c.get(f"/inboxes/{inbox_id}/messages/wait", params=params, timeout=60)


def test_wait_gets_the_message_that_arrives(api: Api) -> None:
    owner = api.register("Waiter")
    key, inbox, address = owner["api_key"], owner["inbox_id"], owner["email"]
    api.send(address, message(address, "old news"))
    api.clock.advance(60)  # "after" defaults to now: the old message is older
    with ThreadPoolExecutor(2) as pool:
        waiting: Future[httpx.Response] = pool.submit(
            _wait, api, key, inbox, timeout=30, subject="code"
        )
        api.send(address, message(address, "unrelated"))
        api.send(address, message(address, "Your code", "Code: 774411\n"))
        got = waiting.result(60)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["subject"] == "Your code" and body["codes"] == ["774411"]

    # Nothing new: 204 once the timeout passes.
    api.clock.advance(60)
    assert _wait(api, key, inbox, timeout=0.2, subject="code").status_code == 204
    # With "after": the oldest message after it, at once; stepping by received_at.
    older = _wait(api, key, inbox, timeout=0, after="2026-11-28T08:00:00Z")
    assert older.json()["subject"] == "old news"
    again = _wait(api, key, inbox, timeout=0, after=older.json()["received_at"])
    assert again.json()["subject"] == "unrelated"
    by_sender = _wait(api, key, inbox, timeout=0, after="2026-11-28T08:00:00Z", **{"from": "ALICE"})
    assert by_sender.json()["subject"] == "old news"

    stranger = api.register("Stranger")
    assert _wait(api, stranger["api_key"], inbox, timeout=0).status_code == 404


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_wait_and_stream_see_mail_received_by_another_server(
    tmp_path: Path, database_url: str
) -> None:
    """Two servers on one PostgreSQL: mail received by one reaches a wait and a stream on the
    other (its poll of the event table; no in-process bus in common)."""
    a = Api(*start_api(tmp_path / "a", database_url))
    b_server, b_clock = start_api(tmp_path / "b", database_url)
    b = Api(b_server, b_clock)
    try:
        owner = a.register("Two Nodes")
        key, inbox, address = owner["api_key"], owner["inbox_id"], owner["email"]
        a.clock.advance(60)
        b.clock.advance(60)
        with ThreadPoolExecutor(1) as pool, stream(a, key) as sse:
            waiting = pool.submit(_wait, a, key, inbox, timeout=30)
            b.send(address, message(address, "via node b"))
            assert sse.event()["data"]["subject"] == "via node b"
            assert waiting.result(60).json()["subject"] == "via node b"
    finally:
        b.server.stop()
        a.server.stop()


@pytest.mark.parametrize("ending", ["revoked", "account deleted"])
def test_stream_ends_when_its_key_stops_being_valid(
    tmp_path: Path, database_url: str, ending: str
) -> None:
    server, clock = start_api(tmp_path, database_url, event_stream_keepalive=0.3)
    api = Api(server, clock)
    try:
        owner = api.register("Leaving")
        with api.client(owner["api_key"]) as c:
            made = c.post("/api-keys", json={}).json()
            account_id = c.get("/account").json()["account_id"]
        with stream(api, made["api_key"]) as sse:
            api.send(owner["email"], message(owner["email"], "before"))
            assert sse.event()["data"]["subject"] == "before"
            with api.client(owner["api_key"]) as c:
                if ending == "revoked":
                    gone = c.delete(f"/api-keys/{made['api_key_id']}")
                else:
                    gone = c.delete("/account", params={"confirm": account_id})
                assert gone.status_code == 204, gone.text
            # Nothing more is streamed: the server closes the response.
            assert list(sse.lines) == [": the API key was revoked", ""]
        with api.client(made["api_key"]) as c:
            assert c.get("/events").status_code == 401
    finally:
        server.stop()
