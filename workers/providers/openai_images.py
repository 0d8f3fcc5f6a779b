"""OpenAI-compatible images API: POST /v1/images/generations, b64_json or url."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workers.providers.decode import b64_image, expect_count
from workers.types import ImageRequest

if TYPE_CHECKING:  # annotations only: checking a config (`imgrun submit`) skips aiohttp
    from workers.providers.http import HttpClient

# extra options of type "openai" (and "sim", which sends seed and polish too).
OPTIONS: dict[str, Any] = {
    "response_format": "b64_json",  # or "url"; the images are downloaded either way
    "send_seed": False,  # add `seed` and `polish` to the body (the sim and some servers take them)
    "sizes": {},  # ratio → "WxH" overrides, for models that accept only a few sizes
    "body": {},  # extra body fields, e.g. {"quality": "hd"}
}


class OpenAIImages:
    """A StandardProvider for any OpenAI-compatible images endpoint."""

    def __init__(self, http: HttpClient, *, model: str, options: dict[str, Any]) -> None:
        self._http = http
        self._model = model
        self._format: str = options["response_format"]
        self._send_seed: bool = options["send_seed"]
        self._sizes: dict[str, str] = dict(options["sizes"])
        self._body: dict[str, Any] = dict(options["body"])
        # Accept base URLs with or without the /v1 that OpenAI's own clients include.
        has_v1 = http.base_url.path.rstrip("/").endswith("/v1")
        self._path = "images/generations" if has_v1 else "v1/images/generations"

    def __repr__(self) -> str:
        return f"OpenAIImages({self._http!r}, model={self._model!r})"

    async def generate(self, request: ImageRequest) -> list[bytes]:
        """POST one generation for the whole batch and return its PNG bytes."""
        return await self._http.retry("generate", lambda: self._generate_once(request))

    def _payload(self, request: ImageRequest) -> dict[str, Any]:
        width, height = request.size
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "n": request.batch_size,
            "size": self._sizes.get(request.ratio, f"{width}x{height}"),
            "response_format": self._format,
            **self._body,
        }
        if self._model:
            body["model"] = self._model
        if self._send_seed:
            body["seed"] = request.seed
            body["polish"] = request.polish
        return body

    async def _generate_once(self, request: ImageRequest) -> list[bytes]:
        data = await self._http.request_json(
            "POST",
            self._path,
            json_body=self._payload(request),
            idempotency_key=request.idempotency_key,
        )
        where = "generate"
        items = expect_count(
            self._http,
            where,
            data.get("data") if isinstance(data, dict) else None,
            request.batch_size,
        )
        return [await self._image(where, item) for item in items]

    async def _image(self, where: str, item: Any) -> bytes:
        if not isinstance(item, dict):
            raise self._http.malformed(where, "data item is not an object")
        if "b64_json" in item:
            return b64_image(self._http, where, item["b64_json"])
        if isinstance(item.get("url"), str):
            (url,) = self._http.image_refs(where, [item["url"]])
            return await self._http.request("GET", self._http.resolve(url))
        raise self._http.malformed(where, "data item has neither b64_json nor url")
