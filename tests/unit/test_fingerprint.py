"""Error fingerprints aggregate equal failures; redaction keeps secrets out of error_logs."""

from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.policy.fingerprint import MAX_FINGERPRINT_LEN, error_type, fingerprint, redact


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "HTTP 500 from http://127.0.0.1:8800/v1/tasks/3f2a9c1e-0b1d-4c5e-8f00-112233445566:"
            " job 12345 failed after 3.2s",
            "HTTP 500 from http://<host>/v<n>/tasks/<id>: job <n> failed after <n>s",
        ),
        ("status=503 Service Unavailable", "status=503 Service Unavailable"),
        ("cannot write /tmp/imgrun/out/12/345-0.png: disk full", "cannot write <path>: disk full"),
        (r"cannot open C:\out\7\8-1.png", "cannot open <path>"),
        ("KeyError: 'status'", "KeyError: 'status'"),
        ("task 'x9fj2k' not found", "task '<id>' not found"),
        ("can't connect to 10.0.0.1:5432", "can't connect to <ip>"),
        ("connect to [::1]:8080 refused", "connect to <ip> refused"),
        ("request id 3f2a9c01deadbeef failed", "request id <hex> failed"),
        ("ptr 0x7f3a12 is null", "ptr <hex> is null"),
        ("slug Ab3dEfGh1jKlMnOpQr5t expired", "slug <id> expired"),
        ("uuid 3F2A9C1E-0B1D-4C5E-8F00-112233445566 gone", "uuid <uuid> gone"),
        ("  many\n\tspaces   here ", "many spaces here"),
        ("", ""),
        (
            "GET https://api.example.com/v1/images?key=abc123&n=4 -> 429",
            # The module's rule: HTTP status codes are kept (429 and 500 must not merge).
            "GET https://<host>/v<n>/images -> 429",
        ),
    ],
)
def test_fingerprint_masks_variable_parts(message: str, expected: str) -> None:
    """Ids, numbers, hosts and paths become placeholders; the failure's words remain."""
    assert fingerprint(message) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "HTTP 500 from http://127.0.0.1:8800/v1/tasks/3f2a9c1e-0b1d-4c5e-8f00-112233445566:"
            " job 12345 failed after 3.2s",
            "HTTP 500 from http://127.0.0.1:41999/v1/tasks/0b2a9c1e-aaaa-4c5e-8f00-ffffff445566:"
            " job 9 failed after 113.25s",
        ),
        ("subtask 17 timed out after 300s", "subtask 99812 timed out after 12.5s"),
        ("poll 60/60 for job x7k2m1 exhausted", "poll 3/60 for job q9z8y7 exhausted"),
        ("wrote /data/out/1/2-0.png.tmp", "wrote /srv/x/77/123-3.png.tmp"),
    ],
)
def test_same_failure_same_fingerprint(a: str, b: str) -> None:
    """Occurrences of one failure with different ids aggregate together."""
    assert fingerprint(a) == fingerprint(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("HTTP 500 Internal Server Error", "HTTP 503 Internal Server Error"),
        ("status: 400 bad prompt", "status: 404 bad prompt"),
        ("GET http://h/v1/images -> 429", "GET http://h/v1/images -> 500"),
        ("connection reset", "connection refused"),
        ("can't connect to 'a'", "can't parse to 'a'"),
    ],
)
def test_different_failures_stay_apart(a: str, b: str) -> None:
    """HTTP status codes and wording are kept, so distinct failures do not merge."""
    assert fingerprint(a) != fingerprint(b)


# A message template: fixed words and separators with slots for values that vary.
WORDS = ["job", "failed", "after", "subtask", "timeout", "retry", "image", "poll", "of", "to"]
SEPARATORS = [" ", ": ", ", ", " - ", " = ", " (", ") "]
numbers = st.one_of(
    st.integers(0, 10**40).map(str),
    st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)).map(lambda p: f"{p[0]}.{p[1]}"),
)
uuids = st.uuids().map(str)
slot = st.sampled_from(["num", "num_s", "uuid", "uuid_upper"])
template = st.lists(
    st.tuples(st.one_of(st.sampled_from(WORDS), slot), st.sampled_from(SEPARATORS)),
    min_size=1,
    max_size=12,
)


def fill(parts: list[tuple[str, str]], draw_num: st.DrawFn) -> str:
    """Render a template, drawing fresh values for its slots."""
    out = []
    for token, sep in parts:
        if token == "num":
            token = draw_num(numbers)
        elif token == "num_s":
            token = draw_num(numbers) + "s"
        elif token == "uuid":
            token = draw_num(uuids)
        elif token == "uuid_upper":
            token = draw_num(uuids).upper()
        out.append(token + sep)
    return "".join(out)


@st.composite
def message_pairs(draw: st.DrawFn) -> tuple[str, str]:
    """Two messages from one template that differ only in numbers and uuids."""
    parts = draw(template)
    return fill(parts, draw), fill(parts, draw)


@settings(max_examples=150, deadline=None)
@given(message_pairs())
def test_messages_differing_only_in_numbers_and_uuids_match(pair: tuple[str, str]) -> None:
    """Property: varying numbers and uuids never changes the fingerprint."""
    a, b = pair
    assert fingerprint(a) == fingerprint(b)


