"""``GET /metrics`` through the real server: off without a token, 401 without the right bearer,
and the counters moving as SMTP, IMAP, the API, the outbound queue and webhooks do their work.

Counters are process-wide (every server of the test run adds to them): each test compares a
scrape before with one after."""

from __future__ import annotations

import imaplib
import smtplib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.apiserver import Api, idle, message, setup_hook, start_api
from api.webhook_receiver import Received, Receiver
from e2e.sending import start_sending
from mailserver.outbound.sink import SinkHandler

from harness import OwnDatabase, ServerThread, free_port, server_settings

TOKEN = "scrape-" + "0123456789abcdef" * 2

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base_url: str, token: str = TOKEN) -> Samples:
    """Every sample of a scrape, by name and labels."""
    r = httpx.get(f"{base_url}/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series is not there (yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def api(tmp_path: Path, database_url: str) -> Iterator[Api]:
    """The whole server with metrics on, IMAP too."""
    server, clock = start_api(
        tmp_path,
        database_url,
        metrics_token=TOKEN,
        imap_port=free_port(),
        imap_auth_failure_delay=0,
    )
    yield Api(server, clock)
    server.stop()


def test_metrics_are_off_without_a_token(tmp_path: Path, database_url: str) -> None:
    server, _ = start_api(tmp_path, database_url)
    try:
        r = httpx.get(f"{server.http_url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"
    finally:
        server.stop()


def test_metrics_need_the_token(api: Api) -> None:
    url = f"{api.server.http_url}/metrics"
    owner = api.register("Scraper")
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {owner['api_key']}"},  # an API key is not the token
    ):
        r = httpx.get(url, headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["WWW-Authenticate"] == "Bearer"
    samples = scrape(api.server.http_url)
    assert value(samples, "mailboxkit_store_up") == 1
    assert value(samples, "mailboxkit_outbound_queue_recipients") == 0
    assert value(samples, "mailboxkit_webhook_deliveries_pending") == 0
    assert ("process_cpu_seconds_total", ()) in samples
    # Not part of the API's document.
    with api.client() as c:
        assert "/metrics" not in c.get("/openapi.json").json()["paths"]


def test_wrong_tokens_block_the_address_as_wrong_api_keys_do(
    tmp_path: Path, database_url: str
) -> None:
    server, clock = start_api(tmp_path, database_url, metrics_token=TOKEN, api_max_auth_failures=3)
    try:
        url = f"{server.http_url}/metrics"
        guesses = [httpx.get(url, headers={"Authorization": f"Bearer guess{n}"}) for n in range(5)]
        assert [r.status_code for r in guesses] == [401, 401, 401, 429, 429]
        assert int(guesses[-1].headers["Retry-After"]) > 0
        # Blocked: even the right token is refused from this address, and API keys too.
        right = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 429
        assert right.json()["error"]["code"] == "rate_limited"
        assert httpx.get(f"{server.http_url}/api/v1/account").status_code == 429
        clock.advance(301)  # the window (api_auth_failure_window) has passed
        assert scrape(server.http_url)[("mailboxkit_store_up", ())] == 1
    finally:
        server.stop()


def test_smtp_messages_and_refused_recipients_are_counted(api: Api) -> None:
    owner = api.register("Mx Counted")
    before = scrape(api.server.http_url)
    api.send(owner["email"], message(owner["email"], "counted"))
    with smtplib.SMTP("127.0.0.1", api.server.smtp_port) as smtp:
        smtp.ehlo()
        smtp.mail("alice@sender.test")
        assert smtp.rcpt("nobody@example.test")[0] == 550
        assert smtp.rcpt("someone@elsewhere.test")[0] == 550
    after = scrape(api.server.http_url)

    messages = "mailboxkit_smtp_messages_total"
    assert delta(before, after, messages, listener="mx", outcome="accepted") == 1
    assert delta(before, after, messages, listener="mx", outcome="refused") == 0
    assert delta(before, after, messages, listener="mx", outcome="failed") == 0
    refused = "mailboxkit_smtp_recipients_refused_total"
    assert delta(before, after, refused, listener="mx", reason="unknown") == 1
    assert delta(before, after, refused, listener="mx", reason="relay") == 1


def test_submission_messages_are_counted_apart(tmp_path: Path, database_url: str) -> None:
    sending = start_sending(
        tmp_path, database_url, metrics_token=TOKEN, submission_port=free_port()
    )
    try:
        _, key = sending.inbox("bot@example.test")
        before = scrape(sending.server.http_url)
        with smtplib.SMTP("127.0.0.1", sending.server.submission_port, timeout=30) as smtp:
            smtp.starttls(context=sending.client_context())
            smtp.login("bot@example.test", key)
            own = b"From: bot@example.test\r\nTo: alice@remote.test\r\nSubject: a\r\n\r\nhi\r\n"
            smtp.sendmail("bot@example.test", ["alice@remote.test"], own)
            forged = own.replace(b"From: bot@", b"From: boss@")
            with pytest.raises(smtplib.SMTPDataError):
                smtp.sendmail("bot@example.test", ["alice@remote.test"], forged)
        after = scrape(sending.server.http_url)
    finally:
        sending.stop()

    messages = "mailboxkit_smtp_messages_total"
    assert delta(before, after, messages, listener="submission", outcome="accepted") == 1
    assert delta(before, after, messages, listener="submission", outcome="refused") == 1
    assert delta(before, after, messages, listener="mx", outcome="accepted") == 0


def test_http_requests_are_counted_by_route_template(api: Api) -> None:
    owner = api.register("Http Counted")
    inbox_id = owner["inbox_id"]
    before = scrape(api.server.http_url)
    with api.client(owner["api_key"]) as c:
        assert c.get(f"/inboxes/{inbox_id}/messages").status_code == 200
        assert c.get("/no/such/route").status_code == 404
    after = scrape(api.server.http_url)

    requests = "mailboxkit_http_requests_total"
    route = "/api/v1/inboxes/{inbox_id}/messages"
    assert delta(before, after, requests, method="GET", route=route, status="200") == 1
    assert delta(before, after, requests, method="GET", route="unmatched", status="404") == 1
    durations = "mailboxkit_http_request_duration_seconds_count"
    assert delta(before, after, durations, method="GET", route=route) == 1
    routes = {dict(labels).get("route", "") for _, labels in after}
    assert not any(inbox_id in r or "/no/such" in r for r in routes)


def test_open_imap_connections_are_counted(api: Api) -> None:
    owner = api.register("Imap Counted")
    before = scrape(api.server.http_url)
    session = imaplib.IMAP4("127.0.0.1", api.server.imap_port, timeout=10)
    try:
        session.login(owner["email"], owner["api_key"])
        during = scrape(api.server.http_url)
    finally:
        session.logout()
    # Other tests' servers in this process may hold connections too: at least this one.
    assert value(during, "mailboxkit_imap_connections") >= 1
    assert delta(before, during, "mailboxkit_imap_connections_opened_total") == 1


def test_outbound_attempts_are_counted(tmp_path: Path, database_url: str) -> None:
    handler = SinkHandler(data_replies=["451 4.3.0 Greylisted, try again later"])
    sending = start_sending(
        tmp_path, database_url, handler, metrics_token=TOKEN, outbound_retry_first=300
    )
    try:
        inbox, key = sending.inbox("bot@example.test")
        base = sending.server.http_url
        before = scrape(base)
        with sending.api(key) as api:
            r = api.post(
                f"/inboxes/{inbox.id}/messages/send",
                json={"to": "alice@remote.test", "subject": "Counted", "text": "hi"},
            )
        assert r.status_code == 200, r.text
        sending.settled(1)  # the 451: deferred
        deferred = scrape(base)
        assert value(deferred, "mailboxkit_outbound_queue_recipients") == 1
        sending.clock.advance(400)  # past the first backoff (300 s ± 20 %)
        worker = sending.server.app.outbound
        assert worker is not None
        worker.wake()
        sending.sink.next()
        sending.settled(2)
        after = scrape(base)
    finally:
        sending.stop()

    attempts = "mailboxkit_outbound_attempts_total"
    assert delta(before, deferred, attempts, outcome="deferred") == 1
    assert delta(before, deferred, attempts, outcome="sent") == 0
    assert delta(deferred, after, attempts, outcome="sent") == 1
    assert delta(before, after, attempts, outcome="bounced") == 0
    assert value(after, "mailboxkit_outbound_queue_recipients") == 0


def test_webhook_attempts_are_counted(api: Api) -> None:
    receiver = Receiver().start()
    try:
        answers = [503, 200]
        receiver.answer = lambda _got: (answers.pop(0), {})
        owner, _ = setup_hook(api, receiver.url())
        before = scrape(api.server.http_url)
        api.send(owner["email"], message(owner["email"], "hooked"))
        first: Received = receiver.next()
        idle(api)
        retrying = scrape(api.server.http_url)
        assert value(retrying, "mailboxkit_webhook_deliveries_pending") == 1
        api.clock.advance(6)  # past the first retry's delay (5 s ± 10 %)
        idle(api)
        assert receiver.next().id == first.id
        idle(api)
        after = scrape(api.server.http_url)
    finally:
        receiver.stop()

    attempts = "mailboxkit_webhook_attempts_total"
    assert delta(before, retrying, attempts, outcome="retrying") == 1
    assert delta(before, retrying, attempts, outcome="succeeded") == 0
    assert delta(retrying, after, attempts, outcome="succeeded") == 1
    assert delta(before, after, attempts, outcome="failed") == 0
    assert value(after, "mailboxkit_webhook_deliveries_pending") == 0


def test_scrape_answers_while_the_database_is_out_of_reach(
    tmp_path: Path, own_database: OwnDatabase
) -> None:
    """PostgreSQL only: a database of this test alone, cut off as in a restart."""
    server = ServerThread(server_settings(tmp_path / "data", own_database.url, metrics_token=TOKEN))
    server.start()
    try:
        assert value(scrape(server.http_url), "mailboxkit_store_up") == 1
        own_database.cut_off()
        samples = scrape(server.http_url)
        assert value(samples, "mailboxkit_store_up") == 0
        assert ("mailboxkit_outbound_queue_recipients", ()) not in samples
        assert ("process_cpu_seconds_total", ()) in samples
        own_database.reconnect()
        assert value(scrape(server.http_url), "mailboxkit_store_up") == 1
    finally:
        own_database.reconnect()
        server.stop()
