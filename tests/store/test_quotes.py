"""Reply extraction and HTML-to-text: realistic replies from the common mail clients."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailboxkit.store.htmltext import html_to_text
from mailboxkit.store.quotes import extract_reply

GMAIL = """\
Sounds good, see you at 12.

On Thu, Jan 4, 2024 at 9:15 AM Alice Example <alice@example.com> wrote:

> Lunch on Friday?
>
> Alice
"""

GMAIL_WRAPPED = """\
Sounds good.

On Thu, Jan 4, 2024 at 9:15 AM Alice Example-Longname <alice.example-longname@example.com>
wrote:

> Lunch on Friday?
"""

GMAIL_WRAPPED_THREE = """\
Sounds good.

On Thu, Jan 4, 2024 at 9:15 AM Alice Example-Longname via Team
<team+noreply-1234567890abcdef@groups.example.com>
wrote:
> Lunch on Friday?
"""

OUTLOOK_RULE = """\
Hi Alice,

Friday is fine.

Bob

________________________________
From: Alice Example <alice@example.com>
Sent: Thursday, January 4, 2024 9:15 AM
To: Bob <bob@example.com>
Subject: Lunch

Lunch on Friday?
"""

OUTLOOK_ORIGINAL = """\
Friday is fine.

-----Original Message-----
From: Alice Example [mailto:alice@example.com]
Sent: Thursday, January 04, 2024 9:15 AM
To: Bob
Subject: Lunch

Lunch on Friday?
"""

OUTLOOK_HEADER_BLOCK = """\
Friday is fine.

From: Alice Example <alice@example.com>
Date: Thursday, 4 January 2024 at 09:15
To: Bob <bob@example.com>
Subject: Lunch

Lunch on Friday?
"""

OUTLOOK_MOBILE = """\
Friday is fine.

Get Outlook for iOS<https://aka.ms/o0ukef>
________________________________
From: Alice Example <alice@example.com>
Sent: Thursday, January 4, 2024 9:15:02 AM
To: Bob <bob@example.com>
Subject: Lunch

Lunch on Friday?
"""

APPLE_MAIL = """\
Works for me!

Sent from my iPhone

> On Jan 4, 2024, at 09:15, Alice Example <alice@example.com> wrote:
>
> Lunch on Friday?
"""

APPLE_MAIL_DESKTOP = """\
Works for me!

> On 4 Jan 2024, at 09:15, Alice Example <alice@example.com> wrote:
>
> Lunch on Friday?
>
"""

THUNDERBIRD = """\
Works for me.

--
Bob Example
Example Corp

On 04.01.24 09:15, Alice Example wrote:
> Lunch on Friday?
"""

THUNDERBIRD_BOTTOM = """\
On 04.01.24 09:15, Alice Example wrote:
> Lunch on Friday?
>
> Alice

Works for me.

--\x20
Bob
"""

INTERLEAVED = """\
Alice Example wrote:
> Lunch on Friday?
Yes.
> Where?
The usual place.
"""

GERMAN = """\
Passt mir gut.

Von meinem iPhone gesendet

Am 04.01.2024 um 09:15 schrieb Alice Example <alice@example.com>:

> Mittagessen am Freitag?
"""

GERMAN_OUTLOOK = """\
Passt.

-----Ursprüngliche Nachricht-----
Von: Alice Example <alice@example.com>
Gesendet: Donnerstag, 4. Januar 2024 09:15
An: Bob
Betreff: Mittagessen
"""

FRENCH = """\
Ça me va.

Le jeu. 4 janv. 2024 à 09:15, Alice Example <alice@example.com> a\u00a0écrit\u00a0:

> Déjeuner vendredi ?
"""

SPANISH = """\
Me parece bien.

Enviado desde mi iPhone

El jue, 4 ene 2024 a las 9:15, Alice Example (<alice@example.com>)
escribió:

> ¿Almuerzo el viernes?
"""

FORWARD = """\
FYI, see below.

---------- Forwarded message ---------
From: Alice Example <alice@example.com>
Date: Thu, Jan 4, 2024 at 9:15 AM
Subject: Lunch
To: Bob <bob@example.com>

