"""IMAP mailbox commands against the running server: LIST (wildcards, SPECIAL-USE, CHILDREN,
LIST-EXTENDED, LIST-STATUS), LSUB, STATUS, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE,
SELECT, EXAMINE, UNSELECT, CLOSE, CHECK."""

from __future__ import annotations

import imaplib
import re
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from harness import ServerThread

ADDRESS = "bot@example.test"


@pytest.fixture
def client(server: ServerThread) -> Iterator[imaplib.IMAP4]:
    inbox = server.create_inbox(ADDRESS)
    key = server.create_key(inbox.account_id)
    connection = imaplib.IMAP4("127.0.0.1", server.imap_port)
    connection.login(ADDRESS, key)
    yield connection
    connection.logout()


def deliver(server: ServerThread, subject: str = "Hello") -> None:
    message = EmailMessage()
    message["From"] = "alice@sender.test"
    message["To"] = ADDRESS
    message["Subject"] = subject
    message.set_content("Hi.\n")
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
        smtp.send_message(message)


def listing(client: imaplib.IMAP4, *args: str) -> dict[str, set[str]]:
    typ, data = client.list(*args)
    assert typ == "OK"
    found = {}
    for line in data:
        if line is None:
            continue
        assert isinstance(line, bytes)
        match = re.fullmatch(rb'\((.*?)\) "/" "?(.*?)"?', line)
        assert match, line
        found[match.group(2).decode()] = set(match.group(1).decode().split())
    return found


def test_list_default_folders_with_special_use_and_children(client: imaplib.IMAP4) -> None:
    found = listing(client, '""', "*")
    assert set(found) == {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}
    assert found["Sent"] == {"\\Sent", "\\HasNoChildren"}
    assert found["INBOX"] == {"\\HasNoChildren"}
    _typ, data = client.list('""', '""')
    assert data == [b'(\\Noselect) "/" ""']


def test_create_hierarchy_and_wildcards(client: imaplib.IMAP4) -> None:
    assert client.create("Projects/2024/Q1")[0] == "OK"  # parents are created too
    assert client.create("Projects/")[0] == "NO"  # exists (the trailing / only declares intent)
    assert set(listing(client, '""', "Projects/%")) == {"Projects/2024"}
    assert set(listing(client, '""', "Projects/*")) == {"Projects/2024", "Projects/2024/Q1"}
    assert set(listing(client, "Projects/", "%")) == {"Projects/2024"}
    found = listing(client, '""', "%")
    assert found["Projects"] == {"\\HasChildren"}
    assert set(listing(client, '""', "inbox")) == {"INBOX"}
    assert listing(client, '""', "nothing*") == {}


def test_create_rejects_bad_names_and_duplicates(client: imaplib.IMAP4) -> None:
    for name in ("INBOX", "inbox", "Sent"):
        typ, data = client.create(name)
        assert typ == "NO"
        assert b"[ALREADYEXISTS]" in data[0]
    for name in ("a//b", "/a", '"' + "x" * 501 + '"'):
        assert client.create(name)[0] == "NO"


def test_create_with_special_use_and_list_selection(client: imaplib.IMAP4) -> None:
    typ, _ = client._simple_command("CREATE", "Important", "(USE (\\Archive))")
    assert typ == "OK"
    typ, _ = client._simple_command("CREATE", "Virtual", "(USE (\\All))")
    assert typ == "NO"
    typ, _ = client._simple_command("LIST", "(SPECIAL-USE)", '""', "*")
    assert typ == "OK"
    names = client.untagged_responses.pop("LIST")
    assert len(names) == 6
    assert any(b"\\Archive" in line and b"Important" in line for line in names)


def test_list_status_return_and_subscribed(server: ServerThread, client: imaplib.IMAP4) -> None:
    deliver(server)
    assert client.unsubscribe("Junk")[0] == "OK"
    typ, _ = client._simple_command(
        "LIST", '""', "%", "RETURN", "(SUBSCRIBED STATUS (MESSAGES UNSEEN))"
    )
    assert typ == "OK"
    lists = client.untagged_responses.pop("LIST")
    statuses = client.untagged_responses.pop("STATUS")
    assert b'(\\HasNoChildren \\Subscribed) "/" "INBOX"' in lists
    assert b'(\\HasNoChildren \\Junk) "/" "Junk"' in lists
    assert b'"INBOX" (MESSAGES 1 UNSEEN 1)' in statuses
    typ, _ = client._simple_command("LIST", "(SUBSCRIBED)", '""', "*")
    subscribed = client.untagged_responses.pop("LIST")
    assert len(subscribed) == 5
    typ, data = client.lsub('""', "*")
    assert len(data) == 5
    assert b'() "/" "INBOX"' in data
    assert client.subscribe("Junk")[0] == "OK"
    assert len(client.lsub('""', "*")[1]) == 6
    assert client.subscribe("Nope")[0] == "NO"


