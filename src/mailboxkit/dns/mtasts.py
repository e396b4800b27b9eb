"""MTA-STS (RFC 8461) for outbound delivery: the ``_mta-sts`` TXT record, the policy file, MX
host matching, and a cache of the policies fetched over HTTPS.

Implementation notes:

- Discovery (§3.1): TXT at ``_mta-sts.DOMAIN`` through the resolver seam. Records that do not
  begin with ``v=STSv1`` are ignored; unless exactly one is left and it parses (``id=`` of 1 to
  32 letters and digits, §3.1 ABNF), the domain publishes no policy.
- Fetch (§3.3): ``GET https://mta-sts.DOMAIN/.well-known/mta-sts.txt``. The host name is
  resolved through the resolver seam and the request goes to that address with ``Host`` and
  TLS SNI kept, so the certificate is verified for ``mta-sts.DOMAIN`` (the client's context:
  the system store, plus the operator's extra CA). Only a 200 with media type ``text/plain``
  counts; redirects are not followed, nothing is cached by HTTP, the body is capped at 64 KiB
  (``MAX_POLICY_SIZE``) and the whole fetch at the client's timeout. :class:`PolicyFetcher`
  does this and says why a policy is unavailable: missing (no address, nothing listening,
  404), invalid (certificate, status, media type, size, syntax) or temporary (DNS, timeout),
  which the DNS check of our own domains reports.
- Parsing (§3.2) is strict, by the ABNF: field names and values are case-sensitive, lines end
  in LF or CRLF, ``version: STSv1``, ``mode`` and ``max_age`` (0 to 31557600) are required,
  ``mx`` too unless the mode is none; unknown fields are ignored and, except ``mx``, the first
  of a repeated field wins. Anything else makes the whole policy invalid.
- Matching (§4.1): case-insensitive, final dot ignored; ``*.example.com`` matches exactly one
  more label on the left (``mx1.example.com``, not ``a.b.example.com`` nor ``example.com``).
- Cache (§3.3, §5.1, §10.2): per domain, the last valid policy with the id it was fetched
  under, until ``max_age`` seconds after the fetch. The TXT id equal to the cached one: the
  cached policy, no fetch. Another id, or the cache expired: fetch; if that fails, an unexpired
  cached policy stays in force. No TXT record, or DNS failing: the unexpired cached policy if
  any (so stripping the record does not strip the protection), else none. A failed fetch is
  not tried again for ``FETCH_BACKOFF`` seconds for the same id.
- A "none" policy is cached like the others; the transport treats it as no policy.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import httpx

from mailboxkit.dns.records import MtaStsMode
from mailboxkit.dns.resolver import DnsNotFound, DnsTempError, Resolver, normalize_name

__all__ = [
    "MAX_AGE_LIMIT",
    "MAX_POLICY_SIZE",
    "USER_AGENT",
    "MtaStsPolicies",
    "Policy",
    "PolicyError",
    "PolicyFetcher",
    "PolicyUnavailable",
    "Unavailability",
    "mx_matches",
    "parse_policy",
    "parse_record",
    "policy_client",
    "policy_url",
]

log = logging.getLogger(__name__)

MAX_POLICY_SIZE = 64 * 1024  # RFC 8461 §3.3: senders SHOULD limit the response size
MAX_AGE_LIMIT = 31557600  # RFC 8461 §3.2: the largest max_age (one year)
FETCH_BACKOFF = 300.0  # seconds before a failed fetch of one policy id is tried again
POLICY_PATH = "/.well-known/mta-sts.txt"
DEFAULT_PORT = 443
USER_AGENT = "MailboxKit-MTA-STS/1"

_WSP = "[ \t]*"
_RECORD_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_RECORD_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
_POLICY_LINE = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,31}):[ \t]*(.*?)[ \t]*")
_POLICY_VALUE = re.compile(r"[^\x00-\x20\x7f]([^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?")
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_MAX_AGE = re.compile(r"[0-9]{1,10}")


class PolicyError(ValueError):
    """A TXT record or policy file that does not follow RFC 8461's syntax."""


