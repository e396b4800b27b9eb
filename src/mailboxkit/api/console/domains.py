"""The domains pages: the account's domains (and the operator's shared ones), adding one, each
domain's DNS records to publish (a table to copy from, and the zone-file fragment), a live
check of them, its catch-all inbox (set or cleared with the API's ``PATCH``; not on a shared
domain, which the API refuses to change), and deletion with a confirm step.

The check's result is shown on the answer to its POST: it is a report of the DNS at that
moment, which a later GET could only show by asking the DNS again. What it recorded (the
domain's status, when it was checked) is on the domain's page after.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from mailboxkit.api.console.views import ConsoleRoute
from mailboxkit.api.console.visit import Answer, Console, Form, Visit, notice_of, segment

INBOXES = "/inboxes?limit=100"  # the choices of a catch-all: the API's largest page


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


async def domain_page(visit: Visit, domain_id: str, done: Answer | None = None) -> Response:
    """One domain, its records, and the answer of a form just sent (``done``): a check's
    result, or the error of a check or a catch-all change."""
    path = f"/domains/{segment(domain_id)}"
    domain = await visit.need("GET", path)
    records = await visit.need("GET", f"{path}/dns-records")
    zone: Any = await visit.need("GET", f"{path}/zone-file")
    inboxes = [] if domain["shared"] else (await visit.need("GET", INBOXES))["inboxes"]
    checked = done.data if done is not None and done.ok else None
    return visit.page(
        "domain.html",
        done.status if done is not None and not done.ok else 200,
        domain=domain,
        records=records,
        zone=zone,
        inboxes=inboxes,
        catch_all=_catch_all(domain, inboxes),
        checked=checked,
        problem=done.problem if done is not None else None,
        notice=notice_of(visit.request),
    )


def _catch_all(domain: dict[str, Any], inboxes: list[dict[str, Any]]) -> str | None:
    """The catch-all inbox as the page names it: its address, else (not among the inboxes
    listed) its id."""
    inbox_id = domain.get("catch_all_inbox_id")
    if not inbox_id:
        return None
    return next((str(i["email"]) for i in inboxes if i["inbox_id"] == inbox_id), str(inbox_id))


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

    @router.post("/domains/{domain_id}/catch-all")
    async def catch_all(request: Request, domain_id: str) -> Response:
        visit, form = await console.submit(request)
        inbox_id = form.get("inbox_id") or None
        path = f"/domains/{segment(domain_id)}"
        answer = await visit.call("PATCH", path, {"catch_all_inbox_id": inbox_id})
        if not answer.ok:  # the domain's page with the error (a domain gone is its 404)
            return await domain_page(visit, domain_id, answer)
        return visit.redirect(path, "catch-all-set" if inbox_id else "catch-all-cleared")

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
