"""Byte-exact serialization of response values, using the RFCs' example responses."""

from __future__ import annotations

import datetime

import pytest

from mailboxkit.mailserver.imap.body_structure import (
    Address,
    Disposition,
    Envelope,
    MultiPart,
    SinglePart,
    body_structure_value,
    envelope_value,
)
from mailboxkit.mailserver.imap.errors import CommandRejected, CommandSyntaxError, FramingError
from mailboxkit.mailserver.imap.fetch import (
    BinarySection,
    BinarySize,
    BodySection,
    FetchItem,
    Partial,
    Section,
    SectionText,
    response_name,
)
from mailboxkit.mailserver.imap.responses import (
    AppendUid,
    Atom,
    BadCharset,
    Binary,
    CapabilityCode,
    CapabilityData,
    Code,
    Condition,
    Continuation,
    CopyUid,
    EnabledData,
    ESearchData,
    Exists,
    Expunged,
    FetchData,
    FlagsData,
    IdData,
    ListData,
    Modified,
    Namespace,
    NamespaceData,
    NumberCode,
    NumberCodeName,
    PermanentFlags,
    QuotaData,
    QuotaRootData,
    Recent,
    Response,
    SearchData,
    StatusData,
    StatusResponse,
    Vanished,
    encode_string,
    encode_value,
    format_date_time,
    serialize,
)

OK, NO, BAD = Condition.OK, Condition.NO, Condition.BAD
PDT = datetime.timezone(datetime.timedelta(hours=-7))

