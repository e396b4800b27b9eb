"""The whole flow through the real server: register, create an inbox, receive mail over SMTP,
list, get, follow the thread, download the attachment by its signed URL, and see the URL
refused once it has expired (the server's clock is moved, never slept on)."""

from __future__ import annotations

import httpx

from api.apiserver import Api, message


def test_register_receive_read_thread_and_download(api: Api) -> None:
    registered = api.register("Flow Bot", "flow@example.com")
    assert registered["email"] == "flow-bot@example.test"
    assert registered["api_key"].startswith("mbk_")
    with api.client(registered["api_key"]) as c:
        created = c.post("/inboxes", json={"username": "orders", "display_name": "Orders"})
        assert created.status_code == 201, created.text
        inbox = created.json()
        assert inbox["email"] == "orders@example.test"
        inbox_id = inbox["inbox_id"]

        pdf = b"%PDF-1.4 pretend\n" * 20
        first = message(
            "orders@example.test",
            "Order 17",
            "Please ship order 17.\n",
            message_id="<o17@shop.test>",
            attachment=("order.pdf", pdf),
        )
        api.send("orders@example.test", first)
        api.clock.advance(60)
        reply = message(
            "orders@example.test",
            "Re: Order 17",
            "Any news?\n\nOn Monday you wrote:\n> Please ship order 17.\n",
            message_id="<o17-2@shop.test>",
            in_reply_to="<o17@shop.test>",
        )
        api.send("orders@example.test", reply)

        listed = c.get(f"/inboxes/{inbox_id}/messages").json()
        assert listed["count"] == 2
        assert [m["subject"] for m in listed["messages"]] == ["Re: Order 17", "Order 17"]
        assert listed["next_page_token"] is None
        newest, oldest = listed["messages"]
        assert newest["thread_id"] == oldest["thread_id"]
        assert oldest["has_attachments"] and not oldest["read"]

        got = c.get(f"/inboxes/{inbox_id}/messages/{oldest['message_id']}").json()
        assert got["from"] == {"name": "Alice", "email": "alice@sender.test"}
        assert got["to"] == [{"name": "", "email": "orders@example.test"}]
        assert got["text"] == "Please ship order 17.\n"
        assert got["internet_message_id"] == "o17@shop.test"
        [attachment] = got["attachments"]
        assert attachment["filename"] == "order.pdf"
        assert attachment["size"] == len(pdf)
        extracted = c.get(f"/inboxes/{inbox_id}/messages/{newest['message_id']}").json()
        assert extracted["extracted_text"] == "Any news?"
        assert extracted["in_reply_to"] == "o17@shop.test"

        raw = c.get(f"/inboxes/{inbox_id}/messages/{oldest['message_id']}/raw")
        assert raw.headers["content-type"] == "message/rfc822"
        assert raw.content.endswith(first)

        thread = c.get(f"/threads/{oldest['thread_id']}").json()
        assert thread["message_count"] == 2
        assert thread["subject"] == "Order 17"
        assert [m["message_id"] for m in thread["messages"]] == [
            oldest["message_id"],
            newest["message_id"],
        ]
        assert {"name": "Alice", "email": "alice@sender.test"} in thread["participants"]
        threads = c.get(f"/inboxes/{inbox_id}/threads").json()
        assert [t["thread_id"] for t in threads["threads"]] == [oldest["thread_id"]]

        path = f"/inboxes/{inbox_id}/messages/{oldest['message_id']}/attachments"
        link = c.get(f"{path}/{attachment['attachment_id']}", params={"expires_in": 120}).json()
        assert link["expires_at"] == "2026-11-28T09:03:00Z"  # clock at 09:01 + 120 s

    downloaded = httpx.get(link["download_url"])  # no API key
    assert downloaded.status_code == 200
    assert downloaded.content == pdf
    assert downloaded.headers["content-disposition"] == 'attachment; filename="order.pdf"'

    api.clock.advance(121)
    expired = httpx.get(link["download_url"])
    assert expired.status_code == 403
    assert expired.json()["error"]["code"] == "forbidden"

    with api.client(registered["api_key"]) as c:
        usage = c.get("/usage").json()
    assert usage["messages_received"] == 2
    assert usage["api_requests"] >= 9
