"""IMAP server benchmark: command throughput on a 10,000-message inbox, FETCH FLAGS latency,
and the server's memory with thousands of IDLE sessions.

Usage (from the repository root, with the project's virtualenv)::

    .venv/bin/python bench/imap.py --quick    # SQLite only, short measurements
    .venv/bin/python bench/imap.py            # SQLite and PostgreSQL

What runs, each in its own process:

- ours: ``python -m mailboxkit.cli serve`` (IMAP on 127.0.0.1 only, plain: LOGIN works without
  TLS on loopback) on a fresh SQLite data dir or a fresh PostgreSQL database created beside
  ``--postgres-url`` and dropped afterwards. Before it starts, this script fills one inbox with
  ``--messages`` parsed messages straight through the store (``store.messages.insert_messages``
  in batches, their raw blobs in the data dir's blob store; PostgreSQL is then ANALYZEd) and
  ``--idle-inboxes`` small inboxes (``--idle-messages`` each) for the IDLE sessions.
- the load generators (``--client``, driven over stdin/stdout): raw asyncio streams, one
  connection per client, each logged in and with INBOX selected. ``--clients`` connections are
  spread over ``--client-procs`` processes; each runs one command after the other (closed
  loop) for ``--seconds`` after a warm-up, and reports completions and latencies.

Measurements, per database:

- ops/s and p50/p99 latency with ``--clients`` concurrent clients, for SELECT INBOX, FETCH 1:*
  (FLAGS), FETCH n BODY[] (a random message), UID SEARCH UNSEEN FROM "alice", UID STORE
  +FLAGS/-FLAGS (\\Flagged) of a random message, and APPEND of a 4 KiB message to Archive (so
  INBOX keeps its size); server CPU per command (psutil; plus the PostgreSQL backends).
- latency of FETCH 1:* (FLAGS) on the whole inbox from one client alone (target p50 < 150 ms).
- memory: ``--idle`` sessions (spread over the small inboxes and over ``--idle-procs``
  processes) each LOGIN, SELECT INBOX and IDLE; the server's RSS before and after (target
  < 500 MB in all), then one APPEND per small inbox and how long until every session read its
  ``EXISTS``. Also the extra RSS of ``--big-selects`` sessions with the 10,000-message INBOX
  selected, per session. File descriptors: the limit is raised to the hard limit.

Only 127.0.0.1 is used. The machine matters (the server and the generators share its CPUs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from common import (
    DOMAIN,
    Server,
    add_ours_options,
    async_url,
    free_port,
    ours_env,
    percentile,
    pg_query,
    serve,
    snapshot_code,
    stop_process,
    with_database,
)

INBOX = f"bench@{DOMAIN}"
SECRET = "bench-" + "0" * 64
BATCH = 500
LOGIN_TIMEOUT = 120.0
TARGET_FETCH_MS, TARGET_RSS_MB = 150.0, 500.0
WORDS = (
    "the", "agent", "mailbox", "message", "reply", "thread", "invoice", "meeting", "schedule",
    "report", "status", "update", "please", "confirm", "attached", "summary", "deadline", "review",
)  # fmt: skip
SENDERS = ("alice", "bob", "carol", "dave", "erin", "frank")
OPS = ("SELECT", "FETCH FLAGS 1:*", "FETCH BODY[]", "UID SEARCH", "STORE", "APPEND")
BODY = b"x" * 76 + (b"\r\n" + b"x" * 76) * 52 + b"\r\n"


def appended(rng: random.Random) -> bytes:
    """A 4 KiB message with a Message-ID of its own (one thread each, as mail usually is)."""
    return (
        b"From: Bench <load@sender.test>\r\nTo: " + INBOX.encode() + b"\r\nSubject: appended\r\n"
        b"Message-ID: <append-%x@sender.test>\r\n\r\n" % rng.getrandbits(64) + BODY
    )


# --- a small IMAP client ------------------------------------------------------------------------


class Imap:
    """One connection: commands with a tag, responses read with their literals."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.count = reader, writer, 0

    @classmethod
    async def login(cls, port: int, user: str, key: str, mailbox: str | None = "INBOX") -> Imap:
        """Connect, LOGIN and SELECT, within ``LOGIN_TIMEOUT`` (a server that accepted no
        more connections would otherwise hang the run)."""
        async with asyncio.timeout(LOGIN_TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
            conn = cls(reader, writer)
            await conn.line()  # greeting
            await conn.command(f"LOGIN {user} {key}".encode())
            if mailbox:
                await conn.command(b"SELECT " + mailbox.encode())
        return conn

    async def line(self) -> bytes:
        line = await self.reader.readuntil(b"\r\n")
        parts = [line]
        while line.endswith(b"}\r\n"):
            size = int(line[line.rfind(b"{") + 1 : -3])
            parts.append(await self.reader.readexactly(size))
            line = await self.reader.readuntil(b"\r\n")
            parts.append(line)
        return b"".join(parts) if len(parts) > 1 else line

    async def command(self, text: bytes, literal: bytes | None = None) -> list[bytes]:
        self.count += 1
        tag = b"t%d" % self.count
        if literal is None:
            self.writer.write(tag + b" " + text + b"\r\n")
        else:
            self.writer.write(b"%s %s {%d+}\r\n%s\r\n" % (tag, text, len(literal), literal))
        lines = []
        while True:
            line = await self.line()
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text[:40]!r}: {line[:200]!r}")
                return lines
            lines.append(line)

    def close(self) -> None:
        self.writer.close()


