"""read_data against a line-by-line reading of RFC 5321 §4.1.1.4 and §4.5.2, on a real
StreamReader fed the way a socket feeds it: in pieces, split anywhere."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailboxkit.mailserver.smtpdata import Data, Refusal, read_data

NEXT_COMMAND = b"RSET\r\n"


def line_by_line(stream: bytes, size_limit: int, line_limit: int) -> tuple[Data, set[Refusal]]:
    """The reference: CRLF-ended lines up to the "." line; a leading dot removed from each.

    Returns the data and every reason to refuse it (when there are two, either may be given).
    """
    lines: list[bytes] = []
    pos = 0
    while True:
        end = stream.index(b"\r\n", pos) + 2
        line, pos = stream[pos:end], end
        if line == b".\r\n":
            break
        lines.append(line)
    reasons = set()
    if sum(map(len, lines)) > size_limit:
        reasons.add(Refusal.TOO_BIG)
    if any(len(line) - 2 > line_limit for line in lines):
        reasons.add(Refusal.LINE_TOO_LONG)
    content = b"".join(line[1:] if line.startswith(b".") else line for line in lines)
    return Data(b"" if reasons else content), reasons


async def read_fed(pieces: list[bytes], *, size_limit: int, line_limit: int) -> tuple[Data, bytes]:
    """read_data on a reader that receives ``pieces`` one at a time; also what it left unread."""
    reader = asyncio.StreamReader(limit=line_limit)

    async def feed() -> None:
        for piece in pieces:
            reader.feed_data(piece)
            await asyncio.sleep(0)  # let the reader run between pieces, as between packets
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    data = await read_data(reader, size_limit=size_limit, line_limit=line_limit)
    await feeder
    return data, await reader.read()


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    return [stream[a:b] for a, b in itertools.pairwise(points)]


# Bytes that make ends of data, fake ones and dot-stuffing likely.
_TOKENS = st.sampled_from([b".", b"\r", b"\n", b"\r\n", b".\r\n", b"a", b"bc", b"..", b"\r\n."])


@settings(max_examples=400, deadline=None)
@given(
    body=st.lists(_TOKENS, max_size=60).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    size_limit=st.integers(min_value=0, max_value=120),
    line_limit=st.integers(min_value=1, max_value=24),
)
def test_same_as_line_by_line_and_never_reads_past_the_end(
    body: bytes, cuts: list[int], size_limit: int, line_limit: int
) -> None:
    stream = body + b"\r\n.\r\n" + NEXT_COMMAND
    expected, reasons = line_by_line(stream, size_limit, line_limit)
    data, unread = asyncio.run(
        read_fed(split(stream, cuts), size_limit=size_limit, line_limit=line_limit)
    )
    if reasons:
        assert data.refusal in reasons
        assert data.content == b""
    else:
        assert data == expected
    # The end of data is the first CRLF.CRLF, counting the DATA command's CRLF as the first CRLF.
    end = (b"\r\n" + stream).index(b"\r\n.\r\n") + 3
    assert unread == stream[end:]


@pytest.mark.parametrize(
    ("stream", "content"),
    [
        (b".\r\n", b""),
        (b"\r\n.\r\n", b"\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"a\r\n..b\r\n...\r\n.\r\n", b"a\r\n.b\r\n..\r\n"),
        (b"end.\r\nx\n.\nx\r.\r\n\r\n.\r\n", b"end.\r\nx\n.\nx\r.\r\n\r\n"),
    ],
    ids=["empty", "one-empty-line", "dot-line", "stuffed-dots", "fake-ends"],
)
def test_known_messages(stream: bytes, content: bytes) -> None:
    data, unread = asyncio.run(read_fed([stream + b"QUIT\r\n"], size_limit=100, line_limit=100))
    assert data == Data(content)
    assert unread == b"QUIT\r\n"


def test_a_large_message_in_socket_sized_pieces() -> None:
    lines = [b"%06d " % n + b"x" * 70 + b"\r\n" for n in range(30_000)]
    lines[100::100] = [b"." + line for line in lines[100::100]]
    body = b"".join(lines)
    stream = body + b".\r\nMAIL FROM:<a@b.test>\r\n"
    pieces = [stream[i : i + 65_536] for i in range(0, len(stream), 65_536)]
    data, unread = asyncio.run(read_fed(pieces, size_limit=len(body), line_limit=1000))
    assert data.refusal is None
    assert data.content == body.replace(b"\r\n.", b"\r\n")
    assert unread == b"MAIL FROM:<a@b.test>\r\n"


@pytest.mark.parametrize(
    ("body", "refusal"),
    [
        (b"x" * 5000 + b"\r\n", Refusal.LINE_TOO_LONG),
        (b"short line\r\n" * 500, Refusal.TOO_BIG),
    ],
    ids=["long-line", "too-big"],
)
def test_refused_data_is_read_to_its_end_and_not_kept(body: bytes, refusal: Refusal) -> None:
    stream = body + b".\r\n" + NEXT_COMMAND
    pieces = [stream[i : i + 100] for i in range(0, len(stream), 100)]
    data, unread = asyncio.run(read_fed(pieces, size_limit=4000, line_limit=1000))
    assert data == Data(b"", refusal)
    assert unread == NEXT_COMMAND


def test_a_stream_that_ends_before_the_end_of_data_is_an_error() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        asyncio.run(read_fed([b"Subject: cut\r\n\r\nhalf a mess"], size_limit=100, line_limit=100))
