"""The MCP server at /mcp, through the whole server on loopback and the MCP SDK's client over
streamable HTTP: its tools are the API's routes, with the API's keys, scoping and errors."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent

from api.apiserver import Api, message, start_api
from mailboxkit.dns.resolver import FakeResolver

from harness import cli, free_port, serve_env

TOOLS = {
    "list_inboxes",
    "create_inbox",
    "list_messages",
    "get_message",
    "wait_for_message",
    "update_message",
    "get_attachment",
    "list_threads",
    "get_thread",
    "send_message",
    "reply_to_message",
    "reply_all",
    "forward_message",
}


@pytest.fixture
def api(tmp_path: Path, database_url: str) -> Iterator[Api]:
    """The server, checking SPF, DKIM and DMARC of inbound mail (the tests send from
    127.0.0.1, which sender.test's SPF record authorizes)."""
    records = {"sender.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]}}
    server, clock = start_api(
        tmp_path, database_url, resolver=FakeResolver(records), verify_inbound=True
    )
    yield Api(server, clock)
    server.stop()


@asynccontextmanager
async def connect(
    api: Api | str, key: str, mode: str = "auto", sent: list[str] | None = None
) -> AsyncIterator[Client]:
    """An MCP client of the server (or of the one at an HTTP base URL), with ``key``; the
    method of each request it sends is appended to ``sent``."""
    url = api if isinstance(api, str) else api.server.http_url
    headers = {"Authorization": f"Bearer {key}"}

    async def note(request: httpx2.Request) -> None:
        if sent is not None:
            sent.append(request.method)

    async with (
        httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(30, read=120),
            event_hooks={"request": [note]},
        ) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http), mode=mode) as client,
    ):
        yield client


def _text(result: CallToolResult) -> str:
    [content] = result.content
    assert isinstance(content, TextContent)
    return content.text


def ok(result: CallToolResult) -> dict[str, Any]:
    """The JSON of a successful tool result."""
    assert not result.is_error, result.content
    data: dict[str, Any] = json.loads(_text(result))
    assert result.structured_content == data
    return data


