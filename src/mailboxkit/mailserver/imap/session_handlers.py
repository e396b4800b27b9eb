"""Handlers of the commands that manage the session: CAPABILITY, NOOP, LOGOUT, ID, ENABLE,
NAMESPACE, STARTTLS, LOGIN, AUTHENTICATE (RFC 3501 §6.1, §6.2; RFC 2971, 5161, 2342, 4959).
"""

from __future__ import annotations

import asyncio
import logging
from typing import NoReturn

from mailboxkit.mailserver.imap import commands as c
from mailboxkit.mailserver.imap.auth import check_credentials, parse_plain
from mailboxkit.mailserver.imap.context import Context, Outcome
from mailboxkit.mailserver.imap.errors import ClientDisconnected, CommandFailed
from mailboxkit.mailserver.imap.responses import (
    CapabilityCode,
    CapabilityData,
    Code,
    Condition,
    Continuation,
    EnabledData,
    IdData,
    Namespace,
    NamespaceData,
    StatusResponse,
)
from mailboxkit.mailserver.imap.state import (
    Authenticated,
    LoggedOut,
    NotAuthenticated,
    Selected,
    State,
)
from mailboxkit.store.folders import DELIMITER

log = logging.getLogger(__name__)

SERVER_ID = (("name", "MailboxKit"), ("vendor", "MailboxKit"))
ENABLEABLE = {"CONDSTORE": "CONDSTORE", "QRESYNC": "QRESYNC", "IMAP4REV2": "IMAP4rev2"}
"""Extensions ENABLE turns on, by upper-cased name, as ``* ENABLED`` spells them (RFC 5161
§3.1; RFC 7162 §3.2.3: QRESYNC implies CONDSTORE; RFC 9051 §6.3.1: IMAP4rev2)."""

EXTENSIONS = (
    "IMAP4rev1",
    "IMAP4rev2",  # RFC 9051 §7.2.2: both, so each client picks; rev2 behaviour after ENABLE
    "LITERAL+",
    "LITERAL-",  # RFC 9051 §7.2.2 lists it; LITERAL+ already accepts more (RFC 7888)
    "BINARY",
    "SEARCHRES",
    "STATUS=SIZE",
    "SASL-IR",
    "ID",
    "ENABLE",
    "IDLE",
    "NAMESPACE",
    "UNSELECT",
    "CHILDREN",
    "SPECIAL-USE",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "UIDPLUS",
    "MOVE",
    "CONDSTORE",
    "QRESYNC",
    "ESEARCH",
    "QUOTA",  # RFC 9208 §3.1; STORAGE is the one resource (§5.1), SETQUOTA is not offered
    "QUOTA=RES-STORAGE",
)


def capabilities(ctx: Context, state: State) -> tuple[str, ...]:
    """The capability list for ``state`` (RFC 3501 §6.1.1, §6.2.3 LOGINDISABLED)."""
    caps = [*EXTENSIONS, f"APPENDLIMIT={ctx.services.limits.max_literal}"]
    if isinstance(state, NotAuthenticated):
        if not ctx.conn.secure and ctx.services.tls_context is not None:
            caps.append("STARTTLS")
        if ctx.conn.secure or ctx.services.allow_plaintext:
            caps.append("AUTH=PLAIN")
        else:
            caps.append("LOGINDISABLED")
    return tuple(caps)


async def handle_capability(ctx: Context, state: State, command: c.Capability) -> Outcome:
    """List the capabilities. State: any. RFC 3501 §6.1.1."""
    await ctx.conn.send(CapabilityData(capabilities(ctx, state)))
    return Outcome("CAPABILITY completed")


async def handle_noop(ctx: Context, state: State, command: c.Noop) -> Outcome:
    """Nothing; the session reports mailbox changes after it. State: any. RFC 3501 §6.1.2."""
    return Outcome("NOOP completed")


async def handle_logout(ctx: Context, state: State, command: c.Logout) -> Outcome:
    """``* BYE``, then the tagged OK, then close. State: any. RFC 3501 §6.1.3."""
    await ctx.conn.send(StatusResponse(Condition.BYE, "Logging out"))
    return Outcome("LOGOUT completed", state=LoggedOut())


