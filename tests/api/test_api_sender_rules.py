"""``/sender-rules``: allow and block lists per account (or inbox), and what the MX does with
them: a blocked envelope sender is refused at RCPT, a blocked From is filed in Junk, an allowed
sender skips DMARC quarantine and the unauthenticated label but keeps its verdicts."""

from __future__ import annotations

import imaplib
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.apiserver import Api, message, start_api
from api.test_stream import stream
from mailboxkit.dns.resolver import FakeResolver

from harness import free_port

RECORDS = {
    # Publishes p=quarantine and authorizes nobody: its mail fails DMARC and goes to Junk.
    "shop.test": {"TXT": ["v=spf1 -all"]},
    "_dmarc.shop.test": {"TXT": ["v=DMARC1; p=quarantine"]},
    # Publishes p=reject: forged mail is refused at end of data.
    "bank.test": {"TXT": ["v=spf1 -all"]},
    "_dmarc.bank.test": {"TXT": ["v=DMARC1; p=reject"]},
}


@pytest.fixture
def api(tmp_path: Path, database_url: str) -> Iterator[Api]:
    server, clock = start_api(
        tmp_path,
        database_url,
        resolver=FakeResolver(RECORDS),
        verify_inbound=True,
        imap_port=free_port(),
    )
    yield Api(server, clock)
    server.stop()


def folders(api: Api, address: str, key: str) -> dict[str, list[str]]:
    """The subjects in INBOX and Junk, as an IMAP client sees them."""
    client = imaplib.IMAP4("127.0.0.1", api.server.imap_port)
    try:
        client.login(address, key)
        found: dict[str, list[str]] = {}
        for folder in ("INBOX", "Junk"):
            client.select(folder, readonly=True)
            numbers = client.search(None, "ALL")[1][0].split()
            found[folder] = []
            if numbers:
                _, data = client.fetch(b",".join(numbers), "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                found[folder] = sorted(
                    part[1].decode().split(":", 1)[1].strip()
                    for part in data
                    if isinstance(part, tuple)
                )
        return found
    finally:
        client.logout()


def rcpt(api: Api, mail_from: str, to: list[str], raw: bytes) -> dict[str, tuple[int, bytes]]:
    """Send one transaction; the recipients refused (all refused raises)."""
    with smtplib.SMTP("127.0.0.1", api.server.smtp_port) as client:
        refused: dict[str, tuple[int, bytes]] = client.sendmail(mail_from, to, raw)
    return refused


def test_rules_are_made_listed_and_deleted_with_clear_errors(api: Api) -> None:
    owner = api.register("Rules")
    other = api.register("Other")
    with api.client(owner["api_key"]) as c:
        made = c.post("/sender-rules", json={"action": "block", "sender": " Spam.Example. "})
        assert made.status_code == 201, made.text
        rule = made.json()
        assert (rule["action"], rule["sender"], rule["inbox_id"]) == ("block", "spam.example", None)
        scoped = c.post(
            "/sender-rules",
            json={"action": "allow", "sender": "Boss@Corp.Example", "inbox_id": owner["inbox_id"]},
        ).json()
        assert (scoped["sender"], scoped["inbox_id"]) == ("boss@corp.example", owner["inbox_id"])

        listed = c.get("/sender-rules").json()
        assert listed["count"] == 2
        assert [r["sender_rule_id"] for r in listed["sender_rules"]] == [
            rule["sender_rule_id"],
            scoped["sender_rule_id"],
        ]
        blocks = c.get("/sender-rules", params={"action": "block"}).json()["sender_rules"]
        assert [r["sender"] for r in blocks] == ["spam.example"]
        mine = c.get("/sender-rules", params={"inbox_id": owner["inbox_id"]}).json()
        assert [r["sender"] for r in mine["sender_rules"]] == ["boss@corp.example"]
        assert c.get(f"/sender-rules/{rule['sender_rule_id']}").json() == rule

        again = c.post("/sender-rules", json={"action": "allow", "sender": "spam.example"})
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "conflict"
        for bad in ("nobody", "@example.com", "a b@example.com", "example..com", ""):
            refused = c.post("/sender-rules", json={"action": "block", "sender": bad})
            assert refused.status_code == 422, bad
            assert refused.json()["error"]["code"] == "validation_error"
        wrong_action = c.post("/sender-rules", json={"action": "drop", "sender": "x.example"})
        assert wrong_action.status_code == 422
        theirs = c.post(
            "/sender-rules",
            json={"action": "block", "sender": "x.example", "inbox_id": other["inbox_id"]},
        )
        assert theirs.status_code == 404

        inbox_key = c.post("/api-keys", json={"inbox_id": owner["inbox_id"]}).json()["api_key"]
    with api.client(inbox_key) as c:
        assert c.get("/sender-rules").status_code == 403
        assert (
            c.post("/sender-rules", json={"action": "block", "sender": "a.example"}).status_code
            == 403
        )
    with api.client(other["api_key"]) as c:
        assert c.get("/sender-rules").json() == {"count": 0, "sender_rules": []}
        assert c.get(f"/sender-rules/{rule['sender_rule_id']}").status_code == 404
        assert c.delete(f"/sender-rules/{rule['sender_rule_id']}").status_code == 404
    with api.client(owner["api_key"]) as c:
        assert c.delete(f"/sender-rules/{rule['sender_rule_id']}").status_code == 204
        assert c.get(f"/sender-rules/{rule['sender_rule_id']}").status_code == 404
        assert c.delete(f"/sender-rules/{rule['sender_rule_id']}").status_code == 404
        assert c.get("/sender-rules").json()["count"] == 1


