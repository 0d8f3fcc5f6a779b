"""The sim speaks the OpenAI images API well enough for the official client."""

from __future__ import annotations

import base64
import io

import aiohttp
import openai
import pytest
from PIL import Image

from tests.workers.conftest import SimFactory
from workers.sim import RunningSim

pytestmark = pytest.mark.anyio


def client(sim: RunningSim) -> openai.AsyncOpenAI:
    """An official client with its own retries off, so each call is one request."""
    return openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="x", max_retries=0)


async def test_b64_images_open_with_pillow_at_scaled_size(sim_factory: SimFactory) -> None:
    """b64_json PNGs decode, and their size is the requested size × image_scale."""
    sim = await sim_factory(image_scale=0.125)
    async with client(sim) as api:
        result = await api.images.generate(
            prompt="a fox in a beret",
            n=2,
            size="1344x768",
            response_format="b64_json",
            model="sim",
            extra_body={"seed": 7, "polish": False},
        )
    assert result.data is not None and len(result.data) == 2
    for item in result.data:
        assert item.b64_json is not None
        with Image.open(io.BytesIO(base64.b64decode(item.b64_json))) as image:
            assert image.format == "PNG"
            assert image.size == (168, 96)


async def test_url_images_are_fetchable(sim: RunningSim, session: aiohttp.ClientSession) -> None:
    """response_format=url returns links the sim serves as PNG."""
    async with client(sim) as api:
        result = await api.images.generate(prompt="a cat", response_format="url")
    assert result.data is not None and result.data[0].url is not None
    async with session.get(result.data[0].url) as resp:
        assert resp.content_type == "image/png"
        assert (await resp.read()).startswith(b"\x89PNG")


async def test_empty_prompt_is_a_bad_request(sim: RunningSim) -> None:
    """400 with OpenAI's error body, which the client parses."""
    async with client(sim) as api:
        with pytest.raises(openai.BadRequestError) as caught:
            await api.images.generate(prompt="")
    assert caught.value.status_code == 400
    assert caught.value.param == "prompt"


async def test_forbidden_word_is_a_content_policy_violation(sim: RunningSim) -> None:
    """The word "forbidden" triggers the content-policy 400."""
    async with client(sim) as api:
        with pytest.raises(openai.BadRequestError) as caught:
            await api.images.generate(prompt="the Forbidden city")
    assert caught.value.code == "content_policy_violation"


async def test_injected_429_reaches_the_client_as_rate_limit(sim_factory: SimFactory) -> None:
    """rate_limit_rate=1 answers 429 with Retry-After."""
    sim = await sim_factory(rate_limit_rate=1.0, retry_after_s=3)
    async with client(sim) as api:
        with pytest.raises(openai.RateLimitError) as caught:
            await api.images.generate(prompt="a cat")
    assert caught.value.response.headers["retry-after"] == "3"
