"""One-time codes and links in a message: what an agent signing up somewhere needs from a mail.

Pure functions over the subject, the plain text and the HTML of a message; no I/O.

Implementation notes:

- A *code* is a run of 4 to 8 digits (also written "123 456" or "123-456", and Google's
  "G-123456"), or 5 to 10 upper-case letters and digits with at least one of each, that stands
  near a keyword naming a code ("code", "Bestätigungscode", "código", "код", "認証コード",
  "验证码", …) on the same line, on the line before, or in the subject. Without a keyword a
  number is not a code: order numbers, prices, years and phone numbers are everywhere in mail.
  Lines that name a promotion ("promo code", "Gutscheincode", "coupon") are skipped.
- A *link* is an http(s) URL, from an ``<a href>`` or from the text, whose address or anchor
  text names an action that proves who you are: verify, confirm, activate, sign in, reset a
  password, accept an invitation, in several languages. Unsubscribe, privacy and help links
  are never one of them.
- Each list keeps the order of appearance, has no duplicates and is capped; only the first
  ``MAX_SCAN`` characters of each part are read, so a huge message costs no more than a normal one.
- The HTML is parsed with ``html.parser``'s ``feed()`` only (see ``htmltext.py`` for why).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

from mailboxkit.store.htmltext import html_to_text

__all__ = ["Found", "Link", "find_codes", "find_codes_and_links", "find_links"]

MAX_SCAN = 100_000
MAX_CODES = 5
MAX_LINKS = 10
MAX_LINK_TEXT = 200
MAX_URL = 2048

# What names a one-time code, matched in lower case: whole words for short English words, any
# part of a word for compounds ("Bestätigungscode", "verificatiecode") and the CJK terms. Every
# alternative starts with a letter, so the regex engine skips ahead to the letters that can
# start one: a word's left edge is checked behind it ("pin(?<!\wpin)" is "\bpin"), as a leading
# "\b" would make the engine try every alternative at every position (5x slower per line).
CODE_WORDS = re.compile(
    r"code|pin(?<!\wpin)\b|otp(?<!\wotp)\b|2fa(?<!\w2fa)\b|mfa(?<!\wmfa)\b|one[- ]time"
    r"|token(?<!\wtoken)\b|kod(?<!\wkod)"
    r"|código|codigo|codice|код|コード|認証番号|確認番号|验证码|驗證碼|校验码|动态码|인증"
)
# What makes a line about something else than proving who you are.
NOT_CODE_WORDS = re.compile(
    r"promo|coupon|discount|voucher|gutschein|rabatt|zip(?<!\wzip)\b|post ?code|postal"
    r"|postleitzahl|tracking|order (?:n|#|id)|bestellnummer|commande|pedido|invoice|rechnung"
    r"|iban(?<!\wiban)\b"
)
LINK_WORDS = (
    "verif",  # verify, verification, verifizieren, vérifier, verificar, verifica, verifieer
    "vérif",
    "confirm",  # confirm, confirmer, confirmar
    "conferma",
    "bestätig",
    "bevestig",
    "activat",
    "activer",
    "activar",
    "aktivier",
    "magic",
    "login",
    "log in",
    "log-in",
    "signin",
    "sign in",
    "sign-in",
    "anmelden",
    "connexion",
    "se connecter",
    "iniciar sesión",
    "accedi",
    "auth",
    "reset",
    "password",
    "passwort",
    "mot de passe",
    "contraseña",
    "restablecer",
    "réinitialiser",
    "otp",
    "token",
    "invit",  # invite, invitation, invitación
    "einladung",
    "validate",
    "valider",
    "確認",
    "認証",
    "ログイン",
    "验证",
    "确认",
    "登录",
    "驗證",
    "登入",
    "인증",
    "подтвер",
    "войти",
)
NOT_LINK_WORDS = (
    "unsubscribe",
    "abmelden",  # German newsletters: "vom Newsletter abmelden"
    "abbestellen",
    "désabonner",
    "desinscri",
    "desuscri",
    "cancelar suscripción",
    "disiscriviti",
    "afmelden",
    "отписаться",
    "配信停止",
    "退订",
    "privacy",
    "datenschutz",
    "terms",
    "preferences",
    "help",
    "support",
    "report",
)

_BOUND = r"(?<![\w\-.,:/+#@=?&€$£¥])"
_END = r"(?![\w\-/@]|[.,:]\d)"
_CANDIDATE = re.compile(
    _BOUND
    + r"(?:G-)?(\d{3}[ \-]\d{3}|\d{4,8}|(?=[A-Z0-9]*\d)(?=[A-Z0-9]*[A-Z])[A-Z0-9]{5,10})"
    + _END
)
_YEAR = re.compile(r"(19|20)\d\d")
_DIGIT = re.compile(r"\d")
_URL = re.compile(r"https?://[^\s<>\"'()\[\]{}]+", re.IGNORECASE)
_URL_TRAIL = ".,;:!?'\"\u00bb\u201d\u2019"  # and closing guillemets and curly quotes


@dataclass(frozen=True, slots=True)
class Link:
    url: str
    text: str = ""  # the anchor text, when the link came from HTML


@dataclass(frozen=True, slots=True)
class Found:
    codes: tuple[str, ...] = ()
    links: tuple[Link, ...] = ()

    def as_dict(self) -> dict[str, list[object]]:
        """JSON-ready: ``{"codes": [...], "links": [{"url", "text"}]}``."""
        return {
            "codes": list(self.codes),
            "links": [{"url": link.url, "text": link.text} for link in self.links],
        }


def _has(text: str, words: tuple[str, ...]) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in words)


def _code_line(line: str) -> bool:
    lowered = line.lower()
    return CODE_WORDS.search(lowered) is not None and NOT_CODE_WORDS.search(lowered) is None


def _candidates(line: str) -> list[str]:
    if _DIGIT.search(line) is None:  # every code has a digit; most lines have none
        return []
    found = []
    for match in _CANDIDATE.finditer(line):
        code = re.sub(r"[ \-]", "", match.group(1))
        if len(code) == 4 and _YEAR.fullmatch(code):
            continue
        found.append(code)
    return found


def find_codes(subject: str, text: str) -> tuple[str, ...]:
    """The one-time codes in a message, most likely first (see the notes above)."""
    subject = subject[:MAX_SCAN]
    text = text[:MAX_SCAN]
    if _DIGIT.search(subject) is None and _DIGIT.search(text) is None:
        return ()  # every code has a digit
    if CODE_WORDS.search(subject.lower()) is None and CODE_WORDS.search(text.lower()) is None:
        return ()  # most mail: no line can say it holds a code
    found: list[str] = []
    subject_says_code = _code_line(subject)
    if subject_says_code:
        found.extend(_candidates(subject))
    previous = ""  # the last line read, quoted history and empty lines left out
    for line in text.splitlines():
        line = line.strip()
        # Drop quoted history: a code in an older message is not this message's code.
        if not line or line.startswith(">"):
            continue
        # Only a line with a digit can hold a code; the others are only looked at again
        # when the next line has one (a code may stand on the line after its keyword).
        if _DIGIT.search(line) is not None:
            lowered = line.lower()
            near_keyword = (
                CODE_WORDS.search(lowered) is not None
                or _code_line(previous)
                or (subject_says_code and len(line) <= 12)
            )
            # A line that names a promotion or an order is about that, whatever the line
            # before said.
            if near_keyword and NOT_CODE_WORDS.search(lowered) is None:
                found.extend(_candidates(line))
        previous = line
    unique = list(dict.fromkeys(found))
    return tuple(unique[:MAX_CODES])


class _Anchors(HTMLParser):
    """Collects ``(href, text)`` of each ``<a>``; nested anchors end the outer one."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._flush()
            self._href = next((v for k, v in attrs if k == "href" and v), None)
            self._text = []
        elif tag == "img" and self._href is not None:
            alt = next((v for k, v in attrs if k == "alt" and v), "")
            self._text.append(alt)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._href is not None and sum(map(len, self._text)) < MAX_LINK_TEXT:
            self._text.append(data)

    def _flush(self) -> None:
        if self._href is not None:
            text = " ".join(" ".join(self._text).split())[:MAX_LINK_TEXT]
            self.anchors.append((self._href.strip(), text))
        self._href = None
        self._text = []


