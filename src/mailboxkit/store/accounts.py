"""Accounts, API keys, domains and inboxes.

API keys are ``mbk_`` followed by 40 random base62 characters. Only their SHA-256 is stored (a
key has 238 bits of entropy, so a slow hash adds nothing); the first 12 characters are kept as a
visible prefix to find the row and to show in listings. Comparison is constant-time. A key's
last-used time is kept to the minute, so checking a key is a read and not a write per request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.ids import new_id
from mailboxkit.store.quota import UNLIMITED, Limits, check_inbox_limit, limit_columns

KEY_PREFIX = "mbk_"
KEY_ALPHABET = string.ascii_letters + string.digits
VISIBLE_PREFIX_LENGTH = 12
LAST_USED_RESOLUTION = timedelta(minutes=1)

# RFC 6154 special-use folders every inbox starts with (INBOX is RFC 3501 §5.1).
DEFAULT_FOLDERS: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)


class AddressTaken(Exception):
    """The inbox address exists already."""


@dataclass(frozen=True, slots=True)
class Inbox:
    id: str
    account_id: str
    address: str
    display_name: str


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly made API key: ``secret`` is shown once and never stored."""

    id: str
    secret: str
    prefix: str


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(KEY_ALPHABET) for _ in range(40))


def split_address(address: str) -> tuple[str, str]:
    """``Local+tag@Domain`` -> (``local``, ``domain``), lowercased, the plus-tag dropped."""
    local, _, domain = address.strip().rpartition("@")
    local = local.partition("+")[0]
    return local.lower(), domain.rstrip(".").lower()


async def create_account(
    conn: AsyncConnection,
    *,
    name: str,
    owner_email: str | None,
    now: datetime,
    limits: Limits = UNLIMITED,
) -> str:
    """A new account with ``limits`` (the server's defaults for new accounts, ``store.quota``)."""
    account_id = new_id()
    await conn.execute(
        insert(m.accounts).values(
            id=account_id,
            name=name,
            owner_email=owner_email,
            status="active",
            created_at=now,
            **limit_columns(limits),
        )
    )
    return account_id


async def ensure_domain(
    conn: AsyncConnection, name: str, *, now: datetime, account_id: str | None = None
) -> str:
    """The id of domain ``name``, added (unverified) when it is new."""
    name = name.rstrip(".").lower()
    found = await conn.scalar(select(m.domains.c.id).where(m.domains.c.name == name))
    if found is not None:
        return str(found)
    domain_id = new_id()
    await conn.execute(
        insert(m.domains).values(id=domain_id, account_id=account_id, name=name, created_at=now)
    )
    return domain_id


async def create_inbox(
    conn: AsyncConnection,
    *,
    account_id: str,
    address: str,
    now: datetime,
    display_name: str = "",
    metadata: dict[str, Any] | None = None,
) -> Inbox:
    """Make an inbox and its default folders. Raises :class:`AddressTaken`, and
    :class:`~mailboxkit.store.quota.InboxLimitReached` when the account has its limit."""
    local, domain = split_address(address)
    address = f"{local}@{domain}"
    if await conn.scalar(select(m.inboxes.c.id).where(m.inboxes.c.address == address)):
        raise AddressTaken(address)
    await check_inbox_limit(conn, account_id)
    domain_id = await ensure_domain(conn, domain, now=now)
    inbox_id = new_id()
    await conn.execute(
        insert(m.inboxes).values(
            id=inbox_id,
            account_id=account_id,
            domain_id=domain_id,
            local_part=local,
            address=address,
            display_name=display_name,
            metadata=metadata or {},
            created_at=now,
        )
    )
    uidvalidity = int(now.timestamp())
    await conn.execute(
        insert(m.folders),
        [
            {
                "inbox_id": inbox_id,
                "name": name,
                "special_use": use,
                "uidvalidity": uidvalidity,
                "uidnext": 1,
                "highestmodseq": 1,
                "subscribed": True,
                "created_at": now,
            }
            for name, use in DEFAULT_FOLDERS
        ],
    )
    return Inbox(inbox_id, account_id, address, display_name)


