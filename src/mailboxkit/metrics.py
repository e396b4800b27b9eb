"""The process's Prometheus metrics, served by ``GET /metrics`` (``api/metrics.py``).

Implementation notes:

- Defined once, here, on a registry of our own (:data:`REGISTRY`, with the process and platform
  collectors): nothing another library registers on prometheus_client's default registry
  leaks into the scrape. They are module-level, the one exception to "no globals": a counter
  counts what this process did, whichever server object did it, and holds no setting. Several
  servers in one process (the tests) add to the same counters; tests compare deltas.
- Labels are low-cardinality only, from fixed sets: never an address, an id or a raw path. An
  HTTP request is labelled with its route's path template, or ``unmatched``.
- Each increment sits where its module settles the outcome (beside its ``event=`` log line,
  or for DATA where the reply is pushed, which covers both SMTP listeners), before the answer
  goes out: a client that has its answer also sees it counted.
- Gauges read from the database (queue depths, the store's reachability) are made per scrape
  by ``api/metrics.py``, not here.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

# No *_created series (each counter's creation time): they would double the series scraped, and
# Prometheus does not use them. (A switch of prometheus_client for the whole process.)
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

SMTP_MESSAGES = Counter(
    "mailboxkit_smtp_messages_total",
    "Messages whose DATA was answered, by listener (mx, submission) and outcome: accepted "
    "(250), refused (5xx, e.g. DMARC reject, a From not owned, too big) or failed (4xx, a "
    "temporary failure).",
    ["listener", "outcome"],
    registry=REGISTRY,
)
SMTP_RECIPIENTS_REFUSED = Counter(
    "mailboxkit_smtp_recipients_refused_total",
    "RCPT commands refused, by listener and reason: unknown (no such mailbox), relay (not our "
    "domain), blocked (a sender rule), suppressed (on the suppression list), limit (too many "
    "recipients), invalid (bad address syntax), quota (the recipient's account is over its "
    "storage quota).",
    ["listener", "reason"],
    registry=REGISTRY,
)
IMAP_CONNECTIONS = Gauge(
    "mailboxkit_imap_connections", "IMAP connections open now.", registry=REGISTRY
)
# Not mailboxkit_imap_connections_total: a counter's family would be named like the gauge.
IMAP_CONNECTIONS_OPENED = Counter(
    "mailboxkit_imap_connections_opened_total",
    "IMAP connections served (not those refused over the connection limits).",
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "mailboxkit_http_requests_total",
    "HTTP requests answered, by method, route (the path template, or unmatched) and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_REQUEST_DURATION = Histogram(
    "mailboxkit_http_request_duration_seconds",
    "Seconds from an HTTP request's arrival to the last byte of its answer, by method and route "
    "(event streams and waits last as long as they are held).",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
OUTBOUND_ATTEMPTS = Counter(
    "mailboxkit_outbound_attempts_total",
    "Outbound delivery attempts recorded, one per recipient, by outcome: sent, deferred (to be "
    "retried) or bounced.",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_ATTEMPTS = Counter(
    "mailboxkit_webhook_attempts_total",
    "Webhook requests made, by outcome: succeeded (2xx), retrying (to be tried again) or failed "
    "(410, or the last attempt).",
    ["outcome"],
    registry=REGISTRY,
)

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_DATA_OUTCOMES = {"2": "accepted", "5": "refused"}


def smtp_message(listener: str, reply: str) -> None:
    """Count one message by the reply its DATA got: 2xx accepted, 5xx refused, else failed."""
    SMTP_MESSAGES.labels(listener, _DATA_OUTCOMES.get(reply[:1], "failed")).inc()


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one HTTP request; a method outside the usual ones is counted as ``other``."""
    method = method if method in HTTP_METHODS else "other"
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_REQUEST_DURATION.labels(method, route).observe(seconds)


def _start_at_zero() -> None:
    """Make every series of a fixed label set, at 0, so that rate() sees its first increment."""
    for listener in ("mx", "submission"):
        for outcome in ("accepted", "refused", "failed"):
            SMTP_MESSAGES.labels(listener, outcome)
    for listener, reasons in (
        ("mx", ("unknown", "relay", "blocked", "limit", "invalid")),
        ("submission", ("suppressed", "limit", "invalid")),
    ):
        for reason in reasons:
            SMTP_RECIPIENTS_REFUSED.labels(listener, reason)
    for outcome in ("sent", "deferred", "bounced"):
        OUTBOUND_ATTEMPTS.labels(outcome)
    for outcome in ("succeeded", "retrying", "failed"):
        WEBHOOK_ATTEMPTS.labels(outcome)


_start_at_zero()
