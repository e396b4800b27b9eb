"""Authentication verdicts of an inbound message and its Authentication-Results field (RFC 8601).

Implementation notes:

- The field value is `authserv-id; method=result ptype.property=value ...` (RFC 8601 §2.2),
  one resinfo per SPF identity, DKIM signature and DMARC evaluation, or `authserv-id; none`.
- Property values are written bare when they are an RFC 2045 token or a plain
  local-part@domain (§2.2 pvalue); anything else becomes a quoted-string with `\\` and `"`
  escaped. Control characters (CR and LF included) are dropped, so a hostile MAIL FROM, HELO or
  d= cannot inject header lines.
- SPF reports smtp.mailfrom (the reverse-path) or smtp.helo for a null path (RFC 8601 §2.7.2);
  DKIM reports header.d, header.s, header.a and header.b (RFC 6008 §4: the first 8 characters
  of b=, to tell signatures of one domain apart); DMARC reports header.from (RFC 7489 §11.2) and a
  comment with the requested policy and the disposition applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mailboxkit.dns.dkimverify import DkimResult, DkimVerdict
from mailboxkit.dns.dmarc import Disposition, DmarcResult
from mailboxkit.dns.spf import SpfIdentity, SpfResult
from mailboxkit.store.rawheaders import drop_fields, header_section

__all__ = ["AuthVerdicts", "authentication_results", "quote_value", "strip_forged"]

# RFC 2045 §5.1: token = 1*<any US-ASCII CHAR except SPACE, CTLs, or tspecials>
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
# RFC 5322 §3.2.3 dot-atom local-part, and an LDH domain-name
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+)*")
_DOMAIN = re.compile(
    r"[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?)*\.?"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class AuthVerdicts:
    """What inbound authentication concluded about one message."""

    spf: SpfResult | None
    dkim: tuple[DkimResult, ...]
    dmarc: DmarcResult | None
    disposition: Disposition
    peer_name: str | None = None  # the peer's forward-confirmed reverse name, if any

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the API; diagnostic details stay in the logs."""
        spf = self.spf
        dmarc = self.dmarc
        return {
            "spf": None
            if spf is None
            else {
                "result": str(spf.result),
                "domain": spf.domain,
                "identity": str(spf.identity),
                "sender": spf.sender,
                "explanation": spf.explanation,
            },
            "dkim": [
                {
                    "result": str(sig.result),
                    "domain": sig.domain,
                    "selector": sig.selector,
                    "algorithm": sig.algorithm,
                    "identity": sig.identity,
                }
                for sig in self.dkim
            ],
            "dmarc": None
            if dmarc is None
            else {
                "result": str(dmarc.result),
                "from_domain": dmarc.from_domain,
                "policy_domain": dmarc.policy_domain,
                "requested": None if dmarc.requested is None else str(dmarc.requested),
                "disposition": str(dmarc.disposition),
                "spf_aligned": dmarc.spf_aligned,
                "dkim_aligned": dmarc.dkim_aligned,
            },
            "disposition": str(self.disposition),
        }


def quote_value(value: str) -> str:
    """An RFC 8601 pvalue: bare token, bare local-part@domain, or a quoted-string."""
    value = _CONTROL.sub("", value)
    if _TOKEN.fullmatch(value):
        return value
    local, at, domain = value.rpartition("@")
    if at and _DOMAIN.fullmatch(domain) and (not local or _DOT_ATOM.fullmatch(local)):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _resinfo(method: str, result: str, *props: tuple[str, str], comment: str = "") -> str:
    parts = [f"{method}={result}"]
    if comment:
        parts.append(f"({comment})")
    parts.extend(f"{name}={quote_value(value)}" for name, value in props if value)
    return " ".join(parts)


def authentication_results(authserv_id: str, verdicts: AuthVerdicts) -> str:
    """The Authentication-Results field value (without the name) for `verdicts`."""
    resinfos = []
    spf = verdicts.spf
    if spf is not None:
        if spf.identity is SpfIdentity.HELO:
            resinfos.append(_resinfo("spf", spf.result, ("smtp.helo", spf.domain)))
        else:
            resinfos.append(_resinfo("spf", spf.result, ("smtp.mailfrom", spf.sender)))
    for sig in verdicts.dkim:
        if sig.result is DkimVerdict.NONE:
            resinfos.append("dkim=none")
            continue
        resinfos.append(
            _resinfo(
                "dkim",
                sig.result,
                ("header.d", sig.domain),
                ("header.s", sig.selector),
                ("header.a", sig.algorithm),
                ("header.b", sig.signature_prefix),
            )
        )
    dmarc = verdicts.dmarc
    if dmarc is not None:
        comment = ""
        if dmarc.requested is not None:
            comment = f"p={dmarc.requested} dis={dmarc.disposition}"
        resinfos.append(
            _resinfo("dmarc", dmarc.result, ("header.from", dmarc.from_domain), comment=comment)
        )
    return "; ".join([quote_value(authserv_id), *(resinfos or ["none"])])


_OUR_FIELD = re.compile(rb"(?im)^authentication-results[ \t]*:")
_AUTHSERV_ID = re.compile(rb"[ \t\r\n]*(?:\([^)]*\)[ \t\r\n]*)*([^ \t\r\n;(]+)")


def strip_forged(message: bytes, authserv_id: str) -> bytes:
    """``message`` without the Authentication-Results fields that claim to be ours.

    A sender can write a field with our authserv-id into its message; readers trusting our
    verdicts would trust that one too. RFC 8601 §5 asks a receiver to remove them. Only fields
    of the header section are looked at; everything else is left byte for byte.
    """
    if _OUR_FIELD.search(header_section(message)) is None:  # the common case: nothing to do
        return message
    ours = authserv_id.lower().encode("ascii", "replace")
    return drop_fields(message, lambda field: _claims(field, ours))


def _claims(field: bytes, authserv_id: bytes) -> bool:
    """Whether ``field`` is an Authentication-Results field of ``authserv_id``."""
    if _OUR_FIELD.match(field) is None:
        return False
    found = _AUTHSERV_ID.match(field, field.index(b":") + 1)
    return found is not None and found.group(1).lower() == authserv_id
