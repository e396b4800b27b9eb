"""A steady stream of SMTP deliveries while a deployment switches releases.

The sender behaves as a well-behaved MTA does: a 4xx reply, a refused connection or a dropped
one means "try again later" (retried until ``retry_for`` runs out); any other reply is a failure.
A message counts as delivered only once it got its 250 after DATA. ``stored_message_ids`` reads
back over IMAP what the server has, so a test can check that every acknowledged message is there.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import smtplib
import ssl
import threading
import time
import uuid
from collections import Counter
from email.message import EmailMessage

from deploy.mailcheck import Inbox


class DeliveryStream:
    """Messages to ``inbox`` through the MX on ``port``, one connection each, from a thread."""

    def __init__(
        self,
        port: int,
        inbox: Inbox,
        *,
        host: str = "127.0.0.1",
        pace: float = 0.1,
        retry_for: float = 300.0,
    ) -> None:
        self.port, self.inbox, self.host = port, inbox, host
        self.pace, self.retry_for = pace, retry_for
        self.run_id = uuid.uuid4().hex[:8]
        self.acked: list[str] = []  # Message-IDs answered 250
        self.tolerated: Counter[str] = Counter()  # 4xx codes and connection errors, retried
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="delivery-stream", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.retry_for + 60)
        assert not self._thread.is_alive(), "the delivery stream did not stop"

    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)

    def wait_acked(self, count: int, timeout: float = 300.0) -> None:
        """Poll until at least ``count`` messages were acknowledged (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self.acked_count() < count:
            assert not self.failures, self.failures
            assert self._thread.is_alive(), "the delivery stream ended"
            assert time.monotonic() < deadline, (
                f"{self.acked_count()} of {count} acknowledged in {timeout} s; "
                f"retried: {dict(self.tolerated)}"
            )
            time.sleep(0.2)

    def summary(self) -> str:
        return (
            f"acknowledged {len(self.acked)}, retried {sum(self.tolerated.values())} "
            f"{dict(self.tolerated)}, failed {len(self.failures)} {self.failures}\n"
        )

    def _message(self, number: int) -> EmailMessage:
        message = EmailMessage()
        message["From"] = "stream@example.org"
        message["To"] = self.inbox.email
        message["Subject"] = f"stream {self.run_id} #{number}"
        message["Message-ID"] = f"<stream-{self.run_id}-{number}@example.org>"
        message.set_content(f"Message {number} of a stream sent during a deployment.\n")
        return message

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            number += 1
            message = self._message(number)
            if self._deliver(message):
                with self._lock:
                    self.acked.append(str(message["Message-ID"]))
            self._stop.wait(self.pace)

    def _deliver(self, message: EmailMessage) -> bool:
        """Deliver with retries; True once answered 250, False if it failed for good."""
        deadline = time.monotonic() + self.retry_for
        while True:
            outcome = self._attempt(message)
            if outcome is None:
                return True
            if not outcome.startswith("retry "):
                self.failures.append(f"{message['Message-ID']}: {outcome}")
                return False
            self.tolerated[outcome.removeprefix("retry ")] += 1
            if time.monotonic() > deadline:
                self.failures.append(f"{message['Message-ID']}: still {outcome} after retries")
                return False
            time.sleep(0.5)  # an MTA's retry interval, shortened

    def _attempt(self, message: EmailMessage) -> str | None:
        """One SMTP transaction: None for 250, "retry <why>" for 4xx or a connection error."""
        smtp = smtplib.SMTP(timeout=60)
        try:
            smtp.connect(self.host, self.port)
            smtp.ehlo("sender.example.org")
            refused = smtp.send_message(message)
            if refused:
                return f"refused {refused}"
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()  # the 250 after DATA is what counts
            return None
        except smtplib.SMTPRecipientsRefused as error:
            codes = {code for code, _ in error.recipients.values()}
            if all(400 <= code < 500 for code in codes):
                return f"retry {sorted(codes)[0]}"
            return f"recipients refused {error.recipients}"
        except smtplib.SMTPResponseException as error:
            if 400 <= error.smtp_code < 500:
                return f"retry {error.smtp_code}"
            return f"{error.smtp_code} {error.smtp_error!r}"
        except smtplib.SMTPServerDisconnected:
            return "retry disconnected"
        except smtplib.SMTPException as error:
            return f"SMTP error {error!r}"
        except OSError as error:  # refused, reset, timed out: the server is switching
            return f"retry {type(error).__name__}"
        finally:
            smtp.close()


def stored_message_ids(imap_port: int, inbox: Inbox, host: str = "127.0.0.1") -> list[str]:
    """Every Message-ID in the inbox's INBOX, read over IMAP after STARTTLS."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with imaplib.IMAP4(host, imap_port, timeout=60) as imap:
        imap.starttls(context)
        imap.login(inbox.email, inbox.api_key)
        status, _ = imap.select("INBOX", readonly=True)
        assert status == "OK"
        status, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        assert status == "OK", data
        imap.logout()
    found = []
    for item in data:
        if isinstance(item, tuple):
            match = re.search(rb"<[^>]+>", item[1])
            assert match, item
            found.append(match.group().decode())
    return found
