"""Sender rules as values: what a rule may name, and which rule decides for a sender."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailboxkit.store.senderrules import RuleAction, RuleSet, SenderRule, normalize_sender

NOW = datetime(2026, 11, 30, tzinfo=UTC)
ALLOW, BLOCK = RuleAction.ALLOW, RuleAction.BLOCK


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("Alice@Example.COM", "alice@example.com"),
        (" example.com. ", "example.com"),
        ("news.Example.co.uk", "news.example.co.uk"),
        ("a.b+tag@x.example", "a.b+tag@x.example"),
    ],
)
def test_addresses_and_domains_are_normalized(text: str, normalized: str) -> None:
    assert normalize_sender(text) == normalized


@pytest.mark.parametrize(
    "text",
    [
        "",
        "localhost",
        "@example.com",
        "a@b@example.com",
        "a b@example.com",
        "x..example",
        "<a@example.com>",
        "a@example.com,b@example.com",
        "a@",
        "a" * 321 + ".com",
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        normalize_sender(text)


def rule(action: RuleAction, sender: str, inbox_id: str | None = None) -> SenderRule:
    return SenderRule(f"{action}-{sender}-{inbox_id}", "acct", inbox_id, action, sender, NOW)


RULES = RuleSet(
    [
        rule(BLOCK, "corp.example"),
        rule(ALLOW, "boss@corp.example"),
        rule(ALLOW, "eu.corp.example"),
        rule(BLOCK, "spam@eu.corp.example"),
        rule(ALLOW, "news.example"),
        rule(BLOCK, "news.example", inbox_id="inbox-2"),
    ]
)


@pytest.mark.parametrize(
    ("inbox_id", "sender", "decision"),
    [
        ("inbox-1", "intern@corp.example", BLOCK),  # the domain
        ("inbox-1", "x@deep.sub.corp.example", BLOCK),  # and its subdomains
        ("inbox-1", "Boss@Corp.Example", ALLOW),  # an address beats its domain
        ("inbox-1", "team@eu.corp.example", ALLOW),  # a longer domain beats a shorter one
        ("inbox-1", "spam@eu.corp.example", BLOCK),
        ("inbox-1", "x@notcorp.example", None),  # a suffix is not a subdomain
        ("inbox-1", "daily@news.example", ALLOW),
        ("inbox-2", "daily@news.example", BLOCK),  # the inbox's own rule beats the account's
        ("inbox-1", "", None),  # the null reverse-path
        ("inbox-1", "corp.example", None),  # not an address
    ],
)
def test_the_most_specific_rule_decides(
    inbox_id: str, sender: str, decision: RuleAction | None
) -> None:
    assert RULES.decide(inbox_id, sender) is decision


def test_no_rules_decide_nothing() -> None:
    assert RuleSet([]).decide("inbox-1", "a@b.example") is None
    assert len(RULES) == 6
