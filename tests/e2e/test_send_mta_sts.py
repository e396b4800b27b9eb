"""MTA-STS (RFC 8461) on direct MX delivery, end to end: the recipient domain publishes its
``_mta-sts`` TXT record (FakeResolver) and its policy over real HTTPS (a local server with a
trustme certificate for ``mta-sts.remote.test``); its MX is an aiosmtpd sink offering STARTTLS.
The server trusts the test CA through MAILBOXKIT_OUTBOUND_TLS_CA_FILE."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from sqlalchemy import select

from e2e.sending import REMOTE, Sending, start_sending
from mailboxkit.dns.resolver import FakeResolver
from mailboxkit.store import models as m
from mailserver.outbound.policyhost import PolicyHost, policy_text

MX = f"mx.{REMOTE}"
TXT = f"_mta-sts.{REMOTE}"


class Remote:
    """The server sending to ``remote.test``, whose policy host and MX the test controls."""

    def __init__(self, sending: Sending, host: PolicyHost) -> None:
        self.sending = sending
        self.host = host

    @property
    def resolver(self) -> FakeResolver:
        resolver = self.sending.server.app.resolver
        assert isinstance(resolver, FakeResolver)
        return resolver

    def publish(self, policy_id: str, text: str) -> None:
        """A new policy, announced by a new id in the TXT record (RFC 8461 §3.1)."""
        self.host.serve(text)
        self.resolver.records[TXT] = {"TXT": [f"v=STSv1; id={policy_id}"]}

    def send(self, subject: str = "Over TLS") -> str:
        inbox, key = self.sending.inbox("bot@example.test")
        with self.sending.api(key) as api:
            r = api.post(
                f"/inboxes/{inbox.id}/messages/send",
                json={"to": "alice@remote.test", "subject": subject, "text": "hi"},
            )
        assert r.status_code == 200, r.text
        return str(r.json()["message_id"])

    def delivery(self) -> tuple[str, str]:
        """(status, last reply) of the one outbound recipient."""
        r = m.outbound_recipients.c
        [row] = self.sending.server.query(select(r.status, r.last_reply))
        return row.status, row.last_reply

    def retry_now(self) -> None:
        self.sending.clock.advance(400)  # past the first backoff (300 s ± 20 %)
        worker = self.sending.server.app.outbound
        assert worker is not None
        worker.wake()


Start = Callable[..., Remote]


@pytest.fixture
def start(tmp_path: Path, database_url: str) -> Iterator[Start]:
    """Start the server; the MX's certificate is for ``mx_names``, the policy is ``policy``."""
    running: list[Remote] = []

    def start(policy: str, *, mx_names: tuple[str, ...] = (MX,)) -> Remote:
        ca = trustme.CA()
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        host = PolicyHost(ca, f"mta-sts.{REMOTE}")
        host.serve(policy)
        host.start()
        records: dict[str, Any] = {
            TXT: {"TXT": ["v=STSv1; id=first"]},
            f"mta-sts.{REMOTE}": {"A": ["127.0.0.1"]},
        }
        try:
            sending = start_sending(
                tmp_path,
                database_url,
                ca=ca,
                sink_tls=mx_names,
                records=records,
                outbound_mta_sts_port=host.port,
                outbound_tls_ca_file=ca_file,
                outbound_retry_first=300,
            )
        except BaseException:
            host.stop()
            raise
        running.append(Remote(sending, host))
        return running[-1]

    yield start
    for remote in running:
        try:
            remote.sending.stop()
        finally:
            remote.host.stop()


def test_enforce_with_a_matching_mx_delivers_over_verified_tls(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailboxkit.mailserver.outbound.mx")
    remote = start(policy_text("enforce", "*.remote.test"))
    remote.send()
    got = remote.sending.sink.next()
    assert got.tls
    assert got.rcpt_tos == ("alice@remote.test",)
    remote.sending.settled(1)
    assert remote.delivery()[0] == "sent"
    assert remote.host.fetches == 1
    assert "event=outbound_mta_sts domain=remote.test mode=enforce id=first" in caplog.text


def test_enforce_without_a_matching_mx_waits_until_the_policy_is_fixed(start: Start) -> None:
    remote = start(policy_text("enforce", "mx.elsewhere.test"))
    remote.send()
    remote.sending.settled(1)
    status, reply = remote.delivery()
    assert status == "queued"
    assert reply.startswith("451 4.7.5 No MX host of remote.test matches its MTA-STS policy")
    assert remote.sending.sink.empty()
    assert remote.sending.sink.handler.attempts == 0
    assert remote.sending.events("message.sent") == []

    remote.publish("second", policy_text("enforce", MX))
    remote.retry_now()
    got = remote.sending.sink.next()
    remote.sending.settled(2)
    assert got.tls
    assert remote.delivery()[0] == "sent"
    assert len(remote.sending.events("message.sent")) == 1
    assert remote.host.fetches == 2


def test_enforce_refuses_an_mx_certificate_for_another_name(start: Start) -> None:
    remote = start(policy_text("enforce", MX), mx_names=("mx.elsewhere.test",))
    remote.send()
    remote.sending.settled(1)
    status, reply = remote.delivery()
    assert status == "queued"
    assert reply.startswith(f"451 4.7.5 {MX} [127.0.0.1]: MTA-STS enforce: TLS with {MX} failed")
    assert remote.sending.sink.handler.attempts == 0  # never sent in the clear either
    assert remote.sending.sink.empty()


def test_testing_mode_delivers_despite_a_bad_certificate_and_logs_it(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailboxkit.mailserver.outbound.mx")
    remote = start(policy_text("testing", MX), mx_names=("mx.elsewhere.test",))
    remote.send()
    got = remote.sending.sink.next()
    assert got.tls  # opportunistic STARTTLS, certificate unchecked
    remote.sending.settled(1)
    assert remote.delivery()[0] == "sent"
    assert "event=mta_sts_testing_failure domain=remote.test host=mx.remote.test" in caplog.text
