"""PII masking: each type masked exactly, look-alikes from technical text kept."""

from __future__ import annotations

import random
import re
import sys

import detect_secrets.plugins
import polars as pl
import pytest

from llama_assets.curate import pii
from llama_assets.curate.pii import PII_TYPES, TOKENS, mask_pii, mask_pii_batch
from tests.assets.test_planted_corpus import PII as PLANTED_PII
from tests.landing import GERMAN, TOPIC_KEYS, topic


def _counts(**found: int) -> dict[str, int]:
    return {kind: found.get(kind, 0) for kind in PII_TYPES}


LIBRARY_SECRETS = [
    # (detect-secrets plugin, a value its denylist matches): every plugin pii.py uses.
    ("AWSKeyDetector", "AKIAIOSFODNN7EXAMPLE"),
    ("AWSKeyDetector", 'aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"'),
    (
        "AzureStorageKeyDetector",
        "AccountKey=" + ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT5" * 3)[:86] + "==",
    ),
    ("BasicAuthDetector", "https://jane:hunter22@example.org/repo"),
    ("GitHubTokenDetector", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("GitLabTokenDetector", "glpat-abcdefghij0123456789"),
    ("GitLabTokenDetector", "GR1348941abcdefghij0123456789"),
    ("GitLabTokenDetector", "glcbt-1f_abcdefghij0123456789"),
    ("GitLabTokenDetector", "glimt-abcdefghij0123456789abcde"),
    ("GitLabTokenDetector", "glptt-" + "a1" * 20),
    ("GitLabTokenDetector", "glagent-" + "a1" * 25),
    ("GitLabTokenDetector", "gloas-" + "a1" * 32),
    (
        "JwtTokenDetector",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    ),
    ("MailchimpDetector", "0123456789abcdef0123456789abcdef-us12"),
    ("NpmDetector", "//registry.npmjs.org/:_authToken=npm_abcdef1234567890"),
    ("OpenAIDetector", "sk-proj-abcdefghij1234567890T3BlbkFJabcdefghij1234567890"),
    ("PypiTokenDetector", "pypi-AgEIcHlwaS5vcmc" + "Ab1-_" * 14),
    ("PypiTokenDetector", "pypi-AgENdGVzdC5weXBpLm9yZw" + "Ab1-_" * 14),
    ("SendGridDetector", "SG.abcdefghijklmnopqrstuv.abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"),
    ("SlackDetector", "xoxb-123456789012-1234567890123-abcdefghijklmnop"),
    ("SlackDetector", "https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXX"),
    ("SquareOAuthDetector", "sq0csp-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"),
    ("StripeDetector", "rk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("TelegramBotTokenDetector", "123456789:AAEhBP0av28pdcxJ1bsgWwVbSfdJvYo4wT8"),
    ("TwilioKeyDetector", "AC0123456789abcdef0123456789abcdef"),
    ("TwilioKeyDetector", "SK0123456789abcdef0123456789abcdef"),
    ("DiscordBotTokenDetector", "MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.abcdefghijklmnopqrstuvwxyz0"),
]

MASKED = [
    (
        "Mail jane.doe+news@mail.example.co.uk or bob@example.org.",
        "Mail [EMAIL] or [EMAIL].",
        _counts(email=2),
    ),
    (
        "Call +44 20 7946 0958, (415) 555-2671, 415.555.2671 or 1-800-555-0199 now",
        "Call [PHONE], [PHONE], [PHONE] or [PHONE] now",
        _counts(phone=4),
    ),
    (
        "Visa 4111 1111 1111 1111, Amex 3782-822463-10005, plain 5555555555554444.",
        "Visa [CREDIT_CARD], Amex [CREDIT_CARD], plain [CREDIT_CARD].",
        _counts(credit_card=3),
    ),
    (
        "Host 93.184.216.34 and 2606:4700:4700::1111 connected.",
        "Host [IP_ADDRESS] and [IP_ADDRESS] connected.",
        _counts(ip_address=2),
    ),
    (
        "Pay to GB82 WEST 1234 5698 7654 32 or DE89370400440532013000 today.",
        "Pay to [IBAN] or [IBAN] today.",
        _counts(iban=2),
    ),
    ("SSN 123-45-6789 on file.", "SSN [NATIONAL_ID] on file.", _counts(national_id=1)),
    (
        "aws AKIAIOSFODNN7EXAMPLE key sk-proj-abcDEF1234567890ghijKLMN and "
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789 done",
        "aws [SECRET] key [SECRET] and [SECRET] done",
        _counts(secret=3),
    ),
    (
        'api_key = "a8f5f167f44f4964e6c998dee827110c"\nSECRET_KEY: x9Yb2Lq7Zt4Wp1Rk8Vn3\n'
        "token=abcd1234efgh5678ijkl",
        'api_key = "[SECRET]"\nSECRET_KEY: [SECRET]\ntoken=[SECRET]',
        _counts(secret=3),
    ),
    (
        # Private addresses name hosts in someone's network (the sample corpus's staging
        # server); a prefix with host bits set, or /32, is a host too.
        "staging server is 10.20.30.40, db 192.168.1.20, vpn fd12:3456:789a::1, "
        "host 93.184.216.34/32 and 10.1.2.3/8.",
        "staging server is [IP_ADDRESS], db [IP_ADDRESS], vpn [IP_ADDRESS], "
        "host [IP_ADDRESS]/32 and [IP_ADDRESS]/8.",
        _counts(ip_address=5),
    ),
    (
        # "server" ends in "ver", which once read as a version number's context.
        "The DNS server 8.8.8.8, the driver 93.184.216.34, however 1.1.1.1; ver. 1.2.3.4",
        "The DNS server [IP_ADDRESS], the driver [IP_ADDRESS], however [IP_ADDRESS]; ver. 1.2.3.4",
        _counts(ip_address=3),
    ),
    (
        "postgres://admin:S3cretPw@db.example.org:5432/app and "
        "Server=tcp:db;User Id=sa;Password=myPass123; and Data Source=x;Pwd=abc",
        "postgres://admin:[SECRET]@db.example.org:5432/app and "
        "Server=tcp:db;User Id=sa;Password=[SECRET]; and Data Source=x;Pwd=[SECRET]",
        _counts(secret=3),
    ),
    (
        "Slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx, GitHub "
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789ABCD, OpenAI "
        "sk-proj-abcdefghij1234567890T3BlbkFJabcdefghij1234567890, Stripe "
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc, GitLab glpat-abcdefghij0123456789.",
        "Slack [SECRET], GitHub [SECRET], OpenAI [SECRET], Stripe [SECRET], GitLab [SECRET].",
        _counts(secret=5),
    ),
    (
        'aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"',
        'aws_secret_access_key = "[SECRET]"',
        _counts(secret=1),
    ),
    (
        "A truncated paste:\n-----BEGIN OPENSSH PRIVATE KEY-----\n"
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\nAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
        "The rest of the page.",
        "A truncated paste:\n[SECRET]\nThe rest of the page.",
        _counts(secret=1),
    ),
    (
        "before\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1c7+9z5Pad7OejecsQ0bu\n"
        "-----END RSA PRIVATE KEY-----\nafter",
        "before\n[SECRET]\nafter",
        _counts(secret=1),
    ),
]


@pytest.mark.parametrize(("text", "masked", "counts"), MASKED)
def test_masks_each_type(text: str, masked: str, counts: dict[str, int]) -> None:
    assert mask_pii(text) == (masked, counts)


KEPT = [
    "Python 3.11.7 was released in 2023; see PEP 8 and issue #12345.",
    "sys.maxsize is 0x7fffffffffffffff; 0x7fffffff fits in 32 bits.",
    "Version 1.2.3.4 of the tool, release 10.0.19041.1",
    "Bind to 127.0.0.1, 0.0.0.0, 169.254.0.1, 224.0.0.1, ::1 and fe80::1.",
    "Documentation ranges 192.0.2.1, 203.0.113.9 and 2001:db8::1; networks 11.0.0.0/16, "
    "10.0.0.0/8 and fd00::/8; netmask 255.255.255.0.",
    "Connect with Password=hunter2 (no connection string) or http://example.org:8080/path.",
    "Slices a[::2], a[1:2:3] and times 12:30:45 or MAC 00:1A:2B:3C:4D:5E.",
    "Timestamp 1700000000 and 1234567890123456 (not Luhn-valid).",
    "Dates 2024-01-31, ISBN 978-3-16-148410-0, ratio 1.5e-10, range 100-200.",
    "token = tokenize.generate_tokens(readline)",
    'password = "hunter2"',
    "secret = secrets.token_hex(16)",
    "scikit-learn risk-assessment task-1234567890abcdefghijklmn",
    "Decorators like @property and @functools.cache, user@localhost",
    "The 0-9 digits, 555-1234, 12-34-5678 and 000-12-3456.",
]


@pytest.mark.parametrize("text", KEPT)
def test_keeps_technical_look_alikes(text: str) -> None:
    assert mask_pii(text) == (text, _counts())


@pytest.mark.parametrize(("plugin", "value"), LIBRARY_SECRETS)
def test_masks_what_detect_secrets_finds(plugin: str, value: str) -> None:
    """Each value is one the library's plugin reports; none of what it reports survives."""
    detector = getattr(
        next(m for m in vars(detect_secrets.plugins).values() if hasattr(m, plugin)), plugin
    )()
    found = set(detector.analyze_string(f"  {value}  "))
    assert found, f"{plugin} does not report {value!r}"
    masked, counts = mask_pii(f"Planted: {value} here.")
    assert counts["secret"] == 1, masked
    assert not any(secret in masked for secret in found), masked


@pytest.mark.parametrize("header", pii.PRIVATE_KEY_HEADERS)
def test_masks_every_private_key_detect_secrets_knows(header: str) -> None:
    body = "MIIEpAIBAAKCAQEA1c7+9z5Pad7OejecsQ0buXYZ\nAAAAB3NzaC1yc2EAAAADAQABAAABAQ"
    if header.startswith("BEGIN"):
        label = header.removeprefix("BEGIN ")
        for text in (
            f"-----{header}-----\n{body}\n-----END {label}-----",
            f"-----{header}-----\n{body}",  # truncated: no END line
        ):
            assert mask_pii(f"Key:\n{text}\nDone.") == ("Key:\n[SECRET]\nDone.", _counts(secret=1))
    else:  # PuTTY's key file
        text = f"{header}: ssh-rsa\nEncryption: none\nPublic-Lines: 2\n{body}\nPrivate-MAC: 0a1b"
        assert mask_pii(f"Key:\n{text}\nDone.") == ("Key:\n[SECRET]\nDone.", _counts(secret=1))


def test_counts_have_every_type() -> None:
    masked, counts = mask_pii("")
    assert masked == ""
    assert counts == dict.fromkeys(PII_TYPES, 0)
    assert list(counts) == [
        "email", "phone", "credit_card", "ip_address", "iban", "national_id", "secret",
    ]  # fmt: skip


MIXED = (
    "Contact ana@example.com (+1 415 555 2671) from 8.8.4.4.\n"
    ">>> hex(0x7fffffff)\n'0x7fffffff'\n"
    "Card 4012-8888-8888-1881 expires."
)


def test_mixed_document() -> None:
    masked, counts = mask_pii(MIXED)
    assert masked == (
        "Contact [EMAIL] ([PHONE]) from [IP_ADDRESS].\n"
        ">>> hex(0x7fffffff)\n'0x7fffffff'\n"
        "Card [CREDIT_CARD] expires."
    )
    assert counts == _counts(email=1, phone=1, ip_address=1, credit_card=1)


# -- mask_pii_batch: equal to mask_pii on every text -------------------------

# A replacement can enable a later match (here `]` now precedes `+1`, which the
# phone pattern's lookbehind accepts) or sit inside one (PEM around a secret).
ENABLED_BY_A_REPLACEMENT = [
    (
        "93.184.216.34+1 415 555 2671",
        "[IP_ADDRESS][PHONE]",
        _counts(ip_address=1, phone=1),
    ),
    (
        "-----BEGIN PRIVATE KEY-----\ntoken=abcd1234efgh5678ijkl\n-----END PRIVATE KEY-----",
        "[SECRET]",
        _counts(secret=2),
    ),
]

PLANTED = [
    topic(3) + "\n\nContact: " + ", ".join(f"{k} {v}" for k, v in PLANTED_PII.items()) + ".",
    topic(4) + "\n\nMail jane.doe@example.org today.",
]

PII_PIECES = [
    "jane.doe+news@mail.example.co.uk",
    "bob@example.org",
    "a_b%c@sub-domain.example.museum",
    "+44 20 7946 0958",
    "+1 (415) 555-2671",
    "(415) 555-2671",
    "(415)555-2671",
    "415.555.2671",
    "1-800-555-0199",
    "+4930123456",
    "4111 1111 1111 1111",
    "3782-822463-10005",
    "5555555555554444",
    "6011111111111117",
    "93.184.216.34",
    "8.8.4.4",
    "10.20.30.40",
    "192.168.0.1",
    "172.16.5.4/12",
    "2606:4700:4700::1111",
    "2a00:1450:4001:82b::200e",
    "GB82 WEST 1234 5698 7654 32",
    "DE89370400440532013000",
    "FR1420041010050500013M02606",
    "123-45-6789",
    "078-05-1120",
    "\u0661\u0662\u0663-\u0664\u0665-\u0666\u0667\u0668\u0669",  # Arabic-Indic digits
    "AKIAIOSFODNN7EXAMPLE",
    "ASIAY34FZKBOKMUTVV7A",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
    "sk-proj-abcDEF1234567890ghijKLMN",
    "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk\n"
    "-----END EC PRIVATE KEY-----",
    'api_key = "a8f5f167f44f4964e6c998dee827110c"',
    "SECRET_KEY: x9Yb2Lq7Zt4Wp1Rk8Vn3",
    "token=abcd1234efgh5678ijkl",
    "my-auth-token : 'Zx81kLm2Qp93Rt45Vw'",
    "pa\u017f\u017fword=abcd1234efgh5678ijkl",  # long s, which (?i) pairs with s
    "api_\u212aEY\x1c=\x1cabcd1234efgh5678ijkl",  # Kelvin sign; \x1c is \s in Python only
    "PASSWD='s3cr3t-v4lue-0123456789'",
    *(value for _, value in LIBRARY_SECRETS),
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
    "Server=db;Password=myPass123;",
    "PuTTY-User-Key-File-2: ssh-rsa\nEncryption: none\nAAAAB3NzaC1yc2EAAAADAQABAAABAQ",
    "Data Source=x;Pwd=abc",
    "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI",
]

NEAR_MISSES = [
    "3.11.7",
    "1.2.3.4",
    "release 10.0.19041.1",
    "version 93.184.216.34",
    "2024-01-31",
    "0x7fffffff",
    "deadbeef:cafe",
    "11.0.0.0/16",
    "2606:4700::/32",
    "sk-abc",
    "ghp_short",
    "token=abc",
    "token = tokenize.generate_tokens(readline)",
    "AKIA1234",
    "12:30:45",
    "a[::2]",
    "978-3-16-148410-0",
    "555-1234",
    "000-12-3456",
    "666-12-3456",
    "1700000000",
    "1234567890123456",
    "user@localhost",
    "@property",
    "+1 23",
    "GB82 WEST",
    "192.0.2.1",
    "10.0.0.0/8",
    "::1",
    "fe80::1",
    "-----BEGIN PUBLIC KEY-----",
    "Password=abc",
    "user:pass",
    "eyJhbGciOiJub25lIn0",
    *TOKENS.values(),
]

WORDS = [
    *["the", "of", "and", "to", "in", "is", "that", "data", "value", "returns", "a", "list"],
    *["Straße", "naïve", "Ελληνικά", "日本語"],
    "\u0661\u0662\u0663",  # Arabic-Indic digits
    "\uff12\uff10\uff12\uff14",  # fullwidth digits
    "\U0001f642",
    "\u017f",
    "\u212a",
    "\u0131",
    "\u0130",
    "\u00a0",
    "\u2003",
    "\x1c",
]

GLUE = [" ", " ", " ", "", "\n", ". ", ", ", "-", "@", ":", "/", "=", '"', "(", ")", "+", "_", "."]

FRAGMENT_CHARS = "0123456789abcdefABCDEFxyzXYZ.:-+@ _()/='\"[]~%\u017f\u212a\u0131\u0661\uff12\n"


def _generated(n: int, seed: int = 0) -> list[str]:
    """Prose, PII, near misses and random fragments of PII-like characters, glued at random
    (often directly, so that matches abut each other and the tokens that replace them)."""
    rng = random.Random(seed)

    def piece() -> str:
        r = rng.random()
        if r < 0.5:
            return rng.choice(WORDS)
        if r < 0.65:
            return rng.choice(PII_PIECES)
        if r < 0.8:
            return rng.choice(NEAR_MISSES)
        return "".join(rng.choices(FRAGMENT_CHARS, k=rng.randint(1, 24)))

    texts = ["", " ", "\n"]
    while len(texts) < n:
        parts = [piece() for _ in range(rng.randint(0, 30))]
        texts.append("".join(p + rng.choice(GLUE) for p in parts))
    return texts


GENERATED = _generated(3000)

EXAMPLES = [
    *(text for text, _, _ in MASKED),
    *KEPT,
    MIXED,
    "",
    *(text for text, _, _ in ENABLED_BY_A_REPLACEMENT),
]


@pytest.mark.parametrize(("text", "masked", "counts"), ENABLED_BY_A_REPLACEMENT)
def test_masks_what_a_replacement_enables(text: str, masked: str, counts: dict) -> None:
    assert mask_pii(text) == (masked, counts)


@pytest.mark.parametrize(
    "texts",
    [
        pytest.param(EXAMPLES, id="examples"),
        pytest.param(PLANTED + [GERMAN] + [topic(i) for i in range(len(TOPIC_KEYS))], id="real"),
        pytest.param(GENERATED, id="generated"),
        pytest.param([], id="empty"),
    ],
)
def test_batch_equals_per_document(texts: list[str]) -> None:
    assert mask_pii_batch(texts) == [mask_pii(text) for text in texts]


def test_generated_texts_have_every_type() -> None:
    """The generated corpus exercises every type (else the equality above proves little)."""
    results = [mask_pii(text) for text in GENERATED]
    assert all(sum(counts[kind] for _, counts in results) > 0 for kind in PII_TYPES)
    assert sum(masked == text for (masked, _), text in zip(results, GENERATED, strict=True)) > 100


@pytest.fixture(scope="module")
def every_char() -> str:
    """Every code point a Python str can hold, but the surrogates."""
    return "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)


def test_rust_digits_contain_pythons(every_char: str) -> None:
    digits = re.findall(r"\d", every_char)
    assert len(digits) > 600
    assert pl.Series(digits).str.contains(r"^\d$").all()


def test_batch_equals_per_document_on_unicode_variants(every_char: str) -> None:
    r"""Every character Python's \d, \s and IGNORECASE accept where a prefilter has a class."""
    digits = [f"SSN 1{d}3-45-6789." for d in re.findall(r"\d", every_char)]
    spaces = [f"token{s}={s}abcd1234efgh5678ijkl" for s in re.findall(r"\s", every_char)]
    values = [f"token={c * 16}1a" for c in re.findall(r"(?i)[A-Za-z0-9_\-+/=.~]", every_char)]
    names = [
        f"{name[:i]}{c}{name[i + 1 :]}=abcd1234efgh5678ijkl"
        for name in ("api_key", "secret_key", "access_token", "auth_token", "password", "passwd")
        for i, letter in enumerate(name)
        if letter.isalpha()
        for c in re.findall("(?i)" + letter, every_char)
    ]
    covered = "".join(spaces + values + names)
    assert all(c in covered for c in "\x1c\u0131\u0130\u017f\u212a")
    expected = [mask_pii(text) for text in digits + spaces + values + names]
    assert [c["national_id"] for _, c in expected[: len(digits)]] == [1] * len(digits)
    assert [c["secret"] for _, c in expected[len(digits) :]] == [1] * (len(expected) - len(digits))
    assert mask_pii_batch(digits + spaces + values + names) == expected


def test_batch_equals_per_document_with_lone_surrogates() -> None:
    texts = ["a\ud800 jane@example.org", "\udfff", "SSN 123-45-6789\ud834", "plain"]
    assert mask_pii_batch(texts) == [mask_pii(text) for text in texts]
    assert mask_pii_batch(texts)[0][1]["email"] == 1


def test_prefilters_match_every_match_of_their_pattern() -> None:
    """Even matches that fail validation: a prefilter may only widen its pattern."""
    texts = EXAMPLES + PLANTED + GENERATED
    for detector in pii._DETECTORS:
        found = [m.group() for text in texts for m in detector.pattern.finditer(text)]
        assert found, detector.pattern.pattern
        assert pl.Series(found, dtype=pl.String).str.contains(detector.prefilter).all()


@pytest.mark.parametrize("token", TOKENS.values())
def test_no_pattern_matches_into_a_token(token: str) -> None:
    """Why the batch needs no re-check after a replacement (see `mask_pii_batch`)."""
    contexts = ["", " ", "1", "12", "a", "Z9", "@", ".", ":", "-", "+1", "ab:", "12.", "=", "_"]
    contexts += ["x@", "@b.co", "415 ", "+44 20", "GB82", "AKIA", "token=", "1234-"]
    for detector in pii._DETECTORS:
        if detector.pattern is pii._PEM_PRIVATE_KEY:
            continue  # its `.*?` spans anything, but between markers that cannot overlap a token
        for before in contexts:
            for after in contexts:
                text = before + token + after
                for m in detector.pattern.finditer(text):
                    assert m.end() <= len(before) or m.start() >= len(before) + len(token), text


class _NoPythonRegex:
    def sub(self, *args: object) -> str:
        raise AssertionError("a Python pattern ran")


def test_batch_skips_python_regex_without_a_prefilter_hit(monkeypatch) -> None:
    monkeypatch.setattr(
        pii,
        "_DETECTORS",
        tuple(detector._replace(pattern=_NoPythonRegex()) for detector in pii._DETECTORS),
    )
    texts = ["", "Plain prose: sk-abc, 0x7fff and Python 3.11.", "Stra\u00dfe \U0001f642 @ +1 -"]
    assert mask_pii_batch(texts) == [(text, _counts()) for text in texts]
    with pytest.raises(AssertionError, match="a Python pattern ran"):
        mask_pii_batch(["Mail bob@example.org"])