async def create_api_key(
    conn: AsyncConnection,
    *,
    account_id: str,
    now: datetime,
    inbox_id: str | None = None,
    name: str = "",
) -> NewKey:
    secret = generate_key()
    key_id = new_id()
    prefix = secret[:VISIBLE_PREFIX_LENGTH]
    await conn.execute(
        insert(m.api_keys).values(
            id=key_id,
            account_id=account_id,
            inbox_id=inbox_id,
            name=name,
            prefix=prefix,
            key_hash=hash_key(secret),
            created_at=now,
        )
    )
    return NewKey(key_id, secret, prefix)


@dataclass(frozen=True, slots=True)
class KeyOwner:
    key_id: str
    account_id: str
    inbox_id: str | None  # set when the key is scoped to one inbox
    last_used_at: datetime | None = field(default=None, compare=False)

    def use_is_stale(self, now: datetime) -> bool:
        """Whether the key's last-used time is older than :data:`LAST_USED_RESOLUTION`."""
        return self.last_used_at is None or now - self.last_used_at >= LAST_USED_RESOLUTION

    @property
    def scope(self) -> Scope:
        return Scope(self.account_id, self.inbox_id)


async def authenticate_key(conn: AsyncConnection, secret: str) -> KeyOwner | None:
    """The owner of a live API key, or None. Reads only: see :func:`record_key_use`."""
    if not secret.startswith(KEY_PREFIX) or len(secret) < VISIBLE_PREFIX_LENGTH:
        return None
    row = (
        await conn.execute(
            select(m.api_keys).where(
                m.api_keys.c.prefix == secret[:VISIBLE_PREFIX_LENGTH],
                m.api_keys.c.revoked_at.is_(None),
            )
        )
    ).first()
    if row is None or not hmac.compare_digest(row.key_hash, hash_key(secret)):
        return None
    return KeyOwner(row.id, row.account_id, row.inbox_id, row.last_used_at)


async def record_key_use(conn: AsyncConnection, key_id: str, *, now: datetime) -> None:
    """Set the key's last-used time (callers do it only when :meth:`KeyOwner.use_is_stale`)."""
    await conn.execute(update(m.api_keys).where(m.api_keys.c.id == key_id).values(last_used_at=now))


async def find_inbox(conn: AsyncConnection, address: str) -> Inbox | None:
    """The inbox that receives mail for ``address`` (plus-addressing: ``a+tag@d`` is ``a@d``)."""
    local, domain = split_address(address)
    row = (
        await conn.execute(
            select(
                m.inboxes.c.id,
                m.inboxes.c.account_id,
                m.inboxes.c.address,
                m.inboxes.c.display_name,
            ).where(m.inboxes.c.address == f"{local}@{domain}")
        )
    ).first()
    return None if row is None else Inbox(row.id, row.account_id, row.address, row.display_name)


async def is_local_domain(conn: AsyncConnection, domain: str) -> bool:
    name = domain.rstrip(".").lower()
    return (await conn.scalar(select(m.domains.c.id).where(m.domains.c.name == name))) is not None


async def list_inboxes(conn: AsyncConnection, account_id: str | None = None) -> list[Inbox]:
    query = select(
        m.inboxes.c.id, m.inboxes.c.account_id, m.inboxes.c.address, m.inboxes.c.display_name
    ).order_by(m.inboxes.c.address)
    if account_id is not None:
        query = query.where(m.inboxes.c.account_id == account_id)
    rows = (await conn.execute(query)).all()
    return [Inbox(r.id, r.account_id, r.address, r.display_name) for r in rows]


# The HTTP API's view: scopes, accounts, keys and registration.