async def run_op(conn: Imap, op: str, rng: random.Random, messages: int) -> None:
    if op == "SELECT":
        await conn.command(b"SELECT INBOX")
    elif op == "FETCH FLAGS 1:*":
        lines = await conn.command(b"FETCH 1:* (FLAGS)")
        assert sum(b" FETCH " in line for line in lines) >= messages, len(lines)
    elif op == "FETCH BODY[]":
        await conn.command(b"FETCH %d BODY[]" % rng.randint(1, messages))
    elif op == "UID SEARCH":
        await conn.command(b'UID SEARCH UNSEEN FROM "alice"')
    elif op == "STORE":
        sign = rng.choice(b"+-")
        await conn.command(
            b"UID STORE %d %cFLAGS.SILENT (\\Flagged)" % (rng.randint(1, messages), sign)
        )
    elif op == "APPEND":
        await conn.command(b"APPEND Archive (\\Seen)", appended(rng))
    else:
        raise ValueError(op)


# --- the load generator process -------------------------------------------------------------------


async def _throughput(job: dict[str, Any]) -> None:
    conns = [
        await Imap.login(job["port"], job["user"], job["key"]) for _ in range(job["connections"])
    ]
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # "go"
    latencies: list[float] = []
    started = time.monotonic()
    timed = started + job["warmup"]
    end = timed + job["seconds"]
    cpu = time.process_time()

    async def loop(conn: Imap, seed: int) -> None:
        rng = random.Random(seed)
        while (now := time.monotonic()) < end:
            await run_op(conn, job["op"], rng, job["messages"])
            if now >= timed:
                latencies.append((time.monotonic() - now) * 1000)

    await asyncio.gather(*(loop(c, job["seed"] * 100 + i) for i, c in enumerate(conns)))
    for conn in conns:
        conn.close()
    result = {"count": len(latencies), "latencies": latencies, "cpu": time.process_time() - cpu}
    print(json.dumps(result), flush=True)


