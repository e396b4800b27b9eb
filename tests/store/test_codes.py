"""One-time codes and links: realistic sign-up, sign-in and reset mails in several languages."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailboxkit.store.codes import (
    _CANDIDATE,
    CODE_WORDS,
    MAX_CODES,
    MAX_LINKS,
    NOT_CODE_WORDS,
    Link,
    find_codes,
    find_codes_and_links,
    find_links,
)

# (name, subject, text, expected codes)
CODES = [
    (
        "github",
        "[GitHub] Please verify your device",
        "Hey octocat!\n\nA sign in attempt requires further verification because we did not "
        "recognize your device. To complete the sign in, enter the verification code on the "
        "unrecognized device.\n\nDevice: Firefox on Linux\nVerification code: 482913\n\n"
        "If you did not attempt to sign in to your account, your password may be compromised.",
        ["482913"],
    ),
    (
        "slack, split code",
        "Slack confirmation code: 5KQ-R2X",
        "Confirm your email address\n\nYour confirmation code is below — enter it in your open "
        "browser window and we'll help you get signed in.\n\n123-456\n\n"
        "If you didn't request this email, there's nothing to worry about.",
        ["123456"],
    ),
    (
        "google, G- prefix",
        "G-735091 is your Google verification code",
        "",
        ["735091"],
    ),
    (
        "code on the line after the keyword",
        "Welcome to Acme",
        "Thanks for signing up!\n\nYour one-time password:\n\n    90210417\n\n"
        "It expires in 10 minutes. Questions? Call 0800 555 0199.",
        ["90210417"],
    ),
    (
        "alphanumeric",
        "Your login code",
        "Use this code to log in: K7QX2P\n\nThis code expires at 14:30 UTC on 2026-11-28.",
        ["K7QX2P"],
    ),
    (
        "german",
        "Ihr Bestätigungscode",
        "Hallo Anna,\n\nIhr Bestätigungscode lautet: 304 218\n\nDer Code ist 15 Minuten "
        "gültig. Bestellnummer 88812345 bleibt unverändert.\n\nViele Grüße\nIhr Team",
        ["304218"],
    ),
    (
        "french",
        "Code de vérification",
        "Bonjour,\n\nVoici votre code de vérification : 771204\n\n"
        "Si vous n'êtes pas à l'origine de cette demande, ignorez ce message.\n"
        "© 2026 Exemple SAS, 75002 Paris",
        ["771204"],
    ),
    (
        "spanish",
        "Tu código de verificación",
        "Hola:\n\nTu código de verificación es 5820.\n\nEste código caduca en 5 minutos.",
        ["5820"],
    ),
    (
        "portuguese",
        "Código de segurança",
        "Olá! Use o código 662019 para confirmar seu cadastro.",
        ["662019"],
    ),
    (
        "italian",
        "Il tuo codice",
        "Ciao,\nil tuo codice di verifica è 418273.\nGrazie",
        ["418273"],
    ),
    (
        "polish",
        "Kod weryfikacyjny",
        "Twój kod weryfikacyjny to 902311. Nie udostępniaj go nikomu.",
        ["902311"],
    ),
    (
        "russian",
        "Код подтверждения",
        "Ваш код подтверждения: 551903\nНикому не сообщайте этот код.",  # noqa: RUF001
        ["551903"],
    ),
    (
        "japanese",
        "【Example】認証コードのお知らせ",
        "いつもご利用ありがとうございます。\n認証コード：284710\n有効期限は10分です。",  # noqa: RUF001
        ["284710"],
    ),
    (
        "chinese",
        "验证码",
        "您的验证码是 663920，5分钟内有效。请勿泄露给他人。",  # noqa: RUF001
        ["663920"],
    ),
    (
        "korean",
        "[Example] 인증번호 안내",
        "인증번호 [739201]를 입력해주세요.",
        ["739201"],
    ),
    (
        "turkish",
        "Doğrulama kodu",
        "Doğrulama kodunuz: 118204",
        ["118204"],
    ),
    (
        "no keyword: an order confirmation",
        "Your order 4471 has shipped",
        "Order number: 20261128\nTotal: $129.99\nTracking: 1Z999AA10123456784\n"
        "Call 555-0100 with questions.",
        [],
    ),
    (
        "promo code is not a one-time code",
        "20% off this weekend",
        "Use promo code SAVE2026 at checkout. Offer ends 2026-12-01.",
        [],
    ),
    (
        "code in quoted history is not this message's",
        "Re: Your code",
        "Thanks, it worked!\n\n> Your verification code is 112233",
        [],
    ),
    (
        "short keywords are whole words: a spin, a pinball and tokens name no code",
        "Weekly spin class",
        "Book a spin 482913 now\nPinball night 773311\nTokens left 4455\nYour PIN: 9012",
        ["9012"],
    ),
    (
        "a zip code line is not a code line, unzip is no zip",
        "Your one-time passcode",
        "Zip 90210 delivery\nOne-time code below\n\n553311\nunzip 778899 to install",
        ["553311"],
    ),
    (
        "a year next to the code",
        "Sign-in code",
        "Your sign-in code is 845120 (valid in 2026 only for 10 minutes).",
        ["845120"],
    ),
]


@pytest.mark.parametrize(("name", "subject", "text", "expected"), CODES, ids=[c[0] for c in CODES])
def test_codes(name: str, subject: str, text: str, expected: list[str]) -> None:
    assert list(find_codes(subject, text)) == expected


VERIFY_HTML = """\
<html><body>
<table><tr><td>
<h1>Confirm your email</h1>
<p>Hi Sam, click the button below to verify your address.</p>
<a href="https://app.example.com/verify?token=abc.def-123" class="btn"><span>Verify email</span></a>
<p>Or sign in with a <a href="https://app.example.com/auth/magic/9f8e7d">magic link</a>.</p>
<p><a href="https://app.example.com/pricing">See our plans</a></p>
<p style="font-size:11px"><a href="https://app.example.com/unsubscribe?u=1&amp;t=verify">Unsubscribe</a>
 · <a href="https://example.com/privacy">Privacy</a></p>
