"""Responsiveness while large messages arrive: IMAP round trips beside 20 MB deliveries.

Usage (from the repository root, with the project's virtualenv)::

    .venv/bin/python bench/big_messages.py --quick   # 4 large messages, about 30 s
    .venv/bin/python bench/big_messages.py           # 12 large messages

What runs: ``python -m mailboxkit.cli serve`` in its own process (fresh SQLite data dir, full
durability, inbound checks off), with the MX and IMAP listeners on. This process keeps one IMAP
connection busy with ``NOOP`` round trips, one after another, first while nothing else happens
(the baseline), then while ``--sessions`` SMTP sessions deliver ``--messages`` messages of
``--size-mb`` MB (a text part and a binary attachment, base64: what a PDF or a photo looks like).
It prints the round trips' p50, p99 and max in both phases and their ratio, the large messages'
rate, and the server's CPU.

A server that parses or copies a large message on its event loop answers nobody else meanwhile:
every IMAP, SMTP and HTTP client waits for it. Target: the loaded p99 stays within a few tens of
milliseconds (not the hundreds a blocked event loop gives).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import tempfile
import time
from pathlib import Path

import psutil
from common import Serving, free_port, ours_env, percentile, run_cli, tree_cpu_time

INBOX = "bench@example.test"


def big_message(size_mb: float, n: int) -> bytes:
    attachment = base64.encodebytes(os.urandom(int(size_mb * 2**20 * 0.7))).replace(b"\n", b"\r\n")
    text = b"A long report follows, with the data attached.\r\n" * 2000
    return (
        (
            f"From: Reports <reports@sender.test>\r\nTo: {INBOX}\r\nSubject: report {n}\r\n"
            f"Message-ID: <report-{n}@sender.test>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        ).encode()
        + text
        + (
            b"--b\r\nContent-Type: application/octet-stream\r\n"
            b'Content-Disposition: attachment; filename="data.bin"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n"
        )
        + attachment
        + b"--b--\r\n"
    )


async def imap_noops(port: int, stop: asyncio.Event) -> list[float]:
    """NOOP round trips in milliseconds, one after another, until ``stop``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    times: list[float] = []
    n = 0
    while not stop.is_set():
        n += 1
        start = time.perf_counter()
        writer.write(b"a%d NOOP\r\n" % n)
        await writer.drain()
        while not (await reader.readline()).startswith(b"a%d " % n):
            pass
        times.append((time.perf_counter() - start) * 1000)
    writer.write(b"z LOGOUT\r\n")
    writer.close()
    return times


async def smtp_sender(port: int, jobs: asyncio.Queue[bytes | None]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        while (line := await reader.readline())[3:4] == b"-":
            pass
        return line

    await reply()
    writer.write(b"EHLO bench.test\r\n")
    await reply()
    accepted = 0
    while (body := await jobs.get()) is not None:
        writer.write(f"MAIL FROM:<reports@sender.test>\r\nRCPT TO:<{INBOX}>\r\nDATA\r\n".encode())
        for _ in range(3):
            await reply()
        writer.write(body + b".\r\n")
        await writer.drain()
        accepted += (await reply()).startswith(b"250")
    writer.write(b"QUIT\r\n")
    writer.close()
    return accepted


def summary(times: list[float]) -> str:
    return (
        f"{len(times):>7} {percentile(times, 50):>8.2f} {percentile(times, 99):>8.2f}"
        f" {max(times):>8.2f}"
    )


async def measure(
    server: Serving, smtp_port: int, imap_port: int, bodies: list[bytes], args: argparse.Namespace
) -> tuple[list[float], list[float], int, float, float]:
    """NOOP round trips idle and while ``bodies`` are sent; the messages accepted, the seconds
    they took and the server's CPU seconds meanwhile."""
    stop = asyncio.Event()
    idle_task = asyncio.create_task(imap_noops(imap_port, stop))
    await asyncio.sleep(args.baseline_seconds)  # the baseline's length, not a synchronization
    stop.set()
    idle = await idle_task

    jobs: asyncio.Queue[bytes | None] = asyncio.Queue()
    for body in bodies:
        jobs.put_nowait(body)
    for _ in range(args.sessions):
        jobs.put_nowait(None)
    proc = psutil.Process(server.proc.pid)
    cpu_before = tree_cpu_time(proc)
    stop = asyncio.Event()
    loaded_task = asyncio.create_task(imap_noops(imap_port, stop))
    start = time.perf_counter()
    senders = [smtp_sender(smtp_port, jobs) for _ in range(args.sessions)]
    accepted = sum(await asyncio.gather(*senders))
    elapsed = time.perf_counter() - start
    stop.set()
    loaded = await loaded_task
    return idle, loaded, accepted, elapsed, tree_cpu_time(proc) - cpu_before


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 large messages")
    parser.add_argument("--messages", type=int, default=12)
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--size-mb", type=float, default=20.0)
    parser.add_argument("--baseline-seconds", type=float, default=3.0)
    args = parser.parse_args()
    if args.quick:
        args.messages = min(args.messages, 4)
    data = Path(tempfile.mkdtemp(prefix="mbk-bench-big-"))
    smtp_port, imap_port = free_port(), free_port()
    env = ours_env(
        data,
        "",  # SQLite in the data dir
        None,
        MAILBOXKIT_SMTP_PORT=str(smtp_port),
        MAILBOXKIT_IMAP_PORT=str(imap_port),
        MAILBOXKIT_VERIFY_INBOUND="false",
        MAILBOXKIT_LOG_LEVEL="INFO",  # "event=started" says it is up
    )
    bodies = [big_message(args.size_mb, n) for n in range(args.messages)]
    try:
        await run_cli(env, "migrate")
        await run_cli(env, "inbox", "create", INBOX)
        server = await Serving.start(env)
        try:
            idle, loaded, accepted, elapsed, cpu = await measure(
                server, smtp_port, imap_port, bodies, args
            )
        finally:
            await server.stop()
    finally:
        shutil.rmtree(data, ignore_errors=True)
    size = sum(map(len, bodies)) / len(bodies) / 2**20
    print("MailboxKit: IMAP NOOP round trips while large messages arrive (SQLite)")
    print(f"  {args.messages} messages of {size:.1f} MB over {args.sessions} SMTP sessions")
    print(f"{'phase':<28}{'trips':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    print(f"{'idle':<28}{summary(idle)}")
    print(f"{'while large messages arrive':<28}{summary(loaded)}")
    print(f"p99 ratio loaded/idle: {percentile(loaded, 99) / percentile(idle, 99):.1f}")
    print(
        f"large messages: {accepted}/{args.messages} accepted, {accepted / elapsed:.2f} msg/s,"
        f" {size * accepted / elapsed:.1f} MB/s; server CPU {cpu / max(accepted, 1):.2f} s/msg"
    )


if __name__ == "__main__":
    asyncio.run(main())
