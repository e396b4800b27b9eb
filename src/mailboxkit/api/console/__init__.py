"""The web console at ``/console``: accounts, inboxes, API keys, domains (with the DNS records
to publish), webhooks, usage and billing, for a person with an account API key.

Implementation notes:

- One implementation of each semantics: every page and form is made of ``/api/v1`` calls in
  this process (``visit.py``), with the session's key and the client's address. Validation,
  scoping (another account's id is 404), rate limits, quotas and billing are the API's; the
  console adds none, and shows the API's errors as they are.
- The session is the API key sealed in a cookie (``session.py``; HttpOnly, SameSite=Strict,
  Path=/console, Secure over HTTPS, 12 hours); every form is a POST with a CSRF token checked
  first; every answer forbids scripts, framing, caching and referrers (``views.py``).
- After a POST, a 303 to a GET page, except where a secret is shown once (a new API key, a
  webhook's signing secret) or a live DNS check is reported: those are rendered on the answer.
- HTML only: no script, no CDN, nothing fetched from elsewhere; a stylesheet of its own.
- Not in the OpenAPI document, and so not an MCP tool.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from mailboxkit.api.console import domains, inboxes, keys, overview, signin, webhooks
from mailboxkit.api.console.session import SessionKeys
from mailboxkit.api.console.views import Views
from mailboxkit.api.console.visit import Console
from mailboxkit.api.context import ApiContext

PATH = "/console"


def router(app: FastAPI, ctx: ApiContext, api_prefix: str) -> APIRouter:
    """The console's routes, calling ``app``'s API under ``api_prefix``."""
    keys_ = SessionKeys.derive(ctx.config.secret_key)
    console = Console(app, keys_, Views(PATH), ctx.clock, api_prefix)
    out = APIRouter()
    for module in (signin, overview, inboxes, keys, domains, webhooks):
        out.include_router(module.routes(console), prefix=PATH, include_in_schema=False)
    return out
