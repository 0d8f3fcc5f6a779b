"""Results after a real run: the manifest, its pages, the PNGs, and nothing else on disk."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.store import PgStore
from runner.loop.service import serve
from runner.results import load_manifest
from tests.api.conftest import Api

pytestmark = pytest.mark.anyio

SPEC = {
    "name": "owls",
    "prompts": ["an owl at {hour}"],
    "variables": {"hour": ["dawn", "noon", "dusk"]},
}
SPEC.update({"seed": 42, "batch_size": 2})
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


async def submit_and_run(api: Api, engine: AsyncEngine) -> int:
    """Submit SPEC through the API and run a real runner (against the sim) until idle."""
    async with api.client.post("/v1/tasks", json=SPEC) as response:
        assert response.status == 201
        task_id = int((await response.json())["id"])
    with anyio.fail_after(60):
        await serve(engine, api.config, api.env, until_idle=True)
    return task_id


@pytest.fixture
async def done(api_with_sim: Api, engine: AsyncEngine) -> tuple[Api, int]:
    """The API and a task whose three subtasks completed with two images each."""
    return api_with_sim, await submit_and_run(api_with_sim, engine)


async def get_json(api: Api, path: str) -> tuple[int, Any, dict[str, str]]:
    """(status, body, headers) of a GET."""
    async with api.client.get(path) as response:
        return response.status, await response.json(), dict(response.headers)


async def test_manifest_lists_every_subtask_with_its_images(done: tuple[Api, int]) -> None:
    """Ordinal order; prompt, seed (seed + ordinal), status; two images with URL and sha256."""
    api, task_id = done
    status, manifest, _ = await get_json(api, f"/v1/tasks/{task_id}/results")
    assert status == 200
    assert (manifest["task_id"], manifest["status"], manifest["next_after"]) == (
        task_id,
        "completed",
        None,
    )
    subtasks = manifest["subtasks"]
    assert [(s["ordinal"], s["prompt"], s["seed"], s["status"]) for s in subtasks] == [
        (0, "an owl at dawn", 42, "completed"),
        (1, "an owl at noon", 43, "completed"),
        (2, "an owl at dusk", 44, "completed"),
    ]
    for sub in subtasks:
        assert [image["url"] for image in sub["images"]] == [
            f"/v1/images/{task_id}/{sub['id']}-{n}.png" for n in range(2)
        ]
        assert all(len(image["sha256"]) == 64 for image in sub["images"])
        assert all("path" not in image for image in sub["images"])  # no server paths leak


async def test_every_image_url_serves_the_png_with_its_hash(done: tuple[Api, int]) -> None:
    """Each URL returns a PNG whose sha256 is the one in the manifest."""
    api, task_id = done
    _, manifest, _ = await get_json(api, f"/v1/tasks/{task_id}/results")
    urls = [(i["url"], i["sha256"]) for s in manifest["subtasks"] for i in s["images"]]
    assert len(urls) == 6
    for url, sha256 in urls:
        async with api.client.get(url) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "image/png"
            data = await response.read()
        assert data.startswith(PNG_MAGIC)
        assert hashlib.sha256(data).hexdigest() == sha256


async def test_manifest_pages_follow_the_cursor(done: tuple[Api, int]) -> None:
    """limit=2 gives ordinals 0-1 and next_after 1; the next page has ordinal 2 and no cursor."""
    api, task_id = done
    _, first, headers = await get_json(api, f"/v1/tasks/{task_id}/results?limit=2")
    assert [s["ordinal"] for s in first["subtasks"]] == [0, 1] and first["next_after"] == 1
    assert headers["Link"] == f'</v1/tasks/{task_id}/results?limit=2&after=1>; rel="next"'
    _, second, headers = await get_json(api, f"/v1/tasks/{task_id}/results?limit=2&after=1")
    assert [s["ordinal"] for s in second["subtasks"]] == [2] and second["next_after"] is None
    assert "Link" not in headers


async def test_the_cli_manifest_is_the_api_manifest_plus_local_paths(
    done: tuple[Api, int], engine: AsyncEngine
) -> None:
    """`imgrun results --json` has the same entries, each image also with its file path."""
    api, task_id = done
    _, manifest, _ = await get_json(api, f"/v1/tasks/{task_id}/results")
    local = json.loads(json.dumps(await load_manifest(PgStore(engine), task_id), default=str))
    for image in (i for s in local["subtasks"] for i in s["images"]):
        path = Path(image.pop("path"))
        assert path.is_file() and path.is_relative_to(api.images)
    assert local == manifest


async def raw_status(api: Api, target: str) -> int:
    """The status of a GET whose request line carries `target` byte for byte (no client
    normalisation of '..' or escapes)."""
    port = int(api.url.rsplit(":", 1)[1])
    request = (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {api.token}\r\nConnection: close\r\n\r\n"
    )
    with anyio.fail_after(10):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(request.encode())
            data = b""
            try:
                while True:
                    data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    return int(data.split(b" ", 2)[1])


TRAVERSALS = [
    "/v1/images/../../../../etc/passwd",
    "/v1/images/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/v1/images/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/v1/images/%2Fetc%2Fpasswd",
    "/v1/images//etc/passwd",
    "/v1/images/{task}/../../../etc/passwd",
    "/v1/images/{task}/{sub}-0.png/../../../../etc/passwd",
    "/v1/images/{task}/{sub}-0.png%00.txt",
    "/v1/images/{task}/.{sub}-0.png.tmp",
    "/v1/images/{task}/{sub}-0.PNG",
    "/v1/images/{task}/{sub}-7.png",
    "/v1/images/{other}/{sub}-0.png",
    "/v1/images/{task}",
    "/v1/images/",
]


@pytest.mark.parametrize("template", TRAVERSALS)
async def test_no_request_path_reaches_other_files(
    done: tuple[Api, int], engine: AsyncEngine, template: str
) -> None:
    """Traversal, encoded traversal, absolute paths, temp files, other tasks' ids: all 404."""
    api, task_id = done
    async with engine.connect() as connection:
        sub = await connection.scalar(
            text("SELECT min(id) FROM subtasks WHERE task_id = :id"), {"id": task_id}
        )
    target = template.format(task=task_id, sub=sub, other=task_id + 1)
    assert await raw_status(api, target) == 404
    # The real image next to it is served, so a 404 above is the guard, not a broken route.
    assert await raw_status(api, f"/v1/images/{task_id}/{sub}-0.png") == 200