def _is_action(url: str, text: str) -> bool:
    if not url.lower().startswith(("http://", "https://")) or len(url) > MAX_URL:
        return False
    if _has(url, NOT_LINK_WORDS) or _has(text, NOT_LINK_WORDS):
        return False
    return _has(url, LINK_WORDS) or _has(text, LINK_WORDS)


def find_links(text: str, html: str | None = None) -> tuple[Link, ...]:
    """The sign-in, verification and reset links of a message, in order of appearance."""
    candidates: list[Link] = []
    if html:
        parser = _Anchors()
        parser.feed(html[:MAX_SCAN])
        parser._flush()
        candidates.extend(Link(url, label) for url, label in parser.anchors)
    plain = text[:MAX_SCAN]
    for line in plain.splitlines() if "://" in plain else ():
        if line.lstrip().startswith(">"):
            continue
        for match in _URL.finditer(line):
            url = match.group(0).rstrip(_URL_TRAIL)
            # In plain text, the words before the URL on its line are its label.
            candidates.append(Link(url, line[: match.start()].strip()[-MAX_LINK_TEXT:]))
    seen: dict[str, Link] = {}
    for link in candidates:
        if link.url not in seen and _is_action(link.url, link.text):
            seen[link.url] = link
    return tuple(seen.values())[:MAX_LINKS]


def find_codes_and_links(subject: str, text: str | None, html: str | None) -> Found:
    """Codes and links of a message; the HTML is read when there is no plain text."""
    plain = text if text else (html_to_text(html[:MAX_SCAN]) if html else "")
    return Found(find_codes(subject, plain), find_links(plain, html))
