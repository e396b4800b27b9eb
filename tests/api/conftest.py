"""Fixtures of the HTTP API tests: the whole server on loopback with a clock they move."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api.apiserver import Api, start_api
from api.console_client import Browse, Browser
from api.stripe_standin import StripeStandIn


@pytest.fixture
def api(tmp_path: Path, database_url: str) -> Iterator[Api]:
    server, clock = start_api(tmp_path, database_url)
    yield Api(server, clock)
    server.stop()


@pytest.fixture
def stripe_api() -> Iterator[StripeStandIn]:
    """A Stripe stand-in on loopback (``stripe_standin.py``)."""
    standin = StripeStandIn().start()
    yield standin
    standin.stop()


@pytest.fixture
def browse(api: Api) -> Iterator[Browse]:
    """Makes browsers of the console (closed at the end)."""
    opened: list[Browser] = []

    def make(headers: dict[str, str] | None = None) -> Browser:
        opened.append(Browser(api, headers))
        return opened[-1]

    yield make
    for browser in opened:
        browser.http.close()
