"""HTTP API benchmark: listing and getting messages, beside a bare endpoint of the same framework.

Usage (from the repository root, with the project's virtualenv)::

    .venv/bin/python bench/api.py --quick     # smoke run, about 4 minutes
    .venv/bin/python bench/api.py             # full run, about 12 minutes

What runs, each in its own process:

- ours: ``python -m mailboxkit.cli serve`` (HTTP only) on a fresh SQLite data dir or a fresh
  PostgreSQL database created beside ``--postgres-url`` and dropped afterwards. Before it starts,
  this script fills one inbox with ``--messages`` parsed messages straight through the store
  (``store.messages.insert_messages`` in batches; no blobs are written, the routes measured do not
  read them), makes an account key, and on PostgreSQL runs ANALYZE (autovacuum's job in steady
  state; without statistics the planner sorts the whole inbox for every page). The per-key rate
  limit is set out of reach but stays on, so every request pays for it as in production; the
  access log is on (INFO) as by default.
- bare: a FastAPI app with one route returning constant JSON, served by uvicorn with the same
  settings as ours (``bench/api.py --bare PORT``).
- the load generators: ``wrk`` (closed loop: fixed connections, as fast as they answer) when it is
  installed, else the Python generator; and for the latency target the Python generator
  (``--client``, httpx.AsyncClient) in open loop: requests start at a fixed rate whatever the
  server does, and each latency is measured from the request's scheduled start, so a stalled
  server cannot hide its queue (no coordinated omission). Its send lag is printed: it shows the
  generator kept its schedule.

Endpoints: ``list`` is ``GET /api/v1/inboxes/{id}/messages?limit=50`` of the full inbox, ``get``
is ``GET /api/v1/inboxes/{id}/messages/{message_id}``, ``bare`` is ``GET /bare``. Server CPU per
request (psutil; plus the PostgreSQL backends of the bench database, ``+pg``) is printed, and the
ratio of each endpoint's closed-loop requests/s to bare's. The target: listing p99 under 20 ms at
200 requests/s, open loop, on SQLite and PostgreSQL. Then the listing is swept in open loop over
``--sweep`` rates (25 to 200 req/s), stopping at the first overloaded one, to show up to which
rate it meets the target. A generator with 256 requests unanswered drops further ones (counted as
infinitely late) rather than fall behind its schedule.

``--explain`` prints the plan of each statement the listing runs; ``--py-spy DIR`` profiles ours
during an extra open-loop listing run and prints where its event loop spends its time.
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
import resource
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
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
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
    async_url,
    cpu_time,
    free_port,
    fs_type,
    ours_env,
    pg_query,
    serve,
    snapshot_code,
    start_self,
    stop_process,
    with_database,
)

INBOX = f"bench@{DOMAIN}"
TARGET_RATE, TARGET_P99_MS = 200, 20.0
BATCH = 500
ENDPOINTS = ("list", "get", "bare")


# --- the bare app -----------------------------------------------------------------------------


def uvicorn_config(app: Any) -> Any:
    """The uvicorn settings of ``mailboxkit.app`` (no access log, no lifespan, no header)."""
    import uvicorn

    return uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", server_header=False
    )


async def _bare(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/bare")
    async def bare() -> dict[str, str]:
        return {"status": "ok", "service": "bare"}

    config = uvicorn_config(app)
    config.host, config.port = "127.0.0.1", port
    server = uvicorn.Server(config)
    await server.serve()


# --- the load generator -----------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))
    return ordered[index]


async def open_loop(job: dict[str, Any]) -> dict[str, Any]:
    """Requests at a fixed rate; latency from each one's scheduled start."""
    import httpx

    url, rate = job["url"], float(job["rate"])
    warm, total = int(rate * job["warmup"]), int(rate * (job["warmup"] + job["seconds"]))
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    latencies: list[float] = []
    lags: list[float] = []
    errors: Counter[str] = Counter()
    me = psutil.Process()
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(headers=job["headers"], limits=limits, timeout=30) as client:
        for _ in range(4):  # open a few connections before the clock starts
            await client.get(url)
        cpu_before = cpu_time(me)
        start = loop.time() + 0.05
        first = start + warm / rate
        last_done = first

        inflight = 0
        cap = int(job.get("max_inflight", 256))

        async def one(i: int, at: float) -> None:
            nonlocal last_done, inflight
            if inflight >= cap:  # hopelessly behind: counted, not sent, so the generator
                if i >= warm:  # keeps its schedule for the rest
                    errors["dropped"] += 1
                    latencies.append(float("inf"))
                return
            inflight += 1
            sent = loop.time()
            try:
                response = await client.get(url)
                status = str(response.status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            finally:
                inflight -= 1
            done = loop.time()
            if i < warm:
                return
            last_done = max(last_done, done)
            lags.append(sent - at)
            if status == "200":
                latencies.append(done - at)
            else:
                errors[status] += 1

        tasks = []
        for i in range(total):
            at = start + i / rate
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, at)))
        # A server that cannot keep up builds a queue without end: what is still unanswered
        # ``drain`` seconds after the last start counts as infinitely late.
        _, pending = await asyncio.wait(tasks, timeout=job["drain"])
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        cpu = cpu_time(me) - cpu_before
    if pending:
        errors["unanswered"] += len(pending)
        latencies += [float("inf")] * len(pending)
    elapsed = last_done - first
    answered = sum(1 for x in latencies if x != float("inf"))
    return {
        "ok": answered,
        "errors": dict(errors),
        "rate": answered / elapsed if elapsed > 0 else 0.0,
        "p50": _percentile(latencies, 0.50) * 1000,
        "p99": _percentile(latencies, 0.99) * 1000,
        "max": max(latencies, default=float("nan")) * 1000,
        "lag_p99": _percentile(lags, 0.99) * 1000,
        "client_cpu_s": cpu,
    }