async def test_a_symlink_in_the_output_folder_is_not_followed(
    done: tuple[Api, int], engine: AsyncEngine, tmp_path: Path
) -> None:
    """A stored image replaced by a link to a file outside the folder is a 404."""
    api, task_id = done
    async with engine.connect() as connection:
        sub = await connection.scalar(
            text("SELECT min(id) FROM subtasks WHERE task_id = :id"), {"id": task_id}
        )
        recorded = await connection.scalar(
            text("SELECT result->'images'->0->>'path' FROM subtasks WHERE id = :id"), {"id": sub}
        )
    outside = tmp_path / "secret.png"
    outside.write_bytes(PNG_MAGIC + b"not yours")
    image = api.images / str(task_id) / Path(recorded).name
    assert image.is_file()
    image.unlink()
    os.symlink(outside, image)
    async with api.client.get(f"/v1/images/{task_id}/{sub}-0.png") as response:
        assert response.status == 404
        assert b"not yours" not in await response.read()


async def test_a_file_of_an_unfinished_subtask_is_not_served(
    api_with_sim: Api, engine: AsyncEngine
) -> None:
    """Only images the store wrote for a completed subtask: a file for a pending one is a 404."""
    api = api_with_sim
    async with api.client.post("/v1/tasks", json=SPEC) as response:
        task_id = (await response.json())["id"]
    async with engine.connect() as connection:
        sub = await connection.scalar(
            text("SELECT min(id) FROM subtasks WHERE task_id = :id"), {"id": task_id}
        )
    folder = api.images / str(task_id)
    folder.mkdir(parents=True)
    (folder / f"{sub}-0.png").write_bytes(PNG_MAGIC)
    async with api.client.get(f"/v1/images/{task_id}/{sub}-0.png") as response:
        assert response.status == 404
    _, manifest, _ = await get_json(api, f"/v1/tasks/{task_id}/results")
    assert {s["status"] for s in manifest["subtasks"]} == {"pending"}
    assert all(s["images"] == [] for s in manifest["subtasks"])