# What may keep digits after masking: a status code the rule keeps (cut short only when the
# fingerprint itself was truncated right after it).
_KEPT_STATUS = re.compile(
    r"(HTTP|status|code|->)[\s:=/]{1,3}(?:[1-5]\d\d|[1-5]\d{0,2}(?=…$))", re.I
)


def assert_masked(fp: str) -> None:
    """A real fingerprint: bounded, and no digit survives outside a kept status code."""
    assert len(fp) <= MAX_FINGERPRINT_LEN
    assert not re.search(r"\d", _KEPT_STATUS.sub("", fp)), fp


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=1000))
def test_fingerprint_never_raises(text: str) -> None:
    """Any text gives a bounded string with its numbers masked (not the raw-text fallback)."""
    assert_masked(fingerprint(text))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789abcdef-/.:'\" x<>Bearer=", max_size=400))
def test_fingerprint_never_raises_on_pattern_soup(text: str) -> None:
    """Text made of the characters the patterns look for is masked too."""
    assert_masked(fingerprint(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a-" * 50_000, None),
        ("1." * 50_000, None),
        ("/a" * 50_000, None),
        ("'" + "x" * 100_000, None),
        ("http://" + "a" * 100_000, None),
        ("0" * 100_000, "<n>"),
        ("a" * 100_000, None),
        ("a1" * 50_000, "<hex>"),  # one mixed hex run
        ("[:" * 50_000, None),
        ("\x00" * 1000 + "HTTP 500", "HTTP 500"),
    ],
)
def test_fingerprint_handles_huge_adversarial_input(text: str, expected: str | None) -> None:
    """Long pathological inputs finish masked (the suite timeout would catch a regex blow-up)."""
    fp = fingerprint(text)
    assert_masked(fp)
    if expected is not None:
        assert fp == expected


def test_fingerprint_tolerates_non_strings() -> None:
    """A caller passing bytes or None by mistake still gets a fingerprint, not an error."""
    assert fingerprint(b"job 5") == "b'job <n>'"  # type: ignore[arg-type]
    assert fingerprint(None) == "None"  # type: ignore[arg-type]


def test_long_messages_are_truncated() -> None:
    """Fingerprints are bounded so a huge HTML error page does not bloat error_logs."""
    fp = fingerprint("word " * 1000)
    assert len(fp) == MAX_FINGERPRINT_LEN
    assert fp.endswith("…")


class RateLimited(Exception):
    """Stands in for workers.errors.RateLimited."""


class Sub(RateLimited):
    """A subclass keeps its own name."""


@pytest.mark.parametrize(
    ("exc", "name"),
    [
        (RateLimited("x"), "RateLimited"),
        (Sub(), "Sub"),
        (TimeoutError(), "TimeoutError"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
    ],
)
def test_error_type_is_the_class_name(exc: BaseException, name: str) -> None:
    """error_type is the exception's class name, stable across messages."""
    assert error_type(exc) == name


SECRET = "sk-SENTINEL-4f9c2b7e1d"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"401 with key {SECRET}", "401 with key ***"),
        ("Authorization: Bearer abc.def-ghi", "Authorization: ***"),
        ("headers={'authorization': 'Basic dXNlcjpwYXNz'}", "headers={'authorization': '***'}"),
        ("sent bearer eyJhbGciOi.J9x", "sent bearer ***"),
        ("GET /v1?api_key=zzz&n=1", "GET /v1?api_key=***&n=1"),
        ('{"api_key": "abc", "n": 1}', '{"api_key": "***", "n": 1}'),
        ("OPENAI_API_KEY=sk-xyz", "OPENAI_API_KEY=***"),
        ("client_secret: s3cr3t", "client_secret: ***"),
        ("https://user:hunter2@host/x", "https://user:***@host/x"),
        ("invalid token provided", "invalid token provided"),  # prose survives
        ("authorization failed", "authorization failed"),
    ],
)
def test_redact_patterns(text: str, expected: str) -> None:
    """Known secrets, bearer tokens and credential fields become ***."""
    assert redact(text, [SECRET]) == expected


def test_redact_replaces_longest_secret_first_and_ignores_empty() -> None:
    """A secret containing another is replaced whole; empty secrets are skipped."""
    assert redact("k=abcdef and abc", ["abc", "abcdef", "", "  "]) == "k=*** and ***"


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.text(max_size=40), min_size=1, max_size=5),
    st.lists(
        st.text(
            alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789-_", min_size=8, max_size=40
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_redact_removes_every_sentinel(chunks: list[str], secrets: list[str]) -> None:
    """Property: secrets interleaved anywhere in text never survive redaction."""
    text = "".join(c + secrets[i % len(secrets)] for i, c in enumerate(chunks))
    out = redact(text, secrets)
    for secret in secrets:
        assert secret not in out


def test_fingerprint_of_redacted_message_has_no_secret() -> None:
    """The pipeline the runner uses: redact, then fingerprint."""
    msg = f"HTTP 401 from https://api.example.com/v1/images: bad key {SECRET} ({uuid.uuid4()})"
    fp = fingerprint(redact(msg, [SECRET]))
    assert SECRET not in fp
    assert fp == "HTTP 401 from https://<host>/v<n>/images: bad key *** (<uuid>)"