</td></tr></table>
</body></html>
"""

# (name, text, html, expected links)
LINKS = [
    (
        "html buttons, not unsubscribe or pricing",
        "",
        VERIFY_HTML,
        [
            Link("https://app.example.com/verify?token=abc.def-123", "Verify email"),
            Link("https://app.example.com/auth/magic/9f8e7d", "magic link"),
        ],
    ),
    (
        "plain text with trailing punctuation",
        "Welcome! Confirm your account: https://example.org/confirm/ab12cd.\n"
        "Docs: https://example.org/docs\n"
        "Unsubscribe: https://example.org/unsubscribe/verify",
        None,
        [Link("https://example.org/confirm/ab12cd", "Welcome! Confirm your account:")],
    ),
    (
        "german reset",
        "Passwort zurücksetzen:\nhttps://konto.example.de/passwort/neu?k=XYZ\n"
        "Vom Newsletter abmelden: https://example.de/abmelden",
        None,
        [Link("https://konto.example.de/passwort/neu?k=XYZ", "")],
    ),
    (
        "french anchor text names the action",
        "",
        '<p><a href="https://exemple.fr/l/3kq">Confirmer mon adresse</a></p>'
        '<p><a href="https://exemple.fr/aide">Aide</a></p>',
        [Link("https://exemple.fr/l/3kq", "Confirmer mon adresse")],
    ),
    (
        "japanese",
        "",
        '<a href="https://example.jp/r/77">メールアドレスを確認する</a>',
        [Link("https://example.jp/r/77", "メールアドレスを確認する")],
    ),
    (
        "invitation",
        "You're invited to join Team Rocket: https://app.example.com/invite/acc-123",
        None,
        [Link("https://app.example.com/invite/acc-123", "You're invited to join Team Rocket:")],
    ),
    (
        "not http",
        "",
        '<a href="mailto:verify@example.com">verify</a><a href="javascript:verify()">x</a>',
        [],
    ),
    (
        "quoted history",
        "Done.\n> Verify: https://example.com/verify/old",
        None,
        [],
    ),
]


@pytest.mark.parametrize(("name", "text", "html", "expected"), LINKS, ids=[c[0] for c in LINKS])
def test_links(name: str, text: str, html: str | None, expected: list[Link]) -> None:
    assert list(find_links(text, html)) == expected


def test_html_only_message_gets_codes_from_its_text() -> None:
    found = find_codes_and_links(
        "Your code",
        None,
        "<p>Your verification code is <b>552301</b></p>"
        '<a href="https://x.example/verify/1">Verify</a>',
    )
    assert found.codes == ("552301",)
    assert found.as_dict() == {
        "codes": ["552301"],
        "links": [{"url": "https://x.example/verify/1", "text": "Verify"}],
    }


def test_duplicates_collapse_and_lists_are_capped() -> None:
    text = "\n".join(f"code {100000 + i} and code 100000" for i in range(20))
    codes = find_codes("", text)
    assert codes[0] == "100000" and len(codes) == MAX_CODES == len(set(codes))
    links = find_links("\n".join(f"verify https://e.example/verify/{i}" for i in range(30)))
    assert len(links) == MAX_LINKS


def test_unclosed_html_is_linear_and_harmless() -> None:
    assert find_links("", "<a " * 50_000) == ()
    assert find_links("", '<a href="https://e.example/verify">Verify') == (
        Link("https://e.example/verify", "Verify"),
    )


@given(st.text(max_size=2000), st.text(max_size=200), st.one_of(st.none(), st.text(max_size=2000)))
def test_never_raises(text: str, subject: str, html: str | None) -> None:
    found = find_codes_and_links(subject, text, html)
    assert len(found.codes) <= MAX_CODES and len(found.links) <= MAX_LINKS
    assert all(link.url.lower().startswith(("http://", "https://")) for link in found.links)


def _every_line(subject: str, text: str) -> list[str]:
    """The rule of the module's notes read literally, line by line: a candidate counts on a line
    naming a code, on the line after one (empty and quoted lines skipped), or on a short line
    when the subject names a code; never on a line naming a promotion or an order."""

    def says_code(line: str) -> bool:
        return CODE_WORDS.search(line.lower()) is not None

    def candidates(line: str) -> list[str]:
        codes = [re.sub(r"[ \-]", "", m.group(1)) for m in _CANDIDATE.finditer(line)]
        return [c for c in codes if not (len(c) == 4 and re.fullmatch(r"(19|20)\d\d", c))]

    def promo(line: str) -> bool:
        return NOT_CODE_WORDS.search(line.lower()) is not None

    subject_ok = says_code(subject) and not promo(subject)
    found = candidates(subject) if subject_ok else []
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(">")]
    for n, line in enumerate(lines):
        before = lines[n - 1] if n else ""
        near = says_code(line) or (says_code(before) and not promo(before))
        if (near or (subject_ok and len(line) <= 12)) and not promo(line):
            found += candidates(line)
    return list(dict.fromkeys(found))[:MAX_CODES]


LINES = st.lists(
    st.sampled_from(
        [
            "",
            "> your code: 111111",
            "Your code is",
            "code: 482913",
            "482 913",
            "G-735091",
            "order id 55555",
            "promo code SAVE20X",
            "call 0800 555 0199",
            "in 2026",
            "K7QX2P",
            "nothing here",
            "   code   ",
            "Verification",
        ]
    ),
    max_size=12,
)


@given(st.sampled_from(["", "Your code", "Welcome", "promo code 12345", "Code 777777"]), LINES)
def test_reading_only_lines_with_digits_finds_what_reading_every_line_finds(
    subject: str, lines: list[str]
) -> None:
    text = "\n".join(lines)
    assert list(find_codes(subject, text)) == _every_line(subject, text)
