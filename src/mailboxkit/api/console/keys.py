"""The API keys page: the account's keys (prefix only), a form to make one (its secret shown
on the answer, once), and revocation with a confirm step."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from mailboxkit.api.console.views import ConsoleRoute
from mailboxkit.api.console.visit import Answer, Console, Visit, notice_of, segment


async def keys_page(visit: Visit, failed: Answer | None = None) -> Response:
    keys = await visit.need("GET", "/api-keys")
    inboxes = await visit.need("GET", "/inboxes?limit=100")
    return visit.page(
        "keys.html",
        failed.status if failed is not None else 200,
        keys=keys["api_keys"],
        inboxes=inboxes["inboxes"],
        problem=failed.problem if failed is not None else None,
        notice=notice_of(visit.request),
    )


def _label(key: dict[str, Any]) -> str:
    prefix = f"{key['prefix']}…"
    return f"{key['name']} ({prefix})" if key["name"] else prefix


def routes(console: Console) -> APIRouter:
    router = APIRouter(route_class=ConsoleRoute)

    @router.get("/keys")
    async def keys(request: Request) -> Response:
        return await keys_page(console.visit(request))

    @router.post("/keys")
    async def create(request: Request) -> Response:
        visit, form = await console.submit(request)
        body: dict[str, Any] = {"name": form.get("name").strip()}
        if inbox_id := form.get("inbox_id"):
            body["inbox_id"] = inbox_id
        answer = await visit.call("POST", "/api-keys", body)
        if not answer.ok:
            return await keys_page(visit, answer)
        made = answer.data
        scope = f"inbox {made['inbox_id']}" if made["inbox_id"] else "the whole account"
        return visit.page(
            "secret.html",
            title="New API key",
            what=f"API key {made['name'] or made['prefix']} for {scope}",
            secret=made["api_key"],
            back="/keys",
        )

    @router.get("/keys/{api_key_id}/revoke")
    async def confirm_revoke(request: Request, api_key_id: str) -> Response:
        visit = console.visit(request)
        listed = await visit.need("GET", "/api-keys")
        found = next((k for k in listed["api_keys"] if k["api_key_id"] == api_key_id), None)
        if found is None:
            return visit.page("error.html", 404, title="Not found", message="API key not found")
        return visit.page(
            "confirm.html",
            title="Revoke API key",
            question=f"Revoke the API key {_label(found)}? Whatever uses it stops working at "
            "once. Revoking the key you signed in with ends this session.",
            action=f"/keys/{found['api_key_id']}/revoke",
            button="Revoke key",
            back="/keys",
        )

    @router.post("/keys/{api_key_id}/revoke")
    async def revoke(request: Request, api_key_id: str) -> Response:
        visit, _ = await console.submit(request)
        await visit.need("DELETE", f"/api-keys/{segment(api_key_id)}")
        return visit.redirect("/keys", "key-revoked")

    return router
