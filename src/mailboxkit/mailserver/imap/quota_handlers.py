"""GETQUOTA, GETQUOTAROOT and SETQUOTA (RFC 9208 QUOTA).

Implementation notes:

- One quota root per account, named ``""``: every mailbox of every inbox of the account is
  under it, as the account's storage limit is (``store.quota``). Its one resource is STORAGE
  (``QUOTA=RES-STORAGE``, RFC 9208 §5.1), in units of 1024 octets: usage rounded up, the limit
  rounded down, so a client never reads "room left" that is not there.
- An account without a storage limit has no quota root: GETQUOTAROOT lists none (RFC 9208
  §4.3 allows a mailbox with no root) and GETQUOTA "" is NO, since a QUOTA response must name
  at least one resource.
- Limits are the operator's to set (``mailboxkit account limits``): SETQUOTA is refused with
  ``[NOPERM]`` and QUOTASET is not advertised (RFC 9208 §4.1).
"""

from __future__ import annotations

from mailboxkit.mailserver.imap import commands as c
from mailboxkit.mailserver.imap.context import Context, Outcome
from mailboxkit.mailserver.imap.errors import CommandFailed
from mailboxkit.mailserver.imap.responses import Code, QuotaData, QuotaRootData
from mailboxkit.mailserver.imap.state import Authenticated, Selected
from mailboxkit.store import quota
from mailboxkit.store.folders import find_folder

ROOT = ""
"""The name of the account's quota root."""

KIB = 1024


async def _storage_quota(ctx: Context, account_id: str) -> QuotaData | None:
    """The account's STORAGE resource, or None when it has no storage limit."""
    async with ctx.services.db.read() as conn:
        found = await quota.storage(conn, account_id)
    if found is None or found.limit is None:
        return None
    used = -(-found.used // KIB)
    return QuotaData(ROOT, (("STORAGE", used, found.limit // KIB),))


async def handle_getquotaroot(
    ctx: Context, state: Authenticated | Selected, command: c.GetQuotaRoot
) -> Outcome:
    """The quota roots of a mailbox and their quotas. State: Authenticated, Selected.
    RFC 9208 §4.3."""
    async with ctx.services.db.read() as conn:
        folder = await find_folder(conn, state.user.inbox_id, command.mailbox)
    if folder is None:
        raise CommandFailed("Mailbox does not exist", Code.NONEXISTENT)
    found = await _storage_quota(ctx, state.user.account_id)
    await ctx.conn.send(QuotaRootData(command.mailbox, () if found is None else (ROOT,)))
    if found is not None:
        await ctx.conn.send(found)
    return Outcome("GETQUOTAROOT completed")


async def handle_getquota(
    ctx: Context, state: Authenticated | Selected, command: c.GetQuota
) -> Outcome:
    """The resources of a quota root, their usage and limits. State: Authenticated,
    Selected. RFC 9208 §4.2."""
    found = await _storage_quota(ctx, state.user.account_id)
    if command.root != ROOT or found is None:
        raise CommandFailed("No such quota root", Code.NONEXISTENT)
    await ctx.conn.send(found)
    return Outcome("GETQUOTA completed")


async def handle_setquota(
    ctx: Context, state: Authenticated | Selected, command: c.SetQuota
) -> Outcome:
    """Refused: the operator sets limits. State: Authenticated, Selected. RFC 9208 §4.1."""
    raise CommandFailed("Quotas are set by the server's operator", Code.NOPERM)
