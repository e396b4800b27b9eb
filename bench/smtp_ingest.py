"""SMTP MX ingest benchmark: MailboxKit beside a bare aiosmtpd sink, measured in the same run.

Usage (from the repository root, with the project's virtualenv)::

    .venv/bin/python bench/smtp_ingest.py            # full run, about 7-10 minutes
    .venv/bin/python bench/smtp_ingest.py --quick    # smoke run, under 2 minutes

What runs, each in its own process:

- ours: ``python -m mailboxkit.cli serve`` on a fresh data dir (SQLite) or a fresh PostgreSQL
  database, with full durability (SQLite WAL + synchronous=FULL, fsynced blobs; PostgreSQL as
  configured, its fsync/synchronous_commit settings are printed).
- the sink: a bare aiosmtpd ``SMTP`` server (same aiosmtpd, class defaults) whose ``handle_DATA``
  returns ``250 OK`` and discards the message (``bench/smtp_ingest.py --sink PORT``).
- the load generator (``--client``, driven over stdin/stdout): raw asyncio streams with
  PIPELINING. Each session says EHLO once, then per message writes MAIL+RCPT+DATA in one write,
  reads three replies, writes the dot-stuffed body and CRLF.CRLF, and reads the final reply.
  Sessions stay open. The same generator drives both servers.

Ours runs a copy of the mailboxkit package taken when the run starts (``--no-snapshot`` runs the
live tree), so edits made to the tree during a run cannot mix code versions between rows.

A measurement opens the sessions, warms up, then times from the first send to the last 250 and
counts only 250 replies; server CPU is user+system time of the server process and its worker
processes for large messages (psutil), and for PostgreSQL also the CPU of the backends serving
the benchmark database. Each cell is measured ``--repeats`` times (ours and the sink
alternately) and the median is reported. The memory run
sends 20,000 messages (10 sessions, 4 KiB, SQLite) to a fresh server and samples its RSS every
1,000 messages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from common import (
    DOMAIN,
    WORDS,
    Client,
    Server,
    add_ours_options,
    cpu_time,
    free_port,
    fs_type,
    ours_env,
    pg_backends,
    pg_query,
    serve,
    snapshot_code,
    start_self,
    stop_process,
    with_database,
)

KIB = 1024
RCPT = f"sink@{DOMAIN}"
SENDER = "load@sender.test"
ENVELOPE = f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RCPT}>\r\nDATA\r\n".encode()
TARGET_SESSIONS, TARGET_SIZE, TARGET_RATIO = 10, 4 * KIB, 0.6


# --- the sink ---------------------------------------------------------------------------------


class SinkHandler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


async def _sink(port: int) -> None:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    handler = SinkHandler()
    # hostname is given only to skip socket.getfqdn() per connection; the rest are defaults.
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.test"), "127.0.0.1", port, backlog=1024
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


# --- the load generator -----------------------------------------------------------------------


def message_header(tag: str, n: int) -> bytes:
    return (
        f"From: Load Generator <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: bench message {n}\r\n"
        f"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{n}.{tag}@sender.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
        "Content-Transfer-Encoding: 7bit\r\n\r\n"
    ).encode()


def message_body(size: int) -> bytes:
    """Plain text of lines up to 76 characters so that the whole message is about ``size`` bytes.

    Every 20th line starts with a dot, so dot-stuffing is exercised. Not yet dot-stuffed.
    """
    rng = random.Random(size)
    target = size - len(message_header("x" * 16, 1000))
    lines: list[bytes] = []
    total = 0
    while total < target:
        line = ". " if len(lines) % 20 == 19 else ""
        while len(line) < 60:
            line += rng.choice(WORDS) + " "
        encoded = line.rstrip().encode()[: max(1, target - total - 2)] + b"\r\n"
        lines.append(encoded)
        total += len(encoded)
    return b"".join(lines)


def dot_stuff(body: bytes) -> bytes:
    return re.sub(rb"(?m)^\.", b"..", body)


class Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Session:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 16)
        session = cls(reader, writer)
        greeting = await session.reply()
        if not greeting.startswith(b"220"):
            raise ConnectionError(f"greeting: {greeting!r}")
        writer.write(b"EHLO load.sender.test\r\n")
        ehlo = await session.reply()
        if not ehlo.startswith(b"250"):
            raise ConnectionError(f"EHLO: {ehlo!r}")
        return session

    async def reply(self) -> bytes:
        """The last line of the next reply."""
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("connection closed by the server")
            if line[3:4] != b"-":
                return line

    async def send(self, header: bytes, wire_body: bytes) -> bytes:
        """One transaction, pipelined; the reply that decides it."""
        self.writer.write(ENVELOPE)
        replies = [await self.reply(), await self.reply(), await self.reply()]
        if not replies[2].startswith(b"354"):
            self.writer.write(b"RSET\r\n")
            await self.reply()
            return next((r for r in replies if not r.startswith((b"2", b"3"))), replies[2])
        self.writer.write(header + wire_body)
        await self.writer.drain()
        return await self.reply()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(b"QUIT\r\n")
            await asyncio.wait_for(self.reply(), 5)
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


@dataclass
class Run:
    """One timed phase shared by all sessions."""

    deadline: float
    limit: int
    server: psutil.Process
    rss_every: int = 0
    reserved: int = 0
    ok: int = 0
    last_ok: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    rss: list[tuple[int, int]] = field(default_factory=list)

    def take(self) -> int | None:
        if self.reserved >= self.limit or time.perf_counter() >= self.deadline:
            return None
        self.reserved += 1
        return self.reserved


async def _drive(session: Session, run: Run, tag: str, wire_body: bytes) -> None:
    while (n := run.take()) is not None:
        try:
            line = await session.send(message_header(tag, n), wire_body)
        except (ConnectionError, OSError) as exc:
            run.errors[f"conn:{exc}"[:60]] += 1
            return
        if line.startswith(b"250"):
            run.ok += 1
            run.last_ok = time.perf_counter()
            if run.rss_every and run.ok % run.rss_every == 0:
                run.rss.append((run.ok, run.server.memory_info().rss))
        else:
            run.errors[line[:3].decode(errors="replace")] += 1


async def run_cell(cmd: dict[str, Any]) -> dict[str, Any]:
    host, port, n_sessions = cmd["host"], cmd["port"], cmd["sessions"]
    server = psutil.Process(cmd["pid"])
    wire_body = dot_stuff(message_body(cmd["size"])) + b".\r\n"
    tag = os.urandom(6).hex()
    sessions = await asyncio.gather(*(Session.open(host, port) for _ in range(n_sessions)))
    try:
        if cmd["warmup"] > 0:
            warm = Run(time.perf_counter() + cmd["warmup"], 1 << 62, server)
            await asyncio.gather(*(_drive(s, warm, tag + "w", wire_body) for s in sessions))
            if warm.errors:
                return {"error": f"warm-up errors {dict(warm.errors)}"}
        backends = {p.pid: p for p in pg_backends(cmd.get("pg_db"))}
        db0 = {pid: cpu_time(p) for pid, p in backends.items()}
        run = Run(time.perf_counter() + cmd["seconds"], cmd["limit"], server, cmd["rss_every"])
        if run.rss_every:
            run.rss.append((0, server.memory_info().rss))
        cpu0, client0 = cpu_time(server), time.process_time()
        t0 = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(_drive(s, run, tag, wire_body) for s in sessions)),
            cmd["seconds"] + cmd["timeout"],
        )
        end = run.last_ok or time.perf_counter()
        cpu1, client1 = cpu_time(server), time.process_time()
        for p in pg_backends(cmd.get("pg_db")):
            backends.setdefault(p.pid, p)
        db_cpu = sum(cpu_time(p) - db0.get(pid, 0.0) for pid, p in backends.items())
        wall = end - t0
        return {
            "ok": run.ok,
            "wall": wall,
            "cpu": cpu1 - cpu0,
            "db_cpu": db_cpu if cmd.get("pg_db") else None,
            "client_util": (client1 - client0) / max(time.perf_counter() - t0, 1e-9),
            "errors": dict(run.errors),
            "rss": run.rss,
            "wire_size": len(message_header(tag, 1)) + len(wire_body),
        }
    finally:
        await asyncio.gather(*(s.close() for s in sessions))


def _client() -> None:
    for line in sys.stdin:
        try:
            result = asyncio.run(run_cell(json.loads(line)))
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(result), flush=True)


# --- processes --------------------------------------------------------------------------------


def start_ours(
    workdir: Path, label: str, database_url: str, pg_db: str | None, code: Path | None
) -> Server:
    port = free_port()
    env = ours_env(
        workdir / f"data-{label}",
        database_url,
        code,
        MAILBOXKIT_SMTP_PORT=str(port),
        MAILBOXKIT_LOG_LEVEL="WARNING",
        # No network here: SPF/DKIM/DMARC lookups would only ask the machine's resolver.
        MAILBOXKIT_VERIFY_INBOUND="false",
    )
    cli = [sys.executable, "-m", "mailboxkit.cli"]
    made = subprocess.run(
        [*cli, "inbox", "create", RCPT], env=env, cwd=workdir, capture_output=True, check=False
    )
    if made.returncode != 0:
        raise RuntimeError(f"inbox create failed: {made.stderr.decode(errors='replace')}")
    return serve(workdir, label, env, port, pg_db)


# --- PostgreSQL -------------------------------------------------------------------------------


def pg_info(url: str) -> str | None:
    try:
        (rows,) = pg_query(
            url,
            "SELECT split_part(version(), ' ', 2) AS v, current_setting('fsync') AS f, "
            "current_setting('synchronous_commit') AS s, current_setting('full_page_writes') AS w",
        )
    except Exception as exc:
        print(f"PostgreSQL not reachable ({type(exc).__name__}: {exc}); skipped", file=sys.stderr)
        return None
    r = rows[0]
    return (
        f"PostgreSQL {r['v']} (fsync={r['f']}, synchronous_commit={r['s']}, "
        f"full_page_writes={r['w']})"
    )


# --- the orchestrator -------------------------------------------------------------------------


@dataclass
class Stats:
    rates: list[float] = field(default_factory=list)
    cpu1k: list[float] = field(default_factory=list)
    db_cpu1k: list[float] = field(default_factory=list)
    client_util: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, r: dict[str, Any]) -> None:
        self.errors.update(r["errors"])
        if r["ok"] == 0:
            return
        self.rates.append(r["ok"] / r["wall"])
        self.cpu1k.append(r["cpu"] / r["ok"] * 1000)
        if r["db_cpu"] is not None:
            self.db_cpu1k.append(r["db_cpu"] / r["ok"] * 1000)
        self.client_util.append(r["client_util"])

    @property
    def rate(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0

    @property
    def spread(self) -> float:
        """(max - min) / median of the rates."""
        return (max(self.rates) - min(self.rates)) / self.rate if len(self.rates) > 1 else 0.0

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpu1k) if self.cpu1k else float("nan")

    @property
    def db_cpu(self) -> float | None:
        return statistics.median(self.db_cpu1k) if self.db_cpu1k else None


def size_label(size: int) -> str:
    return f"{size // KIB} KiB"


def measure(
    client: Client, server: Server, size: int, sessions: int, args: argparse.Namespace, **extra: Any
) -> dict[str, Any]:
    result = client.run(
        host="127.0.0.1",
        port=server.port,
        pid=server.proc.pid,
        sessions=sessions,
        size=size,
        warmup=extra.get("warmup", args.warmup),
        seconds=extra.get("seconds", args.seconds),
        limit=extra.get("limit", 1 << 62),
        rss_every=extra.get("rss_every", 0),
        timeout=120,
        pg_db=server.pg_db,
    )
    if "error" in result or server.proc.poll() is not None:
        tail = server.tail()
        raise RuntimeError(f"{server.name}: {result.get('error', 'server exited')}\n{tail}")
    return result


def run_grid(
    client: Client,
    sink: Server,
    ours: Server,
    db: str,
    args: argparse.Namespace,
    table: dict[tuple[str, int, int, str], Stats],
) -> None:
    # Server-level warm-up: caches, the SQLite file, the pool, the first thread-pool workers.
    measure(client, ours, TARGET_SIZE, TARGET_SESSIONS, args, warmup=0, seconds=args.warmup * 2)
    i = 0
    for rep in range(args.repeats):
        for size in args.sizes:
            for sessions in args.sessions:
                pair = (ours, sink) if i % 2 == 0 else (sink, ours)
                i += 1
                for server in pair:
                    r = measure(client, server, size, sessions, args)
                    table.setdefault((db, size, sessions, server.name), Stats()).add(r)
                    cpu = f"{r['cpu'] / max(r['ok'], 1) * 1000:.2f}"
                    print(
                        f"  [{db} rep {rep + 1}/{args.repeats}] {size_label(size):>7} "
                        f"x{sessions:<3} {server.name:4} {r['ok'] / r['wall']:8.0f} msg/s "
                        f"cpu {cpu} s/1k  client {r['client_util']:.0%}"
                        + (f"  errors {r['errors']}" if r["errors"] else ""),
                        file=sys.stderr,
                        flush=True,
                    )


def profile_target(
    client: Client, ours: Server, db: str, args: argparse.Namespace, out_dir: Path
) -> None:
    """py-spy (raw collapsed stacks) on ours during an extra, unreported target cell."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"ours-{db}-{TARGET_SESSIONS}x{TARGET_SIZE // KIB}k.txt"
    spy = subprocess.Popen(
        [
            *(py_spy, "record", "--pid", str(ours.proc.pid), "--rate", "200"),
            *("--threads", "--gil", "--format", "raw", "--output", str(out)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1)
    measure(client, ours, TARGET_SIZE, TARGET_SESSIONS, args, seconds=max(args.seconds, 5))
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()
    if not out.exists():
        print(f"py-spy wrote nothing: {spy.stderr.read() if spy.stderr else ''}", file=sys.stderr)
        return
    print(f"\npy-spy, ours on {db}, {TARGET_SESSIONS} sessions x 4 KiB: {out}")
    print_profile(out)


_BOILERPLATE = re.compile(r"runpy|asyncio/runners|mailboxkit/cli\.py|BaseEventLoop\.run_")


def print_profile(path: Path, top: int = 25) -> None:
    """Summarise py-spy's raw stacks (recorded with --threads --gil, so only samples where a
    thread held the GIL: CPU, not waiting): the event loop thread in detail, the others (the
    SQLite connection's thread, where a delivery's statements run; the blob fsync pool) counted.
    """
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    main = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        name = re.sub(r"^thread \(\d+\): |[-_]?\d+.*$", "", frames[0]) or frames[0]
        name = "aiosqlite" if "_connection_worker" in frames[0] else name
        threads[name] += n
        if "MainThread" not in frames[0]:
            continue
        main += n
        for frame in set(frames[1:]):
            if not _BOILERPLATE.search(frame):
                inclusive[frame] += n
        own[frames[-1]] += n
    if not main:
        return
    print("  samples by thread: " + ", ".join(f"{k} {v}" for k, v in threads.most_common(6)))
    print(f"  event loop thread, {main} samples; inclusive (self) share:")
    for frame, n in inclusive.most_common(top):
        print(f"  {n / main:6.1%} ({own[frame] / main:5.1%})  {frame}")


def print_table(
    table: dict[tuple[str, int, int, str], Stats], dbs: list[str], args: argparse.Namespace
) -> None:
    print()
    head = (
        f"{'database':<10} {'size':>7} {'sess':>4} | {'ours msg/s':>10} {'±':>4} "
        f"{'sink msg/s':>10} {'±':>4} {'ratio':>5} | {'ours cpu':>8} {'sink cpu':>8} "
        f"{'ratio':>5} {'+pg cpu':>7} | {'errors':>6}"
    )
    print(head)
    print("-" * len(head))
    for db in dbs:
        for size in args.sizes:
            for sessions in args.sessions:
                ours = table.get((db, size, sessions, "ours"))
                sink = table.get((db, size, sessions, "sink"))
                if ours is None or sink is None:
                    continue
                ratio = ours.rate / sink.rate if sink.rate else float("nan")
                cpu_ratio = ours.cpu / sink.cpu if sink.cpu else float("nan")
                pg = f"{ours.db_cpu:7.2f}" if ours.db_cpu is not None else f"{'-':>7}"
                errors = sum(ours.errors.values()) + sum(sink.errors.values())
                print(
                    f"{db:<10} {size_label(size):>7} {sessions:>4} | {ours.rate:10.0f} "
                    f"{ours.spread:4.0%} {sink.rate:10.0f} {sink.spread:4.0%} {ratio:5.2f} | "
                    f"{ours.cpu:8.2f} {sink.cpu:8.2f} {cpu_ratio:5.1f} {pg} | {errors:>6}"
                )
    print(
        f"msg/s: median of {args.repeats}; ±: (max-min)/median; cpu: server CPU-seconds per "
        "1,000 messages (user+system);\n+pg cpu: PostgreSQL backends for our database, "
        "CPU-s/1k, not in 'ours cpu'; ratio = ours/sink."
    )
    utils = [u for s in table.values() for u in s.client_util]
    if utils:
        print(
            f"load generator CPU: at most {max(utils):.0%} of one core "
            f"(median {statistics.median(utils):.0%})"
        )
    for db in dbs:
        ours = table.get((db, TARGET_SIZE, TARGET_SESSIONS, "ours"))
        sink = table.get((db, TARGET_SIZE, TARGET_SESSIONS, "sink"))
        if ours and sink and sink.rate:
            ratio = ours.rate / sink.rate
            verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
            print(
                f"target {db}: {TARGET_SESSIONS} sessions x 4 KiB ratio {ratio:.2f} "
                f"(>= {TARGET_RATIO}): {verdict}"
            )


def memory_run(client: Client, workdir: Path, args: argparse.Namespace) -> None:
    ours = start_ours(workdir, "memory", "", None, args.code)
    try:
        r = measure(
            client,
            ours,
            TARGET_SIZE,
            TARGET_SESSIONS,
            args,
            warmup=0,
            seconds=3600,
            limit=args.memory_messages,
            rss_every=1000,
        )
    finally:
        stop_process(ours.proc)
    samples = {n: rss / (1 << 20) for n, rss in r["rss"]}
    print(
        f"\nmemory: {r['ok']:,} messages, {TARGET_SESSIONS} sessions x 4 KiB, SQLite, fresh "
        f"server; {r['ok'] / r['wall']:.0f} msg/s; errors {r['errors'] or 0}"
    )
    print("server RSS (MiB) after N messages:")
    items = sorted(samples.items())
    for i in range(0, len(items), 7):
        print("  " + "  ".join(f"{n:>6,}: {mib:6.1f}" for n, mib in items[i : i + 7]))
    start, end = 2000, max(samples)
    if start in samples and end > start:
        growth = samples[end] - samples[start]
        xs = [n for n in samples if n >= start]
        slope = statistics.linear_regression(xs, [samples[n] for n in xs]).slope * 1000 * 1024
        print(
            f"growth {start:,} -> {end:,}: {growth:+.1f} MiB ({growth / samples[start]:+.1%}); "
            f"fitted slope {slope:+.0f} KiB per 1,000 messages"
        )


def environment(args: argparse.Namespace, workdir: Path, pg: str | None, code: str) -> None:
    print("MailboxKit SMTP MX ingest benchmark")
    print(f"  cpus: {os.cpu_count()} logical ({psutil.cpu_count(logical=False)} physical)")
    print(f"  python: {platform.python_version()} ({platform.python_implementation()})")
    print(f"  platform: {platform.platform()}")
    print(
        f"  aiosmtpd: {metadata.version('aiosmtpd')}; mailboxkit: {metadata.version('mailboxkit')}"
    )
    print(f"  mailboxkit code: {code}")
    print(f"  SQLite: {sqlite3.sqlite_version} (WAL, synchronous=FULL, blobs fsynced)")
    if "postgresql" in args.databases:
        print(f"  {pg or 'PostgreSQL: not reachable, skipped'}")
    kind, device = fs_type(workdir)
    print(f"  temp dir filesystem: {kind} on {device}")
    mode = "quick" if args.quick else "full"
    print(
        f"  run: {mode}; {args.warmup:g} s warm-up + {args.seconds:g} s per measurement, "
        f"{args.repeats} repeats; message sizes are wire sizes before dot-stuffing"
    )


def orchestrate(args: argparse.Namespace) -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="mbk-bench-", dir=args.tmpdir))
    args.code, code_note = snapshot_code(workdir, args.snapshot)
    pg = pg_info(args.postgres_url) if "postgresql" in args.databases else None
    dbs = [d for d in args.databases if d != "postgresql" or pg]
    environment(args, workdir, pg, code_note)
    sys.stdout.flush()
    table: dict[tuple[str, int, int, str], Stats] = {}
    client = Client(__file__)
    sink = start_self(__file__, "sink", workdir, "the sink")
    try:
        for db in dbs:
            pg_db = None
            url = ""
            if db == "postgresql":
                pg_db = f"mbk_bench_{os.getpid()}_{os.urandom(3).hex()}"
                pg_query(args.postgres_url, f'CREATE DATABASE "{pg_db}"')
                url = with_database(args.postgres_url, pg_db)
            try:
                ours = start_ours(workdir, db, url, pg_db, args.code)
                try:
                    run_grid(client, sink, ours, db, args, table)
                    if args.py_spy:
                        profile_target(client, ours, db, args, args.py_spy)
                finally:
                    stop_process(ours.proc)
            finally:
                if pg_db:
                    pg_query(args.postgres_url, f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)')
            shutil.rmtree(workdir / f"data-{db}", ignore_errors=True)
        print_table(table, dbs, args)
        sys.stdout.flush()
        if args.memory_messages:
            memory_run(client, workdir, args)
    finally:
        stop_process(sink.proc)
        client.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ntotal time {time.monotonic() - started:.0f} s")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short smoke run (under 2 minutes)")
    p.add_argument("--sizes", type=lambda s: [int(x) * KIB for x in s.split(",")], help="KiB list")
    p.add_argument("--sessions", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--databases", type=lambda s: s.split(","), default=["sqlite", "postgresql"])
    p.add_argument("--repeats", type=int, help="measurements per cell and server (median)")
    p.add_argument("--seconds", type=float, help="timed seconds per measurement")
    p.add_argument("--warmup", type=float, help="warm-up seconds before each measurement")
    p.add_argument("--memory-messages", type=int, help="memory run length; 0 skips it")
    add_ours_options(p)
    p.add_argument("--py-spy", type=Path, metavar="DIR", help="also profile ours with py-spy")
    p.add_argument("--sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    return p


def main() -> int:
    args = _parser().parse_args()
    if args.sink:
        asyncio.run(_sink(args.sink))
        return 0
    if args.client:
        _client()
        return 0
    quick = args.quick
    defaults = {
        "sizes": [4 * KIB, 100 * KIB],
        "sessions": [1, 10, 50],
        "repeats": 1 if quick else 3,
        "seconds": 1.0 if quick else 3.0,
        "warmup": 0.3 if quick else 1.0,
        "memory_messages": 0 if quick else 20_000,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    unknown = set(args.databases) - {"sqlite", "postgresql"}
    if unknown:
        raise SystemExit(f"unknown database(s): {', '.join(sorted(unknown))}")
    return orchestrate(args)


if __name__ == "__main__":
    raise SystemExit(main())
