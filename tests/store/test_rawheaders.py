"""Raw header fields split byte-exact, and the header section found without reading the body."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailboxkit.store.rawheaders import header_fields, header_section

# Bytes as headers are made of, so that folds, empty lines and bare CR or LF are frequent.
_PIECES = st.sampled_from([b"\r\n", b"\n", b"\r", b" ", b"\t", b"From", b":", b"x", b"\xe9"])
_MESSAGES = st.lists(_PIECES, max_size=60).map(b"".join)


@given(st.binary(max_size=2000))
def test_fields_and_rest_put_back_together_are_the_input(raw: bytes) -> None:
    fields, rest = header_fields(raw)
    assert b"".join(fields) + rest == raw


def _lines_before_the_empty_line(raw: bytes) -> bytes:
    """The header section found the slow way, a line (up to and with its LF) at a time."""
    pos = 0
    while pos < len(raw):
        newline = raw.find(b"\n", pos)
        end = len(raw) if newline < 0 else newline + 1
        if raw[pos:end] in (b"\r\n", b"\n"):
            break
        pos = end
    return raw[:pos]


@given(st.one_of(_MESSAGES, st.binary(max_size=200)))
def test_header_section_ends_at_the_first_empty_line(raw: bytes) -> None:
    assert header_section(raw) == _lines_before_the_empty_line(raw)


@given(st.one_of(_MESSAGES, st.binary(max_size=200)))
def test_header_fields_start_where_a_line_does_not_fold(raw: bytes) -> None:
    fields, _ = header_fields(raw)
    assert all(field.endswith(b"\n") for field in fields[:-1])
    assert all(field[:1] not in (b" ", b"\t") for field in fields[1:])


def test_header_section_stops_at_the_first_empty_line() -> None:
    assert header_section(b"A: 1\r\nB: 2\r\n\r\nC: 3\r\n\r\n") == b"A: 1\r\nB: 2\r\n"
    assert header_section(b"A: 1\nB: 2\n\nbody\r\n\r\n") == b"A: 1\nB: 2\n"
    assert header_section(b"\r\nA: a body line\r\n") == b""
    assert header_section(b"A: 1\r\n folded\r\n") == b"A: 1\r\n folded\r\n"
    assert header_section(b"A: 1\n\n\r\nbody\r\n") == b"A: 1\n"
