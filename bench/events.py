"""Event latency: from the SMTP ``250`` to the webhook received and to the SSE event.

Usage (from the repository root, with the project's virtualenv)::

    .venv/bin/python bench/events.py --quick                 # 500 messages per database
    .venv/bin/python bench/events.py                         # 5,000 messages at 50 msg/s
    .venv/bin/python bench/events.py --databases postgresql --messages 2000 --rate 100

What runs: ``python -m mailboxkit.cli serve`` in its own process on a fresh data dir (SQLite) or
a fresh PostgreSQL database (made beside ``--postgres-url``, dropped afterwards), with full
durability. This process hosts the webhook receiver (uvicorn on 127.0.0.1), one SSE client on
``GET /api/v1/events`` and the SMTP load: ``--sessions`` sessions take messages from a paced
queue (``--rate`` messages/s, each with a unique subject) and note the moment each ``250``
arrives. A message's latency is the time from its ``250`` to its webhook request reaching the
receiver, and to its SSE event being read, all measured on this process's monotonic clock. The
event is published before the session answers, so a latency can be slightly negative.

Targets (PostgreSQL, webhooks): p50 < 50 ms, p99 < 250 ms at 50 msg/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from common import (
    DEFAULT_PG_URL,
    Serving,
    drop_database,
    free_port,
    make_database,
    ours_env,
    percentile,
    run_cli,
)

INBOX = "bench@example.test"


class Arrivals:
    """When each message's 250, webhook and SSE event were seen (monotonic seconds)."""

    def __init__(self) -> None:
        self.acked: dict[str, float] = {}
        self.webhook: dict[str, float] = {}
        self.sse: dict[str, float] = {}
        self.done = asyncio.Event()
        self.expected = 0

    def saw(self, where: dict[str, float], subject: str) -> None:
        where.setdefault(subject, time.perf_counter())
        if len(self.webhook) >= self.expected and len(self.sse) >= self.expected:
            self.done.set()


def receiver_app(arrivals: Arrivals) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        with contextlib.suppress(ValueError, KeyError):
            arrivals.saw(arrivals.webhook, json.loads(body)["data"]["subject"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


async def follow_sse(base: str, key: str, arrivals: Arrivals, ready: asyncio.Event) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx.AsyncClient(timeout=None) as client,
        client.stream("GET", f"{base}/api/v1/events", headers=headers) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("retry:"):
                ready.set()
            elif line.startswith("data:"):
                subject = json.loads(line[5:])["data"]["subject"]
                arrivals.saw(arrivals.sse, subject)


async def smtp_session(port: int, jobs: asyncio.Queue[str | None], arrivals: Arrivals) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if line[3:4] != b"-":
                return line

    await reply()
    writer.write(b"EHLO bench.test\r\n")
    await writer.drain()
    await reply()
    body = ("x" * 70 + "\r\n") * 20
    while (subject := await jobs.get()) is not None:
        writer.write(f"MAIL FROM:<load@sender.test>\r\nRCPT TO:<{INBOX}>\r\nDATA\r\n".encode())
        await writer.drain()
        for _ in range(3):
            await reply()
        writer.write(
            f"From: load@sender.test\r\nTo: {INBOX}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@sender.test>\r\n\r\n{body}.\r\n".encode()
        )
        await writer.drain()
        line = await reply()
        if line.startswith(b"250"):
            arrivals.acked[subject] = time.perf_counter()
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()


async def measure(database: str, args: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="mbk-bench-events-"))
    dropped: tuple[str, str] | None = None
    url = ""
    if database == "postgresql":
        url, name = await make_database(args.postgres_url)
        dropped = (args.postgres_url, name)
    smtp_port, http_port = free_port(), free_port()
    env = ours_env(
        data,
        url,
        None,
        MAILBOXKIT_SMTP_PORT=str(smtp_port),
        MAILBOXKIT_HTTP_PORT=str(http_port),
        MAILBOXKIT_VERIFY_INBOUND="false",
        MAILBOXKIT_API_RATE_LIMIT="0",
        MAILBOXKIT_LOG_LEVEL="INFO",  # "event=started" says it is up
        MAILBOXKIT_WEBHOOK_ALLOW_PRIVATE_TARGETS="true",
    )
    await run_cli(env, "migrate")
    key = json.loads(await run_cli(env, "inbox", "create", INBOX, "--json"))["api_key"]
    server = await Serving.start(env)
    arrivals = Arrivals()
    arrivals.expected = args.messages
    hook_port = free_port()
    receiver = uvicorn.Server(
        uvicorn.Config(
            receiver_app(arrivals),
            host="127.0.0.1",
            port=hook_port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    receiver_task = asyncio.create_task(receiver.serve())
    base = f"http://127.0.0.1:{http_port}"
    try:
        while not receiver.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient() as client:
            r = await client.post(
                f"{base}/api/v1/webhooks",
                json={"url": f"http://127.0.0.1:{hook_port}/hook", "events": ["message.received"]},
                headers={"Authorization": f"Bearer {key}"},
            )
            r.raise_for_status()
        ready = asyncio.Event()
        sse_task = asyncio.create_task(follow_sse(base, key, arrivals, ready))
        await asyncio.wait_for(ready.wait(), 10)

        jobs: asyncio.Queue[str | None] = asyncio.Queue()
        sessions = [
            asyncio.create_task(smtp_session(smtp_port, jobs, arrivals))
            for _ in range(args.sessions)
        ]
        start = time.perf_counter()
        for n in range(args.messages):
            due = start + n / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            jobs.put_nowait(f"bench-{n:06d}")
        for _ in sessions:
            jobs.put_nowait(None)
        await asyncio.gather(*sessions)
        sent_for = time.perf_counter() - start
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrivals.done.wait(), 60)
        sse_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await sse_task
    finally:
        receiver.should_exit = True
        await receiver_task
        await server.stop()
        if dropped is not None:
            await drop_database(*dropped)
    result: dict[str, Any] = {
        "database": database,
        "messages": args.messages,
        "acked": len(arrivals.acked),
        "rate": len(arrivals.acked) / sent_for,
    }
    for where, seen in (("webhook", arrivals.webhook), ("sse", arrivals.sse)):
        lat = [(seen[s] - t) * 1000 for s, t in arrivals.acked.items() if s in seen]
        result[where] = {
            "received": len(lat),
            "p50": percentile(lat, 50) if lat else None,
            "p90": percentile(lat, 90) if lat else None,
            "p99": percentile(lat, 99) if lat else None,
            "max": max(lat) if lat else None,
            "mean": statistics.fmean(lat) if lat else None,
        }
    return result


def report(results: list[dict[str, Any]]) -> None:
    print(f"{'database':<11}{'path':<9}{'received':>10}{'p50 ms':>9}{'p90 ms':>9}"
          f"{'p99 ms':>9}{'max ms':>9}   at msg/s")  # fmt: skip
    for r in results:
        for where in ("webhook", "sse"):
            w = r[where]
            cells = [f"{w[k]:>9.1f}" if w[k] is not None else f"{'-':>9}" for k in
                     ("p50", "p90", "p99", "max")]  # fmt: skip
            print(
                f"{r['database']:<11}{where:<9}{w['received']:>5}/{r['acked']:<4}"
                f"{''.join(cells)}   {r['rate']:.1f}"
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 messages per database")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=50.0, help="messages per second")
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--postgres-url", default=DEFAULT_PG_URL)
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()
    if args.quick:
        args.messages = min(args.messages, 500)
    results = [await measure(db, args) for db in args.databases.split(",") if db]
    report(results)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
