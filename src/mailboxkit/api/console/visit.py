"""A request to the console: who signed in (the session cookie), the checks of a form (CSRF,
origin), and the API calls made for the page, with their answers.

Implementation notes:

- Every page is built from ``/api/v1`` answers, asked in-process with the session's key and
  the client's address (``api/inprocess.py``): the console holds no rule of its own about what
  a key may see or do. An API error is shown as its ``code: message``; the page's status is
  the API's (another account's id is 404 here too).
- A 401 from the API means the key is revoked or gone: the session ends there (the cookie is
  cleared, and the user is sent to sign in). The check is the API's on every call, so no
  session outlives its key.
- A form is checked before anything else is done: a browser's ``Sec-Fetch-Site`` other than
  same-origin (or none: typed, bookmarked) is refused, then the session cookie, then the CSRF
  token. Bodies are ``application/x-www-form-urlencoded`` only (no multipart parser needed);
  the API's body limit applies to them as to any request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

import httpx
from fastapi import Request, Response
from fastapi.responses import PlainTextResponse
from starlette.types import ASGIApp

from mailboxkit.api.console.session import COOKIE, LIFETIME, SessionKeys
from mailboxkit.api.console.views import PageExit, Views
from mailboxkit.api.inprocess import Caller
from mailboxkit.store.clock import Clock

MAX_FORM_FIELDS = 200
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class Problem:
    """An API error answer, as the page shows it."""

    status: int
    code: str
    message: str
    fields: tuple[str, ...] = ()

    @classmethod
    def of(cls, response: httpx.Response) -> Problem:
        try:
            error = response.json().get("error")
        except (ValueError, AttributeError):
            error = None
        if not isinstance(error, dict):
            return cls(response.status_code, "internal_error", f"HTTP {response.status_code}")
        fields = tuple(
            f"{f.get('field')}: {f.get('message')}"
            for f in error.get("fields") or ()
            if isinstance(f, dict)
        )
        return cls(response.status_code, str(error.get("code")), str(error.get("message")), fields)

    @property
    def text(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True, slots=True)
class Answer:
    """An API answer: its JSON on success, else the problem."""

    status: int
    data: Any
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def answer_of(response: httpx.Response) -> Answer:
    """The answer of ``response``: JSON parsed, other text (a zone file) as is."""
    if not response.is_success:
        return Answer(response.status_code, None, Problem.of(response))
    if not response.content:
        return Answer(response.status_code, None, None)
    if response.headers.get("content-type", "").startswith("application/json"):
        return Answer(response.status_code, response.json(), None)
    return Answer(response.status_code, response.text, None)


def segment(value: str) -> str:
    """``value`` as one segment of an API path: an id from the console's own URL, which must
    not reach another route (``..``); not found otherwise, as a wrong id is."""
    if not value or value in (".", "..") or "/" in value:
        raise PageExit(PlainTextResponse("not found", status_code=404))
    return quote(value, safe="")


@dataclass(frozen=True, slots=True)
class Form:
    """A submitted form's fields."""

    fields: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str:
        return next((v for k, v in self.fields if k == name), "")

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.fields if k == name]


