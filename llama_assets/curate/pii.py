"""Detect and mask personal data and secrets in document text.

A model trained on a corpus can recite it, so e-mail addresses, phone numbers,
card numbers, IP addresses, IBANs, national ids and credentials are replaced
by typed tokens (`[EMAIL]`, `[SECRET]`, ...) before anything is embedded or
trained on. This module is the one place that masking is defined; the
validation stage applies it to every document's text, title and messages, so
nothing past the validated stage (shards, index, training data, review queue,
quarantine excerpts, event-log metadata) holds an unmasked value.

Secrets are found with the patterns of detect-secrets (Yelp's scanner, used by
pre-commit hooks across the field): its plugins' `denylist` regular
expressions for cloud keys, API tokens, private keys and passwords in URLs are
taken from the installed package, not copied (`_library`). Token-shaped
matches are widened to the end of the token they start, so a longer token is
masked whole. Our own patterns cover what its plugins do not: assignments such
as ``api_key = "..."``, passwords in connection strings (``...;Password=x;``),
private key blocks as a whole (also unterminated ones), GitHub's fine-grained
tokens and other ``sk-`` style keys.

Everything else is detected by regular expressions plus a validity check
wherever the format has one (Luhn for cards, mod-97 for IBANs, `ipaddress` for
IPs), because the sample corpus is software documentation: version strings,
hex literals, dates and code must survive untouched. Precision over recall
where they conflict, with two deliberate choices:

- IP addresses are masked when they can name a host: public ones, and private
  ones too (`10.20.30.40` is a staging server in someone's network: its
  address tells an attacker where to look). Addresses that name no host are
  kept: loopback, unspecified, link-local, multicast and reserved ones and the
  documentation ranges (`127.0.0.1`, `0.0.0.0`, `fe80::1`, `192.0.2.1`,
  `2001:db8::1`, RFC 5737 and 3849), and CIDR network ranges (`10.0.0.0/8`,
  host bits zero), which name networks; `10.1.2.3/8` is a host and is masked.
- Phone numbers need either a leading `+` (international) or the separated
  North-American shape `(415) 555-2671` / `415-555-2671`, so bare digit runs
  such as timestamps, years and ids are never masked.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from itertools import compress
from typing import NamedTuple

import polars as pl
from detect_secrets.plugins import (
    aws,
    azure_storage_key,
    basic_auth,
    discord,
    github_token,
    gitlab_token,
    jwt,
    mailchimp,
    npm,
    openai,
    private_key,
    pypi_token,
    sendgrid,
    slack,
    square_oauth,
    stripe,
    telegram_token,
    twilio,
)

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


def _library(plugin: type, index: int = 0) -> re.Pattern[str]:
    """Pattern `index` of a detect-secrets plugin's denylist (its own compiled regex)."""
    return plugin.denylist[index]


_TOKEN_TAIL = r"[A-Za-z0-9_\-]*"