CASES: list[tuple[Response, bytes]] = [
    (StatusResponse(OK, "LOGIN completed", tag="a001"), b"a001 OK LOGIN completed"),
    (
        StatusResponse(Condition.PREAUTH, "IMAP4rev1 server logged in as Smith"),
        b"* PREAUTH IMAP4rev1 server logged in as Smith",
    ),
    (
        StatusResponse(Condition.BYE, "Autologout; idle for too long"),
        b"* BYE Autologout; idle for too long",
    ),
    (
        StatusResponse(OK, "Predicted next UID", code=NumberCode(NumberCodeName.UIDNEXT, 4392)),
        b"* OK [UIDNEXT 4392] Predicted next UID",
    ),
    (
        StatusResponse(OK, "UIDs valid", code=NumberCode(NumberCodeName.UIDVALIDITY, 3857529045)),
        b"* OK [UIDVALIDITY 3857529045] UIDs valid",
    ),
    (
        StatusResponse(OK, "Limited", code=PermanentFlags(("\\Deleted", "\\Seen", "\\*"))),
        b"* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited",
    ),
    (
        StatusResponse(OK, "SELECT completed", tag="A142", code=Code.READ_WRITE),
        b"A142 OK [READ-WRITE] SELECT completed",
    ),
    (StatusResponse(NO, "failed", tag="A3", code=Code.TRYCREATE), b"A3 NO [TRYCREATE] failed"),
    (
        StatusResponse(OK, "Highest", code=NumberCode(NumberCodeName.HIGHESTMODSEQ, 715194045007)),
        b"* OK [HIGHESTMODSEQ 715194045007] Highest",
    ),
    (
        StatusResponse(OK, "No permanent modsequences", code=Code.NOMODSEQ),
        b"* OK [NOMODSEQ] No permanent modsequences",
    ),
    (
        StatusResponse(OK, "Previous mailbox is now closed", code=Code.CLOSED),
        b"* OK [CLOSED] Previous mailbox is now closed",
    ),
    (
        StatusResponse(OK, "Conditional STORE failed", tag="d105", code=Modified((7, 9))),
        b"d105 OK [MODIFIED 7,9] Conditional STORE failed",
    ),
    (
        StatusResponse(OK, "APPEND completed", tag="A003", code=AppendUid(38505, (3955,))),
        b"A003 OK [APPENDUID 38505 3955] APPEND completed",
    ),
    (
        StatusResponse(
            OK, "Done", tag="A004", code=CopyUid(38505, (304, 319, 320), (3956, 3957, 3958))
        ),
        b"A004 OK [COPYUID 38505 304,319:320 3956:3958] Done",
    ),
    (
        StatusResponse(
            OK, "Pre-login", code=CapabilityCode(("IMAP4rev1", "LITERAL+", "AUTH=PLAIN"))
        ),
        b"* OK [CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN] Pre-login",
    ),
    (
        StatusResponse(NO, "Authentication failed", tag="a", code=Code.AUTHENTICATIONFAILED),
        b"a NO [AUTHENTICATIONFAILED] Authentication failed",
    ),
    (
        StatusResponse(NO, "Charset", tag="a", code=BadCharset(("US-ASCII", "UTF-8"))),
        b"a NO [BADCHARSET (US-ASCII UTF-8)] Charset",
    ),
    (StatusResponse(NO, "x", tag="a", code=Code.OVERQUOTA), b"a NO [OVERQUOTA] x"),
    (QuotaData("", (("STORAGE", 10, 512),)), b'* QUOTA "" (STORAGE 10 512)'),  # RFC 9208 §5.1
    (QuotaRootData("INBOX", ("",)), b'* QUOTAROOT "INBOX" ""'),  # RFC 9208 §5.2
    (QuotaRootData("INBOX", ()), b'* QUOTAROOT "INBOX"'),
    (StatusResponse(BAD, "bad\r\nname \x00\xe9", tag="a"), b"a BAD bad  name ??"),
    (Continuation("Ready for additional command text"), b"+ Ready for additional command text"),
    (Continuation(), b"+ "),
    (Exists(23), b"* 23 EXISTS"),
    (Recent(5), b"* 5 RECENT"),
    (Expunged(44), b"* 44 EXPUNGE"),
    (Vanished((41, 43, *range(44, 117))), b"* VANISHED 41,43:116"),
    (Vanished((405, 407, 408), earlier=True), b"* VANISHED (EARLIER) 405,407:408"),
    (
        FlagsData(("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")),
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
    ),
    (
        CapabilityData(("IMAP4rev1", "STARTTLS", "AUTH=GSSAPI", "LOGINDISABLED")),
        b"* CAPABILITY IMAP4rev1 STARTTLS AUTH=GSSAPI LOGINDISABLED",
    ),
    (EnabledData(("CONDSTORE", "QRESYNC")), b"* ENABLED CONDSTORE QRESYNC"),
    (EnabledData(()), b"* ENABLED"),
    (ListData(("\\Noselect",), "/", "~/Mail/foo"), b'* LIST (\\Noselect) "/" "~/Mail/foo"'),
    (ListData((), None, "INBOX"), b'* LIST () NIL "INBOX"'),
    (
        ListData(("\\HasNoChildren", "\\Drafts"), ".", "Entwürfe"),
        b'* LIST (\\HasNoChildren \\Drafts) "." "Entw&APw-rfe"',
    ),
    (ListData((), "\\", "a\\b"), b'* LIST () "\\\\" "a\\\\b"'),
    (
        ListData(("\\NonExistent",), "/", "Foo", child_info=("SUBSCRIBED",)),
        b'* LIST (\\NonExistent) "/" "Foo" ("CHILDINFO" ("SUBSCRIBED"))',
    ),
    (ListData((), "/", "Renamed", old_name="Old"), b'* LIST () "/" "Renamed" ("OLDNAME" ("Old"))'),
    (ListData((), "/", "Sent", lsub=True), b'* LSUB () "/" "Sent"'),
    (
        StatusData("blurdybloop", (("MESSAGES", 231), ("UIDNEXT", 44292))),
        b'* STATUS "blurdybloop" (MESSAGES 231 UIDNEXT 44292)',
    ),
    (StatusData("INBOX", (("APPENDLIMIT", None),)), b'* STATUS "INBOX" (APPENDLIMIT NIL)'),
    (SearchData((2, 84, 882)), b"* SEARCH 2 84 882"),
    (SearchData(()), b"* SEARCH"),
    (SearchData((2, 5, 6), modseq=917162500), b"* SEARCH 2 5 6 (MODSEQ 917162500)"),
    (ESearchData("A282", False, minimum=2, count=3), b'* ESEARCH (TAG "A282") MIN 2 COUNT 3'),
    (
        ESearchData("A285", True, minimum=7, maximum=3800),
        b'* ESEARCH (TAG "A285") UID MIN 7 MAX 3800',
    ),
    (ESearchData("A284", False, all=(2, 10, 11)), b'* ESEARCH (TAG "A284") ALL 2,10:11'),
    (ESearchData("A1", True, count=0), b'* ESEARCH (TAG "A1") UID COUNT 0'),
    (ESearchData(None, False, all=(1,), modseq=5), b"* ESEARCH ALL 1 MODSEQ 5"),
    (NamespaceData((Namespace("", "/"),)), b'* NAMESPACE (("" "/")) NIL NIL'),
    (
        NamespaceData(
            (Namespace("", "/"),),
            (Namespace("~", "/"),),
            (Namespace("#shared/", "/"), Namespace("#public/", "/")),
        ),
        b'* NAMESPACE (("" "/")) (("~" "/")) (("#shared/" "/")("#public/" "/"))',
    ),
    (
        IdData((("name", "Cyrus"), ("version", "1.5"), ("os", None))),
        b'* ID ("name" "Cyrus" "version" "1.5" "os" NIL)',
    ),
    (IdData(None), b"* ID NIL"),
    (
        FetchData(
            12,
            (
                ("FLAGS", (Atom("\\Seen"),)),
                ("INTERNALDATE", datetime.datetime(1996, 7, 17, 2, 44, 25, tzinfo=PDT)),
                ("RFC822.SIZE", 4286),
                ("UID", 3),
                ("MODSEQ", (12121231000,)),
            ),
        ),
        b'* 12 FETCH (FLAGS (\\Seen) INTERNALDATE "17-Jul-1996 02:44:25 -0700" '
        b"RFC822.SIZE 4286 UID 3 MODSEQ (12121231000))",
    ),
    (FetchData(2, (("BODY[HEADER]", b"ab\r\nc"),)), b"* 2 FETCH (BODY[HEADER] {5}\r\nab\r\nc)"),
    (FetchData(3, (("BODY[]<0>", None),)), b"* 3 FETCH (BODY[]<0> NIL)"),
    (
        FetchData(4, (("BINARY[1]", Binary(b"\x00\x01")),)),
        b"* 4 FETCH (BINARY[1] ~{2}\r\n\x00\x01)",
    ),
]


