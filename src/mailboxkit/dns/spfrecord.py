"""SPF record syntax (RFC 7208 §4.5, §4.6.1, §5, §6, §7.1, §12): text in, typed terms out.

Implementation notes:

- The whole record is parsed before anything is evaluated, so a syntax error anywhere gives
  permerror (RFC 7208 §4.6) whatever the IP.
- Only printable US-ASCII and SP may appear (§3.1, §4.6.1); terms are split on SP only.
- A term is a modifier when it starts with `name "="` (§4.6.1, A): so "a:x=y" is a mechanism and
  "moo.cow/far=x" is an (unknown, hence invalid) mechanism. "redirect" and "exp" take a
  domain-spec and may each appear once (§6); unknown modifiers must still be valid macro
  strings (Appendix A) and are otherwise ignored.
- domain-spec must end in "." toplabel [ "." ] or a macro-expand (§7.1); it is checked as written,
  never after expansion. The macro letters c, r and t are allowed only in explanation text.
- CIDR lengths have no leading zeros and stay within 32 / 128 (§5.6).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Macro",
    "MacroToken",
    "Mechanism",
    "SpfRecord",
    "SpfSyntaxError",
    "SpfVerdict",
    "is_spf_record",
    "parse_domain_spec",
    "parse_macro_string",
    "parse_record",
]


class SpfSyntaxError(ValueError):
    """The record, a term or a macro string is malformed: permerror (RFC 7208 §4.6)."""


class SpfVerdict(StrEnum):
    """check_host() results (RFC 7208 §2.6)."""

    PASS = "pass"  # noqa: S105 (a verdict, not a password)
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


QUALIFIERS = {
    "+": SpfVerdict.PASS,
    "-": SpfVerdict.FAIL,
    "~": SpfVerdict.SOFTFAIL,
    "?": SpfVerdict.NEUTRAL,
}
MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
# RFC 7208 §7.1: macro letters; c, r and t only in explanation text (§7.3).
MACRO_LETTERS = frozenset("slodiphcrtv")
EXP_ONLY_LETTERS = frozenset("crt")
DELIMITERS = frozenset(".-+,/_=")

_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9\-_.]*)=(.*)", re.DOTALL)
_DIRECTIVE = re.compile(r"([+\-~?]?)([A-Za-z][A-Za-z0-9]*)(.*)", re.DOTALL)
_CIDR = r"0|[1-9][0-9]*"
_DUAL_CIDR = re.compile(rf"(?::(?P<domain>.*?))?(?:/(?P<c4>{_CIDR}))?(?://(?P<c6>{_CIDR}))?")
_IP4_ARG = re.compile(rf":(?P<net>[0-9.]+)(?:/(?P<cidr>{_CIDR}))?")
_IP6_ARG = re.compile(rf":(?P<net>[0-9A-Fa-f:.]+)(?:/(?P<cidr>{_CIDR}))?")
_TOPLABEL = re.compile(r"[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9\-]*[A-Za-z0-9]")


@dataclass(frozen=True, slots=True)
class Macro:
    """One `%{letter digits r delimiters}` (RFC 7208 §7.1); upper-case letters URL-escape."""

    letter: str  # lower-case
    keep: int | None = None  # DIGIT transformer: rightmost parts to keep
    reverse: bool = False
    delimiters: str = ""
    url_escape: bool = False

    def transform(self, value: str) -> str:
        """Split, reverse, keep the rightmost parts, join with "." and escape (§7.3)."""
        if self.keep is not None or self.reverse or self.delimiters:
            delimiters = self.delimiters or "."
            parts = re.split("[" + re.escape(delimiters) + "]", value)
            if self.reverse:
                parts.reverse()
            if self.keep is not None:
                parts = parts[-self.keep :]
            value = ".".join(parts)
        if self.url_escape:
            value = urllib.parse.quote(value, safe="")  # RFC 3986 unreserved only
        return value


MacroToken = str | Macro


@dataclass(frozen=True, slots=True)
class Mechanism:
    """A directive (RFC 7208 §4.6.2, §5): the verdict if it matches, and its arguments."""

    verdict: SpfVerdict
    name: str
    domain_spec: tuple[MacroToken, ...] | None = None  # None: use <domain>
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    cidr4: int = 32
    cidr6: int = 128


@dataclass(frozen=True, slots=True)
class SpfRecord:
    mechanisms: tuple[Mechanism, ...]
    redirect: tuple[MacroToken, ...] | None = None
    exp: tuple[MacroToken, ...] | None = None

    @property
    def has_all(self) -> bool:
        """RFC 7208 §6.1: redirect is ignored when "all" appears anywhere."""
        return any(m.name == "all" for m in self.mechanisms)


def is_spf_record(text: str) -> bool:
    """RFC 7208 §4.5: starts with "v=spf1" (any case) followed by SP or the end."""
    head = text[:7].lower()
    return head == "v=spf1" or head == "v=spf1 "


def parse_record(text: str) -> SpfRecord:
    """Parse a whole SPF record, raising `SpfSyntaxError` on any error (RFC 7208 §4.6)."""
    if not is_spf_record(text):
        raise SpfSyntaxError("not an SPF record")
    if any(not 0x20 <= ord(char) <= 0x7E for char in text):
        raise SpfSyntaxError("record contains characters other than printable ASCII and SP")
    mechanisms: list[Mechanism] = []
    redirect = exp = None
    for term in text[6:].split(" "):
        if not term:
            continue
        modifier = _MODIFIER.fullmatch(term)
        if modifier is None:
            mechanisms.append(_parse_mechanism(term))
            continue
        name, value = modifier.group(1).lower(), modifier.group(2)
        if name in ("redirect", "exp"):
            if (redirect if name == "redirect" else exp) is not None:
                raise SpfSyntaxError(f"{name}= appears twice")  # RFC 7208 §6
            spec = parse_domain_spec(value)
            if name == "redirect":
                redirect = spec
            else:
                exp = spec
        else:
            parse_macro_string(value, exp_letters=True)  # Appendix A: still valid syntax
    return SpfRecord(tuple(mechanisms), redirect, exp)


def _parse_mechanism(term: str) -> Mechanism:
    match = _DIRECTIVE.fullmatch(term)
    if match is None or match.group(2).lower() not in MECHANISMS:
        raise SpfSyntaxError(f"unknown mechanism {term!r}")
    verdict = QUALIFIERS.get(match.group(1), SpfVerdict.PASS)
    name, rest = match.group(2).lower(), match.group(3)
    if name == "all":  # RFC 7208 §5.1
        if rest:
            raise SpfSyntaxError(f"all takes no argument: {term!r}")
        return Mechanism(verdict, name)
    if name in ("include", "exists"):  # §5.2, §5.7
        if not rest.startswith(":"):
            raise SpfSyntaxError(f"{name} needs ':' domain-spec: {term!r}")
        return Mechanism(verdict, name, parse_domain_spec(rest[1:]))
    if name == "ptr":  # §5.5
        if not rest:
            return Mechanism(verdict, name)
        if not rest.startswith(":"):
            raise SpfSyntaxError(f"bad ptr argument: {term!r}")
        return Mechanism(verdict, name, parse_domain_spec(rest[1:]))
    if name in ("a", "mx"):  # §5.3, §5.4: [ ":" domain-spec ] [ dual-cidr-length ]
        dual = _DUAL_CIDR.fullmatch(rest)
        if dual is None:
            raise SpfSyntaxError(f"bad {name} argument: {term!r}")
        domain = dual.group("domain")
        spec = None if domain is None else parse_domain_spec(domain)
        return Mechanism(
            verdict,
            name,
            spec,
            cidr4=_cidr(dual.group("c4"), 32, term),
            cidr6=_cidr(dual.group("c6"), 128, term),
        )
    return _parse_ip(verdict, name, rest, term)  # §5.6


def _parse_ip(verdict: SpfVerdict, name: str, rest: str, term: str) -> Mechanism:
    pattern, maximum = (_IP4_ARG, 32) if name == "ip4" else (_IP6_ARG, 128)
    match = pattern.fullmatch(rest)
    if match is None:
        raise SpfSyntaxError(f"bad {name} argument: {term!r}")
    try:
        address = (
            ipaddress.IPv4Address(match.group("net"))
            if name == "ip4"
            else ipaddress.IPv6Address(match.group("net"))
        )
    except ValueError:
        raise SpfSyntaxError(f"bad address in {term!r}") from None
    length = _cidr(match.group("cidr"), maximum, term)
    network = ipaddress.ip_network(f"{address}/{length}", strict=False)
    return Mechanism(verdict, name, network=network)


def _cidr(text: str | None, maximum: int, term: str) -> int:
    if text is None:
        return maximum
    if int(text) > maximum:
        raise SpfSyntaxError(f"CIDR length over {maximum} in {term!r}")
    return int(text)


def parse_domain_spec(text: str) -> tuple[MacroToken, ...]:
    """domain-spec = macro-string domain-end (RFC 7208 §7.1); c, r, t are not allowed."""
    tokens, ends_in_expand = _tokenize(text, exp_letters=False, allow_space=False)
    if not tokens:
        raise SpfSyntaxError("empty domain-spec")
    if ends_in_expand:
        return tokens
    tail = tokens[-1] if isinstance(tokens[-1], str) else ""
    if tail.endswith("."):
        tail = tail[:-1]
    _, dot, toplabel = tail.rpartition(".")
    if not dot or _TOPLABEL.fullmatch(toplabel) is None:
        raise SpfSyntaxError(f"domain-spec {text!r} must end in a toplabel or a macro")
    return tokens


def parse_macro_string(
    text: str, *, exp_letters: bool, allow_space: bool = False
) -> tuple[MacroToken, ...]:
    """Tokenize a macro-string (or explain-string with `allow_space`) per RFC 7208 §7.1.

    "%%", "%_" and "%-" become the literals "%", " " and "%20"; literal runs are merged.
    """
    return _tokenize(text, exp_letters=exp_letters, allow_space=allow_space)[0]


def _tokenize(
    text: str, *, exp_letters: bool, allow_space: bool
) -> tuple[tuple[MacroToken, ...], bool]:
    """Tokens, and whether the text ends in a macro-expand (which includes "%%", "%_", "%-")."""
    tokens: list[MacroToken] = []
    literal: list[str] = []
    ends_in_expand = False
    i = 0
    while i < len(text):
        char = text[i]
        ends_in_expand = char == "%"
        if char != "%":
            if not (0x21 <= ord(char) <= 0x7E or (allow_space and char == " ")):
                raise SpfSyntaxError(f"character {char!r} not allowed in macro-string")
            literal.append(char)
            i += 1
            continue
        following = text[i + 1 : i + 2]
        if following in ("%", "_", "-"):
            literal.append({"%": "%", "_": " ", "-": "%20"}[following])
            i += 2
            continue
        if following != "{":
            raise SpfSyntaxError(f"'%' must be followed by '{{', '%', '_' or '-' in {text!r}")
        end = text.find("}", i)
        if end < 0:
            raise SpfSyntaxError(f"unterminated macro in {text!r}")
        if literal:
            tokens.append("".join(literal))
            literal = []
        tokens.append(_parse_macro(text[i + 2 : end], exp_letters))
        i = end + 1
    if literal:
        tokens.append("".join(literal))
    return tuple(tokens), ends_in_expand


def _parse_macro(body: str, exp_letters: bool) -> Macro:
    match = re.fullmatch(r"([A-Za-z])([0-9]*)([rR]?)(.*)", body, re.DOTALL)
    if match is None or match.group(1).lower() not in MACRO_LETTERS:
        raise SpfSyntaxError(f"unknown macro letter in %{{{body}}}")
    letter = match.group(1)
    if letter.lower() in EXP_ONLY_LETTERS and not exp_letters:
        raise SpfSyntaxError(f"%{{{letter}}} is allowed only in explanation text")
    digits, delimiters = match.group(2), match.group(4)
    if digits and int(digits) == 0:
        raise SpfSyntaxError(f"zero DIGIT transformer in %{{{body}}}")
    if any(char not in DELIMITERS for char in delimiters):
        raise SpfSyntaxError(f"bad delimiter in %{{{body}}}")
    return Macro(
        letter=letter.lower(),
        keep=int(digits) if digits else None,
        reverse=bool(match.group(3)),
        delimiters=delimiters,
        url_escape=letter.isupper(),
    )
