"""MAIL FROM / RCPT TO paths: our parser answers exactly as aiosmtpd's own."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from aiosmtpd.smtp import SMTP

from mailboxkit.mailserver.smtp import parse_path

PATHS = [
    "",
    "<>",
    "<> SIZE=10",
    "<bot@example.test>",
    "<bot@example.test> SIZE=4096 BODY=8BITMIME",
    "<bot@example.test>\tSMTPUTF8",
    "<bot@example.test>  (a comment) SIZE=1",
    "<bot@example.test>(comment)",
    "<bot@example.test>x",
    "<first.last+tag@mail.example.test>",
    "<o'brien@example.test>",
    "<a..b@example.test>",
    "<.a@example.test>",
    "<a.@example.test>",
    '<"quoted local"@example.test>',
    "<bot@[192.0.2.1]>",
    "<bot@example..test>",
    "<bot@-example.test>",
    "<bøt@exämple.test> SMTPUTF8",
    "< bot@example.test >",
    " <bot@example.test>",
    "<@relay.test:bot@example.test>",
    "bot@example.test",
    "bot@example.test SIZE=1",
    "<bot@example.test",
    "<bot>",
    "<@>",
    "<bot@>",
    "<" + "x" * 70 + "@example.test>",
]


def aiosmtpd_getaddr(arg: str, limit: int) -> tuple[str | None, str | None]:
    return SMTP._getaddr(SimpleNamespace(local_part_limit=limit), arg)  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", [0, 64])
@pytest.mark.parametrize("arg", PATHS)
def test_the_same_answer_as_aiosmtpd(arg: str, limit: int) -> None:
    assert parse_path(arg, limit) == aiosmtpd_getaddr(arg, limit)


def test_the_same_answer_on_generated_paths() -> None:
    rng = random.Random(1)
    pieces = ["<", ">", "@", ".", "a", "b7", "-", "+", " ", "\t", "(", ")", '"', "[", "]", "é"]
    crashed = 0
    for _ in range(5000):
        arg = "<" + "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        try:
            expected = aiosmtpd_getaddr(arg, 0)
        except (IndexError, AttributeError):  # the email package's parser on some garbage
            expected = (None, None)
            crashed += 1
        assert parse_path(arg) == expected, arg
    assert crashed  # the generated paths reach the parser's crash, which we answer cleanly
