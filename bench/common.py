"""Helpers shared by the benchmarks in this directory.

The scripts are run as ``.venv/bin/python bench/NAME.py``, so this directory is on ``sys.path``
and they import this module as ``common``; so do the processes they start of themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil

DOMAIN = "example.test"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
WORDS = (
    "the", "agent", "mailbox", "message", "reply", "thread", "invoice", "meeting", "schedule",
    "report", "status", "update", "please", "confirm", "attached", "summary", "deadline", "review",
    "tomorrow", "thanks", "regards", "team", "customer", "order", "shipping", "account", "code",
)  # fmt: skip


# --- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_time(proc: psutil.Process) -> float:
    """User and system CPU seconds of ``proc``; 0 once it is gone."""
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return t.user + t.system


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, nearest rank; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def tree_cpu_time(proc: psutil.Process) -> float:
    """CPU seconds of ``proc`` and of the processes it started that are still running (the
    server's workers for large messages)."""
    try:
        children = proc.children(recursive=True)
    except psutil.Error:
        children = []
    return cpu_time(proc) + sum(cpu_time(child) for child in children)


def pg_backends(dbname: str | None) -> list[psutil.Process]:
    """PostgreSQL backends serving ``dbname``, found by their process titles."""
    if not dbname:
        return []
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        title = " ".join(proc.info["cmdline"] or ())
        if title.startswith("postgres:") and f" {dbname} " in title:
            found.append(proc)
    return found


@dataclass
class Server:
    """A server process of the run, its stderr in ``log``; ``pg_db`` is its PostgreSQL database."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    pg_db: str | None = None
    backends: dict[int, psutil.Process] = field(default_factory=dict)

    def tail(self, lines: int = 20) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def cpu(self) -> tuple[float, float]:
        """CPU seconds of this process (with its children) and of the PostgreSQL backends of
        its database."""
        for proc in pg_backends(self.pg_db):
            self.backends.setdefault(proc.pid, proc)
        own = tree_cpu_time(psutil.Process(self.proc.pid))
        return own, sum(cpu_time(p) for p in self.backends.values())

    def rss_mb(self) -> float:
        return float(psutil.Process(self.proc.pid).memory_info().rss) / 2**20


def start_self(script: str, mode: str, workdir: Path, what: str) -> Server:
    """Run ``script --MODE PORT`` (the sink, the bare app), its stderr in ``MODE.log``, and wait
    until it listens."""
    port = free_port()
    log = workdir / f"{mode}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(Path(script).resolve()), f"--{mode}", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    server = Server(mode, proc, port, log)
    wait_port(port, proc, what)
    return server


def ours_env(
    data_dir: Path, database_url: str, code: Path | None, **settings: str
) -> dict[str, str]:
    """The environment of ``mailboxkit serve``: none of ours inherited, the package copy ``code``
    (if any) first on the path, on 127.0.0.1 with every listener off, then ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOXKIT_")}
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), *filter(None, [env.get("PYTHONPATH")])])
    env.update(
        MAILBOXKIT_DATA_DIR=str(data_dir),
        MAILBOXKIT_DATABASE_URL=database_url,
        MAILBOXKIT_HOSTNAME="mx.example.test",
        MAILBOXKIT_DOMAIN=DOMAIN,
        MAILBOXKIT_BIND="127.0.0.1",
        MAILBOXKIT_SMTP_PORT="0",
        MAILBOXKIT_HTTP_PORT="0",
        MAILBOXKIT_SUBMISSION_PORT="0",
        MAILBOXKIT_SUBMISSIONS_PORT="0",
        MAILBOXKIT_IMAP_PORT="0",
        MAILBOXKIT_IMAPS_PORT="0",
        MAILBOXKIT_SHUTDOWN_GRACE="5",
    )
    env.update(settings)
    return env


def serve(
    workdir: Path, label: str, env: dict[str, str], port: int, pg_db: str | None = None
) -> Server:
    """Start ``mailboxkit serve`` with ``env``, its stderr in ``ours-LABEL.log``, and wait until
    it listens on ``port``."""
    log = workdir / f"ours-{label}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailboxkit.cli", "serve"],
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    server = Server("ours", proc, port, log, pg_db)
    try:
        wait_port(port, proc, "mailboxkit serve")
    except RuntimeError:
        print(server.tail(), file=sys.stderr)
        stop_process(proc)
        raise
    return server