@pytest.mark.parametrize(
    ("response", "wire"), CASES, ids=[c[1][:40].decode("latin-1") for c in CASES]
)
def test_serialize(response: Response, wire: bytes) -> None:
    assert serialize(response) == wire + b"\r\n"


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (b"", b'""'),
        (b'a"b\\c', b'"a\\"b\\\\c"'),
        (b"line\r\nbreak", b"{11}\r\nline\r\nbreak"),
        (b"nul\x00", b"{4}\r\nnul\x00"),
        ("grüß", b"{6}\r\ngr\xc3\xbc\xc3\x9f"),
        (b"x" * 1025, b"{1025}\r\n" + b"x" * 1025),
        (b"x" * 1024, b'"' + b"x" * 1024 + b'"'),
    ],
)
def test_strings_quoted_or_literal(value: str | bytes, wire: bytes) -> None:
    assert encode_value(value) == wire


def test_value_errors() -> None:
    with pytest.raises(TypeError):
        encode_value(True)
    with pytest.raises(ValueError, match="unsigned"):
        encode_value(-1)
    with pytest.raises(ValueError, match="timezone"):
        format_date_time(datetime.datetime(2020, 1, 1))
    with pytest.raises(ValueError, match="never tagged"):
        StatusResponse(Condition.BYE, "x", tag="a")
    with pytest.raises(ValueError, match="empty"):
        StatusResponse(Condition.OK, "")
    with pytest.raises(ValueError, match="differ"):
        CopyUid(1, (1, 2), (3,))


def test_format_date_time_zones() -> None:
    east = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    moment = datetime.datetime(2024, 2, 3, 4, 5, 6, tzinfo=east)
    assert format_date_time(moment) == "03-Feb-2024 04:05:06 +0530"
    assert encode_string(b"\\") == b'"\\\\"'


def test_errors_render_their_response() -> None:
    assert (
        serialize(CommandSyntaxError("a1", "Unknown command").response())
        == b"a1 BAD Unknown command\r\n"
    )
    assert serialize(CommandSyntaxError(None, "Missing tag").response()) == b"* BAD Missing tag\r\n"
    rejected = CommandRejected("a2", Condition.NO, Code.TOOBIG, "Literal too big")
    assert serialize(rejected.response()) == b"a2 NO [TOOBIG] Literal too big\r\n"
    assert serialize(FramingError("Bye").response()) == b"* BYE Bye\r\n"