@dataclass(frozen=True, slots=True)
class Scope:
    """What a caller may see: one account, or only one inbox of it (an inbox-scoped key)."""

    account_id: str
    inbox_id: str | None = None


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    owner_email: str | None
    status: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as listed: never its secret."""

    id: str
    name: str
    prefix: str
    inbox_id: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _account(row: Any) -> Account:
    return Account(row.id, row.name, row.owner_email, row.status, row.created_at)


async def get_account(conn: AsyncConnection, account_id: str) -> Account | None:
    row = (await conn.execute(select(m.accounts).where(m.accounts.c.id == account_id))).first()
    return None if row is None else _account(row)


async def update_account(
    conn: AsyncConnection, account_id: str, changes: dict[str, Any]
) -> Account | None:
    """Change ``name`` and/or ``owner_email``; the updated account, or None when absent."""
    allowed = {k: v for k, v in changes.items() if k in ("name", "owner_email")}
    if allowed:
        await conn.execute(
            update(m.accounts).where(m.accounts.c.id == account_id).values(**allowed)
        )
    return await get_account(conn, account_id)


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        row.id,
        row.name,
        row.prefix,
        row.inbox_id,
        row.created_at,
        row.last_used_at,
        row.revoked_at,
    )


async def list_api_keys(conn: AsyncConnection, account_id: str) -> list[ApiKey]:
    rows = await conn.execute(
        select(m.api_keys)
        .where(m.api_keys.c.account_id == account_id)
        .order_by(m.api_keys.c.created_at, m.api_keys.c.id)
    )
    return [_api_key(r) for r in rows]


async def get_api_key(conn: AsyncConnection, account_id: str, key_id: str) -> ApiKey | None:
    row = (
        await conn.execute(
            select(m.api_keys).where(
                m.api_keys.c.id == key_id, m.api_keys.c.account_id == account_id
            )
        )
    ).first()
    return None if row is None else _api_key(row)


async def revoke_api_key(
    conn: AsyncConnection, account_id: str, key_id: str, *, now: datetime
) -> bool:
    """Revoke a key of ``account_id`` (idempotent); False when the account has no such key."""
    found = await get_api_key(conn, account_id, key_id)
    if found is None:
        return False
    if found.revoked_at is None:
        await conn.execute(
            update(m.api_keys).where(m.api_keys.c.id == key_id).values(revoked_at=now)
        )
    return True


USERNAME_ALPHABET = frozenset(string.ascii_lowercase + string.digits + ".-_")
MAX_USERNAME = 64  # RFC 5321 §4.5.3.1.1 local-part limit


def username_from(name: str) -> str:
    """A plausible mailbox name from a free-form name: ``"Support Bot!"`` -> ``support-bot``."""
    out: list[str] = []
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    for char in ascii_name.lower():
        if char in USERNAME_ALPHABET and char.isascii():
            out.append(char)
        elif out and out[-1] != "-":
            out.append("-")
    slug = "".join(out).strip(".-_")
    while ".." in slug:
        slug = slug.replace("..", ".")
    return slug[: MAX_USERNAME - 8].strip(".-_") or "agent"


async def free_address(conn: AsyncConnection, name: str, domain: str) -> str:
    """``name@domain`` derived from ``name``, with a random suffix when that is taken."""
    base = username_from(name)
    candidates = [base, *(f"{base}-{secrets.token_hex(3)}" for _ in range(8))]
    for local in candidates:
        address = f"{local}@{domain}"
        if await conn.scalar(select(m.inboxes.c.id).where(m.inboxes.c.address == address)) is None:
            return address
    raise AddressTaken(f"{base}@{domain}")


@dataclass(frozen=True, slots=True)
class Registration:
    account_id: str
    inbox: Inbox
    key: NewKey


async def register(
    conn: AsyncConnection,
    *,
    name: str,
    owner_email: str,
    domain: str,
    now: datetime,
    limits: Limits = UNLIMITED,
) -> Registration:
    """A new account with one inbox on ``domain`` (named after ``name``) and an account key."""
    account_id = await create_account(
        conn, name=name, owner_email=owner_email, now=now, limits=limits
    )
    address = await free_address(conn, name, domain)
    inbox = await create_inbox(conn, account_id=account_id, address=address, now=now)
    key = await create_api_key(conn, account_id=account_id, now=now, name="registration")
    return Registration(account_id, inbox, key)
