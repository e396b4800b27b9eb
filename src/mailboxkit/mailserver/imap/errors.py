"""IMAP protocol errors that render their own response.

Each exception knows the response the client gets; the connection catches them in one
place, writes ``serialize(error.response())`` and either continues (:class:`CommandSyntaxError`,
:class:`CommandRejected`) or closes (:class:`FramingError`).
"""

from __future__ import annotations

from mailboxkit.mailserver.imap.responses import Condition, ResponseCode, StatusResponse


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