async def closed_loop(job: dict[str, Any]) -> dict[str, Any]:
    """``connections`` clients, each sending its next request when the last is answered."""
    import httpx

    url, n = job["url"], int(job["connections"])
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    me = psutil.Process()
    async with httpx.AsyncClient(headers=job["headers"], limits=limits, timeout=30) as client:
        loop = asyncio.get_running_loop()
        measure_from = loop.time() + job["warmup"]
        until = measure_from + job["seconds"]
        cpu_before = cpu_time(me)

        async def worker() -> None:
            while (now := loop.time()) < until:
                try:
                    response = await client.get(url)
                    status = str(response.status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                if now < measure_from:
                    continue
                if status == "200":
                    latencies.append(loop.time() - now)
                else:
                    errors[status] += 1

        await asyncio.gather(*(worker() for _ in range(n)))
        cpu = cpu_time(me) - cpu_before
    seconds = job["seconds"]
    return {
        "ok": len(latencies),
        "errors": dict(errors),
        "rate": len(latencies) / seconds,
        "p50": _percentile(latencies, 0.50) * 1000,
        "p99": _percentile(latencies, 0.99) * 1000,
        "client_cpu_s": cpu,
    }


def _client() -> None:
    for line in sys.stdin:
        job = json.loads(line)
        try:
            runner = open_loop if job["mode"] == "open" else closed_loop
            result = asyncio.run(runner(job))
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(result), flush=True)


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _wrk_ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not found:
        raise ValueError(f"wrk latency {text!r}")
    return float(found.group(1)) * _WRK_UNITS[found.group(2)]


