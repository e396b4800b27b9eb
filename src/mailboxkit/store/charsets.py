"""Charsets and header decoding for mail: MIME charset labels, RFC 2047 encoded-words, raw
RFC 6532 UTF-8, and lenient base64.

Every returned ``str`` is valid Unicode without U+0000 (PostgreSQL ``text`` cannot hold it).
"""

from __future__ import annotations

import binascii
import codecs
import encodings
import encodings.aliases
import functools
import pkgutil
import re

_SNIFF_LABELS = frozenset(
    {"", "us_ascii", "ascii", "ansi_x3.4_1968", "unknown_8bit", "x_unknown", "unknown", "default"}
)
# Labels senders use for a superset encoding; decoded as the WHATWG Encoding Standard (§4.2) and
# Thunderbird (encoding_rs) do, so Outlook's "iso-8859-1" smart quotes come out right.
_SUPERSETS = {
    "iso_8859_1": "cp1252",
    "iso8859_1": "cp1252",
    "latin1": "cp1252",
    "latin_1": "cp1252",
    "l1": "cp1252",
    "iso_8859_9": "cp1254",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x_gbk": "gb18030",
    "ks_c_5601_1987": "cp949",
    "euc_kr": "cp949",
    "shift_jis": "cp932",
    "x_sjis": "cp932",
    "tis_620": "cp874",
}
# Text codecs that are not charsets, or that are slow or raise on arbitrary input.
_REFUSED_CODECS = frozenset(
    {"idna", "punycode", "raw-unicode-escape", "unicode-escape", "undefined"}
)
_SAFE_OUTPUT = frozenset({"utf-8", "cp1252", "latin-1", "iso8859-1", "ascii"})


@functools.cache
def _known_codec_names() -> frozenset[str]:
    """Names the codec registry can resolve.

    Looking up unknown names is refused up front: ``encodings`` caches every failed lookup in an
    unbounded dict, and charset labels come from strangers.
    """
    modules = {m.name for m in pkgutil.iter_modules(encodings.__path__)}
    aliases = encodings.aliases.aliases
    return frozenset(modules | set(aliases) | set(aliases.values()))


def _codec(label: str) -> str | None:
    """Python codec for a MIME charset label (RFC 2046 §4.1.2); None means sniff the bytes."""
    norm = encodings.normalize_encoding(label.strip().strip("\"'").lower())
    if norm in _SNIFF_LABELS:
        return None
    norm = _SUPERSETS.get(norm, norm)
    if norm not in _known_codec_names():
        return "utf-8"
    try:
        name = codecs.lookup(norm).name
    except LookupError:
        return "utf-8"
    return "utf-8" if name in _REFUSED_CODECS else name


def sniff(raw: bytes) -> str:
    """Undeclared 8-bit text: UTF-8 (RFC 6532) when valid, else Windows-1252, else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def clean(text: str) -> str:
    return text.replace("\x00", "") if "\x00" in text else text


def decode_text(raw: bytes, charset: str | None) -> str:
    """Decode ``raw`` declared as ``charset``; unknown charsets become UTF-8 with replacement."""
    codec = None if charset is None else _codec(charset)
    if codec is None:
        return clean(sniff(raw))
    if codec == "cp1252":
        try:
            return clean(raw.decode("cp1252"))
        except UnicodeDecodeError:
            return clean(raw.decode("latin-1"))
    try:
        text = raw.decode(codec, "replace")
    except (LookupError, ValueError):
        text = raw.decode("utf-8", "replace")
    if codec not in _SAFE_OUTPUT:
        # Some codecs (UTF-7) can yield lone surrogates, which are not valid Unicode.
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
    return clean(text)


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
CONTROLS = re.compile(r"[\x00-\x1f\x7f]")


def b64decode(data: bytes) -> bytes:
    """Base64 (RFC 2045 §6.8) that tolerates bad padding and stray characters."""
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        pass
    clean = _NOT_BASE64.sub(b"", data)
    if len(clean) % 4 == 1:
        clean = clean[:-1]
    try:
        return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
    except binascii.Error:
        return b""


def decode_header_value(text: str) -> str:
    """Decode RFC 2047 encoded-words in an unfolded header value.

    Whitespace between adjacent encoded-words is dropped (RFC 2047 §6.2). Adjacent words in the
    same charset are joined before decoding, because some senders split a multi-byte character
    across two words (Thunderbird accepts that too). Encoded-words inside quoted strings are
    decoded as well, as every mail client does.
    """
    if "=?" not in text:
        return text
    tokens: list[str | tuple[str, bytes]] = []
    pos = 0
    for m in _ENCODED_WORD.finditer(text):
        gap = text[pos : m.start()]
        if gap and not (gap.isspace() and tokens and isinstance(tokens[-1], tuple)):
            tokens.append(gap)
        payload = m.group(3)
        if m.group(2) in "Bb":
            data = b64decode(payload.encode("ascii", "ignore"))
        else:
            data = binascii.a2b_qp(payload.encode("utf-8", "replace"), header=True)
        tokens.append((m.group(1).partition("*")[0].lower(), data))
        pos = m.end()
    tokens.append(text[pos:])
    out: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if isinstance(token, str):
            out.append(token)
            continue
        charset, data = token
        run = [data]
        while i < len(tokens) and isinstance(nxt := tokens[i], tuple) and nxt[0] == charset:
            run.append(nxt[1])
            i += 1
        out.append(decode_text(b"".join(run), charset))
    return "".join(out)


def raw_header(value: object) -> str:
    """A compat32 header value unfolded (RFC 5322 §2.2.3); 8-bit bytes read as RFC 6532 UTF-8."""
    text = value if isinstance(value, str) else str(value)
    if not text.isascii():
        text = sniff(text.encode("utf-8", "surrogateescape"))
    return clean(text.replace("\r", "").replace("\n", ""))