def failed(result: CallToolResult) -> str:
    """The text of a tool error."""
    assert result.is_error, result.content
    return _text(result)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_tools_are_listed_and_answer(api: Api, mode: str) -> None:
    owner = api.register("Lister")
    async with connect(api, owner["api_key"], mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        inboxes = ok(await client.call_tool("list_inboxes", {}))
    assert set(tools) == TOOLS
    send = tools["send_message"]
    assert send.description and "queues" in send.description
    assert send.input_schema["required"] == ["inbox_id"]
    assert {"to", "subject", "text", "attachments", "idempotency_key"} <= set(
        send.input_schema["properties"]
    )
    assert tools["get_message"].annotations is not None
    assert tools["get_message"].annotations.read_only_hint is True
    assert [i["inbox_id"] for i in inboxes["inboxes"]] == [owner["inbox_id"]]


async def test_send_reaches_a_local_inbox_and_the_reply_threads(api: Api) -> None:
    owner = api.register("Sender")
    key, inbox = owner["api_key"], owner["inbox_id"]
    async with connect(api, key) as client:
        peer = ok(await client.call_tool("create_inbox", {"username": "peer"}))
        body = {"inbox_id": inbox, "to": peer["email"], "subject": "Ping", "text": "ping"}
        sent = ok(await client.call_tool("send_message", {**body, "idempotency_key": "k-1"}))
        again = ok(await client.call_tool("send_message", {**body, "idempotency_key": "k-1"}))
        changed = await client.call_tool(
            "send_message", {**body, "text": "pong", "idempotency_key": "k-1"}
        )
        received = ok(await client.call_tool("wait_for_message", {"inbox_id": peer["inbox_id"]}))
        got = ok(
            await client.call_tool(
                "get_message",
                {"inbox_id": peer["inbox_id"], "message_id": received["message_id"]},
            )
        )
        answer = ok(
            await client.call_tool(
                "reply_to_message",
                {"inbox_id": peer["inbox_id"], "message_id": got["message_id"], "text": "pong"},
            )
        )
        back = ok(await client.call_tool("wait_for_message", {"inbox_id": inbox}))
        thread = ok(await client.call_tool("get_thread", {"thread_id": back["thread_id"]}))
        read = ok(
            await client.call_tool(
                "update_message",
                {
                    "inbox_id": inbox,
                    "message_id": back["message_id"],
                    "read": True,
                    "add_labels": ["answered"],
                },
            )
        )
        inbound = ok(
            await client.call_tool("list_messages", {"inbox_id": inbox, "direction": "inbound"})
        )
    assert again == sent  # the API's idempotency: sent once
    assert failed(changed).startswith("conflict: ")
    assert received["subject"] == "Ping" and received["from"]["email"] == owner["email"]
    assert received["extracted_text"] == "ping"
    with api.client(key) as c:
        over_http = c.get(f"/inboxes/{peer['inbox_id']}/messages/{received['message_id']}")
        listed = c.get(f"/inboxes/{peer['inbox_id']}/messages").json()["messages"]
    assert [m["subject"] for m in listed] == ["Re: Ping", "Ping"]  # the reply's Sent copy
    assert got == over_http.json()  # the same message, whichever way it is read
    assert answer["thread_id"] == got["thread_id"]
    assert back["subject"] == "Re: Ping"
    assert back["in_reply_to"] == got["internet_message_id"]
    assert back["thread_id"] == sent["thread_id"]  # with the Sent copy of the first
    assert [m["subject"] for m in thread["messages"]] == ["Ping", "Re: Ping"]
    assert read["read"] is True and read["labels"] == ["answered"]
    assert [m["message_id"] for m in inbound["messages"]] == [back["message_id"]]


async def test_wait_returns_the_mail_that_arrives_over_smtp(api: Api) -> None:
    owner = api.register("Waiter")
    key, inbox, address = owner["api_key"], owner["inbox_id"], owner["email"]
    api.send(address, message(address, "old news"))
    api.clock.advance(60)  # "after" defaults to now: the old message is older
    code = message(address, "Your code", "Code: 774411\n", attachment=("terms.bin", b"\x00terms"))
    async with connect(api, key, "legacy") as client:
        waiting = asyncio.create_task(
            client.call_tool(
                "wait_for_message", {"inbox_id": inbox, "subject": "code", "timeout": 30}
            )
        )
        await asyncio.to_thread(api.send, address, message(address, "unrelated"))
        await asyncio.to_thread(api.send, address, code)
        got = ok(await waiting)
        api.clock.advance(60)
        nothing = await client.call_tool("wait_for_message", {"inbox_id": inbox, "timeout": 0.2})
    assert got["subject"] == "Your code" and got["codes"] == ["774411"]
    assert got["auth"]["spf"]["result"] == "pass"
    [attachment] = got["attachments"]
    assert attachment["filename"] == "terms.bin"
    download = httpx.get(attachment["download_url"])  # no key needed
    assert download.status_code == 200 and download.content == b"\x00terms"
    assert not nothing.is_error and _text(nothing) == "No message arrived within the timeout."


async def test_another_accounts_ids_are_not_found(api: Api) -> None:
    alice, mallory = api.register("Alice"), api.register("Mallory")
    api.send(alice["email"], message(alice["email"], "Secret plans", "the vault code\n"))
    with api.client(alice["api_key"]) as c:
        [secret] = c.get(f"/inboxes/{alice['inbox_id']}/messages").json()["messages"]
    theirs = {"inbox_id": alice["inbox_id"]}
    own_inbox = {"inbox_id": mallory["inbox_id"], "message_id": secret["message_id"]}
    calls: list[tuple[str, dict[str, Any]]] = [
        ("get_message", {**theirs, "message_id": secret["message_id"]}),
        ("get_message", own_inbox),
        ("list_messages", theirs),
        ("list_threads", theirs),
        ("get_thread", {"thread_id": secret["thread_id"]}),
        ("wait_for_message", {**theirs, "timeout": 0}),
        ("update_message", {**theirs, "message_id": secret["message_id"], "read": True}),
        ("send_message", {**theirs, "to": "x@example.org", "text": "hi"}),
        ("reply_to_message", {**theirs, "message_id": secret["message_id"], "text": "hi"}),
        ("forward_message", {**own_inbox, "to": "x@example.org"}),
    ]
    async with connect(api, mallory["api_key"]) as client:
        answers = [(name, await client.call_tool(name, args)) for name, args in calls]
        inboxes = ok(await client.call_tool("list_inboxes", {}))
    for name, result in answers:
        text = failed(result)
        assert text.startswith("not_found: "), (name, text)
        assert "Secret" not in text and "vault" not in text
    assert [i["inbox_id"] for i in inboxes["inboxes"]] == [mallory["inbox_id"]]
    with api.client(alice["api_key"]) as c:
        still = c.get(f"/inboxes/{alice['inbox_id']}/messages/{secret['message_id']}").json()
    assert still["read"] is False


async def test_missing_or_wrong_key_is_401_before_mcp(api: Api) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }
    accept = {"Accept": "application/json, text/event-stream"}
    url = f"{api.server.http_url}/mcp"
    with httpx.Client() as http:
        missing = http.post(url, json=initialize, headers=accept)
        wrong = http.post(
            url, json=initialize, headers={**accept, "Authorization": "Bearer mbk_wrong"}
        )
    owner = api.register("Streamless")
    with httpx.Client(headers={"Authorization": f"Bearer {owner['api_key']}"}) as http:
        stream = http.get(url, headers={"Accept": "text/event-stream"})
    assert stream.status_code == 405  # stateless: no stream of server messages to open
    for answer in (missing, wrong):
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert answer.json()["error"]["code"] == "unauthorized"
    # The SDK's client reports the refusal as an error response, and gets no further.
    with pytest.RaisesGroup(MCPError, flatten_subgroups=True):
        async with connect(api, "mbk_wrong") as client:
            await client.list_tools()


