"""No acknowledged send is lost: SIGKILL a real ``mailboxkit serve`` while it is in the middle
of delivering (the relay holds every DATA open), restart it, and every message the API
answered 200 for reaches the relay. Duplicates are allowed (at-least-once: the relay may have
taken a message whose acceptance the killed process never heard); losses are not."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import httpx
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from e2e.test_durability import ServerProcess
from mailserver.outbound.sink import Sink, SinkHandler

from harness import cli, free_port, serve_env

FIRST, SECOND = 8, 8


class GatedHandler(SinkHandler):
    """Holds every DATA reply until the gate opens; ``entered`` says one is held."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = threading.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.entered.set()
        await self.gate.wait()
        return await super().handle_DATA(server, session, envelope)


def tags(data: bytes) -> str:
    for line in data.split(b"\r\n"):
        if line.startswith(b"Subject: durable "):
            return line.removeprefix(b"Subject: durable ").decode()
    raise AssertionError(data[:300])


@pytest.mark.slow
async def test_no_acknowledged_send_is_lost_when_killed_mid_delivery(
    tmp_path: Path, database_url: str
) -> None:
    handler = GatedHandler()
    sink = Sink(handler)
    relay_port = sink.start()
    http = free_port()
    env = serve_env(
        tmp_path / "data",
        database_url,
        http_port=http,
        api_rate_limit=0,
        outbound_transport="smarthost",
        smarthost_host="127.0.0.1",
        smarthost_port=relay_port,
        smarthost_tls="none",
        outbound_lease=2,  # PostgreSQL: a dead node's claims are free after 2 s
        outbound_poll_interval=0.5,
    )
    made = cli(env, "inbox", "create", "bot@example.test", "--json")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    server = ServerProcess(env)
    acked: set[str] = set()
    received: dict[str, int] = {}
    try:
        await server.start()
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{http}/api/v1",
            headers={"Authorization": f"Bearer {created['api_key']}"},
            timeout=30,
        ) as api:

            async def send(tag: str) -> None:
                r = await api.post(
                    f"/inboxes/{created['inbox_id']}/messages/send",
                    json={"to": "alice@remote.test", "subject": f"durable {tag}", "text": tag},
                )
                assert r.status_code == 200, r.text
                acked.add(tag)

            await asyncio.gather(*(send(f"a{n}") for n in range(FIRST)))
            # The server is now inside a DATA the relay holds open: kill it there.
            assert await asyncio.to_thread(handler.entered.wait, 30)
            await server.kill()
            sink.loop.call_soon_threadsafe(handler.gate.set)
            await server.start()
            await asyncio.gather(*(send(f"b{n}") for n in range(SECOND)))
            while set(received) != acked:
                got = await asyncio.to_thread(sink.next, 60)
                received[tags(got.data)] = received.get(tags(got.data), 0) + 1
        assert await server.terminate() == 0
    finally:
        server.ensure_stopped()
        sink.stop()
    assert set(received) == acked
    assert len(acked) == FIRST + SECOND