def run_wrk(job: dict[str, Any]) -> dict[str, Any]:
    """wrk in closed loop (one thread); its warm-up is a separate, discarded run."""
    wrk = shutil.which("wrk")
    assert wrk is not None
    headers = [a for k, v in job["headers"].items() for a in ("-H", f"{k}: {v}")]
    base = [wrk, "-t1", f"-c{job['connections']}", "--latency", *headers, job["url"]]
    if job["warmup"]:
        subprocess.run([*base, f"-d{max(1, round(job['warmup']))}s"], capture_output=True)
    out = subprocess.run(
        [*base, f"-d{max(1, round(job['seconds']))}s"], capture_output=True, text=True, check=True
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    errors = {}
    if bad:
        errors["non-2xx"] = int(bad.group(1))
    if socket_errors:
        errors["socket"] = socket_errors.group(1).strip()
    return {
        "rate": rate,
        "p50": _wrk_ms(p50.group(1)) if p50 else float("nan"),
        "p99": _wrk_ms(p99.group(1)) if p99 else float("nan"),
        "errors": errors,
    }


# --- processes --------------------------------------------------------------------------------


def start_ours(
    workdir: Path, label: str, database_url: str, pg_db: str | None, args: argparse.Namespace
) -> Server:
    port = free_port()
    env = ours_env(
        workdir / f"data-{label}",
        database_url,
        args.code,
        MAILBOXKIT_HTTP_PORT=str(port),
        MAILBOXKIT_API_RATE_LIMIT=str(10**9),  # on, but out of reach
        MAILBOXKIT_LOG_LEVEL=args.log_level,
    )
    return serve(workdir, label, env, port, pg_db)


# --- the inbox --------------------------------------------------------------------------------


def make_message(n: int, rng: random.Random, when: datetime, parent: str | None) -> bytes:
    msg = EmailMessage()
    sender = rng.choice(("alice", "bob", "carol", "dave", "erin", "frank"))
    msg["From"] = f"{sender.title()} <{sender}@sender.test>"
    msg["To"] = f"Bench <{INBOX}>"
    if n % 4 == 0:
        msg["Cc"] = "Team <team@sender.test>, Ops <ops@sender.test>"
    subject = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))).capitalize()
    msg["Subject"] = f"Re: {subject}" if parent else subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = f"<bench-{n}@sender.test>"
    if parent:
        msg["In-Reply-To"] = parent
        msg["References"] = parent
    paragraphs = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))).capitalize() + "."
        for _ in range(rng.randint(2, 6))
    ]
    text = "\n\n".join(paragraphs) + f"\n\n-- \n{sender.title()}\n"
    msg.set_content(text)
    if n % 3 == 0:
        msg.add_alternative("".join(f"<p>{p}</p>" for p in paragraphs), subtype="html")
    return bytes(msg).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def fill(database_url: str, count: int) -> dict[str, str]:
    """Migrate, make an account, its key and an inbox of ``count`` messages; their ids."""
    from sqlalchemy import text

    from mailboxkit.store.accounts import create_account, create_api_key, create_inbox
    from mailboxkit.store.db import Database
    from mailboxkit.store.messages import NewMessage, insert_messages
    from mailboxkit.store.migrate import upgrade_async
    from mailboxkit.store.mime import parse_message

    await upgrade_async(database_url)
    db = Database.open(database_url)
    rng = random.Random(7)
    now = datetime.now(UTC).replace(microsecond=0)
    first = now - timedelta(seconds=count * 60)
    try:
        async with db.write() as conn:
            account_id = await create_account(conn, name="bench", owner_email=None, now=now)
            inbox = await create_inbox(conn, account_id=account_id, address=INBOX, now=now)
            key = await create_api_key(conn, account_id=account_id, now=now)
        ids: list[str] = []
        for start in range(0, count, BATCH):
            batch = []
            for n in range(start, min(count, start + BATCH)):
                when = first + timedelta(seconds=n * 60)
                parent = f"<bench-{rng.randrange(n)}@sender.test>" if n and n % 5 == 0 else None
                raw = make_message(n, rng, when, parent)
                batch.append(
                    NewMessage(
                        inbox=inbox,
                        parsed=parse_message(raw),
                        raw_key=f"msg/{when:%Y/%m/%d}/bench{n:06d}.eml",
                        size=len(raw),
                        received_at=when,
                        attachment_keys=[],
                        envelope_from="x@sender.test",
                        envelope_to=(INBOX,),
                        seen=n % 2 == 0,
                    )
                )
            async with db.write() as conn:
                ids += [s.id for s in await insert_messages(conn, batch)]
        if not db.is_sqlite:  # fresh statistics, as autovacuum keeps them in steady state
            async with db.engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("ANALYZE"))
    finally:
        await db.close()
    return {"inbox_id": inbox.id, "message_id": ids[len(ids) // 2], "key": key.secret}


async def explain(database_url: str, inbox_id: str) -> str:
    """The plan of each statement ``store.listing.list_messages`` runs for one page."""
    from sqlalchemy import event

    from mailboxkit.store.db import Database
    from mailboxkit.store.listing import MessageFilter, list_messages

    db = Database.open(database_url)
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    out: list[str] = []
    try:
        async with db.read() as conn:
            await list_messages(conn, inbox_id, MessageFilter(), limit=50)
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
        prefix = "EXPLAIN QUERY PLAN " if db.is_sqlite else "EXPLAIN (ANALYZE, BUFFERS) "
        async with db.read() as conn:
            for n, (statement, parameters) in enumerate(seen, 1):
                rows = (await conn.exec_driver_sql(prefix + statement, parameters)).all()
                out.append(f"  listing statement {n} of {len(seen)}:")
                out += [f"    {' | '.join(str(v) for v in row)}" for row in rows]
    finally:
        await db.close()
    return "\n".join(out)


# --- PostgreSQL -------------------------------------------------------------------------------


def pg_info(url: str) -> str | None:
    try:
        answers = pg_query(url, "SHOW server_version", "SHOW fsync", "SHOW synchronous_commit")
    except Exception:
        return None
    version, fsync, synchronous = (rows[0][0] for rows in answers)
    return f"{version} (fsync={fsync}, synchronous_commit={synchronous})"


# --- measuring --------------------------------------------------------------------------------


@dataclass
class Cell:
    closed: list[dict[str, Any]] = field(default_factory=list)
    opened: list[dict[str, Any]] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # server CPU per request, closed loop
    pg_cpu_ms: list[float] = field(default_factory=list)

    @staticmethod
    def _median(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs) if runs else float("nan")

    def closed_value(self, key: str) -> float:
        return self._median(self.closed, key)

    def open_value(self, key: str) -> float:
        return self._median(self.opened, key)

    def errors(self) -> int:
        total = 0
        for run in self.closed + self.opened:
            for value in run["errors"].values():
                total += value if isinstance(value, int) else 1
        return total


def _busy() -> float:
    """CPU seconds the whole machine has spent not idle."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    client: Client,
    server: Server,
    url: str,
    headers: dict[str, str],
    cell: Cell,
    args: argparse.Namespace,
) -> None:
    """One closed-loop and one open-loop measurement; the CPU of everything else meanwhile
    (other processes on the machine: a busy machine makes latencies meaningless)."""
    job = {"url": url, "headers": headers, "warmup": args.warmup, "seconds": args.seconds}
    before, pg_before = server.cpu()
    busy, started, children = _busy(), time.monotonic(), _children_cpu()
    if shutil.which("wrk") and not args.python_closed:
        closed = run_wrk({**job, "connections": args.connections})
        closed["client_cpu_s"] = _children_cpu() - children
    else:
        closed = client.run(mode="closed", connections=args.connections, **job)
    after, pg_after = server.cpu()
    own = (after - before) + (pg_after - pg_before) + closed["client_cpu_s"]
    closed["others"] = (_busy() - busy - own) / (time.monotonic() - started)
    served = closed["rate"] * (args.seconds + args.warmup)
    cell.closed.append(closed)
    cell.cpu_ms.append((after - before) / served * 1000 if served else float("nan"))
    cell.pg_cpu_ms.append((pg_after - pg_before) / served * 1000 if served else float("nan"))
    before, pg_before = server.cpu()
    busy, started = _busy(), time.monotonic()
    opened = client.run(
        mode="open", rate=args.rate, drain=args.drain, **{**job, "seconds": args.open_seconds}
    )
    after, pg_after = server.cpu()
    own = (after - before) + (pg_after - pg_before) + opened["client_cpu_s"]
    opened["others"] = (_busy() - busy - own) / (time.monotonic() - started)
    cell.opened.append(opened)


def run_database(
    client: Client,
    bare: Server,
    db: str,
    database_url: str,
    pg_db: str | None,
    args: argparse.Namespace,
    workdir: Path,
) -> tuple[dict[str, Cell], list[tuple[float, dict[str, Any]]]]:
    started = time.monotonic()
    ids = asyncio.run(fill(database_url, args.messages))
    print(f"  {db}: {args.messages} messages stored in {time.monotonic() - started:.1f} s")
    if args.explain:
        print(asyncio.run(explain(database_url, ids["inbox_id"])))
    sys.stdout.flush()
    plain_url = database_url.replace("+aiosqlite", "").replace("+asyncpg", "")
    ours = start_ours(workdir, db, plain_url, pg_db, args)
    cells = {name: Cell() for name in ENDPOINTS}
    base = f"http://127.0.0.1:{ours.port}/api/v1/inboxes/{ids['inbox_id']}/messages"
    auth = {"Authorization": f"Bearer {ids['key']}"}
    targets = {
        "list": (ours, f"{base}?limit=50", auth),
        "get": (ours, f"{base}/{ids['message_id']}", auth),
        "bare": (bare, f"http://127.0.0.1:{bare.port}/bare", {}),
    }
    try:
        for name, (_, url, headers) in targets.items():
            with httpx_client() as check:
                response = check.get(url, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"{name}: {response.status_code} {response.text[:200]}")
            if name == "list":
                assert len(response.json()["messages"]) == 50
        for _ in range(args.repeats):  # endpoints alternate, so drift hits them all
            for name, (server, url, headers) in targets.items():
                measure(client, server, url, headers, cells[name], args)
        sweep = rate_sweep(client, targets["list"][1], auth, args)
        if args.py_spy:
            profile(client, ours, db, targets["list"][1], auth, args)
    except Exception:
        print(ours.tail(), file=sys.stderr)
        raise
    finally:
        stop_process(ours.proc)
    return cells, sweep


def rate_sweep(
    client: Client, url: str, headers: dict[str, str], args: argparse.Namespace
) -> list[tuple[float, dict[str, Any]]]:
    """Listing latency in open loop at rising rates, up to the first clearly overloaded one."""
    found = []
    for rate in sorted(args.sweep):
        result = client.run(
            mode="open",
            url=url,
            headers=headers,
            rate=rate,
            warmup=args.warmup,
            seconds=min(args.open_seconds, 10.0),
            drain=5.0,
        )
        found.append((rate, result))
        if result["p99"] > 5 * TARGET_P99_MS:
            break
    return found


def print_sweep(sweeps: dict[str, list[tuple[float, dict[str, Any]]]]) -> None:
    print()
    print("listing in open loop by rate (req/s: p50 / p99 ms; * meets the p99 target):")
    for db, found in sweeps.items():
        cells = [
            f"{rate:g}: {r['p50']:.1f} / {r['p99']:.1f}{'*' if r['p99'] < TARGET_P99_MS else ''}"
            for rate, r in found
        ]
        print(f"  {db:<10} " + ", ".join(cells))


@contextlib.contextmanager
def httpx_client() -> Any:
    import httpx

    with httpx.Client(timeout=30) as c:
        yield c


def profile(
    client: Client,
    ours: Server,
    db: str,
    url: str,
    headers: dict[str, str],
    args: argparse.Namespace,
) -> None:
    """py-spy (raw stacks) on ours during an extra open-loop listing run at the target rate."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    args.py_spy.mkdir(parents=True, exist_ok=True)
    out = args.py_spy / f"api-list-{db}.txt"
    spy = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(ours.proc.pid),
            "--rate",
            "250",
            "--threads",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1)
    client.run(
        mode="open",
        rate=args.rate,
        drain=args.drain,
        url=url,
        headers=headers,
        warmup=1,
        seconds=max(args.open_seconds, 5),
    )
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()
    if out.exists():
        print(f"\npy-spy, ours on {db}, listing at {args.rate:g} req/s: {out}")
        print_profile(out)


_BOILERPLATE = re.compile(
    r"runpy|asyncio/runners|mailboxkit/cli\.py|BaseEventLoop\.run_|_run_once|events\.py"
)


def print_profile(path: Path, top: int = 30) -> None:
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
        name = "aiosqlite" if "_connection_worker" in stack else frames[0].split(" ")[-1]
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


def print_table(table: dict[str, dict[str, Cell]], args: argparse.Namespace) -> None:
    loop = "wrk" if shutil.which("wrk") and not args.python_closed else "python"
    print()
    print(
        f"closed loop: {args.connections} connections ({loop}); open loop: {args.rate:g} req/s "
        "(python, httpx); latencies in ms; lag99: the generator's send lag; cpu: server CPU ms "
        "per request (+pg: its backends); other: CPU cores used by other processes meanwhile"
    )
    head = (
        f"{'database':<10} {'endpoint':<8} | {'req/s':>6} {'p50':>6} {'p99':>6} {'ratio':>5} "
        f"{'other':>5} | {'@rate':>5} {'p50':>6} {'p99':>6} {'max':>6} {'lag99':>5} "
        f"{'other':>5} | {'cpu':>5} {'+pg':>5} | {'errors':>6}"
    )
    print(head)
    print("-" * len(head))
    problems = []
    for db, cells in table.items():
        bare_rate = cells["bare"].closed_value("rate")
        for name in ENDPOINTS:
            c = cells[name]
            rate = c.closed_value("rate")
            pg = statistics.median(c.pg_cpu_ms) if db == "postgresql" and name != "bare" else None
            print(
                f"{db:<10} {name:<8} | {rate:>6.0f} {c.closed_value('p50'):>6.1f} "
                f"{c.closed_value('p99'):>6.1f} {rate / bare_rate:>5.2f} "
                f"{c.closed_value('others'):>5.2f} | {c.open_value('rate'):>5.0f} "
                f"{c.open_value('p50'):>6.1f} {c.open_value('p99'):>6.1f} "
                f"{c.open_value('max'):>6.0f} {c.open_value('lag_p99'):>5.1f} "
                f"{c.open_value('others'):>5.2f} | {statistics.median(c.cpu_ms):>5.2f} "
                f"{'' if pg is None else f'{pg:.2f}':>5} | {c.errors():>6}"
            )
            problems += [f"{db} {name}: {r['errors']}" for r in c.closed + c.opened if r["errors"]]
    print()
    for line in problems:
        print(f"errors, {line}")
    for db, cells in table.items():
        p99 = cells["list"].open_value("p99")
        verdict = "met" if p99 < TARGET_P99_MS else "MISSED"
        print(
            f"target, {db}: listing p99 at {args.rate:g} req/s = {p99:.1f} ms "
            f"(< {TARGET_P99_MS:g} ms): {verdict}"
        )


# --- the run ----------------------------------------------------------------------------------


def environment(args: argparse.Namespace, workdir: Path, pg: str | None, code: str) -> None:
    print("MailboxKit HTTP API benchmark")
    print(f"  cpus: {os.cpu_count()} logical ({psutil.cpu_count(logical=False)} physical)")
    print(f"  python: {platform.python_version()}; platform: {platform.platform()}")
    versions = ", ".join(
        f"{p} {metadata.version(p)}" for p in ("fastapi", "uvicorn", "httpx", "sqlalchemy")
    )
    print(f"  {versions}; wrk: {'yes' if shutil.which('wrk') else 'no (python closed loop)'}")
    print(f"  mailboxkit code: {code}")
    print(
        f"  SQLite: {sqlite3.sqlite_version} (WAL, synchronous=FULL); "
        f"temp dir on {fs_type(workdir)[0]}"
    )
    if "postgresql" in args.databases:
        print(f"  PostgreSQL: {pg or 'not reachable, skipped'}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"  load average at start: {load} (other work on the machine distorts latencies)")
    mode = "quick" if args.quick else "full"
    print(
        f"  run: {mode}; inbox of {args.messages} messages; {args.repeats} repeat(s), median; "
        f"closed loop {args.warmup:g}+{args.seconds:g} s, open loop {args.warmup:g}+"
        f"{args.open_seconds:g} s at {args.rate:g} req/s; log level {args.log_level}"
    )


def orchestrate(args: argparse.Namespace) -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="mbk-bench-api-", dir=args.tmpdir))
    args.code, code_note = snapshot_code(workdir, args.snapshot)
    pg = pg_info(args.postgres_url) if "postgresql" in args.databases else None
    dbs = [d for d in args.databases if d != "postgresql" or pg]
    environment(args, workdir, pg, code_note)
    sys.stdout.flush()
    table: dict[str, dict[str, Cell]] = {}
    sweeps: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    client = Client(__file__, check=True)
    bare = start_self(__file__, "bare", workdir, "the bare app")
    try:
        for db in dbs:
            pg_db = None
            if db == "postgresql":
                pg_db = f"mbk_bench_api_{os.getpid()}_{os.urandom(3).hex()}"
                pg_query(args.postgres_url, f'CREATE DATABASE "{pg_db}"')
                url = async_url(with_database(args.postgres_url, pg_db))
            else:
                (workdir / f"data-{db}").mkdir()
                url = f"sqlite+aiosqlite:///{workdir / f'data-{db}' / 'mailboxkit.db'}"
            try:
                table[db], sweeps[db] = run_database(client, bare, db, url, pg_db, args, workdir)
            finally:
                if pg_db:
                    pg_query(args.postgres_url, f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)')
            shutil.rmtree(workdir / f"data-{db}", ignore_errors=True)
        print_table(table, args)
        print_sweep(sweeps)
    finally:
        stop_process(bare.proc)
        client.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ntotal time {time.monotonic() - started:.0f} s")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short smoke run (about 4 minutes)")
    p.add_argument("--databases", type=lambda s: s.split(","), default=["sqlite", "postgresql"])
    p.add_argument("--messages", type=int, default=10_000, help="messages in the inbox")
    p.add_argument("--rate", type=float, default=TARGET_RATE, help="open-loop requests/s")
    p.add_argument("--connections", type=int, default=8, help="closed-loop connections")
    p.add_argument(
        "--sweep",
        type=lambda text: [float(x) for x in text.split(",")],
        default=[25.0, 50.0, 100.0, 150.0, 200.0],
        help="open-loop rates for the listing sweep (stops at the first overloaded one)",
    )
    p.add_argument("--repeats", type=int, help="measurements per endpoint (median)")
    p.add_argument("--seconds", type=float, help="timed seconds per closed-loop measurement")
    p.add_argument("--open-seconds", type=float, help="timed seconds per open-loop measurement")
    p.add_argument("--warmup", type=float, help="warm-up seconds before each measurement")
    p.add_argument(
        "--drain",
        type=float,
        default=10.0,
        help="seconds an open-loop run waits for answers after its last request starts; "
        "requests still unanswered then count as infinitely late",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--explain", action="store_true", help="print the listing's query plans")
    p.add_argument("--python-closed", action="store_true", help="closed loop in python, not wrk")
    add_ours_options(p)
    p.add_argument("--py-spy", type=Path, metavar="DIR", help="also profile ours with py-spy")
    p.add_argument("--bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    return p


def main() -> int:
    args = _parser().parse_args()
    if args.bare:
        asyncio.run(_bare(args.bare))
        return 0
    if args.client:
        _client()
        return 0
    defaults = {
        "repeats": 1 if args.quick else 3,
        "seconds": 3.0 if args.quick else 5.0,
        "open_seconds": 5.0 if args.quick else 20.0,
        "warmup": 1.0 if args.quick else 2.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    unknown = set(args.databases) - {"sqlite", "postgresql"}
    if unknown:
        raise SystemExit(f"unknown database(s): {', '.join(sorted(unknown))}")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
