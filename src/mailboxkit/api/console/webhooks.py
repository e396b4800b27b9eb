"""The webhooks page: the account's endpoints, a form to make one (its signing secret shown on
the answer, once), and per endpoint: enable, disable, send a test event, rotate the secret
(the new one shown once), delete with a confirm step."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from mailboxkit.api.console.views import ConsoleRoute
from mailboxkit.api.console.visit import Answer, Console, Form, Visit, notice_of, segment
from mailboxkit.store.events import EventType

ALL_EVENTS = "*"
EVENT_CHOICES = (ALL_EVENTS, *(str(t) for t in EventType), "webhook.test")
ACTIONS = {"enable": "webhook-enabled", "disable": "webhook-disabled", "test": "webhook-tested"}


async def webhooks_page(
    visit: Visit, failed: Answer | None = None, form: Form | None = None
) -> Response:
    listed = await visit.need("GET", "/webhooks?limit=100")
    return visit.page(
        "webhooks.html",
        failed.status if failed is not None else 200,
        webhooks=listed["webhooks"],
        event_choices=EVENT_CHOICES,
        problem=failed.problem if failed is not None else None,
        typed=dict(form.fields) if form is not None else {},
        notice=notice_of(visit.request),
    )


def _create_body(form: Form) -> dict[str, Any]:
    return {
        "url": form.get("url").strip(),
        "events": form.all("events") or [ALL_EVENTS],
        "description": form.get("description").strip(),
    }


def routes(console: Console) -> APIRouter:
    router = APIRouter(route_class=ConsoleRoute)

    @router.get("/webhooks")
    async def webhooks(request: Request) -> Response:
        return await webhooks_page(console.visit(request))

    @router.post("/webhooks")
    async def create(request: Request) -> Response:
        visit, form = await console.submit(request)
        answer = await visit.call("POST", "/webhooks", _create_body(form))
        if not answer.ok:
            return await webhooks_page(visit, answer, form)
        made = answer.data
        return visit.page(
            "secret.html",
            title="New webhook",
            what=f"The signing secret of the webhook to {made['url']}",
            secret=made["secret"],
            back="/webhooks",
        )

    @router.post("/webhooks/{webhook_id}/{action}")
    async def act(request: Request, webhook_id: str, action: str) -> Response:
        visit, _ = await console.submit(request)
        path = f"/webhooks/{segment(webhook_id)}"
        if action == "delete":
            await visit.need("DELETE", path)
            return visit.redirect("/webhooks", "webhook-deleted")
        if action == "rotate":
            rotated = await visit.need("POST", f"{path}/secret/rotate")
            return visit.page(
                "secret.html",
                title="New webhook secret",
                what="The new signing secret of the webhook (the old one keeps signing too "
                f"until {rotated['previous_expires_at']})",
                secret=rotated["secret"],
                back="/webhooks",
            )
        if action not in ACTIONS:
            return visit.page("error.html", 404, title="Not found", message="No such action")
        await visit.need("POST", f"{path}/{action}")
        return visit.redirect("/webhooks", ACTIONS[action])

    @router.get("/webhooks/{webhook_id}/delete")
    async def confirm_delete(request: Request, webhook_id: str) -> Response:
        visit = console.visit(request)
        found = await visit.need("GET", f"/webhooks/{segment(webhook_id)}")
        return visit.page(
            "confirm.html",
            title="Delete webhook",
            question=f"Delete the webhook to {found['url']} with its delivery log? Nothing "
            "more is sent to it.",
            action=f"/webhooks/{found['webhook_id']}/delete",
            button="Delete webhook",
            back="/webhooks",
        )

    return router