def test_blocked_envelope_sender_is_refused_at_rcpt_for_that_account_only(api: Api) -> None:
    owner = api.register("Blocker")
    other = api.register("Bystander")
    me, them = owner["email"], other["email"]
    with api.client(owner["api_key"]) as c:
        rule = c.post("/sender-rules", json={"action": "block", "sender": "spam.example"}).json()

    raw = message(me, "Offer")
    refused = rcpt(api, "bob@mail.spam.example", [me, them], raw)  # a subdomain is covered
    assert list(refused) == [me]
    code, text = refused[me]
    assert code == 550 and text.startswith(b"5.7.1 ")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as all_refused:
        rcpt(api, "Bob@Spam.Example", [me], raw)
    assert all_refused.value.recipients[me][0] == 550
    assert rcpt(api, "alice@ham.example", [me], message(me, "Welcome")) == {}
    assert rcpt(api, "", [me], message(me, "Bounce")) == {}  # null sender: no rule applies

    assert folders(api, me, owner["api_key"]) == {"INBOX": ["Bounce", "Welcome"], "Junk": []}
    assert folders(api, them, other["api_key"]) == {"INBOX": ["Offer"], "Junk": []}

    with api.client(owner["api_key"]) as c:  # deleted: accepted again at once
        assert c.delete(f"/sender-rules/{rule['sender_rule_id']}").status_code == 204
    assert rcpt(api, "bob@spam.example", [me], message(me, "Offer 2")) == {}


def test_inbox_rule_and_most_specific_rule_win(api: Api) -> None:
    owner = api.register("Precise")
    first = owner["email"]
    with api.client(owner["api_key"]) as c:
        second = c.post("/inboxes", json={"username": "second"}).json()
        for body in (
            {"action": "block", "sender": "corp.example"},
            {"action": "allow", "sender": "boss@corp.example"},
            {"action": "allow", "sender": "news.example"},
            {"action": "block", "sender": "news.example", "inbox_id": second["inbox_id"]},
        ):
            assert c.post("/sender-rules", json=body).status_code == 201, body
    raw = message(first, "Hello")
    assert rcpt(api, "boss@corp.example", [first], raw) == {}  # the address beats the domain
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        rcpt(api, "intern@corp.example", [first], raw)
    # The second inbox's own rule beats the account's.
    refused = rcpt(api, "daily@news.example", [first, second["email"]], raw)
    assert list(refused) == [second["email"]]


def test_blocked_from_goes_to_junk_not_away(api: Api) -> None:
    owner = api.register("Filter")
    me, key = owner["email"], owner["api_key"]
    with api.client(key) as c:
        c.post("/sender-rules", json={"action": "block", "sender": "pest@annoy.example"})
    with stream(api, key, params={"type": "message", "last_event_id": "0"}) as sse:
        raw = message(me, "Again", sender="Pest <pest@annoy.example>")
        assert rcpt(api, "relay@lists.example", [me], raw) == {}
        assert sse.event()["type"] == "message.received.spam"
    assert folders(api, me, key) == {"INBOX": [], "Junk": ["Again"]}


def test_allowed_sender_skips_quarantine_and_label_but_keeps_verdicts(api: Api) -> None:
    trusting = api.register("Trusting")
    wary = api.register("Wary")
    with api.client(trusting["api_key"]) as c:
        for sender in ("shop.test", "friend@nowhere.test", "bank.test"):
            assert (
                c.post("/sender-rules", json={"action": "allow", "sender": sender}).status_code
                == 201
            )
    for owner in (trusting, wary):
        me, key = owner["email"], owner["api_key"]
        with stream(api, key, params={"type": "message", "last_event_id": "0"}) as sse:
            api.send(me, message(me, "Sale", sender="Shop <promo@shop.test>"), "promo@shop.test")
            api.send(me, message(me, "Hi", sender="friend@nowhere.test"), "friend@nowhere.test")
            events = {e["data"]["subject"]: e for e in (sse.event(), sse.event())}
        if owner is trusting:
            assert folders(api, me, key) == {"INBOX": ["Hi", "Sale"], "Junk": []}
            assert events["Sale"]["type"] == "message.received"
            assert events["Hi"]["type"] == "message.received"
        else:
            assert folders(api, me, key) == {"INBOX": ["Hi"], "Junk": ["Sale"]}
            assert events["Sale"]["type"] == "message.received.spam"
            assert events["Hi"]["type"] == "message.received.unauthenticated"
        with api.client(key) as c:
            sale = c.get(
                f"/inboxes/{owner['inbox_id']}/messages/{events['Sale']['data']['message_id']}"
            )
        body: dict[str, Any] = sale.json()
        assert body["auth"]["dmarc"]["result"] == "fail"  # still recorded
        assert body["auth"]["dmarc"]["disposition"] == "quarantine"
        [results] = [h["value"] for h in body["headers"] if h["name"] == "Authentication-Results"]
        assert "dmarc=fail" in results and "spf=fail" in results

    # A p=reject failure is one reply for the whole transaction: an allow rule does not lift it.
    me = trusting["email"]
    with pytest.raises(smtplib.SMTPDataError) as refused:
        rcpt(api, "ceo@bank.test", [me], message(me, "Wire", sender="ceo@bank.test"))
    assert refused.value.smtp_code == 550 and refused.value.smtp_error.startswith(b"5.7.1 ")