async def _idle(job: dict[str, Any]) -> None:
    """Sessions that LOGIN, SELECT and IDLE; on "go", the time each reads its EXISTS."""
    gate = asyncio.Semaphore(100)
    users: list[list[str]] = job["users"]

    async def open_one(user: str, key: str) -> Imap:
        async with gate:
            conn = await Imap.login(job["port"], user, key, job["mailbox"])
            conn.writer.write(b"i IDLE\r\n")
            assert (await conn.line()).startswith(b"+ ")
            return conn

    conns = await asyncio.gather(*(open_one(user, key) for user, key in users))
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # "go" (or "stop")

    async def pushed(conn: Imap) -> float:
        while b"EXISTS" not in await conn.line():
            pass
        return time.monotonic()

    times = await asyncio.wait_for(asyncio.gather(*(pushed(c) for c in conns)), job["timeout"])
    print(json.dumps({"times": [[u[0], t] for u, t in zip(users, times, strict=True)]}))
    sys.stdout.flush()
    await asyncio.to_thread(sys.stdin.readline)  # "stop"
    for conn in conns:
        conn.close()


def _client() -> None:
    job = json.loads(sys.stdin.readline())
    asyncio.run(_idle(job) if job["mode"] == "idle" else _throughput(job))


class Generators:
    """Load generator processes started together, released together."""

    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--client"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in jobs
        ]
        for proc, job in zip(self.procs, jobs, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(job) + "\n")
            proc.stdin.flush()
        for proc in self.procs:
            if self.read(proc) != "ready":
                raise RuntimeError("a load generator failed to start")

    @staticmethod
    def read(proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        return proc.stdout.readline().strip()

    def say(self, word: str) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(word + "\n")
            proc.stdin.flush()

    def results(self) -> list[dict[str, Any]]:
        return [json.loads(self.read(proc)) for proc in self.procs]

    def close(self) -> None:
        for proc in self.procs:
            stop_process(proc)


# --- the data -----------------------------------------------------------------------------------


def make_message(n: int, rng: random.Random, when: datetime, to: str) -> bytes:
    msg = EmailMessage()
    sender = rng.choice(SENDERS)
    msg["From"] = f"{sender.title()} <{sender}@sender.test>"
    msg["To"] = to
    msg["Subject"] = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))).capitalize()
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = f"<bench-{n}-{to}>"
    paragraphs = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))).capitalize() + "."
        for _ in range(rng.randint(2, 6))
    ]
    msg.set_content("\n\n".join(paragraphs) + "\n")
    return bytes(msg).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def fill(database_url: str, data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The big inbox and the small ones, their keys; raw blobs in the data dir."""
    from sqlalchemy import text

    from mailboxkit.components import open_blobs
    from mailboxkit.config import Settings
    from mailboxkit.store.accounts import create_account, create_api_key, create_inbox
    from mailboxkit.store.db import Database
    from mailboxkit.store.messages import NewMessage, insert_messages
    from mailboxkit.store.migrate import upgrade_async
    from mailboxkit.store.mime import parse_message

    await upgrade_async(database_url)
    db = Database.open(database_url)
    blobs = open_blobs(Settings(data_dir=data_dir, secret_key=SECRET, database_url=database_url))
    rng = random.Random(7)
    now = datetime.now(UTC).replace(microsecond=0)
    counter = 0

    async def inbox_with(address: str, count: int) -> tuple[str, str]:
        nonlocal counter
        async with db.write() as conn:
            account_id = await create_account(conn, name=address, owner_email=None, now=now)
            inbox = await create_inbox(conn, account_id=account_id, address=address, now=now)
            key = await create_api_key(conn, account_id=account_id, now=now)
        for start in range(0, count, BATCH):
            batch, raws = [], []
            for n in range(start, min(count, start + BATCH)):
                counter += 1
                when = now - timedelta(seconds=(count - n) * 60)
                raw = make_message(counter, rng, when, address)
                raw_key = f"msg/{when:%Y/%m/%d}/bench{counter:07d}.eml"
                raws.append((raw_key, raw))
                batch.append(
                    NewMessage(
                        inbox=inbox,
                        parsed=parse_message(raw),
                        raw_key=raw_key,
                        size=len(raw),
                        received_at=when,
                        attachment_keys=[],
                        envelope_from="x@sender.test",
                        envelope_to=(address,),
                        seen=n % 2 == 0,
                    )
                )
            await blobs.put_many(raws)
            async with db.write() as conn:
                await insert_messages(conn, batch)
        return address, key.secret

    try:
        big = await inbox_with(INBOX, args.messages)
        small = [
            await inbox_with(f"idle{i}@{DOMAIN}", args.idle_messages)
            for i in range(args.idle_inboxes)
        ]
        if not db.is_sqlite:  # fresh statistics, as autovacuum keeps them in steady state
            async with db.engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("ANALYZE"))
    finally:
        await blobs.close()
        await db.close()
    return {"big": big, "small": small}


# --- the server ---------------------------------------------------------------------------------


def start_server(workdir: Path, db: str, url: str, pg_db: str | None, args: Any) -> Server:
    port = free_port()
    connections = str(args.idle + args.big_selects + args.clients + args.idle_inboxes + 100)
    env = ours_env(
        workdir / f"data-{db}",
        url,
        args.code,
        MAILBOXKIT_SECRET_KEY=SECRET,
        MAILBOXKIT_IMAP_PORT=str(port),
        MAILBOXKIT_IMAP_MAX_CONNECTIONS=connections,
        MAILBOXKIT_IMAP_MAX_CONNECTIONS_PER_IP=connections,
        MAILBOXKIT_MIGRATE_ON_START="false",
        MAILBOXKIT_VERIFY_INBOUND="false",
        MAILBOXKIT_LOG_LEVEL="WARNING",
    )
    return serve(workdir, db, env, port, pg_db)


# --- measurements -------------------------------------------------------------------------------


def throughput(server: Server, op: str, big: tuple[str, str], args: Any) -> dict[str, float]:
    procs = min(args.client_procs, args.clients)
    jobs = [
        {
            "mode": "throughput",
            "op": op,
            "port": server.port,
            "user": big[0],
            "key": big[1],
            "connections": args.clients // procs + (i < args.clients % procs),
            "messages": args.messages,
            "warmup": args.warmup,
            "seconds": args.seconds,
            "seed": i + 1,
        }
        for i in range(procs)
    ]
    generators = Generators(jobs)
    try:
        cpu = sum(server.cpu())
        generators.say("go")
        results = generators.results()
        cpu = sum(server.cpu()) - cpu
    finally:
        generators.close()
    latencies = [x for r in results for x in r["latencies"]]
    count = len(latencies)
    return {
        "ops": count / args.seconds,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "cpu_ms": cpu / max(1, count) * 1000 * args.seconds / (args.seconds + args.warmup),
        "client_cpu": sum(r["cpu"] for r in results) / (args.seconds + args.warmup),
    }


async def fetch_latency(server: Server, big: tuple[str, str], args: Any) -> dict[str, Any]:
    """Lone FETCH 1:* (FLAGS): wall latencies, and the server's CPU time per command (what
    the latency would be on an idle machine, the client's parsing aside)."""
    conn = await Imap.login(server.port, *big)
    rng = random.Random(1)
    for _ in range(3):
        await run_op(conn, "FETCH FLAGS 1:*", rng, args.messages)
    samples = []
    cpu = sum(server.cpu())
    for _ in range(args.fetch_samples):
        started = time.monotonic()
        await run_op(conn, "FETCH FLAGS 1:*", rng, args.messages)
        samples.append((time.monotonic() - started) * 1000)
    cpu_ms = (sum(server.cpu()) - cpu) / args.fetch_samples * 1000
    conn.close()
    return {"samples": samples, "cpu_ms": cpu_ms}


async def append_to(
    server: Server, users: list[tuple[str, str]], go: Callable[[], None]
) -> tuple[float, dict[str, float]]:
    """One APPEND to each inbox, all at once, after ``go()``: when the burst started (the
    sessions are logged in before) and when each APPEND was answered."""
    conns = [await Imap.login(server.port, user, key, None) for user, key in users]

    async def append(conn: Imap) -> float:
        await conn.command(b"APPEND INBOX", appended(random.Random()))
        return time.monotonic()

    go()
    started = time.monotonic()
    done = await asyncio.gather(*(append(c) for c in conns))
    for conn in conns:
        conn.close()
    return started, {user: t for (user, _), t in zip(users, done, strict=True)}


def idle_memory(server: Server, data: dict[str, Any], args: Any) -> dict[str, float]:
    small: list[tuple[str, str]] = [tuple(x) for x in data["small"]]
    sessions = [small[i % len(small)] for i in range(args.idle)]
    procs = max(1, min(args.idle_procs, args.idle))
    jobs = [
        {
            "mode": "idle",
            "port": server.port,
            "users": sessions[i::procs],
            "mailbox": "INBOX",
            "timeout": 120,
        }
        for i in range(procs)
    ]
    before = server.rss_mb()
    opened = time.monotonic()
    generators = Generators(jobs)
    try:
        setup = time.monotonic() - opened
        after = server.rss_mb()
        # The sessions read until EXISTS from "go" on.
        started, appended = asyncio.run(append_to(server, small, lambda: generators.say("go")))
        burst = max(appended.values()) - started
        # From the APPEND's tagged OK to the session's EXISTS: the push. A push may be read
        # before the OK is (it follows the commit too): counted as 0.
        times = [
            max(0.0, t - appended[user]) for r in generators.results() for user, t in r["times"]
        ]
        generators.say("stop")
    finally:
        generators.close()
    result = {
        "before": before,
        "after": after,
        "per_session_kb": (after - before) * 1024 / args.idle,
        "setup_s": setup,
        "burst_s": burst,
        "push_p50": percentile(times, 50) * 1000,
        "push_p99": percentile(times, 99) * 1000,
        "push_max": max(times) * 1000,
    }
    if args.big_selects:
        before = server.rss_mb()
        job = {"mode": "idle", "port": server.port, "timeout": 120, "mailbox": "INBOX"}
        generators = Generators([{**job, "users": [list(data["big"])] * args.big_selects}])
        try:
            result["big_per_session_kb"] = (server.rss_mb() - before) * 1024 / args.big_selects
        finally:
            generators.close()
    return result


def run_database(db: str, workdir: Path, args: Any) -> dict[str, Any]:
    data_dir = workdir / f"data-{db}"
    data_dir.mkdir()
    pg_db = None
    if db == "postgresql":
        pg_db = f"mbk_bench_imap_{os.getpid()}_{os.urandom(3).hex()}"
        pg_query(args.postgres_url, f'CREATE DATABASE "{pg_db}"')
        url = async_url(with_database(args.postgres_url, pg_db))
    else:
        url = f"sqlite+aiosqlite:///{data_dir / 'mailboxkit.db'}"
    try:
        started = time.monotonic()
        data = asyncio.run(fill(url, data_dir, args))
        count = args.messages + args.idle_inboxes * args.idle_messages
        print(f"  {db}: {count} messages stored in {time.monotonic() - started:.0f} s", flush=True)
        server = start_server(workdir, db, url, pg_db, args)
        try:
            rss = server.rss_mb()
            ops = {op: throughput(server, op, tuple(data["big"]), args) for op in OPS}
            fetch = asyncio.run(fetch_latency(server, tuple(data["big"]), args))
            memory = idle_memory(server, data, args) if args.idle else {}
        except Exception:
            print(server.tail(), file=sys.stderr)
            raise
        finally:
            stop_process(server.proc)
    finally:
        if pg_db:
            pg_query(args.postgres_url, f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)')
        shutil.rmtree(data_dir, ignore_errors=True)
    return {"rss_start": rss, "ops": ops, "fetch": fetch, "memory": memory}


def report(db: str, found: dict[str, Any], args: Any) -> None:
    print(f"\n{db}: {args.clients} clients, inbox of {args.messages} messages")
    print(
        f"  {'command':<18}{'ops/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'srv cpu ms':>12}{'gen cpu':>9}"
    )
    for op, r in found["ops"].items():
        print(
            f"  {op:<18}{r['ops']:>9.0f}{r['p50']:>9.1f}{r['p99']:>9.1f}"
            f"{r['cpu_ms']:>12.2f}{r['client_cpu']:>9.2f}"
        )
    fetch = found["fetch"]["samples"]
    p50 = statistics.median(fetch)
    verdict = "ok" if p50 < TARGET_FETCH_MS else "MISSED"
    print(
        f"  FETCH 1:* (FLAGS) alone, {len(fetch)} runs: p50 {p50:.1f} ms, "
        f"max {max(fetch):.1f} ms (target < {TARGET_FETCH_MS:.0f} ms: {verdict}); "
        f"server CPU {found['fetch']['cpu_ms']:.0f} ms per command"
    )
    memory = found["memory"]
    if memory:
        verdict = "ok" if memory["after"] < TARGET_RSS_MB else "MISSED"
        print(
            f"  {args.idle} IDLE sessions on {args.idle_inboxes} inboxes: server RSS "
            f"{memory['before']:.0f} -> {memory['after']:.0f} MB "
            f"({memory['per_session_kb']:.1f} KiB/session; target < {TARGET_RSS_MB:.0f} MB: "
            f"{verdict}); set up in {memory['setup_s']:.1f} s"
        )
        print(
            f"  then one APPEND to each of the {args.idle_inboxes} inboxes at once (all answered "
            f"in {memory['burst_s']:.1f} s): EXISTS read after the APPEND's OK p50 "
            f"{memory['push_p50']:.0f} ms, p99 {memory['push_p99']:.0f} ms, "
            f"max {memory['push_max']:.0f} ms"
        )
        if "big_per_session_kb" in memory:
            print(
                f"  {args.big_selects} IDLE sessions on the {args.messages}-message INBOX: "
                f"{memory['big_per_session_kb']:.0f} KiB/session"
            )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="SQLite only, short measurements")
    p.add_argument("--databases", type=lambda s: s.split(","))
    p.add_argument("--messages", type=int, default=10_000, help="messages in the big inbox")
    p.add_argument("--clients", type=int, default=20, help="concurrent clients for ops/s")
    p.add_argument("--client-procs", type=int, default=4, help="processes the clients use")
    p.add_argument("--seconds", type=float, help="timed seconds per command")
    p.add_argument("--warmup", type=float, help="warm-up seconds before each")
    p.add_argument("--fetch-samples", type=int, default=30, help="lone FETCH 1:* runs")
    p.add_argument("--idle", type=int, default=5_000, help="IDLE sessions (0: no memory run)")
    p.add_argument("--idle-inboxes", type=int, default=1_000, help="inboxes they use")
    p.add_argument("--idle-messages", type=int, default=20, help="messages in each")
    p.add_argument("--idle-procs", type=int, default=5, help="processes the sessions use")
    p.add_argument("--big-selects", type=int, default=100, help="IDLE sessions on big INBOX")
    add_ours_options(p)
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by every process
    if args.client:
        _client()
        return 0
    args.databases = args.databases or (["sqlite"] if args.quick else ["sqlite", "postgresql"])
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    args.warmup = args.warmup or (1.0 if args.quick else 2.0)
    if args.idle + args.big_selects + args.idle_inboxes + 200 > hard:
        raise SystemExit(f"the file descriptor limit ({hard}) is too low for --idle {args.idle}")
    print("MailboxKit IMAP benchmark")
    print(f"  cpus: {os.cpu_count()}; load average at start: {os.getloadavg()[0]:.2f}")
    print(f"  databases: {', '.join(args.databases)}; {args.seconds:g} s per command")
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="mbk-bench-imap-", dir=args.tmpdir))
    args.code, _ = snapshot_code(workdir, args.snapshot)
    try:
        for db in args.databases:
            report(db, run_database(db, workdir, args), args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ntotal time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
