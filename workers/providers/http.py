"""The shared client session and one provider's HTTP plumbing: headers, timeout, error classes."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from workers import budget
from workers.errors import (
    Misconfigured,
    PermanentError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    TransientError,
)
from workers.headers import RateLimitInfo, parse_ratelimit, parse_retry_after
from workers.providers.limits import (
    MAX_ERROR_BODY_BYTES,
    MAX_EXTERNAL_ID,
    MAX_IMAGE_REF,
    MAX_PROVIDER_TEXT,
    MAX_RESPONSE_BYTES,
    clip,
)
from workers.providers.retry import RequestRetryPolicy, with_retries
from workers.providers.secrets import Redactor

T = TypeVar("T")
# 4xx codes that mean "try again", not "your request is wrong".
_TRANSIENT_4XX = frozenset({408, 409, 423, 425})
_READ_CHUNK = 64 * 1024  # bytes per read of a response body


class ResponseTooLarge(PermanentError):
    """A body over the provider's max_response_bytes: the same request would send it again."""


async def read_body(resp: aiohttp.ClientResponse, limit: int, where: str) -> bytes:
    """The whole body, refused as soon as it passes `limit` bytes (after decompression)."""
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise ResponseTooLarge(f"{where}: response of {declared:,} bytes, over {limit:,}")
    chunks: list[bytes] = []
    size = 0
    # Counted as read, not trusted from Content-Length: it may be absent, wrong or compressed.
    async for chunk in resp.content.iter_chunked(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(f"{where}: response over {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_prefix(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """Up to `limit` bytes of the body (an error's message needs no more)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(_READ_CHUNK):
        chunks.append(chunk[: limit - size])
        size += len(chunks[-1])
        if size >= limit:
            break
    return b"".join(chunks)


def make_session(
    *, limit: int = 100, limit_per_host: int = 0, connect_timeout: float = 10.0
) -> aiohttp.ClientSession:
    """The process-wide client session; call inside the event loop and close it on shutdown."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit_per_host, ttl_dns_cache=300)
    # No total timeout here: each provider sets its own per request.
    timeout = aiohttp.ClientTimeout(
        total=None, connect=connect_timeout, sock_connect=connect_timeout
    )
    # trust_env=False: workers never read the environment (proxies, netrc); the runner decides.
    return aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False)


def _message(body: bytes) -> str:
    """The human part of an error body: OpenAI/ComfyUI `error.message`, else the raw text."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # a truncated or hostile body is still a message
        return text
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        parts = [str(error.get(k)) for k in ("code", "message") if error.get(k)]
        return ": ".join(parts) or text
    if isinstance(error, str):
        return error
    return text


def classify(
    status: int,
    headers: CIMultiDictProxy[str],
    body: bytes,
    where: str,
    redact: Callable[[str], str],
) -> ProviderError:
    """Map an HTTP error status to the error class the runner acts on."""
    # Redact before clipping, so a cut cannot leave half a key unmatched.
    detail = clip(redact(_message(body)))
    message = f"{where}: HTTP {status}: {detail}"
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if status in (429, 503):
        # 503 is the provider saying "too busy" whether or not it says when to come back:
        # backpressure the runner defers and cuts on, not a failure that spends retries.
        return RateLimited(message, retry_after=retry_after, status=status)
    if status >= 500 or status in _TRANSIENT_4XX:
        return TransientError(message, status=status)
    if status in (401, 403) or (status == 404 and "model" in detail.lower()):
        # Bad credentials or an unknown model: every request would fail the same way.
        return Misconfigured(message, status=status)
    return PermanentError(message, status=status)


def _stamped(
    error: ProviderError, ratelimit: RateLimitInfo | None, sent_at: float
) -> ProviderError:
    """`error` carrying the budget its response stated and when its request was sent."""
    error.ratelimit = ratelimit
    error.sent_at = sent_at
    return error


class HttpClient:
    """Sends one provider's requests with its auth, timeout and retry policy; redacts errors."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        name: str,
        base_url: str,
        api_key: str | None,
        timeout: float,
        retry: RequestRetryPolicy,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.name = name
        self.max_response_bytes = max_response_bytes
        self.base_url = URL(base_url.rstrip("/") + "/")
        self.retry_policy = retry
        self._session = session
        # A request's own timeout replaces the session's in aiohttp: restate the session's
        # TCP connect timeout, or a connect that hangs would wait the whole `timeout`. (Not
        # `connect`, which also covers the wait for a free connection of the pool.)
        self._timeout = aiohttp.ClientTimeout(
            total=timeout, sock_connect=session.timeout.sock_connect
        )
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.redact = Redactor([api_key])

    def __repr__(self) -> str:
        return f"HttpClient(name={self.name!r}, base_url={str(self.base_url)!r})"

    def api_url(self, path: str) -> URL:
        """An API path under the base URL (keeping any path prefix the base has)."""
        return self.base_url.join(URL(path.lstrip("/")))

    def resolve(self, ref: str) -> URL:
        """A URL the server handed us (absolute, or relative to the base URL)."""
        return self.base_url.join(URL(ref))

    async def retry(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """Run one I/O step under the retry policy."""
        return await with_retries(self.retry_policy, f"{self.name} {what}", step)

    async def request(
        self,
        method: str,
        target: str | URL,
        *,
        idempotency_key: str | None = None,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> bytes:
        """One request to an API path or a resolved URL; 2xx body, else a classified error."""
        url = target if isinstance(target, URL) else self.api_url(target)
        # The key goes only to the provider's own origin, never to a CDN it links to.
        headers = dict(self._auth) if url.origin() == self.base_url.origin() else {}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        # The path may come from a provider's response (an image URL): clip it.
        where = f"{self.name} {method} {clip(url.path, 100)}"
        sent_at = time.time()
        ratelimit: RateLimitInfo | None = None
        try:
            async with self._session.request(
                method, url, json=json_body, params=params, headers=headers, timeout=self._timeout
            ) as resp:
                status, resp_headers = resp.status, resp.headers
                # Every answer's budget, success or not, before the body can fail to arrive.
                ratelimit = parse_ratelimit(resp_headers)
                budget.note(ratelimit)
                if status >= 400:
                    body = await read_prefix(resp, MAX_ERROR_BODY_BYTES)
                else:
                    body = await read_body(resp, self.max_response_bytes, where)
        except TimeoutError as exc:
            # aiohttp's connect and read timeouts are TimeoutErrors too (ServerTimeoutError).
            error: ProviderError = ProviderTimeout(self._timeout_message(where, exc))
            raise _stamped(error, ratelimit, sent_at) from exc
        except (aiohttp.ClientError, OSError) as exc:
            detail = clip(self.redact(f"{type(exc).__name__}: {exc}"))
            raise _stamped(TransientError(f"{where}: {detail}"), ratelimit, sent_at) from exc
        except ProviderError as exc:  # ResponseTooLarge
            _stamped(exc, ratelimit, sent_at)
            raise
        if status >= 400:
            error = classify(status, resp_headers, body, where, self.redact)
            raise _stamped(error, ratelimit, sent_at)
        return body

    def _timeout_message(self, where: str, exc: TimeoutError) -> str:
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return f"{where}: could not connect in {self._timeout.sock_connect}s"
        return f"{where}: no answer in {self._timeout.total}s"

    async def request_json(self, method: str, target: str | URL, **kwargs: Any) -> Any:
        """Like request(), parsing the body; a body that is not JSON is a TransientError."""
        body = await self.request(method, target, **kwargs)
        try:
            return json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested past ~1,000
            raise self.malformed(f"{method} {clip(str(target), 100)}", "body is not JSON") from None

    def malformed(self, where: str, what: str) -> TransientError:
        """A 2xx whose body we cannot use: retried like any transient failure."""
        return TransientError(
            self.provider_text(f"{self.name} {where}: malformed response: {what}", 500)
        )

    def provider_text(self, text: str, limit: int = MAX_PROVIDER_TEXT) -> str:
        """Text from a response, fit for a message: redacted, then clipped to `limit`."""
        # Cut long before redacting (regexes over megabytes are slow), then clip well inside
        # that cut, so a key the first cut halved is dropped whole, never shown in part.
        return clip(self.redact(text[: limit * 8]), limit)

    def external_id(self, where: str, value: Any) -> str:
        """A job id from a response: a non-empty string of sane length, else malformed."""
        if not isinstance(value, str) or not value or len(value) > MAX_EXTERNAL_ID:
            raise self.malformed(where, "no usable job id")
        return value

    def image_refs(self, where: str, refs: Any) -> tuple[str, ...]:
        """Image URLs/refs from a job's status: strings of sane length, else malformed."""
        if not isinstance(refs, list) or not all(
            isinstance(ref, str) and 0 < len(ref) <= MAX_IMAGE_REF for ref in refs
        ):
            raise self.malformed(where, "images is not a list of URLs")
        return tuple(refs)
