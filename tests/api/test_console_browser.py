"""The web console in a real browser: headless Chromium driven by Playwright, against the whole
server on loopback. What a plain HTTP client cannot show is shown here: that the browser sends
the SameSite=Strict session cookie back when it follows the sign-in's 303, that the stylesheet
applies under the console's Content-Security-Policy and nothing the pages load or submit is
refused by it, and that a billing form's 303 to Stripe is followed (its form-action allows it).

The browser is the distribution's Chromium (Playwright's own builds are never downloaded); a
machine without it skips this module, and CI installs it (``.ci/packages``). The pages' API
calls are the ones ``test_console.py`` runs on both databases; a browser adds nothing that
depends on the database, so these run on SQLite only.
"""

from __future__ import annotations

import shutil
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme
from playwright.sync_api import Browser, ConsoleMessage, Page, Response, sync_playwright

from api.apiserver import Api
from api.stripe_standin import StripeStandIn, start_billing

CHROMIUM = next(
    (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None
)
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)"
    ),
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]

STRIPE_HOSTS = ("checkout.stripe.test", "billing.stripe.test")  # of the stand-in's URLs
PAGE_BACKGROUND = "rgb(246, 247, 249)"  # console.css: body { background: #f6f7f9 }
BUTTON_BACKGROUND = "rgb(36, 82, 199)"  # console.css: button { background: var(--accent) }


class StripePages:
    """Stripe's Checkout and portal pages as the browser finds them: an HTTPS server on
    loopback, which the browser is told ``*.stripe.test`` resolves to; records what it served."""

    def __init__(self) -> None:
        self.served: list[str] = []
        pages = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/favicon.ico":  # asked by the browser on its own
                    self.send_response(204)
                    self.end_headers()
                    return
                pages.served.append(f"https://{self.headers['Host']}{self.path}")
                body = b"<!doctype html><title>Stripe</title><h1>Pay</h1>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        trustme.CA().issue_cert(*STRIPE_HOSTS).configure_cert(tls)
        self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def stripe_pages() -> Iterator[StripePages]:
    pages = StripePages()
    yield pages
    pages.stop()


@pytest.fixture
def billing(tmp_path: Path, database_url: str, stripe_api: StripeStandIn) -> Iterator[Api]:
    """The server with billing on, its Stripe the stand-in (as ``test_billing.py`` has it)."""
    plans = {"team": {"price_id": "price_team", "inbox_limit": 5}}
    api = start_billing(tmp_path, database_url, stripe_api, plans, {"inbox_limit": 1})
    yield api
    api.server.stop()


@pytest.fixture
def chromium(database_url: str, stripe_pages: StripePages) -> Iterator[Browser]:
    """The browser, started after the database: Playwright's sync API keeps an event loop
    running on this thread while it is open, and the database's migrations run one too."""
    assert CHROMIUM is not None
    resolve = f"--host-resolver-rules=MAP *.stripe.test 127.0.0.1:{stripe_pages.port}"
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=[resolve])
        yield browser
        browser.close()


class Tab:
    """A page of a fresh browser profile on the server, and every console message it logged
    (a Content-Security-Policy violation is logged there as an error)."""

    def __init__(self, chromium: Browser, base_url: str) -> None:
        # Certificates are not checked: only Stripe's stand-in pages are served over HTTPS.
        self.context = chromium.new_context(base_url=base_url, ignore_https_errors=True)
        self.page: Page = self.context.new_page()
        self.messages: list[ConsoleMessage] = []
        self.page.on("console", self._heard)

    def _heard(self, message: ConsoleMessage) -> None:
        self.messages.append(message)

    def open(self, path: str) -> Page:
        self.page.goto("/console" + path)
        return self.page

    def submit(self, button: str, url: str) -> Response:
        """Clicks the button named ``button``; the answer of the page the form leads to."""
        with self.page.expect_navigation(url=url) as landed:
            self.page.get_by_role("button", name=button, exact=True).click()
        answer = landed.value
        assert answer is not None
        return answer

    def follow(self, link: str, url: str) -> Page:
        """Clicks the link named ``link`` and waits for the page at ``url``."""
        with self.page.expect_navigation(url=url):
            self.page.get_by_role("link", name=link, exact=True).click()
        return self.page

    def complaints(self) -> list[str]:
        return [f"{m.type}: {m.text}" for m in self.messages if m.type in ("error", "warning")]

    def session_cookie(self) -> dict[str, object] | None:
        found = [c for c in self.context.cookies() if c.get("name") == "mbk_console"]
        return dict(found[0]) if found else None


