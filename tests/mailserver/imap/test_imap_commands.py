"""Table-driven parse tests for every IMAP command, using the RFCs' own examples."""

from __future__ import annotations

import datetime

import pytest

from mailboxkit.mailserver.imap.commands import (
    Append,
    Authenticate,
    Capability,
    Check,
    Close,
    Command,
    Copy,
    Create,
    Delete,
    Enable,
    Examine,
    Expunge,
    Fetch,
    GetQuota,
    GetQuotaRoot,
    Id,
    Idle,
    List,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    Noop,
    Rename,
    Search,
    Select,
    SetQuota,
    StartTls,
    Status,
    Store,
    StoreMode,
    Subscribe,
    Unselect,
    Unsubscribe,
    is_idle_done,
    parse_command,
    parse_sasl_response,
)
from mailboxkit.mailserver.imap.errors import CommandSyntaxError
from mailboxkit.mailserver.imap.fetch import (
    BinarySection,
    BinarySize,
    BodySection,
    FetchItem,
    Partial,
    Section,
    SectionText,
)
from mailboxkit.mailserver.imap.mailbox_commands import (
    AppendMessage,
    ListReturnOption,
    ListSelectOption,
    QResync,
    StatusItem,
)
from mailboxkit.mailserver.imap.responses import serialize
from mailboxkit.mailserver.imap.search import (
    DateField,
    DateRelation,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SearchReturn,
    SearchSequence,
    SearchSize,
    SearchText,
    SizeRelation,
)
from mailboxkit.mailserver.imap.sequence_set import SequenceSet, parse_sequence_set
from mailboxkit.mailserver.imap.wire import Frame, FrameLimits, Framer

LIMITS = FrameLimits(max_line=8192, max_literal=1 << 20, max_command=1 << 21, literal_plus=True)


def frame(data: bytes) -> Frame:
    """Frame exactly one command from ``data`` (continuations are ignored)."""
    framer = Framer(LIMITS)
    framer.feed(data)
    frames = []
    while (event := framer.next_event()) is not None:
        if isinstance(event, Frame):
            frames.append(event)
    assert len(frames) == 1 and framer.buffered == 0
    return frames[0]


def parse(data: bytes) -> Command:
    return parse_command(frame(data))


def seq(text: str) -> SequenceSet:
    return parse_sequence_set(text.encode())


UTC_MINUS_7 = datetime.timezone(datetime.timedelta(hours=-7))
UTC_MINUS_8 = datetime.timezone(datetime.timedelta(hours=-8))

