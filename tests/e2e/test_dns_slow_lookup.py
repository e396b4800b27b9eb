"""The resolver's lookups never block the event loop: while one SMTP session waits on a DNS
server that answers its sender's domain only after 2 s, other sessions complete whole
transactions. The DNS server is a real UDP server on 127.0.0.1 (dnspython's message API) and the
MX reaches it through MAILBOXKIT_DNS_NAMESERVERS, as in production."""

from __future__ import annotations

import asyncio
import smtplib
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import cast

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from sqlalchemy import select

from mailboxkit.store import models as m

from harness import ServerThread, server_settings

SLOW = "slow.test"
DELAY = 2.0
RECORDS = {
    (SLOW, "TXT"): ['"v=spf1 ip4:127.0.0.1 -all"'],
    (f"_dmarc.{SLOW}", "TXT"): ['"v=DMARC1; p=none"'],
    ("fast.test", "TXT"): ['"v=spf1 ip4:127.0.0.1 -all"'],
    ("_dmarc.fast.test", "TXT"): ['"v=DMARC1; p=none"'],
}


class SlowDns(asyncio.DatagramProtocol):
    """Answers from RECORDS (NXDOMAIN for other names): names under SLOW after DELAY seconds
    and only once the test has released them, every other name at once."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.slow_asked = threading.Event()  # a query for SLOW has arrived
        self.slow_answered = threading.Event()
        self._released = asyncio.Event()
        self._transport: asyncio.DatagramTransport | None = None
        self._closed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    def start(self) -> None:
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(
            self.loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0)),
            self.loop,
        )
        transport, _ = future.result(10)
        self.port = transport.get_extra_info("sockname")[1]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed.set()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        name = query.question[0].name.to_text(omit_final_dot=True).lower()
        slow = name == SLOW or name.endswith("." + SLOW)
        task = self.loop.create_task(self._answer(query, addr, slow=slow))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if slow:
            self.slow_asked.set()

    async def _answer(
        self, query: dns.message.Message, addr: tuple[str, int], *, slow: bool
    ) -> None:
        if slow:
            await asyncio.sleep(DELAY)  # the slow DNS server under test, not a synchronization
            await self._released.wait()
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        response = dns.message.make_response(query)
        values = RECORDS.get((name, rdtype))
        if values:
            response.answer.append(dns.rrset.from_text(question.name, 60, "IN", rdtype, *values))
        elif not any(known == name for known, _ in RECORDS):
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert self._transport is not None
        self._transport.sendto(response.to_wire(), addr)
        if slow:
            self.slow_answered.set()

    def release(self) -> None:
        self.loop.call_soon_threadsafe(self._released.set)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
            await self._closed.wait()


@pytest.fixture
def slow_dns() -> Iterator[SlowDns]:
    server = SlowDns()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(tmp_path: Path, database_url: str, slow_dns: SlowDns) -> Iterator[ServerThread]:
    settings = server_settings(
        tmp_path / "data",
        database_url,
        verify_inbound=True,
        dns_nameservers=f"127.0.0.1:{slow_dns.port}",
        dns_timeout=30,
    )
    running = ServerThread(settings)
    running.app.resolver = None  # the DnsResolver the settings describe, not the harness's fake
    running.start()
    yield running
    running.stop()


def message(sender: str, subject: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: bot@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@x.test>\r\nDate: Fri, 27 Nov 2026 08:00:00 +0000\r\n\r\n"
        "Hello.\r\n"
    ).encode()


def transaction(server: ServerThread, sender: str, subject: str) -> dict[str, tuple[int, bytes]]:
    """One whole SMTP session; returns once the server has answered DATA (with 250)."""
    with smtplib.SMTP(
        "127.0.0.1", server.smtp_port, local_hostname="client.test", timeout=20
    ) as client:
        refused: dict[str, tuple[int, bytes]] = client.sendmail(
            sender, ["bot@example.test"], message(sender, subject)
        )
    return refused


def test_other_sessions_are_served_while_a_lookup_waits(
    server: ServerThread, slow_dns: SlowDns
) -> None:
    server.create_inbox("bot@example.test")
    with ThreadPoolExecutor(1) as pool:
        slow: Future[dict[str, tuple[int, bytes]]] = pool.submit(
            transaction, server, f"alice@{SLOW}", "slow"
        )
        assert slow_dns.slow_asked.wait(30), "the slow session never asked the DNS"
        for n in range(3):  # whole transactions, each in its own session, DNS checks included
            assert transaction(server, "bob@fast.test", f"fast{n}") == {}
            assert not slow.done() and not slow_dns.slow_answered.is_set()
        slow_dns.release()
        assert slow.result(60) == {}
    assert slow_dns.slow_answered.is_set()
    rows = server.query(select(m.messages.c.subject, m.messages.c.auth))
    verdicts = {row.subject: row.auth["spf"]["result"] for row in rows}
    # The slow session really waited for its answer: SPF passed rather than timing out.
    assert verdicts == {"slow": "pass", "fast0": "pass", "fast1": "pass", "fast2": "pass"}
