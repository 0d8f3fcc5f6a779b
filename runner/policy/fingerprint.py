"""Normalise error messages so one failure aggregates into one error_logs row; redact secrets."""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_FINGERPRINT_LEN = 500
REDACTED = "***"

# Order matters: each rule runs on the output of the previous ones, and the placeholders
# contain no digits so later rules never re-mask them. Every pattern is linear (no nested
# or overlapping quantifiers; finer checks happen in the replacement functions) so that
# arbitrary text cannot make fingerprint() slow.
_URL = re.compile(r"\b[a-z][a-z0-9+.\-]{0,30}://[^\s'\"<>]+", re.I)
_TRAILING_PUNCT = ".,:;!)]}…"
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b")
_IPV6 = re.compile(r"\[[0-9a-f:]{2,45}\](?::\d{1,5})?", re.I)
_PATH = re.compile(r"(?<![\w/\\>.:])(?:[a-z]:|~)?[/\\][\w.\-/\\]+", re.I)
_EXTENSION = re.compile(r"\.[a-z0-9]{1,5}$", re.I)
_QUOTED = re.compile(r"(?<!\w)(['\"])([^'\"\s]{1,200})\1(?!\w)")
_HEX_PREFIXED = re.compile(r"\b0x[0-9a-f]+\b", re.I)
_HEX_RUN = re.compile(r"\b[0-9a-f]{8,}\b", re.I)
_WORD_RUN = re.compile(r"\b[\w\-]{6,}")
_HAS_DIGIT = re.compile(r"\d")
_HAS_LETTER = re.compile(r"[a-z]", re.I)
# HTTP status codes carry meaning (500 vs 503), so keep a 3-digit code after these words
# and after the "->" of a request line ("GET /v1/images -> 429").
_STATUS = re.compile(r"(\bHTTP|\bstatus|\bcode|->)([\s:=/]{1,3})([1-5]\d\d)\b", re.I)
_NUMBER = re.compile(r"\d+(?:\.\d+)*")
_SPACE = re.compile(r"\s+")
_FENCE = "\x00"  # brackets text that _mask_numbers must leave alone

_BEARER = re.compile(r"\b(bearer)\s+[\w\-.~+/=]+|\b(basic)\s+[a-z0-9+/=]{8,}", re.I)
_AUTH_HEADER = re.compile(
    r"\b((?:proxy-)?authorization)(['\"]?\s*[:=]\s*['\"]?)"
    r"(?:(?:bearer|basic|token)\s+)?[^\s,;'\"}]+",
    re.I,
)
_KEY_VALUE = re.compile(
    r"(?<![a-z])(api[_\-]?key|access[_\-]?token|auth[_\-]?token|secret|password|passwd)"
    r"(['\"]?\s*[:=]\s*['\"]?)[^\s,;&'\"}]+",
    re.I,
)
_URL_USERINFO = re.compile(r"(://[^/\s:@]+):[^/\s@]+@")


def _split_trailing(s: str) -> tuple[str, str]:
    body = s.rstrip(_TRAILING_PUNCT)
    return body, s[len(body) :]


def _mask_url(m: re.Match[str]) -> str:
    # Hosts and ports vary (the sim binds random ports) but the path names the endpoint,
    # which is worth keeping; path segments that look like ids (a digit, 4+ chars) are not.
    body, tail = _split_trailing(m.group(0))
    scheme, _, rest = body.partition("://")
    _, slash, path = rest.partition("/")
    path = path.split("?", 1)[0].split("#", 1)[0]
    segments = [
        "<id>" if len(seg) >= 4 and _HAS_DIGIT.search(seg) else seg for seg in path.split("/")
    ]
    return f"{scheme.lower()}://<host>{slash}{'/'.join(segments)}{tail}"


