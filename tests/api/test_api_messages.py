"""Message listings (filters, cursor pages), labels and read state as IMAP flags, raw bytes,
threads paging, and inbox deletion with its blobs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from api.apiserver import Api, message
from mailboxkit.store import models as m
from mailboxkit.store.sweep import SweepPolicy, SweepReport, sweep


@pytest.fixture
def mailbox(api: Api) -> Iterator[tuple[httpx.Client, str, list[str]]]:
    """An inbox with five messages, a minute apart; their ids oldest first."""
    owner = api.register("Lister")
    address, inbox_id = owner["email"], owner["inbox_id"]
    mails = [
        ("Invoice 1", "pay 100 EUR\n", "Alice <alice@sender.test>"),
        ("Meeting", "tomorrow at ten\n", "Bob <bob@other.test>"),
        ("Invoice 2", "pay 200 EUR\n", "Alice <alice@sender.test>"),
        ("Lunch?", "pizza or 100% salad\n", "Carol <carol@other.test>"),
        ("Report", "quarterly invoice numbers\n", "Bob <bob@other.test>"),
    ]
    for subject, body, sender in mails:
        api.send(address, message(address, subject, body, sender=sender))
        api.clock.advance(60)
    with api.client(owner["api_key"]) as client:
        listed = client.get(f"/inboxes/{inbox_id}/messages").json()["messages"]
        yield client, inbox_id, [m["message_id"] for m in reversed(listed)]


def _subjects(c: httpx.Client, inbox_id: str, **params: Any) -> list[str]:
    response = c.get(f"/inboxes/{inbox_id}/messages", params=params)
    assert response.status_code == 200, response.text
    return [m["subject"] for m in response.json()["messages"]]


def test_filters(mailbox: tuple[httpx.Client, str, list[str]]) -> None:
    c, inbox_id, _ = mailbox
    assert _subjects(c, inbox_id) == ["Report", "Lunch?", "Invoice 2", "Meeting", "Invoice 1"]
    assert _subjects(c, inbox_id, **{"from": "ALICE"}) == ["Invoice 2", "Invoice 1"]
    assert _subjects(c, inbox_id, subject="invoice") == ["Invoice 2", "Invoice 1"]
    assert _subjects(c, inbox_id, q="invoice") == ["Report", "Invoice 2", "Invoice 1"]
    assert _subjects(c, inbox_id, q="100%") == ["Lunch?"]  # wildcards are literal
    assert _subjects(c, inbox_id, after="2026-11-28T09:01:00Z") == [
        "Report",
        "Lunch?",
        "Invoice 2",
    ]
    assert _subjects(c, inbox_id, before="2026-11-28T09:01:00") == ["Invoice 1"]
    assert _subjects(c, inbox_id, to="lister@") == _subjects(c, inbox_id)
    assert _subjects(c, inbox_id, to="nobody@") == []
    assert _subjects(c, inbox_id, direction="outbound") == []
    assert _subjects(c, inbox_id, unread=True)[0] == "Report"


def test_cursor_pages_cover_everything_once(mailbox: tuple[httpx.Client, str, list[str]]) -> None:
    c, inbox_id, ids = mailbox
    seen: list[str] = []
    token = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"page_token": token} if token else {})}
        page = c.get(f"/inboxes/{inbox_id}/messages", params=params).json()
        seen += [m["message_id"] for m in page["messages"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == list(reversed(ids))


def test_labels_and_read_state_are_imap_flags(
    api: Api, mailbox: tuple[httpx.Client, str, list[str]]
) -> None:
    c, inbox_id, ids = mailbox
    url = f"/inboxes/{inbox_id}/messages/{ids[0]}"
    before = api.server.query(select(m.entries.c.modseq).where(m.entries.c.message_id == ids[0]))
    watch = api.server.app.changes.watch(inbox_id)  # what IMAP IDLE listens to
    updated = c.patch(url, json={"add_labels": ["billing", "todo"], "read": True}).json()
    assert watch.rung.is_set()
    watch.close()
    assert updated["labels"] == ["billing", "todo"] and updated["read"] is True
    [entry] = api.server.query(
        select(m.entries.c.seen, m.entries.c.keywords, m.entries.c.modseq).where(
            m.entries.c.message_id == ids[0]
        )
    )
    assert entry.seen is True and entry.keywords == ["billing", "todo"]
    assert entry.modseq > before[0].modseq
    assert _subjects(c, inbox_id, label="billing") == ["Invoice 1"]
    assert "Invoice 1" not in _subjects(c, inbox_id, unread=True)
    again = c.patch(url, json={"remove_labels": ["todo"], "read": False}).json()
    assert again["labels"] == ["billing"] and again["read"] is False
    bad = c.patch(url, json={"add_labels": ["has space"]})
    assert bad.status_code == 422


def test_threads_page_latest_first(mailbox: tuple[httpx.Client, str, list[str]]) -> None:
    c, inbox_id, _ = mailbox
    first = c.get(f"/inboxes/{inbox_id}/threads", params={"limit": 3}).json()
    assert [t["subject"] for t in first["threads"]] == ["Report", "Lunch?", "Invoice 2"]
    rest = c.get(
        f"/inboxes/{inbox_id}/threads", params={"page_token": first["next_page_token"]}
    ).json()
    assert [t["subject"] for t in rest["threads"]] == ["Meeting", "Invoice 1"]
    assert rest["next_page_token"] is None


def test_deleting_an_inbox_deletes_its_mail_and_unshared_blobs(api: Api) -> None:
    owner = api.register("Deleter")
    shared_file = ("shared.txt", b"same bytes in both inboxes")
    with api.client(owner["api_key"]) as c:
        keep = c.post("/inboxes", json={"username": "keeper"}).json()
        for address, own in ((owner["email"], b"only here"), (keep["email"], b"only there")):
            api.send(address, message(address, "a", "x\n", attachment=shared_file))
            api.send(address, message(address, "b", "y\n", attachment=("own.txt", own)))
        keys = {
            r.raw_key: r.inbox_id
            for r in api.server.query(select(m.messages.c.raw_key, m.messages.c.inbox_id))
        }
        blobs = {r.blob_key for r in api.server.query(select(m.attachments.c.blob_key))}
        # Attachment blobs written in the last hour are left to the store sweep (a delivery
        # may be re-staging one); by the server's clock these are older.
        api.clock.current = datetime.now(UTC) + timedelta(hours=1, minutes=1)
        assert c.delete(f"/inboxes/{owner['inbox_id']}").status_code == 204
        assert c.get(f"/inboxes/{owner['inbox_id']}").status_code == 404
        assert c.get(f"/inboxes/{keep['inbox_id']}/messages").json()["count"] == 2

    store = api.server.app.blobs
    remaining = {r.blob_key for r in api.server.query(select(m.attachments.c.blob_key))}
    assert len(blobs) == 3 and len(remaining) == 2
    for key in blobs:
        exists = (store.path_for(key)).exists()  # type: ignore[attr-defined]
        assert exists == (key in remaining)
    for key, inbox_id in keys.items():
        assert store.path_for(key).exists() == (inbox_id != owner["inbox_id"])  # type: ignore[attr-defined]
    assert (
        api.server.query(select(m.messages.c.id).where(m.messages.c.inbox_id == owner["inbox_id"]))
        == []
    )


def test_deleting_an_inbox_leaves_attachment_blobs_of_the_last_hour_to_the_sweep(
    api: Api,
) -> None:
    owner = api.register("Hasty")
    api.clock.current = datetime.now(UTC)
    with api.client(owner["api_key"]) as c:
        api.send(owner["email"], message(owner["email"], "a", "x\n", attachment=("f.txt", b"f")))
        [row] = api.server.query(select(m.messages.c.raw_key))
        [attachment] = api.server.query(select(m.attachments.c.blob_key))
        assert c.delete(f"/inboxes/{owner['inbox_id']}").status_code == 204
    store = api.server.app.blobs
    assert not store.path_for(row.raw_key).exists()  # type: ignore[attr-defined]
    assert store.path_for(attachment.blob_key).exists()  # type: ignore[attr-defined]
    policy = SweepPolicy(message_grace=timedelta(hours=1), blob_grace=timedelta(days=1))
    app = api.server.app
    later = datetime.now(UTC) + timedelta(days=2)
    report = api.server.call(sweep(app.db, app.blobs, now=later, policy=policy))
    assert report == SweepReport(attachment_blobs=1, attachment_bytes=1)
    assert not store.path_for(attachment.blob_key).exists()  # type: ignore[attr-defined]
