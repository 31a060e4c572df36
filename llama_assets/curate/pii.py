"""Detect and mask personal data and secrets in document text.

A model trained on a corpus can recite it, so e-mail addresses, phone numbers,
card numbers, IP addresses, IBANs, national ids and credentials are replaced
by typed tokens (`[EMAIL]`, `[SECRET]`, ...) before anything is embedded or
trained on. Detection is by regular expressions plus a validity check wherever
the format has one (Luhn for cards, mod-97 for IBANs, `ipaddress` for IPs),
because the sample corpus is software documentation: version strings, hex
literals, dates and code must survive untouched. Precision over recall where
they conflict, with two deliberate choices:

- IP addresses that identify no one - private, loopback, link-local,
  multicast, reserved and documentation ranges (`127.0.0.1`, `192.168.0.1`,
  `2001:db8::1`) - are kept, as in the BigCode/StarCoder PII pipeline: they are
  common in technical text and not personal data. So are CIDR network
  ranges (`11.0.0.0/16`), which name networks, not hosts.
- Phone numbers need either a leading `+` (international) or the separated
  North-American shape `(415) 555-2671` / `415-555-2671`, so bare digit runs
  such as timestamps, years and ids are never masked.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

PII_TYPES = ("email", "phone", "credit_card", "ip_address", "iban", "national_id", "secret")
"""Keys of the counts `mask_pii` returns, always all present."""

TOKENS = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "credit_card": "[CREDIT_CARD]",
    "ip_address": "[IP_ADDRESS]",
    "iban": "[IBAN]",
    "national_id": "[NATIONAL_ID]",
    "secret": "[SECRET]",
}
"""Replacement token of each PII type."""

MIN_SECRET_VALUE_CHARS = 16
"""Shortest value of a `api_key=...`-style assignment that is masked; shorter
values are placeholders (`token = "abc"`) far more often than real secrets."""

# -- secrets -----------------------------------------------------------------

_PEM_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----",
    re.DOTALL,
)
_AWS_ACCESS_KEY = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
_SK_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{20,}")
_GITHUB_TOKEN = re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b")
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b((?:[a-z0-9]+[_-])?(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token"
    r"|token|password|passwd))\b(['\"]?\s*[:=]\s*)(['\"]?)"
    r"([A-Za-z0-9_\-+/=.~]{" + str(MIN_SECRET_VALUE_CHARS) + r",})\3(?![\w(])"
)

# -- contact and financial data ---------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.+%-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_CREDIT_CARD = re.compile(r"(?<![\w.,-])[2-6](?:[ -]?\d){12,18}(?![\w-]|[.,]\d)")
_SSN = re.compile(r"(?<![\w.-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-]|[.,]\d)")
_PHONE_INTERNATIONAL = re.compile(r"(?<![\w+])\+[1-9](?:[ .\-()]{0,2}\d){7,14}(?![\w-]|[.,]\d)")
_PHONE_NORTH_AMERICA = re.compile(
    r"(?<![\w.+-])(?:1[ .-])?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4}"
    r"(?![\w-]|[.,]\d)"
)

# -- network addresses -------------------------------------------------------

_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?![\w]|\.\d)"
)
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_CIDR_SUFFIX = re.compile(r"/\d{1,3}\b")
_VERSION_CONTEXT = re.compile(r"(?i)(?:version|release|python|ver\.?)\s*$")


def _luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_valid(compact: str) -> bool:
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _is_personal_ip(text: str) -> bool:
    """Whether an address could identify a host on the public internet."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _card(match: re.Match[str]) -> bool:
    digits = re.sub(r"[ -]", "", match.group())
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and _luhn_valid(digits)


def _iban(match: re.Match[str]) -> bool:
    return _iban_valid(match.group().replace(" ", ""))


def _is_cidr(match: re.Match[str]) -> bool:
    """`11.0.0.0/16` names a network (routing config), not a host."""
    return _CIDR_SUFFIX.match(match.string, match.end()) is not None


def _ipv4(match: re.Match[str]) -> bool:
    before = match.string[max(0, match.start() - 12) : match.start()]
    return (
        not _VERSION_CONTEXT.search(before)
        and not _is_cidr(match)
        and _is_personal_ip(match.group())
    )


def _ipv6(match: re.Match[str]) -> bool:
    candidate = match.group()
    return candidate.count(":") >= 2 and not _is_cidr(match) and _is_personal_ip(candidate)


def _sk_key(match: re.Match[str]) -> bool:
    value = match.group()[3:]
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def _always(match: re.Match[str]) -> bool:
    return True


# (type, pattern, validator, hints) in application order: secrets first (a
# key can contain digit runs), then e-mails (local parts can look like
# anything), then the number formats from most to least specific. A pattern
# only runs when one of its hints occurs in the text (a cheap substring scan),
# which skips most regex passes on ordinary prose.
_DETECTORS: tuple[
    tuple[str, re.Pattern[str], Callable[[re.Match[str]], bool], tuple[str, ...]], ...
] = (
    ("secret", _PEM_PRIVATE_KEY, _always, ("PRIVATE KEY-----",)),
    ("secret", _AWS_ACCESS_KEY, _always, ("AKIA", "ASIA")),
    ("secret", _GITHUB_TOKEN, _always, ("_",)),
    ("secret", _SK_KEY, _sk_key, ("sk-",)),
    ("email", _EMAIL, _always, ("@",)),
    ("iban", _IBAN, _iban, ()),
    ("credit_card", _CREDIT_CARD, _card, ()),
    ("national_id", _SSN, _always, ("-",)),
    ("ip_address", _IPV6, _ipv6, (":",)),
    ("ip_address", _IPV4, _ipv4, (".",)),
    ("phone", _PHONE_INTERNATIONAL, _always, ("+",)),
    ("phone", _PHONE_NORTH_AMERICA, _always, ()),
)


def _mask_secret_assignment(text: str, counts: dict[str, int]) -> str:
    """Mask the value of `api_key = "..."`-style assignments, keep the name."""

    def replace(match: re.Match[str]) -> str:
        value = match.group(4)
        if not (any(c.isdigit() for c in value) and any(c.isalpha() for c in value)):
            return match.group()  # e.g. `token = tokenize.generate_tokens`: code, not a secret
        counts["secret"] += 1
        quote = match.group(3)
        return f"{match.group(1)}{match.group(2)}{quote}{TOKENS['secret']}{quote}"

    return _SECRET_ASSIGNMENT.sub(replace, text)


def mask_pii(text: str) -> tuple[str, dict[str, int]]:
    """Replace PII and secrets in `text` by typed tokens; count each type.

    Returns the masked text and a count for every type in `PII_TYPES` (0 when
    none was found).
    """
    counts = dict.fromkeys(PII_TYPES, 0)
    text = _mask_secret_assignment(text, counts)
    for kind, pattern, valid, hints in _DETECTORS:
        if hints and not any(hint in text for hint in hints):
            continue
        token = TOKENS[kind]

        def replace(match: re.Match[str], kind: str = kind, token: str = token, valid=valid) -> str:
            if not valid(match):
                return match.group()
            counts[kind] += 1
            return token

        text = pattern.sub(replace, text)
    return text, counts