async def test_each_mcp_request_counts_once_for_the_keys_usage(api: Api) -> None:
    """A tool call is the /mcp request's work: the route it calls in-process is not counted
    a second time against the key's rate limit and the account's usage."""
    owner = api.register("Counted")
    key, inbox = owner["api_key"], owner["inbox_id"]

    def api_requests() -> int:  # this request counted too
        with api.client(key) as c:
            counted: int = c.get("/usage").json()["api_requests"]
        return counted

    before = api_requests()
    sent: list[str] = []
    async with connect(api, key, sent=sent) as client:
        for _ in range(3):
            ok(await client.call_tool("list_inboxes", {}))
        ok(await client.call_tool("list_messages", {"inbox_id": inbox}))
    assert api_requests() - before == len(sent) + 1
    assert sent.count("POST") >= 4


async def test_errors_are_the_apis(api: Api) -> None:
    owner = api.register("Careless")
    key, inbox = owner["api_key"], owner["inbox_id"]
    with api.client(key) as c:
        scoped = c.post("/api-keys", json={"name": "one inbox", "inbox_id": inbox}).json()
    async with connect(api, key) as client:
        bad_address = await client.call_tool(
            "send_message", {"inbox_id": inbox, "to": "not-an-address", "text": "x"}
        )
        unknown = await client.call_tool(
            "send_message", {"inbox_id": inbox, "to": "a@example.org", "colour": "red"}
        )
        bad_key = await client.call_tool(
            "send_message",
            {"inbox_id": inbox, "to": "a@example.org", "idempotency_key": "clé à moi"},
        )
        bad_id = await client.call_tool(
            "get_message", {"inbox_id": f"{inbox}/messages", "message_id": "x"}
        )
        listed = ok(await client.call_tool("list_messages", {"inbox_id": inbox}))
    async with connect(api, scoped["api_key"]) as client:
        forbidden = await client.call_tool("create_inbox", {"username": "more"})
    text = failed(bad_address)
    assert text.startswith("validation_error: ") and "body.to" in text
    assert bad_address.structured_content is not None
    assert bad_address.structured_content["error"]["code"] == "validation_error"
    assert failed(unknown).startswith("validation_error: ") and "body.colour" in failed(unknown)
    assert failed(bad_key).startswith("validation_error: ") and "Idempotency-Key" in failed(bad_key)
    assert failed(bad_id).startswith("validation_error: ")
    assert listed["messages"] == []  # nothing was sent
    assert failed(forbidden).startswith("forbidden: ")


async def test_sigterm_stops_the_server_cleanly_after_mcp_use(
    tmp_path: Path, database_url: str
) -> None:
    http_port = free_port()
    env = serve_env(tmp_path / "data", database_url, smtp_port=free_port(), http_port=http_port)
    created = cli(env, "inbox", "create", "bot@example.test", "--json")
    assert created.returncode == 0, created.stderr
    bot = json.loads(created.stdout)
    serving = subprocess.Popen(
        [sys.executable, "-m", "mailboxkit.cli", "serve"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serving.stderr is not None
        for line in serving.stderr:  # the server says when every listener is up
            if "event=started" in line:
                break
        async with connect(f"http://127.0.0.1:{http_port}", bot["api_key"]) as client:
            listed = ok(await client.call_tool("list_inboxes", {}))
            waited = await client.call_tool(
                "wait_for_message", {"inbox_id": bot["inbox_id"], "timeout": 0.1}
            )
        serving.send_signal(signal.SIGTERM)
        assert serving.wait(timeout=30) == 0
        log = serving.stderr.read()
    finally:
        if serving.poll() is None:
            serving.kill()
        serving.wait()
        if serving.stderr is not None:
            serving.stderr.close()
    assert [i["email"] for i in listed["inboxes"]] == ["bot@example.test"]
    assert not waited.is_error
    assert "event=stopped" in log
    assert "Traceback" not in log and "Task was destroyed" not in log


def test_the_server_loads_the_mcp_sdk_and_stripe_only_when_used() -> None:
    """Importing them is about half a second of every server start and CLI command: the MCP
    SDK comes with the first /mcp request (the tests above), stripe with billing on."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, mailboxkit.app, mailboxkit.cli; "
            "print(sorted({'mcp', 'mcp_types', 'stripe'} & set(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"
