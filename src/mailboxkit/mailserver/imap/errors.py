"""IMAP protocol errors that render their own response.

Each exception knows the response the client gets; the connection catches them in one
place, writes ``serialize(error.response())`` and either continues (:class:`CommandSyntaxError`,
:class:`CommandRejected`) or closes (:class:`FramingError`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailboxkit.mailserver.imap.responses import Condition, ResponseCode, StatusResponse

if TYPE_CHECKING:
    from mailboxkit.mailserver.imap.state import State


class ImapError(Exception):
    """Base class: a protocol error with a response for the client."""

    def response(self) -> StatusResponse:
        """The response to send for this error."""
        raise NotImplementedError


class CommandSyntaxError(ImapError):
    """A command that does not parse: ``tag BAD message`` (RFC 3501 §7.1.3).

    ``tag`` is ``None`` when no valid tag could be read; the response is then ``* BAD``.
    """

    def __init__(self, tag: str | None, message: str) -> None:
        super().__init__(message)
        self.tag = tag
        self.message = message

    def response(self) -> StatusResponse:
        return StatusResponse(Condition.BAD, self.message, tag=self.tag)


class CommandRejected(ImapError):
    """A command the framer refused before it was complete (a size limit was exceeded).

    The framer has already skipped the rest of the command, so the connection can carry on
    after the tagged response (RFC 3501 §7.5: a client that gets a tagged response instead of
    a continuation abandons the command).
    """

    def __init__(
        self, tag: str | None, condition: Condition, code: ResponseCode | None, message: str
    ) -> None:
        super().__init__(message)
        self.tag = tag
        self.condition = condition
        self.code = code
        self.message = message

    def response(self) -> StatusResponse:
        return StatusResponse(self.condition, self.message, tag=self.tag, code=self.code)


class FramingError(ImapError):
    """Input the framer cannot resynchronize after: ``* BYE`` and close the connection."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def response(self) -> StatusResponse:
        return StatusResponse(Condition.BYE, self.message)


class CommandFailed(ImapError):
    """A handler's refusal: ``tag NO [code] text`` (or BAD), the session carries on.

    The session adds the tag; :meth:`response` without one renders the untagged form.
    ``state`` is the state to continue in when a failure still changes it (a failed SELECT
    leaves the previous mailbox deselected, RFC 3501 §6.3.1).
    """

    def __init__(
        self,
        message: str,
        code: ResponseCode | None = None,
        condition: Condition = Condition.NO,
        state: State | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.condition = condition
        self.state = state

    def response(self, tag: str | None = None) -> StatusResponse:
        return StatusResponse(self.condition, self.message, tag=tag, code=self.code)


class ClientDisconnected(Exception):
    """The client closed the connection in the middle of a command."""
