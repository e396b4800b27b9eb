"""Outbound benchmark: API send → acceptance by a local aiosmtpd sink, beside aiosmtplib
sending the same messages straight to the sink, measured in the same run.

Usage (from the repository root, with the project's virtualenv)::

    .venv/bin/python bench/outbound.py              # 2,000 messages, 10 concurrent senders
    .venv/bin/python bench/outbound.py --quick      # 300 messages
    .venv/bin/python bench/outbound.py --postgres-url postgresql://postgres@127.0.0.1/test

What runs, each in its own process:

- the sink: a bare aiosmtpd ``SMTP`` server that accepts every message and prints one line per
  accepted message (``bench/outbound.py --sink PORT``);
- ours: ``python -m mailboxkit.cli serve`` on a fresh data dir (SQLite, or a fresh PostgreSQL
  database beside ``--postgres-url``), outbound transport ``smarthost`` pointed at the sink
  (no TLS), full durability, DKIM signing (RSA and Ed25519) of every message;
- this process: the API clients (httpx, ``--concurrency`` at once) and, for the baseline, as
  many aiosmtplib connections sending the same composed messages to the sink in a loop.

Ours is timed from the first API request to the sink's last acceptance (so it includes
composing, signing, the durable queue commit, the worker's claim, delivery and settling); the
baseline from its first to its last message. Each side runs ``--repeats`` times, alternately,
and the medians are compared. The target is a ratio ours/baseline of at least 0.5.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import psutil
from common import (
    Serving,
    drop_database,
    free_port,
    make_database,
    ours_env,
    run_cli,
    tree_cpu_time,
)

BODY = ("All work and no play makes an agent a dull bot. " * 84)[:4000]


# --- the sink process -----------------------------------------------------------------------


async def _sink(port: int) -> None:
    from aiosmtpd.smtp import SMTP

    class Handler:
        count = 0

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            Handler.count += 1
            sys.stdout.write(f"{Handler.count}\n")
            sys.stdout.flush()
            return "250 2.0.0 OK"

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(Handler(), decode_data=False, hostname="sink.test"), "127.0.0.1", port
    )
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


class SinkProcess:
    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None
        self.accepted = 0
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--sink", str(self.port), stdout=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None
        assert (await self.proc.stdout.readline()).strip() == b"ready"
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.accepted = int(line)
            self._changed.set()

    async def until(self, count: int, timeout: float = 600) -> None:
        async with asyncio.timeout(timeout):
            while self.accepted < count:
                self._changed.clear()
                await self._changed.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()


# --- the two senders ------------------------------------------------------------------------


def composed(n: int) -> bytes:
    """What the baseline sends: a message like the one the API composes."""
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = "bot@example.test"
    msg["To"] = "alice@remote.test"
    msg["Subject"] = f"bench {n}"
    msg["Message-ID"] = f"<{uuid.uuid4()}@example.test>"
    msg.set_content(BODY)
    return msg.as_bytes()


async def baseline(port: int, count: int, concurrency: int, sink: SinkProcess) -> float:
    messages = [composed(n) for n in range(count)]
    start_count = sink.accepted
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for message in messages:
        queue.put_nowait(message)

    async def loop() -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as smtp:
            while not queue.empty():
                message = queue.get_nowait()
                await smtp.sendmail("bot@example.test", ["alice@remote.test"], message)

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    await sink.until(start_count + count)
    return count / (time.perf_counter() - started)


async def ours(
    server: Serving,
    http: int,
    inbox: dict[str, Any],
    count: int,
    concurrency: int,
    sink: SinkProcess,
) -> float:
    start_count = sink.accepted
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{http}/api/v1",
        headers={"Authorization": f"Bearer {inbox['api_key']}"},
        timeout=60,
        limits=limits,
    ) as api:

        async def loop() -> None:
            while not queue.empty():
                n = queue.get_nowait()
                r = await api.post(
                    f"/inboxes/{inbox['inbox_id']}/messages/send",
                    json={"to": "alice@remote.test", "subject": f"bench {n}", "text": BODY},
                )
                if r.status_code != 200:
                    raise RuntimeError(f"send failed: {r.status_code} {r.text}")

        proc = psutil.Process(server.proc.pid)
        cpu = tree_cpu_time(proc)
        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        await sink.until(start_count + count)
        elapsed = time.perf_counter() - started
        used = tree_cpu_time(proc) - cpu
        print(f"    server CPU {used / elapsed:.0%} of one core, {1000 * used / count:.1f} ms/msg")
        return count / elapsed


def signing_cost(samples: int = 200) -> float:
    """CPU milliseconds our DKIM signing (RSA-2048 and Ed25519, the server's own code) takes
    for one message, measured in this process."""
    from datetime import UTC, datetime

    from mailboxkit.dns.dkimkeys import DkimAlgorithm, DkimKey, generate_key
    from mailboxkit.dns.signing import prepare_key, sign_message

    keys = []
    for algorithm in DkimAlgorithm:
        made = generate_key(algorithm)
        stored = DkimKey(
            "k", "example.test", f"s-{algorithm.value}", algorithm, made.public_txt,
            datetime.now(UTC), True, made.private_key,
        )  # fmt: skip
        keys.append(prepare_key(stored))
    message = composed(0).replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")
    started = time.process_time()
    for _ in range(samples):
        sign_message(message, "example.test", keys)
    return 1000 * (time.process_time() - started) / samples


# --- the run --------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    sink = SinkProcess(free_port())
    await sink.start()
    data = Path(tempfile.mkdtemp(prefix="mbk-bench-"))
    database_url, pg_name = "", ""
    if args.postgres_url:
        database_url, pg_name = await make_database(args.postgres_url)
    http = free_port()
    env = ours_env(
        data,
        database_url,
        None,
        MAILBOXKIT_HTTP_PORT=str(http),
        MAILBOXKIT_API_RATE_LIMIT="0",
        MAILBOXKIT_OUTBOUND_TRANSPORT="smarthost",
        MAILBOXKIT_SMARTHOST_HOST="127.0.0.1",
        MAILBOXKIT_SMARTHOST_PORT=str(sink.port),
        MAILBOXKIT_SMARTHOST_TLS="none",
        MAILBOXKIT_LOG_LEVEL="INFO",  # "event=started" says it is up
    )
    server: Serving | None = None
    try:
        inbox = json.loads(await run_cli(env, "inbox", "create", "bot@example.test", "--json"))
        server = await Serving.start(env)
        print(
            f"outbound bench: {args.messages} messages of {len(BODY)} B text, "
            f"{args.concurrency} concurrent senders, "
            f"{'PostgreSQL' if database_url else 'SQLite'}, {os.cpu_count()} CPUs"
        )
        await ours(server, http, inbox, min(100, args.messages), args.concurrency, sink)  # warm-up
        await baseline(sink.port, min(100, args.messages), args.concurrency, sink)
        ours_rates, base_rates = [], []
        for _ in range(args.repeats):
            rate = await ours(server, http, inbox, args.messages, args.concurrency, sink)
            ours_rates.append(rate)
            base_rates.append(await baseline(sink.port, args.messages, args.concurrency, sink))
        o, b = statistics.median(ours_rates), statistics.median(base_rates)
        print(f"  ours (API send → sink accepted, DKIM-signed):  {o:8.1f} msg/s")
        print(f"  baseline (aiosmtplib → sink):                   {b:8.1f} msg/s")
        print(f"  ratio ours/baseline: {o / b:.2f}  (target ≥ 0.5)")
        cost, cores = signing_cost(), os.cpu_count() or 1
        print(
            f"  DKIM signing alone: {cost:.2f} ms CPU/msg, so {cores} cores sign at most"
            f" {1000 * cores / cost:.0f} msg/s, a ratio of {1000 * cores / cost / b:.2f}, before"
            " anything else the send path, the HTTP clients and the sink need"
        )
    finally:
        if server is not None:
            await server.stop()
        await sink.stop()
        shutil.rmtree(data, ignore_errors=True)
        if pg_name:
            with contextlib.suppress(Exception):
                await drop_database(args.postgres_url, pg_name)


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--postgres-url", default="")
    parser.add_argument("--quick", action="store_true", help="300 messages, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.repeats = 300, 1
    return args


if __name__ == "__main__":
    arguments = _args()
    if arguments.sink:
        asyncio.run(_sink(arguments.sink))
    else:
        asyncio.run(main(arguments))
