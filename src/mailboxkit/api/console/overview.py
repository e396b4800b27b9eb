"""The overview (the account, its limits and this month's usage) and billing pages.

Billing is the API's: the plan and subscription from ``GET /billing`` (404 there: billing is
off on this server, and the page says so); checkout and the billing portal are POSTs that
answer 303 to the Stripe page the API made, returning to this page.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from mailboxkit.api.console.views import CSP, ConsoleRoute
from mailboxkit.api.console.visit import Answer, Console, Visit, notice_of

# The billing page's forms are answered by a redirect to Stripe, and browsers hold the
# redirect of a form to the page's form-action too.
BILLING_CSP = CSP.replace("form-action 'self'", "form-action 'self' https:")


async def _billing_page(visit: Visit, failed: Answer | None = None) -> Response:
    answer = await visit.call("GET", "/billing")
    if answer.problem is not None and answer.status != 404:
        return visit.error(answer.problem)
    state: Any = answer.data if answer.ok else None
    error = failed.problem.text if failed is not None and failed.problem is not None else None
    status = failed.status if failed is not None else 200
    page = visit.page("billing.html", status, state=state, error=error)
    if state is not None:
        page.headers["Content-Security-Policy"] = BILLING_CSP
    return page


def _to_stripe(answer: Answer) -> Response | None:
    """303 to the Stripe page of the API's answer, if it is one."""
    url = answer.data.get("url") if answer.ok and isinstance(answer.data, dict) else None
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        return RedirectResponse(url, status_code=303)
    return None


def routes(console: Console) -> APIRouter:
    router = APIRouter(route_class=ConsoleRoute)

    @router.get("")
    async def overview(request: Request) -> Response:
        visit = console.visit(request)
        account = await visit.need("GET", "/account")
        usage = await visit.need("GET", "/usage")
        return visit.page("overview.html", account=account, usage=usage, notice=notice_of(request))

    @router.get("/billing")
    async def billing(request: Request) -> Response:
        return await _billing_page(console.visit(request))

    def back(request: Request) -> str:
        return f"{str(request.base_url).rstrip('/')}{console.views.base_path}/billing"

    @router.post("/billing/checkout")
    async def checkout(request: Request) -> Response:
        visit, form = await console.submit(request)
        here = back(request)
        body = {"plan": form.get("plan"), "success_url": here, "cancel_url": here}
        answer = await visit.call("POST", "/billing/checkout", body)
        return _to_stripe(answer) or await _billing_page(visit, answer)

    @router.post("/billing/portal")
    async def portal(request: Request) -> Response:
        visit, _ = await console.submit(request)
        answer = await visit.call("POST", "/billing/portal", {"return_url": back(request)})
        return _to_stripe(answer) or await _billing_page(visit, answer)

    return router