async def run_cli(env: dict[str, str], *args: str) -> bytes:
    """``mailboxkit ARGS`` with ``env``; what it printed. Exits the benchmark if it fails."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailboxkit.cli", *args, env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"mailboxkit {' '.join(args)} failed")
    return out


@dataclass
class Serving:
    """``mailboxkit serve`` run by an asyncio benchmark: up once it logged ``event=started``
    (``env`` sets ``MAILBOXKIT_LOG_LEVEL=INFO``), its stderr read and dropped from then on."""

    proc: asyncio.subprocess.Process
    stderr: asyncio.Task[bytes]

    @classmethod
    async def start(cls, env: dict[str, str]) -> Serving:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mailboxkit.cli",
            "serve",
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        async for line in proc.stderr:
            if b"event=started" in line:
                break
        else:
            raise SystemExit(f"mailboxkit serve exited with code {await proc.wait()}")
        return cls(proc, asyncio.create_task(proc.stderr.read()))

    async def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        await self.proc.wait()
        self.stderr.cancel()


class Client:
    """The load generator process (``script --client``), driven over stdin/stdout, one JSON line
    per job and per result. With ``check``, a result that is an error raises it."""

    def __init__(self, script: str, check: bool = False) -> None:
        self.check = check
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(script).resolve()), "--client"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, **job: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("load generator exited")
        result: dict[str, Any] = json.loads(line)
        if self.check and "error" in result:
            raise RuntimeError(f"load generator: {result['error']}")
        return result

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)


# --- the run ----------------------------------------------------------------------------------


def add_ours_options(p: argparse.ArgumentParser) -> None:
    """``--postgres-url``, ``--tmpdir`` and ``--no-snapshot``."""
    p.add_argument(
        "--postgres-url",
        default=os.environ.get("MAILBOXKIT_TEST_POSTGRES_URL", DEFAULT_PG_URL),
        help="admin URL; a fresh database is created beside it and dropped afterwards",
    )
    p.add_argument("--tmpdir", type=Path, help="where the data dirs go (default: system temp)")
    p.add_argument(
        "--no-snapshot",
        dest="snapshot",
        action="store_false",
        help="run the live tree instead of a copy of the package taken at start",
    )


def snapshot_code(workdir: Path, enabled: bool) -> tuple[Path | None, str]:
    """Copy the mailboxkit package into ``workdir``, so that every server of this run runs the
    same code even while the tree is being edited; and describe that code."""
    spec = importlib.util.find_spec("mailboxkit")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("mailboxkit is not importable: run with the project's virtualenv")
    package = Path(next(iter(spec.submodule_search_locations)))
    git = ["git", "-C", str(package)]
    rev = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    note = "not in a git checkout"
    if rev.returncode == 0:
        status = subprocess.run(
            [*git, "status", "--porcelain", "--", "."], capture_output=True, text=True
        )
        changed = len(status.stdout.splitlines())
        note = f"git {rev.stdout.strip()}" + (
            f" + {changed} uncommitted file(s)" if changed else ""
        )
    if not enabled:
        return None, f"{note}, live tree"
    code = workdir / "code"
    shutil.copytree(package, code / "mailboxkit", ignore=shutil.ignore_patterns("__pycache__"))
    return code, f"{note}, snapshot taken at start"


def fs_type(path: Path) -> tuple[str, str]:
    """The file system type and the device of the mount that holds ``path``."""
    best = ("?", "?")
    best_len = -1
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint.rstrip("/") + "/"
        if (str(path.resolve()) + "/").startswith(mount) and len(mount) > best_len:
            best, best_len = (part.fstype, part.device), len(mount)
    return best


# --- PostgreSQL -------------------------------------------------------------------------------


def pg_query(url: str, *statements: str) -> list[Any]:
    """Run ``statements`` on one connection to ``url``; the rows of each."""
    import asyncpg

    async def run() -> list[Any]:
        conn = await asyncpg.connect(url)
        try:
            return [await conn.fetch(s) for s in statements]
        finally:
            await conn.close()

    return asyncio.run(run())


def with_database(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))


def async_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


async def make_database(url: str) -> tuple[str, str]:
    """A fresh database beside ``url``: its URL and its name."""
    import asyncpg

    name = f"mbk_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(url, name), name


async def drop_database(url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