async def handle_id(ctx: Context, state: State, command: c.Id) -> Outcome:
    """Exchange implementation names. State: any. RFC 2971 §3.1."""
    if command.parameters:
        log.debug("event=imap_client_id session=%s id=%r", ctx.conn.session_id, command.parameters)
    await ctx.conn.send(IdData(SERVER_ID))
    return Outcome("ID completed")


async def handle_enable(ctx: Context, state: Authenticated, command: c.Enable) -> Outcome:
    """Turn on CONDSTORE, QRESYNC, IMAP4rev2; others are ignored. State: Authenticated.
    RFC 5161 §3.1, RFC 9051 §6.3.1."""
    newly = [cap for cap in command.capabilities if cap in ENABLEABLE and cap not in ctx.enabled]
    ctx.enabled.update(newly)
    await ctx.conn.send(EnabledData(tuple(ENABLEABLE[cap] for cap in newly)))
    return Outcome("ENABLE completed")


async def handle_namespace(
    ctx: Context, state: Authenticated | Selected, command: c.Namespace
) -> Outcome:
    """One personal namespace, no prefix. State: Authenticated, Selected. RFC 2342 §5."""
    await ctx.conn.send(NamespaceData((Namespace("", DELIMITER),)))
    return Outcome("NAMESPACE completed")


async def handle_starttls(ctx: Context, state: NotAuthenticated, command: c.StartTls) -> Outcome:
    """Upgrade to TLS after the tagged OK. State: NotAuthenticated. RFC 3501 §6.2.1."""
    if ctx.conn.secure:
        raise CommandFailed("TLS is already active", condition=Condition.BAD)
    if ctx.services.tls_context is None:
        raise CommandFailed("TLS is not available", Code.UNAVAILABLE)
    ctx.after_reply.append("starttls")
    return Outcome("Begin TLS negotiation now")


async def handle_login(ctx: Context, state: NotAuthenticated, command: c.Login) -> Outcome:
    """Inbox address and API key. State: NotAuthenticated. RFC 3501 §6.2.3."""
    if not ctx.conn.secure and not ctx.services.allow_plaintext:
        raise CommandFailed("Use STARTTLS first", Code.PRIVACYREQUIRED)
    return await _log_in(ctx, command.username, command.password)


async def handle_authenticate(
    ctx: Context, state: NotAuthenticated, command: c.Authenticate
) -> Outcome:
    """SASL PLAIN, with an initial response or after ``+``. State: NotAuthenticated.
    RFC 3501 §6.2.2, RFC 4959 (SASL-IR), RFC 4616 (PLAIN)."""
    if command.mechanism != "PLAIN":
        raise CommandFailed("Unsupported authentication mechanism", Code.CANNOT)
    if not ctx.conn.secure and not ctx.services.allow_plaintext:
        raise CommandFailed("Use STARTTLS first", Code.PRIVACYREQUIRED)
    message = command.initial_response
    if message is None:
        await ctx.conn.send(Continuation(""))
        await ctx.conn.flush()
        frame = await ctx.conn.read_frame()
        if frame is None:
            raise ClientDisconnected
        message = c.parse_sasl_response(frame, command.tag)
        if message is None:
            raise CommandFailed("Authentication cancelled", condition=Condition.BAD)
    credentials = parse_plain(message)
    if credentials is None:
        await _failed(ctx)
    return await _log_in(ctx, *credentials)


async def _log_in(ctx: Context, username: str, secret: str) -> Outcome:
    services, ip = ctx.services, ctx.conn.peer_ip
    if services.throttle.blocked(ip):
        await asyncio.sleep(services.limits.auth_failure_delay)
        raise CommandFailed("Too many failed logins; try again later", Code.UNAVAILABLE)
    user = await check_credentials(services.db, services.clock, username, secret)
    if user is None:
        await _failed(ctx)
    ctx.watch = services.changes.watch(user.inbox_id)
    state = Authenticated(user)
    log.info("event=imap_login session=%s ip=%s inbox=%s", ctx.conn.session_id, ip, user.inbox_id)
    return Outcome("Logged in", CapabilityCode(capabilities(ctx, state)), state)


async def _failed(ctx: Context) -> NoReturn:
    services, ip = ctx.services, ctx.conn.peer_ip
    services.throttle.failed(ip)
    log.info("event=imap_auth_failed session=%s ip=%s", ctx.conn.session_id, ip)
    await asyncio.sleep(services.limits.auth_failure_delay)
    raise CommandFailed("Authentication failed", Code.AUTHENTICATIONFAILED)
