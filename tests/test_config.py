"""Settings: environment, TOML file, derived values, and the operator documentation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mailboxkit.config import Settings

DOCS = Path(__file__).parents[1] / "docs" / "config.md"


def test_environment_overrides_file_which_overrides_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "mailboxkit.toml"
    config.write_text('smtp_port = 25\nimap_port = 143\ndomain = "Example.COM."\n')
    monkeypatch.setenv("MAILBOXKIT_IMAP_PORT", "0")
    settings = Settings.load(config)
    assert settings.smtp_port == 25
    assert settings.imap_port == 0
    assert settings.domain == "example.com"
    assert settings.http_port == 8025


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.smtp_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@db/mbk", "postgresql+asyncpg://u:p@db/mbk"),
        ("postgres://u@db/mbk", "postgresql+asyncpg://u@db/mbk"),
        ("sqlite:////var/lib/m.db", "sqlite+aiosqlite:////var/lib/m.db"),
        ("postgresql+asyncpg://u@db/x", "postgresql+asyncpg://u@db/x"),
    ],
)
def test_database_url_gets_the_async_driver(url: str, expected: str) -> None:
    assert Settings(database_url=url).sqlalchemy_url == expected


def test_default_database_is_sqlite_in_data_dir(tmp_path: Path) -> None:
    url = Settings(data_dir=tmp_path).sqlalchemy_url
    assert url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/mailboxkit.db"


@pytest.mark.parametrize(
    "bad",
    [
        {"smtp_port": 70000},
        {"tls_cert_file": "/x.pem"},
        {"nope": 1},
        {"metrics_token": "two words"},  # sent in an HTTP header: visible ASCII only
        {"metrics_token": "jeton-été"},
    ],
)
def test_invalid_values_fail_with_the_setting_named(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as error:
        Settings(**bad)
    name = next(iter(bad))
    assert name.upper() in str(error.value).upper()


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        Settings.load(tmp_path / "absent.toml")


def test_every_setting_is_documented() -> None:
    text = DOCS.read_text()
    missing = [n for n in Settings.model_fields if f"`MAILBOXKIT_{n.upper()}`" not in text]
    assert missing == []
