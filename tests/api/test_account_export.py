"""An account's data export as its owner and its operator get it: ``GET /api/v1/account/export``
(streamed) and ``mailboxkit account export``. What the zip holds is tested in depth in
tests/store/test_export.py; here, that both ways deliver it whole."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

from api.apiserver import Api, message

from harness import cli, serve_env


def maildir_files(archive: zipfile.ZipFile, email: str) -> dict[str, bytes]:
    """The message files of the inbox's INBOX folder, by name."""
    prefix = f"inboxes/{email}/INBOX/cur/"
    return {
        name: archive.read(name)
        for name in archive.namelist()
        if name.startswith(prefix) and name != prefix
    }


def test_the_owner_downloads_the_export_streamed(api: Api) -> None:
    owner = api.register("Exporter")
    other = api.register("Other")
    api.send(owner["email"], message(owner["email"], "first", "one\n"))
    attached = ("report.bin", os.urandom(300_000))  # more than one chunk of the stream
    api.send(owner["email"], message(owner["email"], "second", "two\n", attachment=attached))
    api.send(other["email"], message(other["email"], "not theirs", "three\n"))

    with api.client(owner["api_key"]) as c:
        account_id = c.get("/account").json()["account_id"]
        listed = c.get(f"/inboxes/{owner['inbox_id']}/messages").json()["messages"]
        raws = {
            c.get(f"/inboxes/{owner['inbox_id']}/messages/{m['message_id']}/raw").content
            for m in listed
        }
        chunks = []
        with c.stream("GET", "/account/export") as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/zip"
            assert response.headers["content-disposition"] == (
                f'attachment; filename="mailboxkit-export-{account_id}.zip"'
            )
            chunks = list(response.iter_raw())
    assert len(chunks) > 1
    archive = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert archive.testzip() is None
    document = json.loads(archive.read("account.json"))
    assert document["account"]["id"] == account_id
    assert [i["email"] for i in document["inboxes"]] == [owner["email"]]
    assert set(maildir_files(archive, owner["email"]).values()) == raws
    assert not any(other["email"] in name for name in archive.namelist())

    inbox_key = api.server.create_key(account_id, owner["inbox_id"])
    with api.client(inbox_key) as c:
        refused = c.get("/account/export")
    assert refused.status_code == 403


def test_the_operator_exports_with_the_cli(api: Api, tmp_path: Path) -> None:
    owner = api.register("Operated")
    api.send(owner["email"], message(owner["email"], "kept", "hello\n"))
    with api.client(owner["api_key"]) as c:
        account_id = c.get("/account").json()["account_id"]
        [listed] = c.get(f"/inboxes/{owner['inbox_id']}/messages").json()["messages"]
        raw = c.get(f"/inboxes/{owner['inbox_id']}/messages/{listed['message_id']}/raw").content
    settings = api.server.settings
    env = serve_env(settings.data_dir, settings.database_url)
    target = tmp_path / "export.zip"

    done = cli(env, "account", "export", account_id, "--output", str(target))
    assert done.returncode == 0, done.stderr
    assert f"exported account {account_id}: 1 inboxes, 1 messages, 0 missing" in done.stderr
    with zipfile.ZipFile(target) as archive:
        assert list(maildir_files(archive, owner["email"]).values()) == [raw]

    missing = tmp_path / "nobody.zip"
    unknown = cli(env, "account", "export", "no-such-account", "-o", str(missing))
    assert unknown.returncode == 1
    assert "no account no-such-account" in unknown.stderr
    assert not missing.exists()
    assert list(tmp_path.glob("*.partial")) == []


def test_one_export_at_a_time(api: Api) -> None:
    """While one export is being downloaded (its reader stalled), another is refused with 429;
    the stalled download still completes whole."""
    owner = api.register("Big")
    for n in range(4):  # about 18 MB of zip, more than the queue and both sockets' buffers hold
        big = ("noise.bin", os.urandom(3_400_000))
        api.send(owner["email"], message(owner["email"], f"big {n}", "x\n", attachment=big))
    with api.client(owner["api_key"]) as c, c.stream("GET", "/account/export") as first:
        assert first.status_code == 200
        chunks = first.iter_raw()
        received = [next(chunks)]  # the export is running; now stop reading
        second = c.get("/account/export")
        assert second.status_code == 429
        assert second.headers["retry-after"] == "60"
        assert second.json()["error"]["code"] == "rate_limited"
        received.extend(chunks)
    archive = zipfile.ZipFile(io.BytesIO(b"".join(received)))
    assert archive.testzip() is None
    assert len(maildir_files(archive, owner["email"])) == 4
