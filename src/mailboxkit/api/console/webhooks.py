"""The webhooks pages: the account's endpoints, a form to make one (its signing secret shown on
the answer, once), and per endpoint: enable, disable, send a test event, rotate the secret
(the new one shown once), delete with a confirm step; and each endpoint's page, its delivery
log (newest first) with a replay button per delivery and each delivery's attempts.

A replay is the API's: the event sent again at once with the same ``webhook-id``. The page it
returns to shows the delivery as the API has it then; the attempt itself is the dispatcher's,
seen on the delivery's page once made."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from mailboxkit.api.console.views import ConsoleRoute
from mailboxkit.api.console.visit import Answer, Console, Form, Visit, notice_of, segment
from mailboxkit.store.events import EventType

ALL_EVENTS = "*"
EVENT_CHOICES = (ALL_EVENTS, *(str(t) for t in EventType), "webhook.test")
ACTIONS = {"enable": "webhook-enabled", "disable": "webhook-disabled", "test": "webhook-tested"}
PAGE_SIZE = 100  # the API's largest page


async def webhooks_page(
    visit: Visit, failed: Answer | None = None, form: Form | None = None
) -> Response:
    listed = await visit.need("GET", f"/webhooks{visit.page_query(PAGE_SIZE)}")
    return visit.page(
        "webhooks.html",
        failed.status if failed is not None else 200,
        webhooks=listed["webhooks"],
        next_page_token=listed.get("next_page_token"),
        event_choices=EVENT_CHOICES,
        problem=failed.problem if failed is not None else None,
        typed=dict(form.fields) if form is not None else {},
        notice=notice_of(visit.request),
    )


async def webhook_page(visit: Visit, webhook_id: str) -> Response:
    """One endpoint and a page of its delivery log (``page_token`` from the URL)."""
    path = f"/webhooks/{segment(webhook_id)}"
    hook = await visit.need("GET", path)
    log = await visit.need("GET", f"{path}/deliveries{visit.page_query(PAGE_SIZE)}")
    return visit.page(
        "webhook.html",
        hook=hook,
        deliveries=log["deliveries"],
        next_page_token=log.get("next_page_token"),
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

    @router.get("/webhooks/{webhook_id}")
    async def webhook(request: Request, webhook_id: str) -> Response:
        return await webhook_page(console.visit(request), webhook_id)

    @router.get("/webhooks/{webhook_id}/deliveries/{delivery_id}")
    async def delivery(request: Request, webhook_id: str, delivery_id: str) -> Response:
        visit = console.visit(request)
        path = f"/webhooks/{segment(webhook_id)}"
        hook = await visit.need("GET", path)
        found = await visit.need("GET", f"{path}/deliveries/{segment(delivery_id)}")
        return visit.page("delivery.html", hook=hook, delivery=found)

    @router.post("/webhooks/{webhook_id}/deliveries/{delivery_id}/replay")
    async def replay(request: Request, webhook_id: str, delivery_id: str) -> Response:
        visit, _ = await console.submit(request)
        path = f"/webhooks/{segment(webhook_id)}"
        await visit.need("POST", f"{path}/deliveries/{segment(delivery_id)}/replay")
        return visit.redirect(f"/webhooks/{segment(webhook_id)}", "delivery-replayed")

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
        # To the endpoint's page: its state, and a test event's delivery in its log.
        return visit.redirect(f"/webhooks/{segment(webhook_id)}", ACTIONS[action])

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