def _token(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """`pattern` widened to the end of the token it starts (detect-secrets' patterns
    stop at a fixed length: `ghp_` + 36, a JWT before its signature)."""
    return re.compile(f"(?:{pattern.pattern}){_TOKEN_TAIL}", pattern.flags)


PRIVATE_KEY_HEADERS = tuple(p.pattern for p in private_key.PrivateKeyDetector.denylist)
"""detect-secrets' private key markers (`BEGIN RSA PRIVATE KEY`, ..., `PuTTY-User-Key-File-2`):
the blocks below mask every one of them (tests/unit/test_pii.py checks it)."""

_PEM_PRIVATE_KEY = re.compile(
    # A whole block, to its END marker; without one (a truncated paste), the header
    # and the base64 and header lines that follow it.
    r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----"
    r"(?:.*?-----END \1-----|(?:\n(?:[A-Za-z0-9+/=]{16,}|[A-Z][A-Za-z-]*: [^\n]*"
    r"|(?=\n[A-Za-z0-9+/=]{16,})))*)",
    re.DOTALL,
)
_PUTTY_PRIVATE_KEY = re.compile(
    r"PuTTY-User-Key-File-\d+: [^\n]*(?:\n(?:[A-Z][A-Za-z-]*: [^\n]*|[A-Za-z0-9+/=]{16,}))*"
)
_SK_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{20,}")
_GITHUB_FINE_GRAINED = re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b")
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b((?:[a-z0-9]+[_-])?(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token"
    r"|token|password|passwd))\b(['\"]?\s*[:=]\s*)(['\"]?)"
    r"([A-Za-z0-9_\-+/=.~]{" + str(MIN_SECRET_VALUE_CHARS) + r",})\3(?![\w(])"
)
_CONNECTION_PASSWORD = re.compile(r"(?i)(?<![\w-])(password|pwd)(\s*=\s*)([^;\s\"'<>]+)")
"""`Password=...` in an ADO.NET/ODBC/JDBC connection string (valid only beside a `;`)."""

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
_VERSION_CONTEXT = re.compile(r"(?i)\b(?:version|release|python|ver\.?)\s*$")


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


_DOCUMENTATION_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20")
)
"""Address ranges reserved for examples in documentation (RFC 5737, 3849, 9637)."""

_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


def _is_host_ip(text: str) -> bool:
    """Whether an address can name a host (public or private): see the module docstring."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    return not (
        ip.is_loopback
        or ip.is_unspecified
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or any(
            ip in network for network in _DOCUMENTATION_NETWORKS if network.version == ip.version
        )
        or (ip.version == 4 and ip in _THIS_NETWORK)
    )


def _card(match: re.Match[str]) -> bool:
    digits = re.sub(r"[ -]", "", match.group())
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and _luhn_valid(digits)


def _iban(match: re.Match[str]) -> bool:
    return _iban_valid(match.group().replace(" ", ""))


def _is_network(match: re.Match[str]) -> bool:
    """`10.0.0.0/8` names a network (routing config), not a host: a prefix shorter
    than the address with every host bit zero. `10.1.2.3/8` and `/32` name a host."""
    suffix = _CIDR_SUFFIX.match(match.string, match.end())
    if suffix is None:
        return False
    try:
        network = ipaddress.ip_network(match.group() + suffix.group(), strict=True)
    except ValueError:
        return False
    return network.prefixlen < network.max_prefixlen


def _ipv4(match: re.Match[str]) -> bool:
    before = match.string[max(0, match.start() - 12) : match.start()]
    return (
        not _VERSION_CONTEXT.search(before)
        and not _is_network(match)
        and _is_host_ip(match.group())
    )


def _ipv6(match: re.Match[str]) -> bool:
    candidate = match.group()
    return candidate.count(":") >= 2 and not _is_network(match) and _is_host_ip(candidate)


def _sk_key(match: re.Match[str]) -> bool:
    value = match.group()[3:]
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def _always(match: re.Match[str]) -> bool:
    return True


def _assigned_secret(match: re.Match[str]) -> bool:
    """A value needs digits and letters: `token = tokenize.generate_tokens` is code."""
    value = match.group(4)
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def _mask_assigned_value(match: re.Match[str]) -> str:
    """Mask the value of `api_key = "..."`, keep the name, the operator and the quotes."""
    quote = match.group(3)
    return f"{match.group(1)}{match.group(2)}{quote}{TOKENS['secret']}{quote}"


_BEFORE_SEMICOLON = re.compile(r"[ \t]*;")
_AFTER_SEMICOLON = re.compile(r";[ \t]*$")


def _connection_password(match: re.Match[str]) -> bool:
    """`Password=x` counts as a connection string's when a `;` ends it or comes before it."""
    text = match.string
    return bool(
        _BEFORE_SEMICOLON.match(text, match.end())
        or _AFTER_SEMICOLON.search(text, max(0, match.start() - 8), match.start())
    )


def _mask_group(group: int) -> Callable[[re.Match[str]], str]:
    """Mask only capture group `group` of a match (the password of `user:pass@host`)."""

    def replace(match: re.Match[str]) -> str:
        start, end = match.span(group)
        offset = match.start()
        whole = match.group()
        return whole[: start - offset] + TOKENS["secret"] + whole[end - offset :]

    return replace


def _jwt(match: re.Match[str]) -> bool:
    """detect-secrets' own check: each part base64url, header and payload JSON."""
    return jwt.JwtTokenDetector.is_formally_valid(match.group())


def _discord(match: re.Match[str]) -> bool:
    """A Discord bot token starts with its bot's numeric id in base64: a dotted
    identifier of the same shape does not."""
    head = match.group().split(".", 1)[0]
    try:
        return base64.b64decode(head + "=" * (-len(head) % 4), validate=True).isdigit()
    except ValueError:
        return False


class _Detector(NamedTuple):
    """One PII format: where it can be, what matches it, what a match becomes."""

    kind: str
    pattern: re.Pattern[str]
    prefilter: str
    """Rust regex (polars) that matches every text `pattern` matches in: see `mask_pii_batch`."""
    hints: tuple[str, ...] = ()
    """Substrings of which every match contains one: `pattern` is skipped on a text with none
    (a cheap scan that spares `mask_pii` most regex passes on prose); empty: always runs."""
    valid: Callable[[re.Match[str]], bool] = _always
    replacement: Callable[[re.Match[str]], str] | None = None
    """What a valid match becomes; None: the type's token."""


def _secret(
    pattern: re.Pattern[str],
    prefilter: str,
    hints: tuple[str, ...] = (),
    valid: Callable[[re.Match[str]], bool] = _always,
    replacement: Callable[[re.Match[str]], str] | None = None,
) -> _Detector:
    return _Detector("secret", pattern, prefilter, hints, valid, replacement)


# In application order: secrets first (a key can contain digit runs), then
# e-mails (local parts can look like anything), then the number formats from
# most to least specific. A prefilter is its pattern without lookarounds and
# `\b` (Rust regex has no lookaround, and its `\w`/`\b` differ from Python's),
# often cut to a part that every match contains, which is simpler or faster to
# scan for (`\d\.\d{1,3}\.` takes a fifth of the time of `(?:\d{1,3}\.){3}`), with
# classes widened where Python's match more: Rust's `\d` contains Python's (a
# test checks it), its `\s` lacks \x1c-\x1f, and its (?i) does not pair i with
# ı (\x{131}) and İ (\x{130}).
_SECRETS: tuple[_Detector, ...] = (
    _secret(
        _SECRET_ASSIGNMENT,
        r"(?i)(?:key|secret|token|passw(?:or)?d)['\"]?[\s\x1c-\x1f]*[:=][\s\x1c-\x1f]*['\"]?"
        r"[A-Za-z0-9_\-+/=.~\x{131}\x{130}]{" + str(MIN_SECRET_VALUE_CHARS) + "}",
        valid=_assigned_secret,
        replacement=_mask_assigned_value,
    ),
    _secret(
        _CONNECTION_PASSWORD,
        r"(?i)(?:password|pwd)[\s\x1c-\x1f]*=",
        valid=_connection_password,
        replacement=_mask_group(3),
    ),
    # detect-secrets: a password in a URL (`postgres://user:pass@host`).
    _secret(
        _library(basic_auth.BasicAuthDetector),
        r"://[^\s]+:[^\s]+@",
        ("://",),
        replacement=_mask_group(1),
    ),
    _secret(_PEM_PRIVATE_KEY, r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY", ("PRIVATE KEY",)),
    _secret(_PUTTY_PRIVATE_KEY, r"PuTTY-User-Key-File-\d", ("PuTTY-User-Key-File-",)),
    # detect-secrets: cloud keys.
    _secret(
        _token(_library(aws.AWSKeyDetector, 0)),
        r"(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}",
        ("A3T", "ABIA", "ACCA", "AKIA", "ASIA"),
    ),
    _secret(
        _library(aws.AWSKeyDetector, 1),
        r"(?i)aws.{0,20}?(?:key|pwd|pw|pass|token)",
        replacement=_mask_group(1),
    ),
    _secret(
        _library(azure_storage_key.AzureStorageKeyDetector),
        r"AccountKey=[a-zA-Z0-9+/=]{88}",
        ("AccountKey=",),
    ),
    # detect-secrets: API tokens, by their documented prefixes.
    _secret(
        _token(_library(github_token.GitHubTokenDetector)),
        r"gh[pousr]_[A-Za-z0-9_]{36}",
        ("_",),
    ),
    _secret(_GITHUB_FINE_GRAINED, r"github_pat_[A-Za-z0-9_]{22}", ("github_pat_",)),
    *(
        _secret(_token(pattern), r"(?:gl[a-z]+-|GR1348941)[A-Za-z0-9_\-]{20}", ("gl", "GR1348941"))
        for pattern in gitlab_token.GitLabTokenDetector.denylist
    ),
    _secret(_token(_library(slack.SlackDetector, 0)), r"(?i)xox[abposr]-\d"),
    _secret(_token(_library(slack.SlackDetector, 1)), r"(?i)hooks\.slack\.com/serv"),
    _secret(_token(_library(stripe.StripeDetector)), r"[rs]k_live_[0-9a-zA-Z]{24}", ("k_live_",)),
    _secret(_token(_library(openai.OpenAIDetector)), r"sk-[A-Za-z0-9\-_]*T3BlbkFJ", ("T3BlbkFJ",)),
    _secret(_SK_KEY, r"sk-[A-Za-z0-9_-]{20}", ("sk-",), _sk_key),
    _secret(_token(_library(jwt.JwtTokenDetector)), r"eyJ[A-Za-z0-9\-_=]+\.", ("eyJ",), _jwt),
    *(
        _secret(_token(pattern), r"pypi-AgE", ("pypi-AgE",))
        for pattern in pypi_token.PypiTokenDetector.denylist
    ),
    _secret(
        _library(npm.NpmDetector), r"/:_authToken=", ("/:_authToken=",), replacement=_mask_group(1)
    ),
    _secret(_token(_library(sendgrid.SendGridDetector)), r"SG\.[a-zA-Z0-9_-]{22}\.", ("SG.",)),
    *(
        _secret(_token(pattern), r"(?:AC|SK)[a-z0-9]{32}", ("AC", "SK"))
        for pattern in twilio.TwilioKeyDetector.denylist
    ),
    _secret(
        _token(_library(discord.DiscordBotTokenDetector)),
        r"[MNO][a-zA-Z\d_-]{23,25}\.[a-zA-Z\d_-]{6}\.",
        (".",),
        _discord,
    ),
    _secret(_token(_library(telegram_token.TelegramBotTokenDetector)), r"\d{8}:[0-9A-Za-z_-]{35}"),
    _secret(_token(_library(mailchimp.MailchimpDetector)), r"[0-9a-z]{32}-us\d", ("-us",)),
    _secret(_token(_library(square_oauth.SquareOAuthDetector)), r"sq0csp-", ("sq0csp-",)),
)
"""Every secret detector, library patterns and ours (see the module docstring)."""

_DETECTORS: tuple[_Detector, ...] = (
    *_SECRETS,
    _Detector(
        "email",
        _EMAIL,
        r"[A-Za-z0-9._%+-]@[A-Za-z0-9][A-Za-z0-9.-]*\.[A-Za-z]{2}",
        ("@",),
    ),
    _Detector("iban", _IBAN, r"[A-Z]{2}\d{2} ?[A-Z0-9]{4} ?[A-Z0-9]{4}", valid=_iban),
    _Detector("credit_card", _CREDIT_CARD, r"[2-6](?:[ -]?\d){12}", valid=_card),
    _Detector("national_id", _SSN, r"\d{3}-\d{2}-\d{4}", ("-",)),
    _Detector("ip_address", _IPV6, r":[0-9A-Fa-f]{0,4}:", (":",), _ipv6),
    _Detector("ip_address", _IPV4, r"\d\.\d{1,3}\.\d{1,3}\.\d", (".",), _ipv4),
    _Detector("phone", _PHONE_INTERNATIONAL, r"\+[1-9](?:[ .\-()]{0,2}\d){7}", ("+",)),
    _Detector("phone", _PHONE_NORTH_AMERICA, r"[ .)-][2-9]\d{2}[ .-]\d{4}"),
)

_SURROGATE = re.compile("[\ud800-\udfff]")


def _mask(text: str, detectors: Iterable[_Detector]) -> tuple[str, dict[str, int]]:
    """Apply `detectors`, in order, each to the text the previous ones left."""
    counts = dict.fromkeys(PII_TYPES, 0)
    for detector in detectors:
        if detector.hints and not any(hint in text for hint in detector.hints):
            continue

        def replace(match: re.Match[str], detector: _Detector = detector) -> str:
            if not detector.valid(match):
                return match.group()
            counts[detector.kind] += 1
            if detector.replacement is None:
                return TOKENS[detector.kind]
            return detector.replacement(match)

        text = detector.pattern.sub(replace, text)
    return text, counts


def mask_pii(text: str) -> tuple[str, dict[str, int]]:
    """Replace PII and secrets in `text` by typed tokens; count each type.

    Returns the masked text and a count for every type in `PII_TYPES` (0 when
    none was found).
    """
    return _mask(text, _DETECTORS)


class PiiSpan(NamedTuple):
    """Where a detector found PII in a text: its type and `text[start:end]`."""

    kind: str
    start: int
    end: int


def find_pii(text: str) -> list[PiiSpan]:
    """The PII spans of `text`, by the same detectors, order and checks as `mask_pii`.

    For screening (the safety policy runs it on every model output) rather
    than masking: spans are in the original text, and a match that overlaps
    one found by an earlier detector is skipped, as masking would have hidden
    it behind that detector's token.
    """
    found: list[PiiSpan] = []
    for detector in _DETECTORS:
        if detector.hints and not any(hint in text for hint in detector.hints):
            continue
        for match in detector.pattern.finditer(text):
            start, end = match.span()
            if detector.valid(match) and not any(start < f.end and f.start < end for f in found):
                found.append(PiiSpan(detector.kind, start, end))
    return sorted(found, key=lambda span: span.start)


_ANY_PREFILTER = "|".join(f"(?:{detector.prefilter})" for detector in _DETECTORS)
"""One pass for all prefilters: most texts match none, and only the others need a pass each."""


def _prefilter_hits(texts: Sequence[str]) -> list[tuple[bool, ...]]:
    """Per text, whether each detector's prefilter matches it (empty: none does)."""
    try:
        column = pl.Series(texts, dtype=pl.String)
    except UnicodeEncodeError:
        # Arrow strings cannot hold lone surrogates; no prefilter can match one
        # or U+FFFD, so the replacement changes no prefilter's result.
        column = pl.Series([_SURROGATE.sub("\ufffd", text) for text in texts], dtype=pl.String)
    hits: list[tuple[bool, ...]] = [()] * len(texts)
    flagged = column.str.contains(_ANY_PREFILTER).arg_true()
    per_detector = (
        column.gather(flagged)
        .to_frame("text")
        .select(
            pl.col("text").str.contains(detector.prefilter).alias(str(i))
            for i, detector in enumerate(_DETECTORS)
        )
    )
    for i, row in zip(flagged.to_list(), per_detector.rows(), strict=True):
        hits[i] = row
    return hits


def mask_pii_batch(texts: Sequence[str]) -> list[tuple[str, dict[str, int]]]:
    """`[mask_pii(text) for text in texts]`, fast on a whole part.

    The detectors' prefilters are first run over all texts at once (vectorised
    Rust regex: one pass for all of them, then one per prefilter over the texts
    that pass matched); a text then gets only the detectors whose prefilter
    matched it, and one that matched none is returned as is, without a Python
    regex pass.

    Exact because a prefilter matches wherever its pattern does. The patterns
    run on the text as earlier replacements left it, not on the original that
    the prefilters saw, but a replacement only puts a token (`[EMAIL]`) in
    place of a span, and no pattern matches a span that overlaps a token (none
    matches `[` or `]`, nor a token's capitals and `_` alone), except PEM's
    `.*?` between its markers, which cannot overlap one. So every match in the
    edited text lies in text unchanged from the original, where the prefilter
    saw it, even one that a replacement enabled by changing the character a
    lookbehind checks; no detector needs a re-check after a replacement.
    """
    return [
        _mask(text, compress(_DETECTORS, hits))
        for text, hits in zip(texts, _prefilter_hits(texts), strict=True)
    ]
