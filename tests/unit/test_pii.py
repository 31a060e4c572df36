"""PII masking: each type masked exactly, look-alikes from technical text kept."""

from __future__ import annotations

import pytest

from llama_assets.curate.pii import PII_TYPES, mask_pii


def _counts(**found: int) -> dict[str, int]:
    return {kind: found.get(kind, 0) for kind in PII_TYPES}


@pytest.mark.parametrize(
    ("text", "masked", "counts"),
    [
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
            "before\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1c7+9z5Pad7OejecsQ0bu\n"
            "-----END RSA PRIVATE KEY-----\nafter",
            "before\n[SECRET]\nafter",
            _counts(secret=1),
        ),
    ],
)
def test_masks_each_type(text: str, masked: str, counts: dict[str, int]) -> None:
    assert mask_pii(text) == (masked, counts)


@pytest.mark.parametrize(
    "text",
    [
        "Python 3.11.7 was released in 2023; see PEP 8 and issue #12345.",
        "sys.maxsize is 0x7fffffffffffffff; 0x7fffffff fits in 32 bits.",
        "Version 1.2.3.4 of the tool, release 10.0.19041.1",
        "Bind to 127.0.0.1, 0.0.0.0, 192.168.1.20, 10.0.0.7 or ::1 and fe80::1.",
        "Documentation ranges 192.0.2.1 and 2001:db8::1; network 11.0.0.0/16.",
        "Slices a[::2], a[1:2:3] and times 12:30:45 or MAC 00:1A:2B:3C:4D:5E.",
        "Timestamp 1700000000 and 1234567890123456 (not Luhn-valid).",
        "Dates 2024-01-31, ISBN 978-3-16-148410-0, ratio 1.5e-10, range 100-200.",
        "token = tokenize.generate_tokens(readline)",
        'password = "hunter2"',
        "secret = secrets.token_hex(16)",
        "scikit-learn risk-assessment task-1234567890abcdefghijklmn",
        "Decorators like @property and @functools.cache, user@localhost",
        "The 0-9 digits, 555-1234, 12-34-5678 and 000-12-3456.",
    ],
)
def test_keeps_technical_look_alikes(text: str) -> None:
    assert mask_pii(text) == (text, _counts())


def test_counts_have_every_type() -> None:
    masked, counts = mask_pii("")
    assert masked == ""
    assert counts == dict.fromkeys(PII_TYPES, 0)
    assert list(counts) == [
        "email", "phone", "credit_card", "ip_address", "iban", "national_id", "secret",
    ]  # fmt: skip


def test_mixed_document() -> None:
    text = (
        "Contact ana@example.com (+1 415 555 2671) from 8.8.4.4.\n"
        ">>> hex(0x7fffffff)\n'0x7fffffff'\n"
        "Card 4012-8888-8888-1881 expires."
    )
    masked, counts = mask_pii(text)
    assert masked == (
        "Contact [EMAIL] ([PHONE]) from [IP_ADDRESS].\n"
        ">>> hex(0x7fffffff)\n'0x7fffffff'\n"
        "Card [CREDIT_CARD] expires."
    )
    assert counts == _counts(email=1, phone=1, ip_address=1, credit_card=1)