class Unavailability(StrEnum):
    MISSING = "missing"  # nothing served: no address, nothing listening, 404
    INVALID = "invalid"  # served but unusable: certificate, status, media type, size, syntax
    TEMPORARY = "temporary"  # cannot tell now: DNS failure, timeout


class PolicyUnavailable(Exception):
    """The policy could not be fetched, and why (``kind``)."""

    def __init__(self, reason: str, kind: Unavailability = Unavailability.INVALID) -> None:
        super().__init__(reason)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed policy (RFC 8461 §3.2) and the TXT id it was fetched under."""

    mode: MtaStsMode
    mx: tuple[str, ...]  # patterns, lower case, without final dot; "*.example.com" allowed
    max_age: int
    id: str = ""

    def matches(self, host: str) -> bool:
        """Whether MX host ``host`` is one this policy allows (RFC 8461 §4.1)."""
        return any(mx_matches(pattern, host) for pattern in self.mx)

    def describe(self) -> str:
        return f"mode={self.mode} id={self.id or '-'} mx={','.join(self.mx) or '-'}"


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: a literal name, or ``*.`` standing for exactly one leftmost label."""
    host, pattern = normalize_name(host), normalize_name(pattern)
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label and dot) and rest == pattern[2:]
    return host == pattern


def parse_record(text: str) -> str:
    """The ``id`` of an MTA-STS TXT record (RFC 8461 §3.1); raises :class:`PolicyError`."""
    if not text.startswith("v=STSv1"):
        raise PolicyError("the record does not begin with v=STSv1")
    fields = re.split(f"{_WSP};{_WSP}", text[len("v=STSv1") :])
    if fields[0] != "":
        raise PolicyError("v=STSv1 must be followed by ';'")
    if fields[-1] == "" and len(fields) > 2:
        fields.pop()  # one optional final delimiter
    record_id = ""
    for field in fields[1:]:
        name, eq, value = field.partition("=")
        if not eq or not _EXT_NAME.fullmatch(name):
            raise PolicyError(f"bad field {field!r}")
        if name == "id":
            if not _RECORD_ID.fullmatch(value):
                raise PolicyError("id must be 1 to 32 letters and digits")
            record_id = record_id or value
        elif not _RECORD_EXT_VALUE.fullmatch(value):
            raise PolicyError(f"bad value of {name}")
    if not record_id:
        raise PolicyError("the record has no id")
    return record_id


def parse_policy(text: str, policy_id: str = "") -> Policy:
    """A policy file (RFC 8461 §3.2), parsed strictly; raises :class:`PolicyError`."""
    lines = re.split(r"\r?\n", text)
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()  # the optional final line terminator
    found: dict[str, str] = {}
    patterns: list[str] = []
    for line in lines:
        matched = _POLICY_LINE.fullmatch(line)
        if matched is None or not _POLICY_VALUE.fullmatch(matched.group(2)):
            raise PolicyError(f"not a 'name: value' line: {line[:80]!r}")
        name, value = matched.groups()
        if name == "mx":
            patterns.append(_mx_pattern(value))
        else:
            found.setdefault(name, value)  # RFC 8461 §3.2: the first one counts
    for required in ("version", "mode", "max_age"):
        if required not in found:
            raise PolicyError(f"the policy has no {required}")
    if found["version"] != "STSv1":
        raise PolicyError(f"version {found['version']!r} is not STSv1")
    try:
        mode = MtaStsMode(found["mode"])
    except ValueError:
        raise PolicyError(f"mode {found['mode']!r} is not enforce, testing or none") from None
    if not _MAX_AGE.fullmatch(found["max_age"]) or int(found["max_age"]) > MAX_AGE_LIMIT:
        raise PolicyError(f"max_age must be 0 to {MAX_AGE_LIMIT} seconds")
    if not patterns and mode is not MtaStsMode.NONE:
        raise PolicyError("the policy names no mx")
    return Policy(mode, tuple(patterns), int(found["max_age"]), policy_id)


