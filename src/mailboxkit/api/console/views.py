"""How the console answers: pages rendered from its templates, redirects, and the headers that
every answer carries.

Implementation notes:

- Jinja2 with autoescape on for every template, and strict undefined (a misspelt name fails
  in tests instead of rendering empty). Values from the API, the user's own included, are
  only ever rendered as escaped text.
- Every answer of a console route carries :data:`SECURITY_HEADERS` (added in one place,
  :class:`ConsoleRoute`): no script, style only from the console itself, forms only to it, no
  framing, no referrer (ids in URLs stay here), never cached (pages show secrets once).
- A route leaves early by raising :class:`PageExit` with the answer (a redirect to sign-in,
  the 403 of a bad CSRF token, an error page); the route class turns it into the response.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, StrictUndefined

CSP = (
    "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


class PageExit(Exception):
    """Raised by a route (or what it calls) to answer with ``response`` at once."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class ConsoleRoute(APIRoute):
    """A console route: :class:`PageExit` becomes its response, and every response gets the
    security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                response = await handler(request)
            except PageExit as exit_:
                response = exit_.response
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return answer


def when(value: str | None) -> str:
    """An API time (ISO 8601) as the page shows it, to the minute, in UTC."""
    if not value:
        return "—"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def size(value: int | None) -> str:
    """A byte count as a person reads it; None (an unlimited limit) as unlimited."""
    if value is None:
        return "unlimited"
    amount = float(value)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{value} bytes" if unit == "bytes" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def limit(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


class Views:
    """The console's templates."""

    def __init__(self, base_path: str) -> None:
        self.base_path = base_path
        self.env = Environment(
            loader=PackageLoader("mailboxkit.api.console", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(when=when, size=size, limit=limit)

    def page(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        """``template`` rendered with ``values`` (and ``base``, the console's path)."""
        values.setdefault("error", None)
        values.setdefault("notice", None)
        values.setdefault("csrf", "")
        html = self.env.get_template(template).render(base=self.base_path, **values)
        return HTMLResponse(html, status_code=status)

    def redirect(self, path: str) -> RedirectResponse:
        """303 to ``path`` under the console (a GET page, after a form's POST)."""
        return RedirectResponse(self.base_path + path, status_code=303)