def test_status(server: ServerThread, client: imaplib.IMAP4) -> None:
    deliver(server, "one")
    deliver(server, "two")
    typ, data = client.status(
        "INBOX", "(MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ SIZE APPENDLIMIT)"
    )
    assert typ == "OK"
    text = data[0].decode()
    assert "MESSAGES 2 RECENT 0 UIDNEXT 3 UIDVALIDITY " in text
    assert "UNSEEN 2 HIGHESTMODSEQ " in text
    assert re.search(r"SIZE \d+ APPENDLIMIT 26214400\)", text)
    typ, data = client.status("Nope", "(MESSAGES)")
    assert typ == "NO"
    assert b"[NONEXISTENT]" in data[0]


def test_select_and_examine_responses(server: ServerThread, client: imaplib.IMAP4) -> None:
    deliver(server)
    typ, data = client.select("INBOX")
    assert (typ, data) == ("OK", [b"1"])
    untagged = client.untagged_responses
    assert untagged["FLAGS"] == [b"(\\Seen \\Answered \\Flagged \\Deleted \\Draft)"]
    assert untagged["RECENT"] == [b"0"]
    assert untagged["UIDNEXT"] == [b"2"]
    assert untagged["UNSEEN"] == [b"1"]
    assert untagged["HIGHESTMODSEQ"]
    assert untagged["PERMANENTFLAGS"] == [b"(\\Seen \\Answered \\Flagged \\Deleted \\Draft \\*)"]
    assert untagged["READ-WRITE"] == [b""]
    typ, data = client.select("Sent", readonly=True)
    assert typ == "OK"
    assert client.untagged_responses["READ-ONLY"] == [b""]
    assert client.untagged_responses["PERMANENTFLAGS"] == [b"()"]
    typ, data = client.select("Nope")
    assert typ == "NO"
    assert client.state == "AUTH"
    client.state = "SELECTED"  # imaplib checks states itself; ask the server
    with pytest.raises(imaplib.IMAP4.error, match="No mailbox selected"):
        client.fetch("1", "FLAGS")  # deselected by the failed SELECT
    client.state = "AUTH"


def test_unselect_close_check(server: ServerThread, client: imaplib.IMAP4) -> None:
    deliver(server)
    deliver(server)
    client.select("INBOX")
    assert client.check()[0] == "OK"
    client.store("1", "+FLAGS", "(\\Deleted)")
    assert client.unselect()[0] == "OK"
    assert client.status("INBOX", "(MESSAGES)")[1] == [b'"INBOX" (MESSAGES 2)']
    client.select("INBOX", readonly=True)
    assert client.close()[0] == "OK"  # read-only: nothing expunged
    assert client.status("INBOX", "(MESSAGES)")[1] == [b'"INBOX" (MESSAGES 2)']
    client.select("INBOX")
    typ, _ = client.close()
    assert typ == "OK"
    assert "EXPUNGE" not in client.untagged_responses  # CLOSE expunges silently
    assert client.status("INBOX", "(MESSAGES)")[1] == [b'"INBOX" (MESSAGES 1)']


def test_delete(server: ServerThread, client: imaplib.IMAP4) -> None:
    client.create("Old/Child")
    typ, data = client.delete("Old")
    assert typ == "NO"
    assert b"[INUSE]" in data[0]
    assert client.delete("Old/Child")[0] == "OK"
    assert client.delete("Old")[0] == "OK"
    assert client.delete("Old")[0] == "NO"
    for system in ("INBOX", "Sent", "Trash"):
        assert client.delete(system)[0] == "NO"
    assert set(listing(client, '""', "*")) == {
        "INBOX",
        "Sent",
        "Drafts",
        "Trash",
        "Junk",
        "Archive",
    }


def test_rename_with_children_and_inbox(server: ServerThread, client: imaplib.IMAP4) -> None:
    client.create("A/B")
    assert client.rename("A", "Z/A")[0] == "OK"
    assert {"Z", "Z/A", "Z/A/B"} <= set(listing(client, '""', "*"))
    assert "A" not in listing(client, '""', "*")
    assert client.rename("Z/A", "Sent")[0] == "NO"  # exists
    assert client.rename("Nope", "X")[0] == "NO"
    assert client.rename("Sent", "Sent2")[0] == "NO"  # system folder
    deliver(server)
    deliver(server)
    assert client.rename("INBOX", "Saved")[0] == "OK"
    assert client.status("INBOX", "(MESSAGES)")[1] == [b'"INBOX" (MESSAGES 0)']
    assert client.status("Saved", "(MESSAGES UIDNEXT)")[1] == [b'"Saved" (MESSAGES 2 UIDNEXT 3)']


def test_international_names_travel_as_modified_utf7(client: imaplib.IMAP4) -> None:
    assert client.create("Entw&APw-rfe/&ZeVnLIqe-")[0] == "OK"
    found = listing(client, '""', "Entw&APw-rfe/*")
    assert set(found) == {"Entw&APw-rfe/&ZeVnLIqe-"}
    assert client.status("Entw&APw-rfe", "(MESSAGES)")[1] == [b'"Entw&APw-rfe" (MESSAGES 0)']
    with pytest.raises(imaplib.IMAP4.error, match="Invalid mailbox name"):
        client.create("Bad&name")  # not canonical modified UTF-7