def _mask_path(m: re.Match[str]) -> str:
    # Output files are <task>/<subtask>-<n>.png under a configurable root; any path with an
    # extension or 3+ parts is treated as a file path. Short ones like "/v1" stay.
    body, tail = _split_trailing(m.group(0))
    parts = [p for p in re.split(r"[/\\]", body) if p]
    if _EXTENSION.search(body) or len(parts) >= 3:
        return "<path>" + tail
    return m.group(0)


def _mask_quoted(m: re.Match[str]) -> str:
    quote, value = m.group(1), m.group(2)
    return f"{quote}<id>{quote}" if _HAS_DIGIT.search(value) else m.group(0)


def _mask_hex(m: re.Match[str]) -> str:
    # A pure digit run is a number (left to _NUMBER, so "differs only in numbers" always
    # matches); a pure letter run is a word. Only mixed runs are ids.
    s = m.group(0)
    return "<hex>" if _HAS_DIGIT.search(s) and _HAS_LETTER.search(s) else s


def _mask_token(m: re.Match[str]) -> str:
    # Ids mix letters and digits ("x7k2m1", "sub-000123", base64 slugs). A number with a
    # unit ("1500ms") has no letter before a digit and is left to _NUMBER; a name with one
    # digit ("gpt-image-1") is kept unless it is token-long.
    s = m.group(0)
    first_letter = _HAS_LETTER.search(s)
    if first_letter is None or not _HAS_DIGIT.search(s, first_letter.end()):
        return s
    digits = sum(c.isdigit() for c in s)
    return "<id>" if digits >= 2 or len(s) >= 20 else s


def _keep_status(m: re.Match[str]) -> str:
    return f"{m.group(1)}{m.group(2)}{_FENCE}{m.group(3)}{_FENCE}"


def fingerprint(message: str) -> str:
    """Normalise an error message (ids, numbers, urls, paths masked) to group equal failures."""
    try:
        return _fingerprint(message if isinstance(message, str) else str(message))
    except Exception:  # a fingerprint must never take the error path down with it
        try:
            return _SPACE.sub(" ", str(message)).strip()[:MAX_FINGERPRINT_LEN]
        except Exception:
            return "<unprintable>"


def _fingerprint(text: str) -> str:
    # Masking shortens text, but rarely below a quarter: this bounds the work on huge
    # messages (whole HTML error pages) without changing the first 500 output characters.
    text = text[: MAX_FINGERPRINT_LEN * 8].replace(_FENCE, "")
    text = _URL.sub(_mask_url, text)
    text = _UUID.sub("<uuid>", text)
    text = _IPV6.sub("<ip>", text)
    text = _IPV4.sub("<ip>", text)
    text = _PATH.sub(_mask_path, text)
    text = _QUOTED.sub(_mask_quoted, text)
    text = _HEX_PREFIXED.sub("<hex>", text)
    text = _HEX_RUN.sub(_mask_hex, text)
    text = _WORD_RUN.sub(_mask_token, text)
    text = _STATUS.sub(_keep_status, text)
    text = _mask_numbers(text)
    text = _SPACE.sub(" ", text).strip()
    if len(text) > MAX_FINGERPRINT_LEN:
        text = text[: MAX_FINGERPRINT_LEN - 1] + "…"
    return text


def _mask_numbers(text: str) -> str:
    # Status codes were fenced by _keep_status; mask digits only outside the fences.
    parts = text.split(_FENCE)
    for i in range(0, len(parts), 2):
        parts[i] = _NUMBER.sub("<n>", parts[i])
    return "".join(parts)


def error_type(exc: BaseException) -> str:
    """A stable name for an exception's type, e.g. "RateLimited"."""
    return type(exc).__name__


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value, bearer token and credential-looking field with "***"."""
    # Longest first, so a secret containing a shorter one is replaced whole.
    for secret in sorted({str(s) for s in secrets if s and str(s).strip()}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _AUTH_HEADER.sub(rf"\1\2{REDACTED}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1) or m.group(2)} {REDACTED}", text)
    text = _KEY_VALUE.sub(rf"\1\2{REDACTED}", text)
    return _URL_USERINFO.sub(rf"\1:{REDACTED}@", text)