@pytest.fixture
def tab(chromium: Browser) -> Iterator[Callable[[Api], Tab]]:
    opened: list[Tab] = []

    def make(api: Api) -> Tab:
        opened.append(Tab(chromium, api.server.http_url))
        return opened[-1]

    yield make
    for each in opened:
        each.context.close()


def style(page: Page, selector: str, prop: str) -> str:
    value: str = page.locator(selector).first.evaluate(
        f"e => getComputedStyle(e).getPropertyValue('{prop}')"
    )
    return value


def test_a_person_signs_in_makes_an_inbox_and_a_key_and_signs_out(
    api: Api, tab: Callable[[Api], Tab]
) -> None:
    owner = api.register("Browser Corp")
    user = tab(api)
    page = user.open("")
    assert page.url.endswith("/console/signin")  # no session yet
    assert style(page, "body", "background-color") == PAGE_BACKGROUND
    assert style(page, "button", "background-color") == BUTTON_BACKGROUND

    page.fill("#api_key", owner["api_key"])
    landed = user.submit("Sign in", "**/console")
    # The overview is the sign-in's 303 followed, with the Strict cookie the 303 set.
    signin = landed.request.redirected_from
    assert signin is not None and signin.method == "POST"
    signin_answer = signin.response()
    assert signin_answer is not None and signin_answer.status == 303
    assert "mbk_console=" in landed.request.all_headers()["cookie"]
    assert page.locator("h1").inner_text() == "Browser Corp"
    cookie = user.session_cookie()
    assert cookie is not None
    assert (cookie["sameSite"], cookie["httpOnly"], cookie["path"]) == ("Strict", True, "/console")

    user.follow("Inboxes", "**/console/inboxes")
    page.fill("#username", "helpdesk")
    page.fill("#display_name", "Help Desk")
    user.submit("Create inbox", "**/console/inboxes?notice=inbox-created")
    assert page.get_by_role("status").inner_text() == "The inbox was created."
    row = page.locator("tr", has_text="helpdesk@example.test")
    assert row.locator("td").nth(1).inner_text() == "Help Desk"

    user.follow("API keys", "**/console/keys")
    page.fill("#name", "browser bot")
    user.submit("Create key", "**/console/keys")
    secret = page.locator("code.secret").inner_text()
    assert secret.startswith("mbk_") and "will not be shown again" in page.content()
    assert style(page, "code.secret", "background-color") == "rgb(255, 248, 225)"  # #fff8e1
    with api.client(secret) as c:
        assert c.get("/account").json()["name"] == "Browser Corp"
    user.follow("Done", "**/console/keys")
    assert "browser bot" in page.content() and secret not in page.content()

    user.submit("Sign out", "**/console/signin?notice=signed-out")
    assert page.get_by_role("status").inner_text() == "You have signed out."
    assert user.session_cookie() is None
    assert user.open("/inboxes").url.endswith("/console/signin")
    assert user.complaints() == []


def test_a_billing_forms_redirect_to_stripe_is_followed(
    billing: Api, stripe_api: StripeStandIn, stripe_pages: StripePages, tab: Callable[[Api], Tab]
) -> None:
    owner = billing.register("Subscriber")
    user = tab(billing)
    page = user.open("/signin")
    page.fill("#api_key", owner["api_key"])
    user.submit("Sign in", "**/console")
    user.follow("Billing", "**/console/billing")
    assert page.locator("tbody tr").all_inner_texts()[1].startswith("team")
    back = f"{billing.server.http_url}/console/billing"

    user.submit("Subscribe", "https://checkout.stripe.test/**")
    [made] = stripe_api.calls_to("/v1/checkout/sessions")
    assert (made.form["success_url"], made.form["cancel_url"]) == (back, back)
    # The browser went there: the billing page's form-action let the form's redirect go.
    assert stripe_pages.served == [page.url] and page.locator("h1").inner_text() == "Pay"

    user.open("/billing")  # the account has a Stripe customer now: the portal's form is there
    user.submit("Manage billing (plan, card, invoices)", "https://billing.stripe.test/**")
    [portal] = stripe_api.calls_to("/v1/billing_portal/sessions")
    assert portal.form["return_url"] == back
    assert stripe_pages.served[1:] == [page.url]
    assert user.complaints() == []


def test_the_browser_reports_what_the_csp_refuses(api: Api, tab: Callable[[Api], Tab]) -> None:
    """A page of the console's that breaks its policy is refused, and the refusal is a
    console message: without this, an empty list of complaints above would prove nothing."""
    user = tab(api)
    page = user.open("/signin")
    page.set_content('<p style="color: rgb(255, 0, 0)">x</p>')  # inline style: not allowed
    assert style(page, "p", "color") != "rgb(255, 0, 0)"
    assert any("Content Security Policy" in c for c in user.complaints()), user.complaints()