CASES: list[tuple[bytes, Command]] = [
    # RFC 3501 §6.1 - any state
    (b"abcd CAPABILITY\r\n", Capability("abcd")),
    (b"a002 NOOP\r\n", Noop("a002")),
    (b"A023 LOGOUT\r\n", Logout("A023")),
    # RFC 3501 §6.2 - not authenticated
    (b"a002 STARTTLS\r\n", StartTls("a002")),
    (b"A001 AUTHENTICATE GSSAPI\r\n", Authenticate("A001", "GSSAPI")),
    (b"a001 login mrc secret\r\n", Login("a001", "mrc", "secret")),  # RFC 3501 §8
    (b"a001 LOGIN SMITH SESAME\r\n", Login("a001", "SMITH", "SESAME")),
    (b'a1 LOGIN "j\\"o" "p\\\\w"\r\n', Login("a1", 'j"o', "p\\w")),
    # RFC 4959 §3 SASL-IR
    (
        b"a01 AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=\r\n",
        Authenticate("a01", "PLAIN", b"test\0test\0test"),
    ),
    (b"a02 AUTHENTICATE external =\r\n", Authenticate("a02", "EXTERNAL", b"")),
    # RFC 3501 §6.3 - authenticated
    (b"a002 select inbox\r\n", Select("a002", "INBOX")),  # RFC 3501 §8
    (b"A142 SELECT INBOX\r\n", Select("A142", "INBOX")),
    (b"A932 EXAMINE blurdybloop\r\n", Examine("A932", "blurdybloop")),
    (b"A003 CREATE owatagusiam/\r\n", Create("A003", "owatagusiam/")),
    (b"A004 CREATE owatagusiam/blurdybloop\r\n", Create("A004", "owatagusiam/blurdybloop")),
    (b"A683 DELETE blurdybloop\r\n", Delete("A683", "blurdybloop")),
    (b"A683 RENAME blurdybloop sarasoop\r\n", Rename("A683", "blurdybloop", "sarasoop")),
    (b"A002 SUBSCRIBE #news.comp.mail.mime\r\n", Subscribe("A002", "#news.comp.mail.mime")),
    (b"A002 UNSUBSCRIBE #news.comp.mail.mime\r\n", Unsubscribe("A002", "#news.comp.mail.mime")),
    (b'A101 LIST "" ""\r\n', List("A101", "", ("",))),
    (b'A102 LIST #news.comp.mail.misc ""\r\n', List("A102", "#news.comp.mail.misc", ("",))),
    (b"A202 LIST ~/Mail/ %\r\n", List("A202", "~/Mail/", ("%",))),
    (b'A002 LSUB "#news." "comp.mail.*"\r\n', Lsub("A002", "#news.", "comp.mail.*")),
    (
        b"A042 STATUS blurdybloop (UIDNEXT MESSAGES)\r\n",
        Status("A042", "blurdybloop", (StatusItem.UIDNEXT, StatusItem.MESSAGES)),
    ),
    (
        b"A003 APPEND saved-messages (\\Seen) {11}\r\nDate: x\r\n\r\n\r\n",
        Append("A003", "saved-messages", (AppendMessage(b"Date: x\r\n\r\n", ("\\Seen",)),)),
    ),
    (
        b'A4 APPEND INBOX (\\seen $Junk) " 7-Feb-1994 22:43:04 -0800" {2+}\r\nhi\r\n',
        Append(
            "A4",
            "INBOX",
            (
                AppendMessage(
                    b"hi",
                    ("\\Seen", "$Junk"),
                    datetime.datetime(1994, 2, 7, 22, 43, 4, tzinfo=UTC_MINUS_8),
                ),
            ),
        ),
    ),
    # RFC 3502 MULTIAPPEND, RFC 3516 literal8
    (
        b"A5 APPEND Drafts {1+}\r\na (\\Draft) ~{2+}\r\n\x00b\r\n",
        Append(
            "A5", "Drafts", (AppendMessage(b"a"), AppendMessage(b"\x00b", ("\\Draft",), None, True))
        ),
    ),
    # RFC 3501 §6.4 - selected
    (b"FXXZ CHECK\r\n", Check("FXXZ")),
    (b"A341 CLOSE\r\n", Close("A341")),
    (b"A202 EXPUNGE\r\n", Expunge("A202")),
    (
        b"a005 store 12 +flags \\deleted\r\n",
        Store("a005", seq("12"), StoreMode.ADD, ("\\Deleted",)),
    ),
    (
        b"A003 STORE 2:4 +FLAGS (\\Deleted)\r\n",
        Store("A003", seq("2:4"), StoreMode.ADD, ("\\Deleted",)),
    ),
    (b"A4 STORE 1 FLAGS ()\r\n", Store("A4", seq("1"), StoreMode.REPLACE, ())),
    (
        b"A5 STORE 1:* -FLAGS.SILENT \\Seen foo\r\n",
        Store("A5", seq("1:*"), StoreMode.REMOVE, ("\\Seen", "foo"), silent=True),
    ),
    (b"A003 COPY 2:4 MEETING\r\n", Copy("A003", seq("2:4"), "MEETING")),
    (b"A004 UID COPY 2:4 MEETING\r\n", Copy("A004", seq("2:4"), "MEETING", uid=True)),
    # RFC 3501 §6.4.5 / §8 FETCH
    (
        b"a003 fetch 12 full\r\n",
        Fetch(
            "a003",
            seq("12"),
            (
                FetchItem.FLAGS,
                FetchItem.INTERNALDATE,
                FetchItem.RFC822_SIZE,
                FetchItem.ENVELOPE,
                FetchItem.BODY,
            ),
        ),
    ),
    (
        b"a004 fetch 12 body[header]\r\n",
        Fetch("a004", seq("12"), (BodySection(Section(text=SectionText.HEADER)),)),
    ),
    (
        b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])\r\n",
        Fetch(
            "A654",
            seq("2:4"),
            (
                FetchItem.FLAGS,
                BodySection(Section((), SectionText.HEADER_FIELDS, ("DATE", "FROM"))),
            ),
        ),
    ),
    (
        b"A999 UID FETCH 4827313:4828442 FLAGS\r\n",
        Fetch("A999", seq("4827313:4828442"), (FetchItem.FLAGS,), uid=True),
    ),
    (
        b"a FETCH 1 (BODY.PEEK[1.2.HEADER.FIELDS.NOT (A B)]<0.100> BODY[] RFC822.TEXT)\r\n",
        Fetch(
            "a",
            seq("1"),
            (
                BodySection(
                    Section((1, 2), SectionText.HEADER_FIELDS_NOT, ("A", "B")),
                    True,
                    Partial(0, 100),
                ),
                BodySection(),
                FetchItem.RFC822_TEXT,
            ),
        ),
    ),
    (
        b"a FETCH 1 BODY[3.MIME]\r\n",
        Fetch("a", seq("1"), (BodySection(Section((3,), SectionText.MIME)),)),
    ),
    (
        b"a FETCH 1 BODY[4.2.TEXT]\r\n",
        Fetch("a", seq("1"), (BodySection(Section((4, 2), SectionText.TEXT)),)),
    ),
    (b"a FETCH 1 BODY[1]\r\n", Fetch("a", seq("1"), (BodySection(Section((1,))),))),
    # RFC 3516 BINARY
    (
        b"t FETCH 1 (BINARY.PEEK[1.2]<0.100> BINARY[] BINARY.SIZE[1])\r\n",
        Fetch(
            "t",
            seq("1"),
            (BinarySection((1, 2), True, Partial(0, 100)), BinarySection(), BinarySize((1,))),
        ),
    ),
    # RFC 3501 §6.4.4 SEARCH
    (
        b'A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"\r\n',
        Search(
            "A282",
            SearchAnd(
                (
                    SearchFlag("\\Flagged"),
                    SearchDate(DateField.INTERNAL, DateRelation.SINCE, datetime.date(1994, 2, 1)),
                    SearchNot(SearchHeader("FROM", b"Smith")),
                )
            ),
        ),
    ),
    (
        b'A283 SEARCH TEXT "string not in mailbox"\r\n',
        Search("A283", SearchText(b"string not in mailbox", True)),
    ),
    (
        b"A284 SEARCH CHARSET UTF-8 TEXT {6}\r\nXXXXXX\r\n",
        Search("A284", SearchText(b"XXXXXX", True), charset="UTF-8"),
    ),
    (
        b"a UID SEARCH UID 1:* BODY x\r\n",
        Search(
            "a", SearchAnd((SearchSequence(seq("1:*"), True), SearchText(b"x", False))), uid=True
        ),
    ),
    (
        b"a SEARCH 2:4,7 LARGER 100\r\n",
        Search(
            "a",
            SearchAnd(
                (
                    SearchSequence(seq("2:4,7")),
                    SearchSize(
                        SizeRelation.LARGER,
                        100,
                    ),
                )
            ),
        ),
    ),
    # RFC 4731 ESEARCH
    (
        b"A285 UID SEARCH RETURN (MIN MAX) 1:5000\r\n",
        Search(
            "A285",
            SearchSequence(seq("1:5000")),
            uid=True,
            return_options=(SearchReturn.MIN, SearchReturn.MAX),
        ),
    ),
    (
        b"A286 SEARCH RETURN () SEEN\r\n",
        Search("A286", SearchFlag("\\Seen"), return_options=(SearchReturn.ALL,)),
    ),
    (
        b"A287 SEARCH RETURN (COUNT) CHARSET us-ascii UNSEEN\r\n",
        Search(
            "A287",
            SearchFlag("\\Seen", False),
            charset="US-ASCII",
            return_options=(SearchReturn.COUNT,),
        ),
    ),
    # RFC 7162 CONDSTORE / QRESYNC
    (b"A160 EXAMINE INBOX (CONDSTORE)\r\n", Examine("A160", "INBOX", condstore=True)),
    (
        b"A142 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n",
        Select(
            "A142", "INBOX", qresync=QResync(67890007, 20050715194045000, seq("41,43:211,214:541"))
        ),
    ),
    (
        b"B142 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000,9990:9999 "
        b"15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997)))\r\n",
        Select(
            "B142",
            "INBOX",
            qresync=QResync(
                67890007,
                90060115194045000,
                seq("1:29997"),
                seq("5000,7500,9000,9990:9999"),
                seq(
                    "15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997"
                ),
            ),
        ),
    ),
    (
        b"C1 SELECT INBOX (QRESYNC (1 2 (1:3 10:12)) CONDSTORE)\r\n",
        Select("C1", "INBOX", True, QResync(1, 2, None, seq("1:3"), seq("10:12"))),
    ),
    (
        b"s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)\r\n",
        Fetch("s100", seq("1:*"), (FetchItem.FLAGS,), True, 12345),
    ),
    (
        b"s100 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n",
        Fetch("s100", seq("300:500"), (FetchItem.FLAGS,), True, 12345, True),
    ),
    (b"a FETCH 1:* (MODSEQ)\r\n", Fetch("a", seq("1:*"), (FetchItem.MODSEQ,))),
    (
        b"a103 UID STORE 6,4,8 (UNCHANGEDSINCE 12121230045) +FLAGS.SILENT (\\Deleted)\r\n",
        Store("a103", seq("6,4,8"), StoreMode.ADD, ("\\Deleted",), True, True, 12121230045),
    ),
    (
        b"a104 STORE * (UNCHANGEDSINCE 0) FLAGS $MDNSent\r\n",
        Store("a104", seq("*"), StoreMode.REPLACE, ("$MDNSent",), unchanged_since=0),
    ),
    (
        b'a SEARCH MODSEQ "/flags/\\\\draft" all 620162338\r\n',
        Search("a", SearchModSeq(620162338, "\\Draft", "all")),
    ),
    (
        b"t SEARCH OR NOT MODSEQ 720162338 LARGER 50000\r\n",
        Search(
            "t",
            SearchOr(
                SearchNot(SearchModSeq(720162338)),
                SearchSize(
                    SizeRelation.LARGER,
                    50000,
                ),
            ),
        ),
    ),
    (
        b"A042 STATUS blurdybloop (UIDNEXT MESSAGES HIGHESTMODSEQ)\r\n",
        Status(
            "A042",
            "blurdybloop",
            (StatusItem.UIDNEXT, StatusItem.MESSAGES, StatusItem.HIGHESTMODSEQ),
        ),
    ),
    # RFC 4315 UIDPLUS, RFC 6851 MOVE, RFC 3691 UNSELECT, RFC 2177 IDLE
    (b"A003 UID EXPUNGE 3000:3002\r\n", Expunge("A003", seq("3000:3002"))),
    (b"a MOVE 1:3 Archive\r\n", Move("a", seq("1:3"), "Archive")),
    (b"a UID MOVE 42:69 foo\r\n", Move("a", seq("42:69"), "foo", uid=True)),
    (b"A342 UNSELECT\r\n", Unselect("A342")),
    (b"A001 IDLE\r\n", Idle("A001")),
    # RFC 5161 ENABLE, RFC 2342 NAMESPACE, RFC 2971 ID, RFC 9208 QUOTA
    (b"t2 ENABLE CONDSTORE X-GOOD-IDEA\r\n", Enable("t2", ("CONDSTORE", "X-GOOD-IDEA"))),
    (b"a ENABLE qresync utf8=accept\r\n", Enable("a", ("QRESYNC", "UTF8=ACCEPT"))),
    (b"A001 NAMESPACE\r\n", Namespace("A001")),
    (
        b'a023 ID ("name" "sodr" "version" "19.34" "vendor" "Pink Floyd Music Limited")\r\n',
        Id(
            "a023", (("name", "sodr"), ("version", "19.34"), ("vendor", "Pink Floyd Music Limited"))
        ),
    ),
    (b"a024 ID NIL\r\n", Id("a024", None)),
    (b'a025 ID ("os" NIL)\r\n', Id("a025", (("os", None),))),
    (b'G1 GETQUOTA ""\r\n', GetQuota("G1", "")),
    (b"G2 GETQUOTAROOT INBOX\r\n", GetQuotaRoot("G2", "INBOX")),
    (b'S1 SETQUOTA "" (STORAGE 512)\r\n', SetQuota("S1", "", (("STORAGE", 512),))),
    (b"S2 SETQUOTA User ()\r\n", SetQuota("S2", "User", ())),
    # RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS, RFC 6154 SPECIAL-USE
    (
        b'A02 LIST (SUBSCRIBED) "" "*"\r\n',
        List("A02", "", ("*",), frozenset({ListSelectOption.SUBSCRIBED}), extended=True),
    ),
    (
        b'A03 LIST () "" "%" RETURN (CHILDREN)\r\n',
        List(
            "A03", "", ("%",), return_options=frozenset({ListReturnOption.CHILDREN}), extended=True
        ),
    ),
    (
        b'A05 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)\r\n',
        List(
            "A05",
            "",
            ("%",),
            frozenset({ListSelectOption.SUBSCRIBED, ListSelectOption.RECURSIVEMATCH}),
            frozenset({ListReturnOption.CHILDREN}),
            extended=True,
        ),
    ),
    (
        b'A06 LIST () "" ("INBOX" "Drafts" "Sent/%")\r\n',
        List("A06", "", ("INBOX", "Drafts", "Sent/%"), extended=True),
    ),
    (
        b'A01 LIST "" % RETURN (STATUS (MESSAGES UNSEEN))\r\n',
        List(
            "A01", "", ("%",), status_items=(StatusItem.MESSAGES, StatusItem.UNSEEN), extended=True
        ),
    ),
    (
        b't1 LIST "" % RETURN (SPECIAL-USE)\r\n',
        List(
            "t1",
            "",
            ("%",),
            return_options=frozenset({ListReturnOption.SPECIAL_USE}),
            extended=True,
        ),
    ),
    (
        b't3 LIST (SPECIAL-USE) "" "*"\r\n',
        List("t3", "", ("*",), frozenset({ListSelectOption.SPECIAL_USE}), extended=True),
    ),
    (
        b"t1 CREATE MySpecial (USE (\\Drafts \\sent))\r\n",
        Create("t1", "MySpecial", ("\\Drafts", "\\Sent")),
    ),
    # Names: modified UTF-7 decoded, INBOX case-insensitive, literals
    (b"a SELECT Entw&APw-rfe\r\n", Select("a", "Entwürfe")),
    (b'a SELECT "~peter/mail/&U,BTFw-/&ZeVnLIqe-"\r\n', Select("a", "~peter/mail/台北/日本語")),
    (b"a SELECT {5+}\r\niNbOx\r\n", Select("a", "INBOX")),
    (b"a SELECT &-\r\n", Select("a", "&")),
    (b'a SELECT "Entw\xc3\xbcrfe"\r\n', Select("a", "Entwürfe")),
]


