"""Reply extraction: the new part of a message, without quoted history or signature.

Implementation notes (invariants):

- Works on plain-text lines. HTML is converted first by ``htmltext``, which prefixes quoted
  blocks with "> " so both kinds of message are handled alike.
- Steps, in order: cut at the first history marker that has new text above it (top-posting);
  otherwise drop a leading attribution and quoted block when nothing else is quoted below
  (bottom-posting; interleaved answers keep their quoted questions); cut the signature after a
  "-- " line (RFC 3676 §4.3; also "--", as Outlook and webmails trim the space); drop trailing
  quoted blocks; drop a trailing mobile signature ("Sent from my iPhone" and translations).
- Forwarded messages are content, not history: a header block under "Forwarded message" or
  "Begin forwarded message:" is kept. Outlook's plain-text forward looks exactly like its reply
  (a "____" rule and a From/Sent block), so it is cut like one.
- Never returns "" for text with content: text that is all history is returned stripped.
"""

from __future__ import annotations

import re

__all__ = ["extract_reply"]

_MAX_ATTRIBUTION = 400

# "On <date>, <name> wrote:" and its translations. Gmail wraps long ones over two or three lines.
_ATTRIBUTION = re.compile(
    r"""^(?:on\s.*\swrote
    | am\s.*\sschrieb\s.*
    | le\s.*\sa\s+écrit
    | el\s.*\sescribió
    | op\s.*\sschreef\s.*
    | il\s.*\sha\s+scritto
    | (?:em|no\sdia)\s.*\sescreveu
    | den\s.*\sskrev\s.*
    )\s*:$""",
    re.IGNORECASE | re.VERBOSE,
)
# "<name> wrote:" (Thunderbird before 3.0, mutt, many webmails): only when quoted lines follow.
_WROTE = re.compile(
    r"^.{0,300}\b(?:wrote|schrieb|a\s+écrit|escribió|schreef|ha\s+scritto|escreveu|skrev"
    r"|napisał\(a\)|napisała|napisał)\b.{0,80}:$",
    re.IGNORECASE,
)
_ORIGINAL = re.compile(
    r"^-{2,}\s*(?:original\s+message|ursprüngliche\s+nachricht|message\s+d'origine"
    r"|mensaje\s+original|messaggio\s+originale|oorspronkelijk\s+bericht|mensagem\s+original"
    r"|originalmeddelande|alkuperäinen\s+viesti|oryginalna\s+wiadomość)\s*-{2,}$",
    re.IGNORECASE,
)
_RULE = re.compile(r"^_{20,}$")  # Outlook's separator above the quoted header block
_FROM = re.compile(r"^\*?(?:from|von|de|da|van|från|od|fra|lähettäjä)\s*:", re.IGNORECASE)
_SENT = re.compile(
    r"^\*?(?:sent|date|gesendet|datum|envoyé|enviado|fecha|inviato|data|verzonden|skickat"
    r"|wysłano|sendt|lähetetty)\s*:",
    re.IGNORECASE,
)
_TO = re.compile(
    r"^\*?(?:to|cc|subject|an|betreff|à|objet|para|asunto|a|oggetto|aan|onderwerp|till|ämne"
    r"|do|temat|til|emne|vastaanottaja|aihe)\s*:",
    re.IGNORECASE,
)
_FORWARD = re.compile(
    r"forwarded message|begin forwarded message|weitergeleitete nachricht|message transféré"
    r"|mensaje reenviado|messaggio inoltrato|doorgestuurd bericht|mensagem encaminhada"
    r"|vidarebefordrat meddelande",
    re.IGNORECASE,
)
_MOBILE = re.compile(
    r"^(?:sent (?:from|via|with) |get outlook for |von meinem .{1,40} gesendet|gesendet von "
    r"|envoyé de |enviado (?:desde|do|de) |inviato da |verzonden (?:vanaf|met) |skickat från "
    r"|wysłane z )",
    re.IGNORECASE,
)
_MAX_MOBILE = 100


def _quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _blank(line: str) -> bool:
    return not line.strip()


def _content(line: str) -> bool:
    return not _blank(line) and not _quoted(line)