def _mx_pattern(value: str) -> str:
    """``["*."] Domain`` (RFC 8461 §3.2, Domain as in RFC 5321 §4.1.2: A-labels only)."""
    name = value.removeprefix("*.")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise PolicyError(f"mx {value!r} is not a host name or *. and a host name")
    return value.lower()


def policy_client(timeout: float, extra_ca: Path | None = None) -> httpx.AsyncClient:
    """An HTTP client for policy fetches (RFC 8461 §3.3): certificates verified against the
    system's CAs and ``extra_ca``'s, no redirects, no proxies from the environment."""
    context = ssl.create_default_context()
    if extra_ca is not None:
        context.load_verify_locations(cafile=extra_ca)
    return httpx.AsyncClient(
        verify=context,
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": USER_AGENT},
    )


def policy_url(domain: str, port: int = DEFAULT_PORT) -> str:
    """Where ``domain``'s policy is served (RFC 8461 §3.3)."""
    host = f"mta-sts.{domain}" + (f":{port}" if port != DEFAULT_PORT else "")
    return f"https://{host}{POLICY_PATH}"


@dataclass(frozen=True, slots=True)
class _Cached:
    policy: Policy
    expires: float


class PolicyFetcher:
    """Fetches policies over HTTPS (RFC 8461 §3.3) with ``client``, an HTTP client made for
    this (no redirects, no proxies, the verification context); :meth:`close` closes it."""

    def __init__(
        self,
        resolver: Resolver,
        client: httpx.AsyncClient,
        *,
        port: int = DEFAULT_PORT,
        timeout: float = 10.0,
    ) -> None:
        self._resolver = resolver
        self._client = client
        self._port = port
        self._timeout = timeout

    async def fetch(self, domain: str, policy_id: str = "") -> Policy:
        """Fetch and parse ``domain``'s policy; raises :class:`PolicyUnavailable`."""
        try:
            async with asyncio.timeout(self._timeout):
                text = await self._fetch_text(normalize_name(domain))
        except TimeoutError:
            reason = f"no answer within {self._timeout:g} s"
            raise PolicyUnavailable(reason, Unavailability.TEMPORARY) from None
        try:
            return parse_policy(text, policy_id)
        except PolicyError as error:
            raise PolicyUnavailable(f"invalid policy: {error}") from None

    async def _fetch_text(self, domain: str) -> str:
        host = f"mta-sts.{domain}"
        addresses = await self._addresses(host)
        failure = PolicyUnavailable(f"{host} has no address", Unavailability.MISSING)
        for address in addresses:
            literal = f"[{address}]" if ":" in address else address
            url = f"https://{literal}:{self._port}{POLICY_PATH}"
            headers = {"Host": host if self._port == DEFAULT_PORT else f"{host}:{self._port}"}
            try:
                async with self._client.stream(
                    "GET", url, headers=headers, extensions={"sni_hostname": host}
                ) as response:
                    return await _policy_text(response)
            except (httpx.HTTPError, OSError, ValueError) as error:  # TLS, network, bad names
                failure = PolicyUnavailable(
                    f"{host} [{address}]: {type(error).__name__}: {error}", _kind(error)
                )
        raise failure

    async def _addresses(self, host: str) -> list[str]:
        found: list[str] = []
        for lookup in (self._resolver.a, self._resolver.aaaa):
            try:
                found += await lookup(host)
            except DnsNotFound:
                continue
            except DnsTempError as error:
                raise PolicyUnavailable(f"DNS: {error}", Unavailability.TEMPORARY) from None
        return found

    async def close(self) -> None:
        await self._client.aclose()