@pytest.mark.parametrize(
    ("wire", "expected"), CASES, ids=[c[0][:40].decode("latin-1") for c in CASES]
)
def test_parse(wire: bytes, expected: Command) -> None:
    assert parse(wire) == expected


def test_rfc3501_login_with_two_literals() -> None:
    """RFC 3501 §7.5: the userid and password each sent as a synchronizing literal."""
    assert parse(b"A001 LOGIN {11}\r\nFRED FOOBAR {7}\r\nfat man\r\n") == Login(
        "A001", "FRED FOOBAR", "fat man"
    )


def test_login_repr_hides_password() -> None:
    assert "secret" not in repr(parse(b"a LOGIN user secret\r\n"))


ERRORS: list[tuple[bytes, str | None]] = [
    (b"\r\n", None),
    (b"+a NOOP\r\n", None),
    (b"a\r\n", "a"),
    (b"a  NOOP\r\n", "a"),
    (b"a FOO\r\n", "a"),
    (b"a NOOP extra\r\n", "a"),
    (b"a NOOP \r\n", "a"),
    (b"a LOGIN user\r\n", "a"),
    (b'a LOGIN "unterminated\r\n', "a"),
    (b'a LOGIN "bad\\escape" x\r\n', "a"),
    (b'a LOGIN "\xff" x\r\n', "a"),
    (b"a LOGIN {3+}\r\n\xff\xfe\xfd x\r\n", "a"),
    (b"a LOGIN {3+}\r\nn\x00l x\r\n", "a"),
    (b"a LOGIN ~{3+}\r\nabc x\r\n", "a"),
    (b"a AUTHENTICATE PLAIN !!!\r\n", "a"),
    (b"a SELECT\r\n", "a"),
    (b"a SELECT &Jjo\r\n", "a"),
    (b"a SELECT &AGE-\r\n", "a"),
    (b"a SELECT (x)\r\n", "a"),
    (b"a SELECT INBOX (FOO)\r\n", "a"),
    (b"a SELECT INBOX ()\r\n", "a"),
    (b"a SELECT INBOX (CONDSTORE CONDSTORE)\r\n", "a"),
    (b"a SELECT INBOX (QRESYNC (0 1))\r\n", "a"),
    (b"a SELECT INBOX (QRESYNC (1 0))\r\n", "a"),
    (b"a SELECT INBOX (QRESYNC (1 2 1:*))\r\n", "a"),
    (b"a SELECT INBOX (QRESYNC (1 2 ))\r\n", "a"),
    (b"a CREATE x (FOO (\\Drafts))\r\n", "a"),
    (b"a CREATE x (USE (Drafts))\r\n", "a"),
    (b'a LIST (RECURSIVEMATCH) "" *\r\n', "a"),
    (b'a LIST (BOGUS) "" *\r\n', "a"),
    (b'a LIST "" * RETURN (BOGUS)\r\n', "a"),
    (b'a LIST "" * FOO ()\r\n', "a"),
    (b"a STATUS x ()\r\n", "a"),
    (b"a STATUS x (BOGUS)\r\n", "a"),
    (b'a APPEND x "message"\r\n', "a"),
    (b"a APPEND x (\\Seen)\r\n", "a"),
    (b'a APPEND x "31-Feb-2020 00:00:00 +0000" {1+}\r\na\r\n', "a"),
    (b'a APPEND x "1-Feb-2020 00:00:00 +0000" {1+}\r\na\r\n', "a"),
    (b'a APPEND x " 1-Feb-2020 24:00:00 +0000" {1+}\r\na\r\n', "a"),
    (b'a APPEND x " 1-Feb-2020 00:00:00 +0060" {1+}\r\na\r\n', "a"),
    (b"a FETCH 1 ()\r\n", "a"),
    (b"a FETCH 1 (ALL)\r\n", "a"),
    (b"a FETCH 0 FLAGS\r\n", "a"),
    (b"a FETCH 01 FLAGS\r\n", "a"),
    (b"a FETCH 1: FLAGS\r\n", "a"),
    (b"a FETCH 4294967296 FLAGS\r\n", "a"),
    (b"a FETCH 1 BOGUS\r\n", "a"),
    (b"a FETCH 1 BODY[MIME]\r\n", "a"),
    (b"a FETCH 1 BODY[1.]\r\n", "a"),
    (b"a FETCH 1 BODY[0]\r\n", "a"),
    (b"a FETCH 1 BODY[HEADER.FIELDS ()]\r\n", "a"),
    (b"a FETCH 1 BODY[HEADER.FIELDS (A:B)]\r\n", "a"),
    (b"a FETCH 1 BODY[]<0.0>\r\n", "a"),
    (b"a FETCH 1 BODY.PEEK\r\n", "a"),
    (b"a FETCH 1 BINARY[TEXT]\r\n", "a"),
    (b"a FETCH 1 FLAGS (VANISHED)\r\n", "a"),
    (b"a FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)\r\n", "a"),
    (b"a UID FETCH 1 FLAGS (CHANGEDSINCE 0)\r\n", "a"),
    (b"a UID FETCH 1 FLAGS (CHANGEDSINCE 9223372036854775808)\r\n", "a"),
    (b"a UID FETCH 1 FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)\r\n", "a"),
    (b"a STORE 1 FLAGS\r\n", "a"),
    (b"a STORE 1 XFLAGS (\\Seen)\r\n", "a"),
    (b"a STORE 1 +FLAGS (\\*)\r\n", "a"),
    (b"a STORE 1 (FOO 1) FLAGS (\\Seen)\r\n", "a"),
    (b"a COPY 1\r\n", "a"),
    (b"a UID\r\n", "a"),
    (b"a UID NOOP\r\n", "a"),
    (b"a UID EXPUNGE\r\n", "a"),
    (b"a SEARCH\r\n", "a"),
    (b"a SEARCH BOGUS\r\n", "a"),
    (b"a SEARCH SINCE 1-Foo-2000\r\n", "a"),
    (b"a SEARCH ON 30-Feb-2000\r\n", "a"),
    (b"a SEARCH OR SEEN\r\n", "a"),
    (b"a SEARCH (SEEN\r\n", "a"),
    (b"a SEARCH ()\r\n", "a"),
    (b'a SEARCH MODSEQ "/foo" all 1\r\n', "a"),
    (b'a SEARCH MODSEQ "/flags/\\\\seen" some 1\r\n', "a"),
    (b"a SEARCH " + b"NOT " * 100 + b"ALL\r\n", "a"),
    (b"a SEARCH " + b"(" * 100 + b"ALL" + b")" * 100 + b"\r\n", "a"),
    (b"a ENABLE\r\n", "a"),
    (b"a ID\r\n", "a"),
    (b'a ID ("name")\r\n', "a"),
    (b'a ID (NIL "x")\r\n', "a"),
    (b'a ID ("' + b"x" * 31 + b'" "v")\r\n', "a"),
    (b"a ID (" + b'"k" "v" ' * 30 + b'"k" "v")\r\n', "a"),
]


@pytest.mark.parametrize(("wire", "tag"), ERRORS, ids=[e[0][:40].decode("latin-1") for e in ERRORS])
def test_syntax_errors_are_bad_with_tag(wire: bytes, tag: str | None) -> None:
    with pytest.raises(CommandSyntaxError) as raised:
        parse(wire)
    assert raised.value.tag == tag
    prefix = b"* BAD " if tag is None else tag.encode() + b" BAD "
    assert serialize(raised.value.response()).startswith(prefix)


def test_idle_done() -> None:
    assert is_idle_done(frame(b"DONE\r\n"))
    assert is_idle_done(frame(b"done\r\n"))
    assert not is_idle_done(frame(b"a NOOP\r\n"))


def test_sasl_response() -> None:
    assert parse_sasl_response(frame(b"dGVzdA==\r\n"), "a") == b"test"
    assert parse_sasl_response(frame(b"\r\n"), "a") == b""
    assert parse_sasl_response(frame(b"*\r\n"), "a") is None
    with pytest.raises(CommandSyntaxError) as raised:
        parse_sasl_response(frame(b"not base64!\r\n"), "a7")
    assert serialize(raised.value.response()) == b"a7 BAD Invalid base64\r\n"
