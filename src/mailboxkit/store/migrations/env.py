"""Alembic environment: runs migrations on the async engine the store uses."""

from __future__ import annotations

import asyncio
import logging

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from mailboxkit.store.models import metadata

log = logging.getLogger("mailboxkit.store.migrate")

# Any number, the same in every process: serializes concurrent `migrate` runs on PostgreSQL.
MIGRATION_LOCK = 0x6D626B  # "mbk"


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
    with context.begin_transaction():
        # A newer release migrated this database and this one is being run again (rollback.yml,
        # then site.yml or deploy.yml of the older checkout): migrations only add tables and
        # columns, so this release runs on that schema as it is (docs/deploy.md, rollback).
        known = {script.revision for script in context.script.walk_revisions()}
        ahead = [rev for rev in context.get_context().get_current_heads() if rev not in known]
        if ahead:
            log.warning(
                "event=migrate_skipped revision=%s: the database was migrated by a newer "
                "release; this release runs on it unchanged",
                ",".join(ahead),
            )
            return
        context.run_migrations()


async def _main() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported")
asyncio.run(_main())
