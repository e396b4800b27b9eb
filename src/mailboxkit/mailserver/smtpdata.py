"""Reading the message of an SMTP DATA command (RFC 5321 §4.1.1.4) a buffer at a time.

aiosmtpd reads DATA a line at a time, several Python steps per line: on a 20 MB message that is
about half a second of the event loop's time. :func:`read_data` reads what has arrived up to
the next ``".\\r\\n"`` in one step and checks lines, size and dots over whole buffers.

Implementation notes (invariants):

- Data ends only at CRLF "." CRLF, whose first CRLF may be the one that ended the DATA command
  (an empty message). A "." line ended by a bare CR or LF, and bare CRs and LFs anywhere, stay
  inside the message: no second message can be smuggled in (the smuggling tests).
- Nothing after the end of data is read: what a pipelining client sent next stays in the reader
  for the next command (RFC 2920 §3.1).
- Memory is bounded: at most ``size_limit`` bytes of message are kept. Past that, or after a
  line longer than ``line_limit`` (CRLF not counted, as aiosmtpd counts command lines), the rest
  is read and dropped up to the end of data and then refused, as RFC 5321 §4.2.5 implies.
- The size counted is the data as sent (dot-stuffed, CRLFs included, the final "." line not).
- Dots are unstuffed (§4.5.2) over the whole message at once.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

_DOT_LINE = b".\r\n"
_END = b"\r\n" + _DOT_LINE


class Refusal(enum.Enum):
    TOO_BIG = "552 Error: Too much mail data"
    LINE_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"


@dataclass(frozen=True, slots=True)
class Data:
    """The message read (dots unstuffed), or why it is refused (then ``content`` is empty)."""

    content: bytes
    refusal: Refusal | None = None


async def read_data(reader: asyncio.StreamReader, *, size_limit: int, line_limit: int) -> Data:
    """Read one message up to the end of data, the CRLF of the DATA command already read.

    Raises ``asyncio.IncompleteReadError`` when the stream ends first.
    """
    pieces: list[bytes] = []
    size = 0
    refusal: Refusal | None = None
    recent = b"\r\n"  # the last bytes read, to see a CRLF that came before a ".\r\n"
    unfinished = b""  # the last line read so far, without its end
    while True:
        try:
            piece = await reader.readuntil(_DOT_LINE)
        except asyncio.LimitOverrunError as error:
            # No ".\r\n" within the reader's limit: take what cannot be part of one.
            piece = await reader.readexactly(error.consumed)
        recent = (recent + piece[-len(_END) :])[-len(_END) :]
        if recent == _END:
            piece = piece[: -len(_DOT_LINE)]
        size += len(piece)
        if refusal is None and size > size_limit:
            refusal, pieces = Refusal.TOO_BIG, []
        if refusal is None:
            lines = (unfinished + piece).split(b"\r\n")
            unfinished = lines.pop()  # may end with the CR of a CRLF split between pieces
            if len(unfinished) > line_limit + 1 or max(map(len, lines), default=0) > line_limit:
                refusal, pieces = Refusal.LINE_TOO_LONG, []
            else:
                pieces.append(piece)
        if recent == _END:
            break
    if refusal is not None:
        return Data(b"", refusal)
    content = b"".join(pieces).replace(b"\r\n.", b"\r\n")
    return Data(content[1:] if content.startswith(b".") else content)
