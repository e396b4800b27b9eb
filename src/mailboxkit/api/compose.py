"""Composing outgoing messages for the send routes: a :class:`Draft` in, RFC 5322 bytes out.

Pure, on the stdlib ``email`` package (``policy.SMTP``: CRLF, headers folded at 78 columns,
non-ASCII header text as RFC 2047 encoded-words, bodies in UTF-8 with the transfer encoding the
package picks). Replies and forwards are drafts made from the original message's record:

- Reply (RFC 5322 §3.6.4): In-Reply-To is the original's Message-ID; References is the
  original's References (or, lacking them, its In-Reply-To) followed by its Message-ID; the
  subject gets "Re: " unless it already has a reply prefix. Recipients: the original's
  Reply-To, else its From; reply-all adds its To and Cc; our own address is never a recipient.
  Replying to a message we sent goes to its recipients again (a follow-up).
- Forward: "Fwd: " subject, the original quoted below a separator, its attachments attached
  again, and the same In-Reply-To/References, so the forward stays in the sender's thread.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr

from mailboxkit.store.drafts import RESERVED_HEADERS as RESERVED_HEADERS  # re-exported
from mailboxkit.store.ids import new_id
from mailboxkit.store.listing import MessageRecord
from mailboxkit.store.mime import has_reply_prefix


@dataclass(frozen=True, slots=True)
class Mailbox:
    name: str
    email: str

    def formatted(self) -> str:
        return formataddr((self.name, self.email)) if self.name else self.email


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes
    disposition: str = "attachment"
    content_id: str | None = None


@dataclass(frozen=True, slots=True)
class Draft:
    sender: Mailbox
    to: tuple[Mailbox, ...] = ()
    cc: tuple[Mailbox, ...] = ()
    bcc: tuple[Mailbox, ...] = ()
    reply_to: tuple[Mailbox, ...] = ()
    subject: str = ""
    text: str | None = None
    html: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    attachments: tuple[Attachment, ...] = ()
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()

    @property
    def recipients(self) -> list[str]:
        """Envelope recipients: To, Cc and Bcc, each address once, in order."""
        seen: dict[str, str] = {}
        for box in (*self.to, *self.cc, *self.bcc):
            seen.setdefault(box.email.lower(), box.email)
        return list(seen.values())

    @property
    def size(self) -> int:
        """About the bytes composing reads: bodies and attachments."""
        bodies = len(self.text or "") + len(self.html or "")
        return bodies + sum(len(a.data) for a in self.attachments)


class _HeaderClasses(HeaderRegistry):
    """The stdlib's registry, making each header class once.

    ``HeaderRegistry`` makes a new class for every header set, which took more than half of
    composing a plain message. The class depends only on the registered one it derives from,
    so there are as many as registered classes.
    """

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[type, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        base = self.registry.get(name.lower(), self.default_class)
        made = self._made.get(base)
        if made is None:
            made = self._made[base] = super().__getitem__(name)
        return made


_POLICY = SMTP.clone(header_factory=_HeaderClasses())


def compose(draft: Draft, *, now: datetime, domain: str, keep_bcc: bool = False) -> bytes:
    """The message as bytes, CRLF line endings, without Bcc (the envelope carries it) unless
    ``keep_bcc``: a draft's copy in Drafts keeps it, as mail clients' drafts do."""
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = draft.sender.formatted()
    if draft.to:
        msg["To"] = ", ".join(m.formatted() for m in draft.to)
    if draft.cc:
        msg["Cc"] = ", ".join(m.formatted() for m in draft.cc)
    if keep_bcc and draft.bcc:
        msg["Bcc"] = ", ".join(m.formatted() for m in draft.bcc)
    if draft.reply_to:
        msg["Reply-To"] = ", ".join(m.formatted() for m in draft.reply_to)
    msg["Subject"] = draft.subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = f"<{new_id()}@{domain}>"
    if draft.in_reply_to:
        msg["In-Reply-To"] = f"<{draft.in_reply_to}>"
    if draft.references:
        msg["References"] = " ".join(f"<{r}>" for r in draft.references)
    for name, value in draft.headers:
        msg[name] = value
    text, body_html = draft.text, draft.html
    if text is None and body_html is None:
        text = ""
    if text is not None:
        msg.set_content(text)
        if body_html is not None:
            msg.add_alternative(body_html, subtype="html")
    elif body_html is not None:
        msg.set_content(body_html, subtype="html")
    for a in draft.attachments:
        maintype, _, subtype = a.content_type.partition("/")
        msg.add_attachment(
            a.data,
            maintype=maintype,
            subtype=subtype,
            filename=a.filename,
            disposition=a.disposition,
            cid=f"<{a.content_id}>" if a.content_id else None,
        )
    return msg.as_bytes(policy=_POLICY)


def _mailboxes(items: Sequence[dict[str, str]]) -> list[Mailbox]:
    return [Mailbox(str(a.get("name", "")), str(a["email"])) for a in items if a.get("email")]


def _without(boxes: Sequence[Mailbox], *exclude: str) -> tuple[Mailbox, ...]:
    """``boxes`` without the ``exclude`` addresses and without repeats."""
    seen = {e.lower() for e in exclude}
    out = []
    for box in boxes:
        key = box.email.lower()
        if key not in seen:
            seen.add(key)
            out.append(box)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Threading:
    """What a reply or a forward carries over from its original."""

    subject: str
    in_reply_to: str | None
    references: tuple[str, ...]
    to: tuple[Mailbox, ...] = ()
    cc: tuple[Mailbox, ...] = ()


def reply_subject(subject: str) -> str:
    return subject if has_reply_prefix(subject) else f"Re: {subject}".rstrip()


def forward_subject(subject: str) -> str:
    return f"Fwd: {subject}".rstrip()


def references_of(original: MessageRecord) -> tuple[str, ...]:
    chain = list(original.references) or ([original.in_reply_to] if original.in_reply_to else [])
    if original.message_id_header:
        chain.append(original.message_id_header)
    return tuple(dict.fromkeys(r for r in chain if r))


def reply_threading(original: MessageRecord, *, own: str, reply_all: bool) -> Threading:
    """Subject, threading ids and default recipients of a reply to ``original``."""
    sender = _mailboxes([{"name": original.from_name, "email": original.from_email}])
    to_list, cc_list = _mailboxes(original.to), _mailboxes(original.cc)
    if original.direction == "outbound":
        to = _without(to_list, own)
        cc = _without(cc_list, own, *(b.email for b in to)) if reply_all else ()
    else:
        to = _without(_mailboxes(original.reply_to) or sender, own)
        others = [*to_list, *cc_list] if reply_all else []
        cc = _without(others, own, *(b.email for b in to))
    return Threading(
        reply_subject(original.subject),
        original.message_id_header,
        references_of(original),
        to,
        cc,
    )


def forward_threading(original: MessageRecord) -> Threading:
    return Threading(
        forward_subject(original.subject), original.message_id_header, references_of(original)
    )


def forwarded_text(original: MessageRecord, note: str | None) -> str:
    """The forwarding note, then the original's header lines and text."""
    lines = [
        "---------- Forwarded message ---------",
        f"From: {Mailbox(original.from_name, original.from_email).formatted()}",
        f"Date: {format_datetime(original.sent_at or original.received_at)}",
        f"Subject: {original.subject}",
        f"To: {', '.join(m.formatted() for m in _mailboxes(original.to))}",
    ]
    if original.cc:
        lines.append(f"Cc: {', '.join(m.formatted() for m in _mailboxes(original.cc))}")
    body = original.text if original.text is not None else (original.extracted_text or "")
    head = f"{note}\n\n" if note else ""
    return head + "\n".join(lines) + "\n\n" + body