def _attribution_span(lines: list[str], i: int) -> int:
    """Lines (1 to 3) of the attribution starting at ``i``, 0 when there is none."""
    if not any(line.rstrip().endswith(":") for line in lines[i : i + 3]):
        return 0  # the cheap test first: this runs for every line
    joined = ""
    for span in range(1, 4):
        if i + span > len(lines) or not _content(lines[i + span - 1]):
            return 0
        joined = f"{joined} {lines[i + span - 1].strip()}".strip()
        if len(joined) > _MAX_ATTRIBUTION:
            return 0
        if _ATTRIBUTION.match(joined) and any(c.isdigit() for c in joined):
            return span
        if _WROTE.match(joined) and _quote_follows(lines, i + span):
            return span
    return 0


def _quote_follows(lines: list[str], i: int) -> bool:
    following = [line for line in lines[i : i + 3] if not _blank(line)]
    return bool(following) and _quoted(following[0])


def _header_block(lines: list[str], i: int) -> bool:
    """An Outlook-style "From: / Sent: / To: / Subject:" block that is not a forward."""
    if not _FROM.match(lines[i].strip()):
        return False
    block = [line.strip() for line in lines[i + 1 : i + 6]]
    if not (any(_SENT.match(b) for b in block) and any(_TO.match(b) for b in block)):
        return False
    above = [line for line in lines[max(0, i - 6) : i] if not _blank(line)][-3:]
    return not any(_FORWARD.search(line) for line in above)


def _history_starts(lines: list[str], i: int, colons: list[bool]) -> bool:
    """Whether history starts at line ``i``; ``colons`` marks lines ending in ":"."""
    line = lines[i].strip()
    if not line or line[0] == ">":
        return False
    if line[0] == "-":
        return bool(_ORIGINAL.match(line))
    if line[0] == "_":
        below = [b.strip() for b in lines[i + 1 : i + 4] if not _blank(b)]
        return bool(_RULE.match(line)) and bool(below) and bool(_FROM.match(below[0]))
    if True in colons[i : i + 3] and _attribution_span(lines, i):
        return True
    return ":" in line and _header_block(lines, i)


def _cut_history(lines: list[str]) -> list[str]:
    colons = [line.rstrip().endswith(":") for line in lines]
    has_new = False
    for i, line in enumerate(lines):
        if has_new and _history_starts(lines, i, colons):
            return lines[:i]
        has_new = has_new or _content(line)
    return _drop_leading_quote(lines)


def _drop_leading_quote(lines: list[str]) -> list[str]:
    """Bottom-posting: an attribution and a quote at the top, the answer below."""
    i = 0
    while i < len(lines) and _blank(lines[i]):
        i += 1
    if i < len(lines):
        i += _attribution_span(lines, i)
    quote_start = i
    while i < len(lines) and (_blank(lines[i]) or _quoted(lines[i])):
        i += 1
    if not any(_quoted(line) for line in lines[quote_start:i]):
        return lines
    rest = _drop_trailing_quotes(lines[i:])
    if not any(_content(line) for line in rest) or any(_quoted(line) for line in rest):
        return lines  # all quoted, or interleaved answers that need their questions
    return lines[i:]


def _cut_signature(lines: list[str]) -> list[str]:
    has_new = False
    for i, line in enumerate(lines):
        if has_new and line.rstrip("\r") in ("-- ", "--"):
            return lines[:i]
        has_new = has_new or _content(line)
    return lines


def _drop_trailing_quotes(lines: list[str]) -> list[str]:
    end = len(lines)
    while end and (_blank(lines[end - 1]) or _quoted(lines[end - 1])):
        end -= 1
    return lines[:end] if end else lines


def _drop_mobile_signature(lines: list[str]) -> list[str]:
    end = len(lines)
    while end and _blank(lines[end - 1]):
        end -= 1
    if end:
        last = lines[end - 1].strip()
        if len(last) <= _MAX_MOBILE and _MOBILE.match(last):
            return lines[: end - 1]
    return lines


def extract_reply(text: str) -> str:
    """The new part of a reply: quoted history, trailing quotes and signatures removed.

    History starts at an attribution ("On <date>, <name> wrote:" in English, German, French,
    Spanish, Dutch, Italian, Portuguese, Swedish, also wrapped over lines), Outlook's
    "-----Original Message-----", a "____" rule above "From:", or a "From:/Sent:/To:" block.
    """
    original = text.strip()
    lines = original.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    lines = _cut_history(lines)
    lines = _cut_signature(lines)
    lines = _drop_trailing_quotes(lines)
    lines = _drop_mobile_signature(lines)
    lines = _drop_trailing_quotes(lines)
    return "\n".join(lines).strip() or original
