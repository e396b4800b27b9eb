"""The inboxes pages: the account's inboxes, a form to make one, each inbox's page with a form
to change its display name (the API's ``PATCH``), and deletion with a confirm step (the API
deletes an inbox with all its mail, at once)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from mailboxkit.api.console.views import ConsoleRoute
from mailboxkit.api.console.visit import Answer, Console, Form, Visit, notice_of, segment

PAGE_SIZE = 100


async def inboxes_page(
    visit: Visit, failed: Answer | None = None, form: Form | None = None
) -> Response:
    """The list (one page of it, ``page_token`` from the URL) and the create form, with the
    error of a failed create and what was typed."""
    listed = await visit.need("GET", f"/inboxes{visit.page_query(PAGE_SIZE)}")
    domains = await visit.need("GET", "/domains")
    problem = failed.problem if failed is not None else None
    return visit.page(
        "inboxes.html",
        failed.status if failed is not None else 200,
        inboxes=listed["inboxes"],
        next_page_token=listed.get("next_page_token"),
        domains=[d["domain"] for d in domains["domains"]],
        problem=problem,
        typed=dict(form.fields) if form is not None else {},
        notice=notice_of(visit.request),
    )


async def inbox_page(
    visit: Visit, inbox_id: str, failed: Answer | None = None, form: Form | None = None
) -> Response:
    """One inbox and the form to edit it, with the error of a failed edit and what was typed."""
    inbox = await visit.need("GET", f"/inboxes/{segment(inbox_id)}")
    return visit.page(
        "inbox.html",
        failed.status if failed is not None else 200,
        inbox=inbox,
        problem=failed.problem if failed is not None else None,
        typed=dict(form.fields) if form is not None else {"display_name": inbox["display_name"]},
        notice=notice_of(visit.request),
    )


def _create_body(form: Form) -> dict[str, Any]:
    body: dict[str, Any] = {"display_name": form.get("display_name").strip()}
    for name in ("username", "domain"):
        if value := form.get(name).strip():
            body[name] = value
    return body


def routes(console: Console) -> APIRouter:
    router = APIRouter(route_class=ConsoleRoute)

    @router.get("/inboxes")
    async def inboxes(request: Request) -> Response:
        return await inboxes_page(console.visit(request))

    @router.post("/inboxes")
    async def create(request: Request) -> Response:
        visit, form = await console.submit(request)
        answer = await visit.call("POST", "/inboxes", _create_body(form))
        if not answer.ok:
            return await inboxes_page(visit, answer, form)
        return visit.redirect("/inboxes", "inbox-created")

    @router.get("/inboxes/{inbox_id}")
    async def inbox(request: Request, inbox_id: str) -> Response:
        return await inbox_page(console.visit(request), inbox_id)

    @router.post("/inboxes/{inbox_id}")
    async def update(request: Request, inbox_id: str) -> Response:
        visit, form = await console.submit(request)
        body = {"display_name": form.get("display_name").strip()}
        answer = await visit.call("PATCH", f"/inboxes/{segment(inbox_id)}", body)
        if not answer.ok:  # the inbox's page with the error (an inbox gone is its 404)
            return await inbox_page(visit, inbox_id, answer, form)
        return visit.redirect(f"/inboxes/{segment(inbox_id)}", "inbox-updated")

    @router.get("/inboxes/{inbox_id}/delete")
    async def confirm_delete(request: Request, inbox_id: str) -> Response:
        visit = console.visit(request)
        inbox = await visit.need("GET", f"/inboxes/{segment(inbox_id)}")
        return visit.page(
            "confirm.html",
            title="Delete inbox",
            question=f"Delete the inbox {inbox['email']} with all its mail, threads, "
            "attachments and inbox keys? This cannot be undone.",
            action=f"/inboxes/{inbox['inbox_id']}/delete",
            button="Delete inbox",
            back="/inboxes",
        )

    @router.post("/inboxes/{inbox_id}/delete")
    async def delete(request: Request, inbox_id: str) -> Response:
        visit, _ = await console.submit(request)
        await visit.need("DELETE", f"/inboxes/{segment(inbox_id)}")
        return visit.redirect("/inboxes", "inbox-deleted")

    return router
