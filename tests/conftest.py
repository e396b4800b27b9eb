"""Shared fixtures: databases on SQLite and PostgreSQL, and the whole server on loopback.

Store and end-to-end tests take the ``database_url`` fixture, parametrized over both databases.
PostgreSQL is reached at ``MAILBOXKIT_TEST_POSTGRES_URL`` (default: the local server, database
``test``); each test run makes its own database there and drops it at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from mailboxkit.store.accounts import Inbox, create_account, create_inbox
from mailboxkit.store.db import Database
from mailboxkit.store.migrate import upgrade

from harness import OwnDatabase, ServerThread, free_port, server_settings

POSTGRES_URL = os.environ.get(
    "MAILBOXKIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _async_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test run (plain postgresql:// URL)."""
    name = f"mbk_test_{uuid.uuid4().hex[:12]}"
    base, _, _ = POSTGRES_URL.rpartition("/")

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    url = f"{base}/{name}"
    upgrade(_async_url(url))
    yield url
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


def _truncate_all(url: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            tables = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname='public' "
                "AND tablename <> 'alembic_version'"
            )
            names = ", ".join(f'"{t["tablename"]}"' for t in tables)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database; the URL is the async SQLAlchemy URL."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "mailboxkit.db"
        shutil.copyfile(template, path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database")
    _truncate_all(url)
    return _async_url(url)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """The database of ``database_url``, open."""
    database = Database.open(database_url)
    yield database
    await database.close()


@pytest.fixture
async def inbox(db: Database) -> Inbox:
    """``bot@example.test``, the one inbox of a new account."""
    when = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    async with db.write() as conn:
        account = await create_account(conn, name="a", owner_email=None, now=when)
        return await create_inbox(conn, account_id=account, address="bot@example.test", now=when)


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[ServerThread]:
    """The whole server on loopback, IMAP too (no delay after a failed login)."""
    settings = server_settings(
        tmp_path / "data", database_url, imap_port=free_port(), imap_auth_failure_delay=0
    )
    running = ServerThread(settings)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def own_database(postgres_database: str) -> Iterator[OwnDatabase]:
    """A migrated database of this test alone, so cutting it off harms no other."""
    own = OwnDatabase(postgres_database, f"mbk_own_{uuid.uuid4().hex[:12]}")
    own.run(f'CREATE DATABASE "{own.name}"')
    upgrade(own.url)
    yield own
    own.run(f'DROP DATABASE IF EXISTS "{own.name}" WITH (FORCE)')


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """For tests against moto's S3: fake credentials in us-east-1, and no profile, config file
    or instance metadata from this machine."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
