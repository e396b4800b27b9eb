"""Sign-in, sign-out and the stylesheet: the console's pages that need no session.

A key is checked by asking the API for the account's keys with it, in-process from the
client's address: a wrong key is the API's 401 and counts as a failed authentication of the
address (too many, and the API's 429 answers, for the console and the API alike); an inbox
key is the API's 403, refused here with a word on why. Only then is the session sealed.
"""

from __future__ import annotations

import logging
from importlib.resources import files

from fastapi import APIRouter, Request, Response

from mailboxkit.api.console.session import COOKIE
from mailboxkit.api.console.views import ConsoleRoute
from mailboxkit.api.console.visit import (
    Console,
    Problem,
    clear_cookie,
    notice_of,
    set_cookie,
)

log = logging.getLogger(__name__)

STYLESHEET = files("mailboxkit.api.console").joinpath("static/console.css").read_bytes()
INBOX_KEY = (
    "This API key is limited to one inbox. The console manages the whole account: sign in "
    "with an account key."
)


def _printable(key: str) -> str:
    """The key as pasted, without spaces or line ends around or inside it (a key has none)."""
    return "".join(c for c in key if "!" <= c <= "~")


def routes(console: Console) -> APIRouter:
    router = APIRouter(route_class=ConsoleRoute)
    views = console.views

    @router.get("/static/console.css")
    async def stylesheet() -> Response:
        return Response(STYLESHEET, media_type="text/css")

    @router.get("/signin")
    async def signin_page(request: Request) -> Response:
        return views.page("signin.html", notice=notice_of(request))

    @router.post("/signin")
    async def signin(request: Request) -> Response:
        form = await console.form(request)
        key = _printable(form.get("api_key"))
        caller = console.caller(request, key)
        response = await caller("GET", f"{console.api_prefix}/api-keys")
        if response.status_code == 403:
            return views.page("signin.html", 403, error=INBOX_KEY)
        if not response.is_success:
            problem = Problem.of(response)
            page = views.page("signin.html", problem.status, error=problem.text)
            if retry := response.headers.get("retry-after"):
                page.headers["Retry-After"] = retry
            return page
        sealed = console.keys.seal(key, console.clock.now())
        redirect = views.redirect("")
        set_cookie(redirect, request, sealed)
        log.info("event=console_signin client=%s", request.client.host if request.client else "-")
        return redirect

    @router.post("/signout")
    async def signout(request: Request) -> Response:
        form = await console.form(request)
        cookie = request.cookies.get(COOKIE, "")
        if cookie and not console.keys.csrf_valid(cookie, form.get("csrf")):
            return console.forbidden()
        redirect = views.redirect("/signin?notice=signed-out")
        clear_cookie(redirect, request)
        return redirect

    return router
