"""Composing: the header classes made once give the same headers as the stdlib's registry."""

from __future__ import annotations

from email.headerregistry import HeaderRegistry
from email.policy import SMTP

import pytest

from mailboxkit.api.compose import _POLICY, _HeaderClasses

HEADERS = [
    ("From", '"Zoë Ünal, CFO" <zoe@example.test>'),
    ("To", "alice@remote.test, Bob <bob@remote.test>, undisclosed-recipients:;"),
    ("Cc", "=?utf-8?q?J=C3=B6rg?= <jorg@remote.test>"),
    ("Subject", "Re: Квартальный отчёт " + "and a long tail " * 8),
    ("Date", "Fri, 27 Nov 2026 23:50:09 +0000"),
    ("Message-ID", "<abc.123@example.test>"),
    ("References", "<a@x.test> <b@y.test>"),
    ("Content-Type", 'text/plain; charset="utf-8"; format=flowed'),
    ("Content-Disposition", "attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf"),
    ("X-Agent-Run", "näive value"),
]


@pytest.mark.parametrize(("name", "value"), HEADERS, ids=[name for name, _ in HEADERS])
def test_headers_are_what_the_stdlib_makes(name: str, value: str) -> None:
    ours, stdlib = _HeaderClasses()(name, value), HeaderRegistry()(name, value)
    assert type(ours).__bases__ == type(stdlib).__bases__
    assert str(ours) == str(stdlib)
    assert ours.fold(policy=SMTP) == stdlib.fold(policy=SMTP)
    assert ours.defects == stdlib.defects


def test_each_kind_of_header_has_one_class_however_many_names_arrive() -> None:
    classes = _HeaderClasses()
    assert classes["To"] is classes["cc"] is classes["Bcc"]
    assert classes["Subject"] is not classes["To"]
    unknown = {classes[f"X-Custom-{n}"] for n in range(1000)}
    assert len(unknown) == 1


def test_the_compose_policy_is_smtp_with_that_registry() -> None:
    assert isinstance(_POLICY.header_factory, _HeaderClasses)
    assert (_POLICY.linesep, _POLICY.max_line_length, _POLICY.utf8) == (
        SMTP.linesep,
        SMTP.max_line_length,
        SMTP.utf8,
    )