Lunch on Friday?
"""

APPLE_FORWARD = """\
FYI

Begin forwarded message:

From: Alice Example <alice@example.com>
Subject: Lunch
Date: January 4, 2024 at 09:15:00 GMT+1
To: Bob <bob@example.com>

Lunch on Friday?
"""

NOT_HISTORY = """\
On the other hand, we could meet on Monday.
From: the kitchen, with love.
Date: whenever suits you.
"""

ALL_QUOTED = """\
> Lunch on Friday?
> Alice
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GMAIL, "Sounds good, see you at 12."),
        (GMAIL_WRAPPED, "Sounds good."),
        (GMAIL_WRAPPED_THREE, "Sounds good."),
        (OUTLOOK_RULE, "Hi Alice,\n\nFriday is fine.\n\nBob"),
        (OUTLOOK_ORIGINAL, "Friday is fine."),
        (OUTLOOK_HEADER_BLOCK, "Friday is fine."),
        (OUTLOOK_MOBILE, "Friday is fine."),
        (APPLE_MAIL, "Works for me!"),
        (APPLE_MAIL_DESKTOP, "Works for me!"),
        (THUNDERBIRD, "Works for me."),
        (THUNDERBIRD_BOTTOM, "Works for me."),
        (INTERLEAVED, INTERLEAVED.strip()),
        (GERMAN, "Passt mir gut."),
        (GERMAN_OUTLOOK, "Passt."),
        (FRENCH, "Ça me va."),
        (SPANISH, "Me parece bien."),
        (FORWARD, FORWARD.strip()),
        (APPLE_FORWARD, APPLE_FORWARD.strip()),
        (NOT_HISTORY, NOT_HISTORY.strip()),
        (ALL_QUOTED, ALL_QUOTED.strip()),
        ("Sent from my iPhone", "Sent from my iPhone"),
        ("-- \nonly a signature", "-- \nonly a signature"),
        ("  plain text, no history  \r\n", "plain text, no history"),
        ("", ""),
        ("line one\r\nline two\r\n> quoted", "line one\nline two"),
    ],
    ids=lambda v: v.split("\n")[0][:30] if isinstance(v, str) else None,
)
def test_extract_reply(text: str, expected: str) -> None:
    assert extract_reply(text) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([*"ab >-_:\n\r", "On 1 x wrote:", "From:", "Sent:", "-- "])).map(
        "".join
    )
)
def test_extract_reply_keeps_content(text: str) -> None:
    reply = extract_reply(text)
    assert bool(reply) == bool(text.strip())
    lines = set(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    assert all(
        line in lines or line.strip() in {x.strip() for x in lines} for line in reply.split("\n")
    )


# --- HTML ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markup", "expected"),
    [
        ("<p>One</p><p>Two</p>", "One\n\nTwo"),
        ("a<br>b<br/><br>c", "a\nb\n\nc"),
        ("<div>x</div><div>y</div>", "x\ny"),
        ("Fish &amp; chips &lt;3 &nbsp;&eacute;&#233;&#x41;", "Fish & chips <3 ééA"),
        ("<b>bold</b>   <i>and\n  spaced</i>", "bold and spaced"),
        (
            "<head><title>T</title><style>p{}</style></head><body>Hi<script>x()</script></body>",
            "Hi",
        ),
        ("<head><meta charset=utf-8><body>head never closed", "head never closed"),
        ('<span style="display: none">preheader</span>Visible', "Visible"),
        ("<ul><li>a</li><li>b</li></ul><ol><li>c</li><li>d</li></ol>", "- a\n- b\n\n1. c\n2. d"),
        ("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>", "a b\nc"),
        ("<pre>  keep\n    this</pre>", "keep\n    this"),
        ('<a href="https://example.com/v?t=1">Verify</a>', "Verify (https://example.com/v?t=1)"),
        ('<a href="https://example.com">https://example.com</a>', "https://example.com"),
        ('<a href="mailto:a@example.com">Alice</a>', "Alice"),
        ("<p>Reply</p><blockquote>Quoted<br>text</blockquote>", "Reply\n\n> Quoted\n> text"),
        ("<blockquote>a<blockquote>b</blockquote></blockquote>", "> a\n>\n>> b"),
        ("<hr>", "_" * 32),
        ('<div class="gmail_signature">Bob</div>', "--\nBob"),
        ("<![if !supportLists]>1.<![endif]>item", "1.item"),
        ("<![foo[ x ]]>after", "after"),
        ("text <b", "text"),
        ("text <a href='unclosed>more", "text more"),
        ("a <!-- unclosed comment", "a"),
        ("Tom &amp Jerry", "Tom & Jerry"),
        ("x</p>y</br>z", "x\n\ny\nz"),
        ("", ""),
    ],
)
def test_html_to_text(markup: str, expected: str) -> None:
    assert html_to_text(markup) == expected


