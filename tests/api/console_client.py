"""A user of the web console as a plain HTTP client sees it (a browser without scripts): its
cookies, the CSRF token of the last page with a form, and signing in. Imported by the console
tests as ``api.console_client``; the ``browse`` fixture that makes them is in ``conftest.py``."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx

from api.apiserver import Api

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Browser:
    """A user of the console: its cookies, and the CSRF token of the last page with a form."""

    def __init__(self, api: Api, headers: dict[str, str] | None = None) -> None:
        self.http = httpx.Client(base_url=api.server.http_url, headers=headers or {}, timeout=30)
        self.csrf = ""

    def get(self, path: str) -> httpx.Response:
        r = self.http.get("/console" + path)
        if found := CSRF.search(r.text):
            self.csrf = found.group(1)
        return r

    def post(self, path: str, data: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
        return self.http.post("/console" + path, data={"csrf": self.csrf, **(data or {})}, **kw)

    def raw_post(self, path: str, data: dict[str, Any]) -> httpx.Response:
        return self.http.post("/console" + path, data=data)

    def signin(self, key: str, **kw: Any) -> httpx.Response:
        return self.http.post("/console/signin", data={"api_key": key}, **kw)

    def set_cookie(self, value: str) -> None:
        """The session cookie as a tamperer would send it (in place of the server's)."""
        self.http.cookies.clear()
        self.http.cookies.set("mbk_console", value, domain="127.0.0.1", path="/console")

    @property
    def cookie(self) -> str | None:
        return self.http.cookies.get("mbk_console")


Browse = Callable[..., Browser]


def signed_in(browse: Browse, key: str) -> Browser:
    browser = browse()
    r = browser.signin(key)
    assert (r.status_code, r.headers["location"]) == (303, "/console"), r.text
    browser.get("")
    assert browser.csrf
    return browser


def api_get(api: Api, key: str, path: str) -> httpx.Response:
    with api.client(key) as c:
        return c.get(path)