def _kind(error: BaseException) -> Unavailability:
    """What a failed request says about the policy: a certificate that does not verify is an
    unusable policy host, a refused connection none at all, a timeout nothing yet."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return Unavailability.INVALID
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, httpx.TimeoutException | TimeoutError):
        return Unavailability.TEMPORARY
    if isinstance(error, httpx.ConnectError | ConnectionError):
        return Unavailability.MISSING
    return Unavailability.INVALID


class MtaStsPolicies:
    """Finds, fetches (with ``fetcher``) and caches the MTA-STS policy of recipient domains."""

    def __init__(
        self,
        resolver: Resolver,
        fetcher: PolicyFetcher,
        *,
        max_entries: int = 10000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = resolver
        self._fetcher = fetcher
        self._max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._failed: dict[tuple[str, str], float] = {}  # (domain, id): retry after
        self._inflight: dict[str, asyncio.Task[Policy | None]] = {}

    async def get(self, domain: str) -> Policy | None:
        """The policy that applies to mail for ``domain`` now, or None. Concurrent callers
        for one domain share one lookup."""
        domain = normalize_name(domain)
        task = self._inflight.get(domain)
        if task is None:
            task = asyncio.create_task(self._get(domain), name=f"mta-sts-{domain}")
            self._inflight[domain] = task
            task.add_done_callback(lambda done: self._forget(domain, done))
        return await asyncio.shield(task)

    def _forget(self, domain: str, task: asyncio.Task[Policy | None]) -> None:
        if self._inflight.get(domain) is task:
            del self._inflight[domain]

    async def _get(self, domain: str) -> Policy | None:
        now = self._clock()
        cached = self._cache.get(domain)
        if cached is not None and cached.expires <= now:
            del self._cache[domain]
            cached = None
        kept = cached.policy if cached is not None else None
        try:
            record_id = await self.discover(domain)
        except DnsTempError as error:
            log.info("event=mta_sts_dns_error domain=%s reason=%s", domain, error)
            return kept
        if record_id is None or (kept is not None and kept.id == record_id):
            return kept
        if self._failed.get((domain, record_id), 0.0) > now:
            return kept
        try:
            policy = await self._fetcher.fetch(domain, record_id)
        except PolicyUnavailable as error:
            log.warning(
                "event=mta_sts_fetch_failed domain=%s id=%s reason=%s kept=%s",
                domain,
                record_id,
                error,
                kept.id if kept is not None else "-",
            )
            self._prune_failures(now)
            self._failed[(domain, record_id)] = now + FETCH_BACKOFF
            return kept
        self._failed.pop((domain, record_id), None)
        log.info("event=mta_sts_policy_fetched domain=%s %s", domain, policy.describe())
        self._remember(domain, policy, now)
        return policy

    def _remember(self, domain: str, policy: Policy, now: float) -> None:
        self._cache[domain] = _Cached(policy, now + policy.max_age)
        self._cache.move_to_end(domain)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)

    def _prune_failures(self, now: float) -> None:
        for key in [k for k, until in self._failed.items() if until <= now]:
            del self._failed[key]

    async def discover(self, domain: str) -> str | None:
        """The id of ``domain``'s one valid MTA-STS record, or None (RFC 8461 §3.1).

        Raises :class:`DnsTempError` when DNS cannot say.
        """
        try:
            texts = await self._resolver.txt(f"_mta-sts.{domain}")
        except DnsNotFound:
            return None
        candidates = [t for t in texts if t.startswith("v=STSv1")]
        if len(candidates) != 1:
            if candidates:
                log.info("event=mta_sts_records_ambiguous domain=%s count=%d", domain, len(texts))
            return None
        try:
            return parse_record(candidates[0])
        except PolicyError as error:
            log.info("event=mta_sts_record_invalid domain=%s reason=%s", domain, error)
            return None

    async def close(self) -> None:
        """Cancel lookups in flight (the fetcher's client belongs to whoever made it)."""
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)


async def _policy_text(response: httpx.Response) -> str:
    """The body of a policy response, or :class:`PolicyUnavailable` (RFC 8461 §3.3)."""
    if response.status_code != 200:
        kind = Unavailability.MISSING if response.status_code == 404 else Unavailability.INVALID
        raise PolicyUnavailable(f"HTTP status {response.status_code}, not 200", kind)
    media_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "text/plain":
        raise PolicyUnavailable(f"media type {media_type or '(none)'!r}, not text/plain")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_POLICY_SIZE:
            raise PolicyUnavailable(f"larger than {MAX_POLICY_SIZE} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyUnavailable("not UTF-8 text") from None
