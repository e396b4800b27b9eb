"""One IMAP connection: the loop that frames, parses, checks, dispatches and answers.

Implementation notes (the pipeline of STYLE.md, in this order):

- bytes -> ``wire.read_frame`` (limits, literal continuations) -> ``commands.parse_command``
  (``BAD`` with the reason) -> ``state.allowed`` (``BAD`` if not in this state) ->
  ``dispatch.HANDLERS`` -> the untagged responses the handler sent, then the updates of the
  selected mailbox (``sync``), then the tagged response -> ``responses.serialize``.
- Errors are caught here and only here: a handler's ``CommandFailed`` is its tagged NO/BAD;
  an unexpected exception is logged once with the session id and answered
  ``BAD [SERVERBUG]``, the store out of reach or out of space ``NO [UNAVAILABLE]`` (RFC 5530,
  the session goes on); a framing error, a timeout or a deleted mailbox end the session with
  ``* BYE``.
  ``CancelledError`` (shutdown) says ``* BYE`` and propagates.
- ``ENABLE IMAP4rev2`` changes the two ends of the pipeline for the rest of the session:
  mailbox names are parsed and serialized as UTF-8 instead of modified UTF-7 (RFC 9051 §5.1).
  Handlers see decoded names either way; what else rev2 changes is theirs (``ctx.imap4rev2``).
- Output is buffered and written at the end of each command, before any read, or when the
  buffer passes :data:`FLUSH_SIZE` (a FETCH of many bodies streams).
- STARTTLS: after the tagged OK, octets the client pipelined behind the command end the
  session instead of being read after the handshake (the STARTTLS command-injection
  hazard, RFC 2595 §3.1, CVE-2011-0411 in other servers).
- Timeouts: ``login_timeout`` before authentication, ``idle_timeout`` after it (RFC 3501
  §5.4 asks at least 30 minutes; clients renew IDLE every 29, RFC 2177 §3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl

from mailboxkit.mailserver.imap import commands as c
from mailboxkit.mailserver.imap.context import Context, Services
from mailboxkit.mailserver.imap.dispatch import HANDLERS
from mailboxkit.mailserver.imap.errors import (
    ClientDisconnected,
    CommandFailed,
    CommandRejected,
    CommandSyntaxError,
    FramingError,
)
from mailboxkit.mailserver.imap.mailbox_view import InvalidSequence
from mailboxkit.mailserver.imap.responses import (
    CapabilityCode,
    Code,
    Condition,
    Response,
    StatusResponse,
    serialize,
)
from mailboxkit.mailserver.imap.session_handlers import capabilities
from mailboxkit.mailserver.imap.state import (
    ALLOWED,
    SUPPORTED,
    Authenticated,
    LoggedOut,
    NotAuthenticated,
    Selected,
    State,
    allowed,
)
from mailboxkit.mailserver.imap.sync import MailboxGone, report_changes
from mailboxkit.mailserver.imap.wire import Frame, FrameLimits, read_frame
from mailboxkit.store.db import brief, storage_full, unavailable

log = logging.getLogger(__name__)

FLUSH_SIZE = 65536
"""Buffered response octets that trigger a write (a rendering choice, not a limit)."""

# The client went away. Not ConnectionError as a whole: ConnectionRefusedError comes from
# connecting to the database, never from a client's socket.
_ABORTS = (
    ClientDisconnected,
    BrokenPipeError,
    ConnectionAbortedError,
    ConnectionResetError,
    asyncio.IncompleteReadError,
    ssl.SSLError,
)
_UNAVAILABLE = "Mail store temporarily unavailable, try again later"
_OUT_OF_SPACE = "Mail store out of space, try again later"


class Session:
    """The state machine of one connection (see the module notes)."""

    def __init__(
        self,
        services: Services,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        secure: bool,
        peer_ip: str,
    ) -> None:
        self.session_id = secrets.token_hex(4)
        self.peer_ip = peer_ip
        self.state: State = NotAuthenticated()
        self.command: c.Command | None = None
        """The command being executed, if any (shutdown lets it finish, IDLE aside)."""
        self.closing = False
        self._reader = reader
        self._writer = writer
        self._secure = secure
        self._out = bytearray()
        limits = services.limits
        self._frame_limits = FrameLimits(
            max_line=limits.max_line,
            max_literal=limits.max_literal,
            max_command=limits.max_command,
            literal_plus=True,
        )
        self.ctx = Context(services, self)

    # -- the Connection protocol ----------------------------------------------------------

    @property
    def secure(self) -> bool:
        return self._secure

    async def send(self, response: Response) -> None:
        self._out += serialize(response, utf8_names=self.ctx.imap4rev2)
        if len(self._out) >= FLUSH_SIZE:
            await self.flush()

    async def flush(self) -> None:
        if self._out:
            self._writer.write(bytes(self._out))
            self._out.clear()
        await self._writer.drain()

    async def read_frame(self) -> Frame | None:
        await self.flush()
        limits = self.ctx.services.limits
        unauthenticated = isinstance(self.state, NotAuthenticated)
        timeout = limits.login_timeout if unauthenticated else limits.idle_timeout
        return await asyncio.wait_for(
            read_frame(self._reader, self._frame_limits, self._continue), timeout
        )

    async def _continue(self) -> None:
        self._writer.write(b"+ Ready for literal data\r\n")
        await self._writer.drain()

    async def start_tls(self) -> None:
        context = self.ctx.services.tls_context
        assert context is not None
        if getattr(self._reader, "_buffer", b""):
            raise FramingError("Data pipelined after STARTTLS")
        await self._writer.start_tls(context)
        self._secure = True

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until LOGOUT, end of input, an error or shutdown."""
        log.debug("event=imap_connect session=%s ip=%s", self.session_id, self.peer_ip)
        try:
            greeting = CapabilityCode(capabilities(self.ctx, self.state))
            await self.send(StatusResponse(Condition.OK, "MailboxKit IMAP ready", code=greeting))
            while not isinstance(self.state, LoggedOut) and not self.closing:
                try:
                    frame = await self.read_frame()
                except CommandRejected as rejected:
                    await self.send(rejected.response())
                    continue
                if frame is None:
                    break
                self.busy = True
                try:
                    await self._execute(frame)
                    await self.flush()
                    await self._after_reply()
                finally:
                    self.command = None
        except asyncio.CancelledError:
            await self._bye("Server shutting down", Code.UNAVAILABLE)
            raise
        except FramingError as error:
            await self._bye(error.message)
        except TimeoutError:
            await self._bye("Autologout; idle for too long")
        except MailboxGone:
            await self._bye("Selected mailbox was deleted")
        except _ABORTS:
            pass
        except Exception as error:
            if unavailable(error):
                self._log_unavailable(error)
                await self._bye(_UNAVAILABLE, Code.UNAVAILABLE)
            else:
                log.exception("event=imap_session_error session=%s", self.session_id)
                await self._bye("Internal server error", Code.SERVERBUG)
        finally:
            await self._close()

    async def _execute(self, frame: Frame) -> None:
        try:
            command = c.parse_command(frame, utf8_names=self.ctx.imap4rev2)
        except CommandSyntaxError as error:
            await self.send(error.response())
            return
        tag, self.command = command.tag, command
        if not allowed(self.state, command):
            await self.send(StatusResponse(Condition.BAD, self._refusal(command), tag=tag))
            return
        new_state: State | None = None
        try:
            outcome = await HANDLERS[type(command)](self.ctx, self.state, command)
            status = StatusResponse(Condition.OK, outcome.text, tag=tag, code=outcome.code)
            new_state = outcome.state
        except CommandFailed as failed:
            status, new_state = failed.response(tag), failed.state
        except InvalidSequence as invalid:
            status = StatusResponse(Condition.BAD, str(invalid), tag=tag)
        except CommandRejected:
            status = StatusResponse(Condition.BAD, "Invalid continuation", tag=tag)
        except (*_ABORTS, TimeoutError, MailboxGone, FramingError):
            raise
        except Exception as error:
            if unavailable(error):  # the store out of reach or full: try again later
                self._log_unavailable(error)
                text = _OUT_OF_SPACE if storage_full(error) else _UNAVAILABLE
                status = StatusResponse(Condition.NO, text, tag, Code.UNAVAILABLE)
            else:
                log.exception(
                    "event=imap_command_error session=%s command=%s",
                    self.session_id,
                    type(command).__name__,
                )
                status = StatusResponse(Condition.BAD, "Internal server error", tag, Code.SERVERBUG)
            if isinstance(command, c.Select | c.Examine) and isinstance(self.state, Selected):
                new_state = Authenticated(self.state.user)  # a failed SELECT: none, §6.3.1
        if new_state is not None:
            self.state = new_state
        await self._report(command)
        await self.send(status)

    def _log_unavailable(self, error: Exception) -> None:
        log.warning(
            "event=imap_store_unavailable session=%s error=%s", self.session_id, brief(error)
        )

    def _refusal(self, command: c.Command) -> str:
        kind = type(command)
        if kind not in SUPPORTED:
            return "Command not supported"
        if isinstance(self.state, NotAuthenticated):
            return "Log in first"
        if kind in ALLOWED[Selected] and kind not in ALLOWED[Authenticated]:
            return "No mailbox selected"
        return "Command not valid in this state"

    async def _report(self, command: c.Command) -> None:
        """Updates of the selected mailbox after a command (RFC 3501 §7: untagged responses
        may follow any command; no EXPUNGE after FETCH, STORE, SEARCH, §7.4.1)."""
        state, watch = self.state, self.ctx.watch
        if not isinstance(state, Selected) or watch is None or isinstance(command, c.Idle):
            return
        sequence_based = isinstance(command, c.Fetch | c.Store | c.Search) and not command.uid
        allow_expunge = not sequence_based
        if (
            watch.rung.is_set()
            or isinstance(command, c.Noop | c.Check)
            or (allow_expunge and state.view.pending_expunges)
        ):
            watch.rung.clear()
            try:
                await report_changes(self.ctx, state.view, allow_expunge=allow_expunge)
            except Exception as error:
                if not unavailable(error):
                    raise
                self._log_unavailable(error)
                watch.rung.set()  # the view is as it was: a later command reports

    async def _after_reply(self) -> None:
        actions, self.ctx.after_reply = self.ctx.after_reply, []
        if "starttls" in actions:
            await self.start_tls()

    async def _bye(self, text: str, code: Code | None = None) -> None:
        with contextlib.suppress(Exception):
            self._out.clear()
            self._writer.write(serialize(StatusResponse(Condition.BYE, text, code=code)))
            await asyncio.wait_for(self._writer.drain(), 5)

    async def _close(self) -> None:
        if self.ctx.watch is not None:
            self.ctx.watch.close()
        with contextlib.suppress(Exception):
            if self._out:
                self._writer.write(bytes(self._out))
            self._writer.close()
            await asyncio.wait_for(self._writer.wait_closed(), 5)
        log.debug("event=imap_disconnect session=%s", self.session_id)