GMAIL_HTML = """\
<div dir="ltr">Sounds good!<div><br></div><div>Bob</div></div><br>
<div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Thu, Jan 4, 2024 at 9:15 AM
Alice &lt;<a href="mailto:alice@example.com">alice@example.com</a>&gt; wrote:<br></div>
<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex">Lunch on Friday?</blockquote>
</div>
"""

OUTLOOK_HTML = """\
<html><head><style>p.MsoNormal{margin:0}</style></head><body>
<div class="WordSection1"><p class="MsoNormal">Friday is fine.<o:p></o:p></p>
<div id="Signature"><p class="MsoNormal">Bob</p></div>
<div id="appendonsend"></div>
<hr style="display:inline-block;width:98%" tabindex="-1">
<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri, sans-serif"><b>From:</b> Alice
&lt;alice@example.com&gt;<br><b>Sent:</b> Thursday, January 4, 2024 9:15 AM<br>
<b>To:</b> Bob &lt;bob@example.com&gt;<br><b>Subject:</b> Lunch</font><div>&nbsp;</div></div>
<div><p>Lunch on Friday?</p></div></div></body></html>
"""

APPLE_HTML = """\
<html><body dir="auto">Works for me!<br><br><div dir="ltr">Sent from my iPhone</div>
<div dir="ltr"><br><blockquote type="cite">On Jan 4, 2024, at 09:15, Alice
&lt;alice@example.com&gt; wrote:<br><br></blockquote></div>
<blockquote type="cite"><div dir="ltr">Lunch on Friday?</div></blockquote></body></html>
"""

THUNDERBIRD_HTML = """\
<html><body><p>Works for me.</p>
<div class="moz-signature">-- <br>Bob</div>
<div class="moz-cite-prefix">On 04.01.24 09:15, Alice wrote:<br></div>
<blockquote type="cite" cite="mid:m0@example.com">Lunch on Friday?</blockquote></body></html>
"""


@pytest.mark.parametrize(
    ("markup", "expected"),
    [
        (GMAIL_HTML, "Sounds good!\n\nBob"),
        (OUTLOOK_HTML, "Friday is fine.\n\nBob"),
        (APPLE_HTML, "Works for me!"),
        (THUNDERBIRD_HTML, "Works for me."),
    ],
)
def test_extract_reply_from_html(markup: str, expected: str) -> None:
    assert extract_reply(html_to_text(markup)) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "<",
                ">",
                "</",
                "<!--",
                "-->",
                "<![",
                "]]>",
                "<a href='",
                "'",
                "<p>",
                "<br>",
                "<blockquote>",
                "</blockquote>",
                "<script>",
                "</script>",
                "&amp",
                "&#",
                "x",
                " ",
                "<pre>",
                "\n",
                "<div class=gmail_quote>",
                "</div>",
                "<?",
                "<!DOCTYPE",
            ]
        )
        | st.text(max_size=5)
    ).map("".join)
)
def test_html_to_text_never_raises(markup: str) -> None:
    text = html_to_text(markup)
    assert isinstance(text, str)
    extract_reply(text)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("unit", ["<a ", "</", "<?", "<!", "<a b='x' ", "<![if "])
def test_html_to_text_is_linear_on_unclosed_tags_cve_2025_6069(unit: str) -> None:
    """CPython 3.11's HTMLParser.close() is quadratic on these (minutes for 300 KB)."""
    html_to_text("<p>before</p>" + unit * 100_000)
