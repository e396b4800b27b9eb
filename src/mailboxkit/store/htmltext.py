"""HTML to readable plain text, for previews and reply extraction of HTML-only mail.

Implementation notes (invariants):

- Built on ``html.parser``, but only ``feed()`` is called, never ``close()``: on CPython 3.11
  ``close()`` rescans an unclosed tag once per "<" up to the end of input (quadratic; 150 KB of
  "<a " took over two minutes here). What ``feed()`` leaves unparsed is an unfinished construct;
  its text is kept with a linear tag strip. The whole conversion is linear in the input.
- Quoted content (``<blockquote>``, Gmail's ``gmail_quote``, Yahoo's ``yahoo_quoted``) comes out
  with "> " prefixes, one ">" per level, so ``quotes.extract_reply`` drops it as in plain text.
- Signatures marked by Gmail (``gmail_signature``) and Thunderbird (``moz-signature``) get a
  "--" line above them: the RFC 3676 §4.3 delimiter, without the trailing space that text
  rendering strips anyway. ``<hr>`` becomes Outlook's "____" rule.
- Links keep their target: "text (https://...)", because agents act on links in mail.
- Never raises; the element stack is capped so hostile nesting costs no more than text.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import NamedTuple

__all__ = ["html_to_text"]

logger = logging.getLogger(__name__)

_MAX_OPEN = 256
_RULE = "_" * 32

_SKIP = frozenset({"script", "style", "head", "title", "template", "noscript"})
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source"}
    | {"track", "wbr"}
)
_PARAGRAPH = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "ul", "ol", "dl", "table", "pre"}
)
_BLOCK = _PARAGRAPH | {"address", "article", "aside", "center", "dd", "details", "dialog", "div"}
_BLOCK |= {"dt", "fieldset", "figcaption", "figure", "footer", "form", "header", "li", "main"}
_BLOCK |= {"nav", "section", "summary", "tr", "caption", "tbody", "thead", "tfoot"}
_QUOTES = ("gmail_quote", "yahoo_quoted")  # class names of quoting containers
_SIGNATURE_CLASSES = ("gmail_signature", "moz-signature")
_SPECIAL = frozenset({"br", "hr", "td", "th", "li", "body"})
_WHITESPACE = re.compile(r"[ \t\n\r\f]+")
_TAG = re.compile(r"<[^<>]*>?")
_HIDDEN = re.compile(r"display\s*:\s*none", re.IGNORECASE)


class _Open(NamedTuple):
    """An element still open: what it changes about the text inside it."""

    tag: str
    quote: bool = False
    skip: bool = False
    pre: bool = False
    href: str | None = None
    numbered: bool | None = None


@dataclass(slots=True)
class _Lines:
    """Text written line by line; line breaks are applied lazily so they never pile up."""

    lines: list[str] = field(default_factory=list)
    current: list[str] = field(default_factory=list)
    depth: int = 0
    breaks: int = 0

    def write(self, chunk: str, depth: int, *, raw: bool = False) -> None:
        if (self.breaks or not self.current) and not raw:
            chunk = chunk.lstrip(" ")
        if not chunk:
            return
        self._apply_breaks(depth)
        if not self.current:
            self.depth = depth
        elif not raw and self.current[-1].endswith(" ") and chunk.startswith(" "):
            chunk = chunk[1:]
        self.current.append(chunk)

    def _apply_breaks(self, depth: int) -> None:
        if self.breaks:
            previous = self.depth
            self.end_line()
            if self.breaks > 1 and self.lines and self.lines[-1].strip("> "):
                self.lines.append(">" * min(previous, depth))
            self.breaks = 0

    def end_line(self) -> None:
        if self.current:
            prefix = ">" * self.depth + " " if self.depth else ""
            self.lines.append(prefix + "".join(self.current).rstrip())
            self.current = []

    def hard_break(self, depth: int) -> None:
        """``<br>``: ends the line, or makes an empty one (Gmail's ``<div><br></div>``)."""
        self._apply_breaks(depth)
        if self.current:
            self.end_line()
        elif self.lines:
            self.lines.append(">" * depth)

    def text(self) -> str:
        self.end_line()
        return re.sub(r"\n{3,}", "\n\n", "\n".join(self.lines)).strip()


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out = _Lines()
        self.stack: list[_Open] = []
        self.quote = 0
        self.skip = 0
        self.pre = 0
        self.numbers: list[int | None] = []  # per open list: last <ol> number, None for <ul>
        self.anchors: list[list[str]] = []  # text of each open <a href>

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs} if attrs else {}
        classes = values.get("class", "")
        if tag in _BLOCK:
            self._break(2 if tag in _PARAGRAPH else 1)
        if tag in _SPECIAL:
            self._special(tag)
        if classes and any(c in classes for c in _SIGNATURE_CLASSES):
            self._break(1)
            self._write("--")
            self._break(1)
        if tag in _VOID or len(self.stack) >= _MAX_OPEN:
            return
        skip = tag in _SKIP or ("style" in values and bool(_HIDDEN.search(values["style"])))
        entry = _Open(
            tag,
            quote=tag == "blockquote" or bool(classes and any(c in classes for c in _QUOTES)),
            skip=skip,
            pre=tag == "pre",
            href=values.get("href", "").strip() if tag == "a" else None,
            numbered={"ol": True, "ul": False}.get(tag),
        )
        if entry.numbered is not None:
            self.numbers.append(0 if entry.numbered else None)
        if entry.href is not None:
            self.anchors.append([])
        self.quote += entry.quote
        self.skip += entry.skip
        self.pre += entry.pre
        self.stack.append(entry)

    def _special(self, tag: str) -> None:
        if tag == "br":
            self.out.hard_break(self.quote)
        elif tag == "hr":
            self._break(1)
            self._write(_RULE)
            self._break(1)
        elif tag in ("td", "th"):
            self._write(" ")
        elif tag == "li":
            number = self.numbers[-1] if self.numbers else None
            if number is None:
                self._write("- ")
            else:
                self.numbers[-1] = number + 1
                self._write(f"{number + 1}. ")
        elif tag == "body":  # a <head> never closed ends where the body starts, as in browsers
            while any(o.tag == "head" for o in self.stack):
                self._close_last()

    def handle_endtag(self, tag: str) -> None:
        if tag == "br":  # "</br>" is a line break in every browser
            self.out.hard_break(self.quote)
            return
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i].tag == tag:
                while len(self.stack) > i:
                    self._close_last()
                break
        if tag in _BLOCK:
            self._break(2 if tag in _PARAGRAPH else 1)

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.pre:
            for n, line in enumerate(data.replace("\r\n", "\n").split("\n")):
                if n:
                    self.out.hard_break(self.quote)
                self.out.write(line.replace("\xa0", " "), self.quote, raw=True)
            return
        text = _WHITESPACE.sub(" ", data.replace("\xa0", " "))
        if self.anchors:
            self.anchors[-1].append(text)
        self._write(text)

    def parse_marked_section(self, i: int, report: bool = True) -> int:
        # _markupbase raises AssertionError on unknown keywords ("<![foo["); skip to "]>".
        end = self.rawdata.find("]>", i + 3)
        return -1 if end < 0 else end + 2

    def _write(self, text: str) -> None:
        if not self.skip:
            self.out.write(text, self.quote)

    def _break(self, n: int) -> None:
        if not self.skip:
            self.out.breaks = max(self.out.breaks, n)

    def _close_last(self) -> None:
        entry = self.stack.pop()
        if entry.href is not None and self.anchors:
            shown = "".join(self.anchors.pop()).strip()
            if shown and entry.href.startswith(("http://", "https://")) and entry.href not in shown:
                self._write(f" ({entry.href})")
        if entry.numbered is not None and self.numbers:
            self.numbers.pop()
        self.quote -= entry.quote
        self.skip -= entry.skip
        self.pre -= entry.pre

    def finish(self) -> str:
        rest = self.rawdata
        if rest and not self.cdata_elem and not rest.startswith("<!--"):
            self._write(html.unescape(_TAG.sub(" ", rest)))
        return self.out.text()


def html_to_text(markup: str) -> str:
    """Readable text of an HTML document or fragment (scripts, styles and hidden parts skipped).

    Block elements and ``<br>`` end lines; entities are decoded; quoted blocks are prefixed "> ".
    """
    parser = _TextParser()
    try:
        parser.feed(markup)
        return parser.finish()
    except Exception:  # html.parser is not fuzz-proof; fall back to stripping tags
        logger.debug("html_to_text_degraded size=%d", len(markup), exc_info=True)
        text = html.unescape(_TAG.sub(" ", markup))
        return "\n".join(" ".join(line.split()) for line in text.splitlines()).strip()
