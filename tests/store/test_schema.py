"""The tables the migrations build are the tables ``store/models.py`` describes, on SQLite and
PostgreSQL: a migration forgotten or a model changed alone fails here."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from mailboxkit.store import models as m
from mailboxkit.store.db import Database


def _differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, m.metadata))


async def test_migrations_match_the_models(database_url: str) -> None:
    db = Database.open(database_url)
    try:
        async with db.read() as conn:
            differences = await conn.run_sync(_differences)
    finally:
        await db.close()
    assert differences == []