def forwarded_html(original: MessageRecord, note_html: str | None, note_text: str | None) -> str:
    """An HTML forward: the note, then the original (its HTML, else its text, escaped)."""
    quoted = original.html or f"<pre>{html.escape(original.text or '')}</pre>"
    head = note_html or (f"<p>{html.escape(note_text)}</p>" if note_text else "")
    sender = html.escape(Mailbox(original.from_name, original.from_email).formatted())
    return (
        f"{head}<div>---------- Forwarded message ---------<br>From: {sender}<br>"
        f"Subject: {html.escape(original.subject)}</div><blockquote>{quoted}</blockquote>"
    )


_FORBIDDEN = frozenset('<>(),;:"\\[]')


def valid_address(value: str) -> bool:
    """Whether ``value`` is a plausible addr-spec: RFC 5321 §4.5.3.1 sizes, one "@", no spaces,
    controls or specials (quoted local parts are not taken), domain labels of 1 to 63 octets."""
    local, _, domain = value.rpartition("@")
    if not local or not domain or len(value) > 254 or len(local) > 64 or "@" in local:
        return False
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c in _FORBIDDEN for c in value):
        return False
    labels = domain.removesuffix(".").split(".")
    return all(0 < len(label) <= 63 and label[0] != "-" and label[-1] != "-" for label in labels)
