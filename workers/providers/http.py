"""The shared client session and one provider's HTTP plumbing: headers, timeout, error classes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from workers.errors import (
    PermanentError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    TransientError,
)
from workers.headers import parse_retry_after
from workers.providers.retry import RetryPolicy, with_retries
from workers.providers.secrets import Redactor

T = TypeVar("T")
_MAX_MESSAGE = 300  # characters of a provider's error text kept in our message
# 4xx codes that mean "try again", not "your request is wrong".
_TRANSIENT_4XX = frozenset({408, 409, 423, 425})


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
    except ValueError:
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
    # Redact before truncating, so a cut cannot leave half a key unmatched.
    detail = redact(_message(body))
    if len(detail) > _MAX_MESSAGE:
        detail = detail[:_MAX_MESSAGE] + "…"
    message = f"{where}: HTTP {status}: {detail}"
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if status == 429 or (status == 503 and retry_after is not None):
        return RateLimited(message, retry_after=retry_after, status=status)
    if status >= 500 or status in _TRANSIENT_4XX:
        return TransientError(message, status=status)
    return PermanentError(message, status=status)


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
        retry: RetryPolicy,
    ) -> None:
        self.name = name
        self.base_url = URL(base_url.rstrip("/") + "/")
        self.retry_policy = retry
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
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
        where = f"{self.name} {method} {url.path}"
        try:
            async with self._session.request(
                method, url, json=json_body, params=params, headers=headers, timeout=self._timeout
            ) as resp:
                body = await resp.read()
                status, resp_headers = resp.status, resp.headers
        except TimeoutError as exc:
            raise ProviderTimeout(f"{where}: no answer in {self._timeout.total}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise TransientError(self.redact(f"{where}: {type(exc).__name__}: {exc}")) from exc
        if status >= 400:
            raise classify(status, resp_headers, body, where, self.redact)
        return body

    async def request_json(self, method: str, target: str | URL, **kwargs: Any) -> Any:
        """Like request(), parsing the body; a body that is not JSON is a TransientError."""
        body = await self.request(method, target, **kwargs)
        try:
            return json.loads(body)
        except ValueError:
            raise self.malformed(f"{method} {target}", "body is not JSON") from None

    def malformed(self, where: str, what: str) -> TransientError:
        """A 2xx whose body we cannot use: retried like any transient failure."""
        return TransientError(self.redact(f"{self.name} {where}: malformed response: {what}"))
