"""The ``mailboxkit`` command: serve, migrate, account/inbox management, DNS records and keys,
the store sweep."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from pathlib import Path

from pydantic import ValidationError

from mailboxkit.config import Settings
from mailboxkit.dns import dkimkeys
from mailboxkit.dns.check import check_domain, check_report
from mailboxkit.dns.mtasts import PolicyFetcher, policy_client
from mailboxkit.dns.records import (
    DomainProfile,
    RecordPurpose,
    domain_records,
    normalize_domain,
    operator_notes,
    records_table,
    zone_fragment,
)
from mailboxkit.dns.resolver import DnsResolver
from mailboxkit.store import accounts, erasure, quota
from mailboxkit.store.blobs import BlobStore
from mailboxkit.store.clock import SystemClock
from mailboxkit.store.db import Database
from mailboxkit.store.export import export_account
from mailboxkit.store.migrate import upgrade_async
from mailboxkit.store.sweep import sweep_once

log = logging.getLogger("mailboxkit")


_NO_LIMIT = -1
"""What ``none`` parses to: remove the limit (an option not given is None: unchanged)."""


def _limit(text: str) -> int:
    """A limit argument: a whole number, or ``none`` for unlimited."""
    if text.strip().lower() == "none":
        return _NO_LIMIT
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or none") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailboxkit", description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML settings file (MAILBOXKIT_* win over it)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run every listener and worker in one process")
    serve.add_argument("--no-migrate", action="store_true", help="do not migrate at start")
    sub.add_parser("migrate", help="bring the database schema up to date")

    account = sub.add_parser("account", help="accounts").add_subparsers(
        dest="action", required=True
    )
    create_account = account.add_parser("create", help="make an account and an API key for it")
    create_account.add_argument("name")
    create_account.add_argument("--owner-email")
    create_account.add_argument("--json", action="store_true")
    delete_account = account.add_parser(
        "delete", help="delete an account and all its data, for good (its inboxes and mail too)"
    )
    delete_account.add_argument("account_id")
    delete_account.add_argument("--yes", action="store_true", help="really delete it")
    export_account = account.add_parser(
        "export", help="write all of an account's data to a zip (Maildir folders and JSON)"
    )
    export_account.add_argument("account_id")
    export_account.add_argument(
        "--output", "-o", type=Path, required=True, help="the zip to write ('-': stdout)"
    )
    limits = account.add_parser(
        "limits", help="set and/or show an account's quotas and what it uses of them"
    )
    limits.add_argument("account_id")
    limits.add_argument("--storage", type=_limit, metavar="BYTES|none", help="bytes of stored mail")
    limits.add_argument("--inboxes", type=_limit, metavar="N|none", help="inboxes")
    limits.add_argument(
        "--sends-per-day", type=_limit, metavar="N|none", help="messages sent per UTC day"
    )
    limits.add_argument("--json", action="store_true")

    inbox = sub.add_parser("inbox", help="inboxes").add_subparsers(dest="action", required=True)
    create_inbox = inbox.add_parser(
        "create",
        help="make an inbox and print a new API key once "
        "(an account key for a new account, an inbox key with --account)",
    )
    create_inbox.add_argument("address")
    create_inbox.add_argument("--account", help="add to this account instead of a new one")
    create_inbox.add_argument("--name", default="", help="display name")
    create_inbox.add_argument("--json", action="store_true")
    list_inboxes = inbox.add_parser("list", help="list inboxes")
    list_inboxes.add_argument("--account")
    list_inboxes.add_argument("--json", action="store_true")

    dns = sub.add_parser("dns", help="DNS records").add_subparsers(dest="action", required=True)
    records = dns.add_parser(
        "records", help="print the records DOMAIN needs (makes its DKIM keys if absent)"
    )
    records.add_argument("domain")
    records_form = records.add_mutually_exclusive_group()
    records_form.add_argument("--zone", action="store_true", help="as a BIND zone-file fragment")
    records_form.add_argument("--json", action="store_true")
    check = dns.add_parser(
        "check", help="compare DOMAIN's live DNS with its records; exit 1 if any required is wrong"
    )
    check.add_argument("domain")
    check.add_argument("--json", action="store_true")

    store = sub.add_parser("store", help="the mail store").add_subparsers(
        dest="action", required=True
    )
    store_sweep = store.add_parser(
        "sweep",
        help="delete messages in no folder and blobs no row refers to, once "
        "(the server does it every MAILBOXKIT_STORE_SWEEP_INTERVAL)",
    )
    store_sweep.add_argument(
        "--dry-run", action="store_true", help="count what would be deleted; delete nothing"
    )
    store_sweep.add_argument("--json", action="store_true")

    dkim = sub.add_parser("dkim", help="DKIM keys").add_subparsers(dest="action", required=True)
    rotate = dkim.add_parser(
        "rotate", help="make new keys under new selectors (the old ones stay published)"
    )
    rotate.add_argument("domain")
    return parser


async def _serve(settings: Settings) -> None:
    # Imported here: the web framework and servers take most of a second to load, which every
    # other command would pay for nothing.
    from mailboxkit.app import MailboxKit

    server = MailboxKit(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP (systemctl reload): the certificate again, for new connections; nothing else.
    loop.add_signal_handler(signal.SIGHUP, server.reload_tls)
    await server.start()
    # What exists now (modules, the web app and its schemas, engines) lives as long as the
    # process. Frozen, the collector's full passes no longer walk it: they took 40-80 ms each,
    # every few seconds under load, a stall for every request and session in flight.
    gc.collect()
    gc.freeze()
    await stop.wait()
    log.info("event=shutdown_requested")
    await server.stop()


async def _open_db(settings: Settings) -> Database:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.migrate_on_start:
        await upgrade_async(settings.sqlalchemy_url)
    return Database.open(settings.sqlalchemy_url)


@contextlib.asynccontextmanager
async def _open_stores(settings: Settings) -> AsyncIterator[tuple[Database, BlobStore]]:
    """The database and the blob store, closed at the end."""
    from mailboxkit.components import open_blobs  # loads the server: see _serve

    db = await _open_db(settings)
    blobs = open_blobs(settings)
    try:
        yield db, blobs
    finally:
        await blobs.close()
        await db.close()


async def _account_create(settings: Settings, args: argparse.Namespace) -> int:
    db = await _open_db(settings)
    now = SystemClock().now()
    try:
        async with db.write() as conn:
            account_id = await accounts.create_account(
                conn,
                name=args.name,
                owner_email=args.owner_email,
                now=now,
                limits=quota.Limits.of(settings.new_account_limits()),
            )
            key = await accounts.create_api_key(conn, account_id=account_id, now=now)
    finally:
        await db.close()
    if args.json:
        print(json.dumps({"account_id": account_id, "api_key": key.secret}))
    else:
        print(f"account {account_id}\napi key (shown once): {key.secret}")
    return 0


async def _account_delete(settings: Settings, args: argparse.Namespace) -> int:
    if not args.yes:
        print(
            f"mailboxkit: this deletes account {args.account_id} and all its data for good; "
            "add --yes to do it",
            file=sys.stderr,
        )
        return 2
    # Loads the server's modules (see _serve); the stripe library only with billing on.
    from mailboxkit.api.billing import close_account
    from mailboxkit.components import billing_context

    billing = billing_context(settings)
    stripe_failed: tuple[type[Exception], ...] = ()  # catches nothing with billing off
    if billing is not None:
        import stripe

        stripe_failed = (stripe.StripeError,)
    try:
        async with _open_stores(settings) as (db, blobs):
            erased, canceled = await close_account(
                billing, db, blobs, args.account_id, now=SystemClock().now()
            )
    except erasure.DomainShared:
        print(
            "mailboxkit: another account has inboxes on one of this account's domains",
            file=sys.stderr,
        )
        return 1
    except stripe_failed as error:
        print(f"mailboxkit: Stripe did not cancel the subscriptions: {error}", file=sys.stderr)
        return 1
    finally:
        if billing is not None:
            await billing.close()
    if canceled:
        print(f"canceled {canceled} Stripe subscription(s)")
    if erased is None:
        print(f"mailboxkit: no account {args.account_id}", file=sys.stderr)
        return 1
    print(f"deleted account {args.account_id}: {erased.inboxes} inboxes, {erased.blobs} blobs")
    return 0


async def _account_export(settings: Settings, args: argparse.Namespace) -> int:
    to_stdout = str(args.output) == "-"
    partial = args.output.with_name(args.output.name + ".partial")
    try:
        async with _open_stores(settings) as (db, blobs):
            with contextlib.ExitStack() as files:
                out = sys.stdout.buffer if to_stdout else files.enter_context(partial.open("wb"))
                now = SystemClock().now()
                summary = await export_account(db, blobs, args.account_id, out, now=now)
        if summary is not None and not to_stdout:
            partial.replace(args.output)  # whole, or not there at all
    finally:
        partial.unlink(missing_ok=True)
    if summary is None:
        print(f"mailboxkit: no account {args.account_id}", file=sys.stderr)
        return 1
    print(
        f"exported account {args.account_id}: {summary.inboxes} inboxes, "
        f"{summary.messages} messages, {summary.missing_blobs} missing, "
        f"{summary.archive_bytes} bytes",
        file=sys.stderr,
    )
    return 0


async def _account_limits(settings: Settings, args: argparse.Namespace) -> int:
    given = {
        "storage_limit": args.storage,
        "inbox_limit": args.inboxes,
        "daily_send_limit": args.sends_per_day,
    }
    changes = {k: (None if v == _NO_LIMIT else v) for k, v in given.items() if v is not None}
    db = await _open_db(settings)
    try:
        async with db.write() as conn:
            found = await quota.set_limits(conn, args.account_id, changes)
            now = SystemClock().now()
            current = await quota.get_quota(conn, args.account_id, now=now) if found else None
    finally:
        await db.close()
    if current is None:
        print(f"mailboxkit: no account {args.account_id}", file=sys.stderr)
        return 1
    rows = (
        ("storage", current.storage_used, current.limits.storage, "bytes"),
        ("inboxes", current.inboxes, current.limits.inboxes, ""),
        ("sends today", current.sends_today, current.limits.sends_per_day, "(UTC)"),
    )
    if args.json:
        print(
            json.dumps(
                {
                    "account_id": args.account_id,
                    "limits": {
                        "storage_bytes": current.limits.storage,
                        "inboxes": current.limits.inboxes,
                        "sends_per_day": current.limits.sends_per_day,
                    },
                    "used": {
                        "storage_bytes": current.storage_used,
                        "inboxes": current.inboxes,
                        "sends_today": current.sends_today,
                    },
                }
            )
        )
        return 0
    print(f"account {args.account_id}")
    for name, used, limit, unit in rows:
        shown = "unlimited" if limit is None else str(limit)
        print(f"{name:<12} {used} of {shown} {unit}".rstrip())
    return 0


async def _inbox_create(settings: Settings, args: argparse.Namespace) -> int:
    if "@" not in args.address:
        args.address = f"{args.address}@{settings.domain}"
    db = await _open_db(settings)
    now = SystemClock().now()
    try:
        async with db.write() as conn:
            account_id = args.account or await accounts.create_account(
                conn,
                name=args.address,
                owner_email=None,
                now=now,
                limits=quota.Limits.of(settings.new_account_limits()),
            )
            inbox = await accounts.create_inbox(
                conn, account_id=account_id, address=args.address, display_name=args.name, now=now
            )
            key = await accounts.create_api_key(
                conn, account_id=account_id, inbox_id=inbox.id if args.account else None, now=now
            )
    except accounts.AddressTaken:
        print(f"mailboxkit: {args.address} exists already", file=sys.stderr)
        return 1
    except quota.InboxLimitReached:
        print(
            "mailboxkit: the account has as many inboxes as its limit allows "
            "(see mailboxkit account limits, and MAILBOXKIT_DEFAULT_INBOX_LIMIT for new ones)",
            file=sys.stderr,
        )
        return 1
    finally:
        await db.close()
    if args.json:
        print(json.dumps({"inbox_id": inbox.id, "email": inbox.address, "api_key": key.secret}))
    else:
        print(f"inbox {inbox.id}\nemail {inbox.address}\napi key (shown once): {key.secret}")
    return 0


async def _inbox_list(settings: Settings, args: argparse.Namespace) -> int:
    db = await _open_db(settings)
    try:
        async with db.read() as conn:
            found = await accounts.list_inboxes(conn, args.account)
    finally:
        await db.close()
    if args.json:
        print(
            json.dumps(
                [{"inbox_id": i.id, "email": i.address, "account_id": i.account_id} for i in found]
            )
        )
    else:
        for i in found:
            print(f"{i.id}  {i.address}  account={i.account_id}")
    return 0


def _domain_arg(args: argparse.Namespace) -> str | None:
    try:
        return normalize_domain(args.domain)
    except ValueError as exc:
        print(f"mailboxkit: {exc}", file=sys.stderr)
        return None


async def _dns_records(settings: Settings, args: argparse.Namespace) -> int:
    domain = _domain_arg(args)
    if domain is None:
        return 2
    db = await _open_db(settings)
    try:
        keys = await dkimkeys.ensure_keys(db, domain, now=SystemClock().now())
    finally:
        await db.close()
    profile = DomainProfile.from_settings(settings, domain, [k.published for k in keys])
    records, notes = domain_records(profile), operator_notes(profile)
    if args.json:
        print(json.dumps([asdict(r) for r in records], indent=2))
    elif args.zone:
        print(zone_fragment(records, domain, notes), end="")
    else:
        print(records_table(records, notes), end="")
    return 0


async def _dns_check(settings: Settings, args: argparse.Namespace) -> int:
    domain = _domain_arg(args)
    if domain is None:
        return 2
    try:
        resolver = DnsResolver(settings.nameservers, timeout=settings.dns_timeout)
    except ValueError as exc:
        print(f"mailboxkit: MAILBOXKIT_DNS_NAMESERVERS: {exc}", file=sys.stderr)
        return 2
    db = await _open_db(settings)
    try:
        async with db.read() as conn:
            keys = await dkimkeys.domain_keys(conn, domain)
    finally:
        await db.close()
    profile = DomainProfile.from_settings(settings, domain, [k.published for k in keys])
    client = policy_client(settings.outbound_mta_sts_timeout, settings.outbound_tls_ca_file)
    fetcher = PolicyFetcher(
        resolver,
        client,
        port=settings.outbound_mta_sts_port,
        timeout=settings.outbound_mta_sts_timeout,
    )
    try:
        result = await check_domain(profile, resolver, fetcher)
    finally:
        await fetcher.close()
    if args.json:
        checks = [asdict(c) for c in result.checks]
        print(json.dumps({"domain": domain, "ok": result.ok, "checks": checks}, indent=2))
    else:
        print(check_report(result), end="")
    return 0 if result.ok else 1


async def _dkim_rotate(settings: Settings, args: argparse.Namespace) -> int:
    domain = _domain_arg(args)
    if domain is None:
        return 2
    db = await _open_db(settings)
    try:
        new = await dkimkeys.rotate_keys(db, domain, now=SystemClock().now())
    except dkimkeys.UnknownDomain:
        print(f"mailboxkit: {domain} is not a domain of this server", file=sys.stderr)
        return 1
    finally:
        await db.close()
    profile = DomainProfile.from_settings(settings, domain, [k.published for k in new])
    dkim = [r for r in domain_records(profile) if r.purpose is RecordPurpose.DKIM]
    note = "publish these now; the older selectors stay published until removed"
    print(records_table(dkim, [note]), end="")
    return 0


async def _store_sweep(settings: Settings, args: argparse.Namespace) -> int:
    from mailboxkit.components import sweep_policy  # loads the server: see _serve

    async with _open_stores(settings) as (db, blobs):
        report = await sweep_once(
            db, blobs, SystemClock(), sweep_policy(settings), dry_run=args.dry_run
        )
    if report is None:
        print("mailboxkit: another server process is sweeping now", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(asdict(report)))
        return 0
    verb = "would delete" if report.dry_run else "deleted"
    print(
        f"{verb}: {report.messages} messages in no folder, "
        f"{report.raw_blobs} message blobs ({report.raw_bytes} bytes), "
        f"{report.attachment_blobs} attachment blobs ({report.attachment_bytes} bytes)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.load(args.config)
    except (ValidationError, ValueError) as exc:
        print(f"mailboxkit: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    if args.command == "serve":
        if args.no_migrate:
            settings = settings.model_copy(update={"migrate_on_start": False})
        asyncio.run(_serve(settings))
        return 0
    if args.command == "migrate":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(upgrade_async(settings.sqlalchemy_url))
        return 0
    # The one-shot commands migrate a new database quietly: their output is what they print.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    commands = {
        ("account", "create"): _account_create,
        ("account", "delete"): _account_delete,
        ("account", "export"): _account_export,
        ("account", "limits"): _account_limits,
        ("inbox", "create"): _inbox_create,
        ("inbox", "list"): _inbox_list,
        ("dns", "records"): _dns_records,
        ("dns", "check"): _dns_check,
        ("dkim", "rotate"): _dkim_rotate,
        ("store", "sweep"): _store_sweep,
    }
    return asyncio.run(commands[(args.command, args.action)](settings, args))


if __name__ == "__main__":
    raise SystemExit(main())
