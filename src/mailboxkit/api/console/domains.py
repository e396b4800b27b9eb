"""The domains pages: the account's domains (and the operator's shared ones), adding one, each
domain's DNS records to publish (a table to copy from, and the zone-file fragment), a live
check of them, and deletion with a confirm step.

The check's result is shown on the answer to its POST: it is a report of the DNS at that
moment, which a later GET could only show by asking the DNS again. What it recorded (the
domain's status, when it was checked) is on the domain's page after.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from mailboxkit.api.console.views import ConsoleRoute
from mailboxkit.api.console.visit import Answer, Console, Form, Visit, notice_of, segment


async def domains_page(
    visit: Visit, failed: Answer | None = None, form: Form | None = None
) -> Response:
    listed = await visit.need("GET", "/domains")
    return visit.page(
        "domains.html",
        failed.status if failed is not None else 200,
        domains=listed["domains"],
        problem=failed.problem if failed is not None else None,
        typed=dict(form.fields) if form is not None else {},
        notice=notice_of(visit.request),
    )


async def domain_page(visit: Visit, domain_id: str, check: Answer | None = None) -> Response:
    """One domain, its records, and the result of a check just made (``check``)."""
    path = f"/domains/{segment(domain_id)}"
    domain = await visit.need("GET", path)
    records = await visit.need("GET", f"{path}/dns-records")
    zone: Any = await visit.need("GET", f"{path}/zone-file")
    return visit.page(
        "domain.html",
        check.status if check is not None and not check.ok else 200,
        domain=domain,
        records=records,
        zone=zone,
        checked=check.data if check is not None and check.ok else None,
        problem=check.problem if check is not None else None,
    )


def routes(console: Console) -> APIRouter:
    router = APIRouter(route_class=ConsoleRoute)

    @router.get("/domains")
    async def domains(request: Request) -> Response:
        return await domains_page(console.visit(request))

    @router.post("/domains")
    async def add(request: Request) -> Response:
        visit, form = await console.submit(request)
        answer = await visit.call("POST", "/domains", {"domain": form.get("domain").strip()})
        if not answer.ok:
            return await domains_page(visit, answer, form)
        return visit.redirect(f"/domains/{segment(answer.data['domain_id'])}")

    @router.get("/domains/{domain_id}")
    async def domain(request: Request, domain_id: str) -> Response:
        return await domain_page(console.visit(request), domain_id)

    @router.post("/domains/{domain_id}/verify")
    async def verify(request: Request, domain_id: str) -> Response:
        visit, _ = await console.submit(request)
        check = await visit.call("POST", f"/domains/{segment(domain_id)}/verify")
        if check.status == 404:
            assert check.problem is not None
            return visit.error(check.problem)
        return await domain_page(visit, domain_id, check)

    @router.get("/domains/{domain_id}/delete")
    async def confirm_delete(request: Request, domain_id: str) -> Response:
        visit = console.visit(request)
        found = await visit.need("GET", f"/domains/{segment(domain_id)}")
        return visit.page(
            "confirm.html",
            title="Delete domain",
            question=f"Delete the domain {found['domain']}? Its inboxes must be deleted first; "
            "its DKIM keys go with it.",
            action=f"/domains/{found['domain_id']}/delete",
            button="Delete domain",
            back=f"/domains/{found['domain_id']}",
        )

    @router.post("/domains/{domain_id}/delete")
    async def delete(request: Request, domain_id: str) -> Response:
        visit, _ = await console.submit(request)
        await visit.need("DELETE", f"/domains/{segment(domain_id)}")
        return visit.redirect("/domains", "domain-deleted")

    return router