@pytest.mark.parametrize(
    ("attribute", "name"),
    [
        (FetchItem.RFC822_SIZE, "RFC822.SIZE"),
        (BodySection(), "BODY[]"),
        (BodySection(Section(), True, Partial(0, 1500)), "BODY[]<0>"),
        (
            BodySection(Section((1, 2), SectionText.HEADER_FIELDS, ("DATE", "From")), True),
            "BODY[1.2.HEADER.FIELDS (DATE From)]",
        ),
        (
            BodySection(Section((), SectionText.HEADER_FIELDS_NOT, ("X(Y)",))),
            'BODY[HEADER.FIELDS.NOT ("X(Y)")]',
        ),
        (BodySection(Section((3,), SectionText.MIME)), "BODY[3.MIME]"),
        (BinarySection((1, 2), True, Partial(100, 5)), "BINARY[1.2]<100>"),
        (BinarySize((1,)), "BINARY.SIZE[1]"),
        (BinarySize(), "BINARY.SIZE[]"),
    ],
)
def test_fetch_response_names(
    attribute: FetchItem | BodySection | BinarySection | BinarySize, name: str
) -> None:
    assert response_name(attribute) == name


GRAY = Address(b"Terry Gray", b"gray", b"cac.washington.edu")


def test_rfc3501_envelope() -> None:
    """RFC 3501 §8 example ENVELOPE (address lists have no SP between addresses)."""
    envelope = Envelope(
        date=b"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)",
        subject=b"IMAP4rev1 WG mtg summary and minutes",
        from_=(GRAY,),
        to=(Address(None, b"imap", b"cac.washington.edu"),),
        cc=(
            Address(None, b"minutes", b"CNRI.Reston.VA.US"),
            Address(b"John Klensin", b"KLENSIN", b"MIT.EDU"),
        ),
        message_id=b"<B27397-0100000@cac.washington.edu>",
    )
    assert encode_value(envelope_value(envelope)) == (
        b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'((NIL NIL "imap" "cac.washington.edu")) '
        b'((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) '
        b'NIL NIL "<B27397-0100000@cac.washington.edu>")'
    )


def test_rfc3501_body_and_bodystructure() -> None:
    """RFC 3501 §7.4.2 / §8 examples."""
    plain = SinglePart("TEXT", "PLAIN", 3028, (("CHARSET", "US-ASCII"),), lines=92)
    assert body_structure_value(plain, extensible=False).data == (
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)'
    )
    mixed = MultiPart(
        (
            SinglePart("TEXT", "PLAIN", 1152, (("CHARSET", "US-ASCII"),), lines=23),
            SinglePart(
                "TEXT",
                "PLAIN",
                4554,
                (("CHARSET", "US-ASCII"), ("NAME", "cc.diff")),
                "<960723163407.20117h@cac.washington.edu>",
                "Compiler diff",
                "BASE64",
                lines=73,
            ),
        ),
        "MIXED",
    )
    assert body_structure_value(mixed, extensible=False).data == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)'
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") '
        b'"<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) "MIXED")'
    )


def test_bodystructure_extension_data_and_rfc822() -> None:
    attachment = SinglePart(
        "APPLICATION",
        "PDF",
        100,
        encoding="BASE64",
        disposition=Disposition("attachment", (("filename", "a.pdf"),)),
        language=("en", "fr"),
    )
    inner = SinglePart("TEXT", "PLAIN", 5, lines=1, language=("de",))
    message = SinglePart(
        "MESSAGE", "RFC822", 300, lines=10, envelope=Envelope(subject=b"Hi"), body=inner
    )
    mixed = MultiPart((attachment, message), "MIXED", (("BOUNDARY", "xyz"),), location="loc")
    assert body_structure_value(mixed, extensible=True).data == (
        b'(("APPLICATION" "PDF" NIL NIL NIL "BASE64" 100 NIL ("attachment" ("filename" "a.pdf"))'
        b' ("en" "fr") NIL)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 300 (NIL "Hi" NIL NIL NIL NIL NIL NIL NIL NIL) '
        b'("TEXT" "PLAIN" NIL NIL NIL "7BIT" 5 1 NIL NIL "de" NIL) 10 NIL NIL NIL NIL)'
        b' "MIXED" ("BOUNDARY" "xyz") NIL NIL "loc")'
    )
    with pytest.raises(ValueError, match="rfc822"):
        body_structure_value(SinglePart("MESSAGE", "RFC822", 1, body=inner), extensible=True)
    with pytest.raises(ValueError, match="at least one"):
        body_structure_value(MultiPart((), "MIXED"), extensible=True)
