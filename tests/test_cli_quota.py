"""``mailboxkit account limits`` as an operator runs it: new accounts take the server's
defaults, the limits are set, shown with the current use and removed with ``none``, and
``inbox create`` past the inbox limit is an error."""

from __future__ import annotations

import json
from pathlib import Path

from harness import cli, serve_env


def test_the_operator_sets_and_shows_an_accounts_limits(tmp_path: Path, database_url: str) -> None:
    env = serve_env(
        tmp_path / "data", database_url, default_storage_quota=1000000, default_inbox_limit=1
    )
    made = cli(env, "account", "create", "Acme", "--json")
    assert made.returncode == 0, made.stderr
    account_id = json.loads(made.stdout)["account_id"]
    shown = cli(env, "account", "limits", account_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {
        "account_id": account_id,
        "limits": {"storage_bytes": 1000000, "inboxes": 1, "sends_per_day": None},
        "used": {"storage_bytes": 0, "inboxes": 0, "sends_today": 0},
    }
    assert cli(env, "inbox", "create", "one@example.test", "--account", account_id).returncode == 0
    refused = cli(env, "inbox", "create", "two@example.test", "--account", account_id)
    assert refused.returncode == 1
    assert "as many inboxes as its limit allows" in refused.stderr
    changed = cli(
        env,
        "account",
        "limits",
        account_id,
        "--storage",
        "none",
        "--inboxes",
        "2",
        "--sends-per-day",
        "100",
    )
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.splitlines() == [
        f"account {account_id}",
        "storage      0 of unlimited bytes",
        "inboxes      1 of 2",
        "sends today  0 of 100 (UTC)",
    ]
    assert cli(env, "inbox", "create", "two@example.test", "--account", account_id).returncode == 0
    bad = cli(env, "account", "limits", account_id, "--inboxes", "-3")
    assert bad.returncode == 2 and "negative" in bad.stderr
    missing = cli(env, "account", "limits", "no-such-account")
    assert missing.returncode == 1 and "no account no-such-account" in missing.stderr
