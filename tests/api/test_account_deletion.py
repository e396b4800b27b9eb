"""Deleting an account and all its data (the privacy promise), through the API and the CLI:
every row of the account goes, its blobs no one else shares go, and no other account loses
anything."""

from __future__ import annotations

import json
import smtplib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from api.apiserver import Api, message, setup_hook
from mailboxkit.store import models as m

from harness import cli, serve_env


def rows_of(api: Api, account_id: str, inbox_ids: list[str]) -> dict[str, int]:
    """Rows left in every table that has an account or inbox column, by table."""
    found = {}
    for table in m.metadata.sorted_tables:
        for column, values in (("account_id", [account_id]), ("inbox_id", inbox_ids)):
            if column in table.c:
                rows = api.server.query(select(table.c[column]).where(table.c[column].in_(values)))
                if rows:
                    found[f"{table.name}.{column}"] = len(rows)
    return found


def with_account_id(api: Api, registered: dict[str, Any]) -> dict[str, Any]:
    with api.client(registered["api_key"]) as c:
        return {**registered, "account_id": c.get("/account").json()["account_id"]}


def test_deleting_the_account_deletes_all_its_data_and_no_one_elses(api: Api) -> None:
    leaving = with_account_id(api, setup_hook(api, "http://127.0.0.1:9/hook")[0])
    staying = with_account_id(api, api.register("Staying"))
    with api.client(leaving["api_key"]) as c:
        second = c.post("/inboxes", json={"username": "second"}).json()
        assert c.post("/domains", json={"domain": "leaving.example"}).status_code == 201
    inbox_ids = [leaving["inbox_id"], second["inbox_id"]]

    # One SMTP transaction to both accounts (one raw blob, shared), and mail of its own.
    shared = message(leaving["email"], "to both", "hello both\n")
    with smtplib.SMTP("127.0.0.1", api.server.smtp_port) as smtp:
        assert (
            smtp.sendmail("alice@sender.test", [leaving["email"], staying["email"]], shared) == {}
        )
    own = message(second["email"], "own", "x\n", attachment=("own.txt", b"only theirs"))
    api.send(second["email"], own)
    raw_keys = {
        r.inbox_id: r.raw_key
        for r in api.server.query(select(m.messages.c.raw_key, m.messages.c.inbox_id))
    }
    [attachment] = api.server.query(select(m.attachments.c.blob_key))
    assert rows_of(api, leaving["account_id"], inbox_ids)  # there is something to delete

    inbox_key = api.server.create_key(leaving["account_id"], leaving["inbox_id"])
    with api.client(inbox_key) as c:
        refused = c.delete("/account", params={"confirm": leaving["account_id"]})
        assert refused.status_code == 403
    with api.client(leaving["api_key"]) as c:
        assert c.delete("/account").status_code == 422  # no confirm
        wrong = c.delete("/account", params={"confirm": staying["account_id"]})
        assert wrong.status_code == 422
        assert wrong.json()["error"]["fields"] == [
            {"field": "query.confirm", "message": "must be the account's id"}
        ]
        # Attachment blobs of the last hour are left to the store sweep; these are older.
        api.clock.current = datetime.now(UTC) + timedelta(hours=1, minutes=1)
        deleted = c.delete("/account", params={"confirm": leaving["account_id"]})
        assert deleted.status_code == 204
        assert c.get("/account").status_code == 401  # its keys went with it

    assert rows_of(api, leaving["account_id"], inbox_ids) == {}
    store = api.server.app.blobs
    assert not store.path_for(raw_keys[second["inbox_id"]]).exists()  # type: ignore[attr-defined]
    assert not store.path_for(attachment.blob_key).exists()  # type: ignore[attr-defined]
    assert api.server.blob(raw_keys[staying["inbox_id"]]).endswith(shared)
    with api.client(staying["api_key"]) as c:
        [kept] = c.get(f"/inboxes/{staying['inbox_id']}/messages").json()["messages"]
        assert kept["subject"] == "to both"
        raw = c.get(f"/inboxes/{staying['inbox_id']}/messages/{kept['message_id']}/raw")
        assert raw.status_code == 200 and raw.content.endswith(shared)
    with smtplib.SMTP("127.0.0.1", api.server.smtp_port) as smtp:
        smtp.ehlo()
        assert smtp.mail("alice@sender.test")[0] == 250
        code, text = smtp.rcpt(leaving["email"])
        assert (code, text[:5]) == (550, b"5.1.1")


def test_an_account_whose_domain_has_another_accounts_inbox_is_kept(api: Api) -> None:
    owner = with_account_id(api, api.register("Owner"))
    with api.client(owner["api_key"]) as c:
        assert c.post("/domains", json={"domain": "owned.example"}).status_code == 201
    other = with_account_id(api, api.register("Other"))
    api.server.create_inbox("guest@owned.example", other["account_id"])
    with api.client(owner["api_key"]) as c:
        refused = c.delete("/account", params={"confirm": owner["account_id"]})
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "conflict"
        assert c.get("/account").status_code == 200  # nothing was deleted
    guests = api.server.query(
        select(m.inboxes.c.id).where(m.inboxes.c.address == "guest@owned.example")
    )
    assert len(guests) == 1


def test_operator_deletes_an_account_with_the_cli(tmp_path: Path, database_url: str) -> None:
    env = serve_env(tmp_path / "data", database_url)
    for address in ("gone@example.test", "kept@example.test"):
        assert cli(env, "inbox", "create", address).returncode == 0
    listed = {i["email"]: i for i in json.loads(cli(env, "inbox", "list", "--json").stdout)}
    account_id = listed["gone@example.test"]["account_id"]

    unconfirmed = cli(env, "account", "delete", account_id)
    assert unconfirmed.returncode == 2
    assert "--yes" in unconfirmed.stderr
    assert len(json.loads(cli(env, "inbox", "list", "--json").stdout)) == 2

    done = cli(env, "account", "delete", account_id, "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"deleted account {account_id}: 1 inboxes, 0 blobs\n"
    left = json.loads(cli(env, "inbox", "list", "--json").stdout)
    assert [i["email"] for i in left] == ["kept@example.test"]

    again = cli(env, "account", "delete", account_id, "--yes")
    assert again.returncode == 1
    assert f"no account {account_id}" in again.stderr