class Console:
    """What every console route needs: the application it calls, the session keys, the
    templates, the clock and where the API is."""

    def __init__(
        self, app: ASGIApp, keys: SessionKeys, views: Views, clock: Clock, api_prefix: str
    ) -> None:
        self.app = app
        self.keys = keys
        self.views = views
        self.clock = clock
        self.api_prefix = api_prefix

    def caller(self, request: Request, api_key: str) -> Caller:
        return Caller.of(self.app, request, f"Bearer {api_key}".encode("latin-1", "replace"))

    def visit(self, request: Request) -> Visit:
        """The signed-in user of a page; else to sign in."""
        cookie = request.cookies.get(COOKIE, "")
        session = self.keys.open(cookie, self.clock.now())
        if session is None:
            raise PageExit(self.signed_out(request, "signin" if cookie else None))
        caller = self.caller(request, session.api_key)
        return Visit(self, request, caller, self.keys.csrf_token(cookie))

    async def submit(self, request: Request) -> tuple[Visit, Form]:
        """The user and the form of a POST, once its origin and CSRF token are checked."""
        form = await self.form(request)
        cookie = request.cookies.get(COOKIE, "")
        if not cookie:
            raise PageExit(self.views.redirect("/signin"))
        if not self.keys.csrf_valid(cookie, form.get("csrf")):
            raise PageExit(self.forbidden())
        return self.visit(request), form

    async def form(self, request: Request) -> Form:
        """The urlencoded body of a POST from this console's own pages (403 otherwise)."""
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            raise PageExit(self.forbidden())
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != FORM_TYPE:
            raise PageExit(self.forbidden())
        body = (await request.body()).decode("utf-8", "replace")
        try:
            pairs = parse_qsl(body, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
        except ValueError:
            raise PageExit(self.forbidden()) from None
        return Form(tuple(pairs))

    def forbidden(self) -> Response:
        return self.views.page(
            "error.html",
            403,
            title="Forbidden",
            message="This form was not sent from a page of this console, or its session has "
            "changed. Reload the page and try again.",
        )

    def signed_out(self, request: Request, notice: str | None) -> Response:
        """To the sign-in page, the session cookie cleared."""
        response = self.views.redirect(f"/signin?notice={notice}" if notice else "/signin")
        clear_cookie(response, request)
        return response


def set_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=int(LIFETIME.total_seconds()),
        path="/console",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE,
        path="/console",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


@dataclass(frozen=True, slots=True)
class Visit:
    """A signed-in request: the API calls of its page, with the session's key."""

    console: Console
    request: Request
    caller: Caller
    csrf: str

    async def call(self, method: str, path: str, body: Any = None) -> Answer:
        """``method path`` of the API (``path`` without its prefix). 401: the session ends."""
        response = await self.caller(method, self.console.api_prefix + path, body=body)
        if response.status_code == 401:
            raise PageExit(self.console.signed_out(self.request, "ended"))
        return answer_of(response)

    async def need(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON of a call the page cannot do without; its error is the page otherwise."""
        answer = await self.call(method, path, body)
        if answer.problem is not None:
            raise PageExit(self.error(answer.problem))
        return answer.data

    def page_query(self, limit: int) -> str:
        """``?limit=`` and the ``page_token`` of this page's URL (a "More" link), for a list
        of the API."""
        query = f"?limit={limit}"
        if token := self.request.query_params.get("page_token"):
            query += f"&page_token={segment(token)}"
        return query

    def error(self, problem: Problem) -> Response:
        return self.page("error.html", problem.status, title="Error", problem=problem)

    def page(self, template: str, status: int = 200, **values: Any) -> Response:
        return self.console.views.page(template, status, csrf=self.csrf, **values)

    def redirect(self, path: str, notice: str | None = None) -> Response:
        return self.console.views.redirect(f"{path}?notice={notice}" if notice else path)


NOTICES: Mapping[str, str] = {
    "signin": "Your session has expired or is no longer valid. Sign in again.",
    "ended": "Your session has ended: its API key was revoked or deleted. Sign in again.",
    "signed-out": "You have signed out.",
    "inbox-created": "The inbox was created.",
    "inbox-deleted": "The inbox was deleted.",
    "key-revoked": "The API key was revoked.",
    "domain-deleted": "The domain was deleted.",
    "webhook-deleted": "The webhook was deleted.",
    "webhook-enabled": "The webhook was enabled.",
    "webhook-disabled": "The webhook was disabled.",
    "webhook-tested": "A test event was queued: its delivery is in the log below.",
    "delivery-replayed": "The delivery was queued to be sent again.",
    "inbox-updated": "The inbox was updated.",
    "catch-all-set": "The catch-all inbox was set.",
    "catch-all-cleared": "The domain has no catch-all inbox now: mail for unknown addresses "
    "is refused.",
}


def notice_of(request: Request) -> str | None:
    """The fixed text a redirect named (never text from the URL itself)."""
    return NOTICES.get(request.query_params.get("notice", ""))
