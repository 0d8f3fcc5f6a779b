"""Task routes against the real app and database: submit, keys, list, show, cancel, retry."""

from __future__ import annotations

import json
import re
from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db import queries
from db.queries import ErrorRecord
from db.store import PgStore
from runner.api.openapi import document
from runner.jsonable import jsonable
from runner.status_read import load_status
from tests.api.conftest import Api, ApiFactory

pytestmark = pytest.mark.anyio

SPEC: dict[str, Any] = {
    "name": "fox portraits",
    "prompts": ["a {animal} wearing a {hat}", "a {animal} in snow"],
    "variables": {"animal": ["cat", "fox", "owl"], "hat": ["beret", "top hat"]},
    "batch_size": 2,
    "seed": 100,
}
# The same spec as YAML, formatted differently.
SPEC_YAML = """
name: fox portraits
seed: 100
batch_size: 2
prompts:
  - a {animal} wearing a {hat}
  - a {animal} in snow
variables:
  hat: [beret, top hat]
  animal: [cat, fox, owl]
"""
JSON = {"Content-Type": "application/json"}
YAML = {"Content-Type": "application/yaml"}


async def counts(engine: AsyncEngine) -> tuple[int, int]:
    """(tasks, subtasks) rows."""
    async with engine.connect() as connection:
        tasks = await connection.scalar(text("SELECT count(*) FROM tasks"))
        subtasks = await connection.scalar(text("SELECT count(*) FROM subtasks"))
    return int(tasks or 0), int(subtasks or 0)


async def post_spec(api: Api, spec: Any, **headers: str) -> tuple[int, dict[str, Any]]:
    """POST /v1/tasks with a JSON spec; (status, body)."""
    body = json.dumps(spec).encode()
    async with api.client.post("/v1/tasks", data=body, headers={**JSON, **headers}) as response:
        return response.status, await response.json()


async def test_submit_json_creates_the_task(api: Api, engine: AsyncEngine) -> None:
    """201 with id, name, pool, provider and the expansion's counts; rows written; Location."""
    async with api.client.post("/v1/tasks", data=json.dumps(SPEC), headers=JSON) as response:
        assert response.status == 201
        body = await response.json()
        assert response.headers["Location"] == f"/v1/tasks/{body['id']}"
    # 3 animals × 2 hats + 3 animals = 9 subtasks, × batch_size 2 = 18 images.
    assert body == {
        "id": body["id"],
        "name": "fox portraits",
        "pool": "standard",
        "provider": "sim",
        "total_subtasks": 9,
        "total_images": 18,
    }
    assert await counts(engine) == (1, 9)
    task = await queries.get_task(engine, body["id"])
    assert task is not None and task["user_id"] == "tester" and task["seed"] == 100


async def test_submit_yaml_is_the_same_spec(api: Api, engine: AsyncEngine) -> None:
    """application/yaml is accepted and expands the same way."""
    async with api.client.post("/v1/tasks", data=SPEC_YAML, headers=YAML) as response:
        assert response.status == 201
        body = await response.json()
    assert (body["total_subtasks"], body["total_images"]) == (9, 18)
    assert await counts(engine) == (1, 9)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"prompts": ["a {animal} with {nothing}"]}, "prompts[0]"),
        ({"variables": {"animal": ["cat"], "hat": ["x"], "spare": ["y"]}}, "variables.spare"),
        ({"ratio": "5:4"}, "ratio"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": "2"}, "batch_size"),
        ({"provider": "nobody"}, "provider"),
        ({"variables": {"animal": list(range(50)), "hat": list(range(50))}}, "prompts × variables"),
    ],
)
async def test_an_invalid_spec_is_422_naming_the_field_and_writes_nothing(
    start_api: ApiFactory, engine: AsyncEngine, change: dict[str, Any], field: str
) -> None:
    """The same validation and caps as `imgrun submit`, as a 422 naming the field."""
    api = await start_api({"submit": {"max_subtasks": 1000}})
    status, body = await post_spec(api, {**SPEC, **change})
    assert status == 422
    assert body["error"]["field"] == field
    assert body["error"]["message"] and "\n" not in body["error"]["message"]
    assert await counts(engine) == (0, 0)


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'{"name": "x", "prompts": [', JSON),
        (b"[1, 2, 3]", JSON),
        (b"name: x\nprompts: *nope\n", YAML),
        (b"base: &b [a, b]\nname: x\nprompts: *b\n", YAML),
        (b"\xff\xfe not text", JSON),
        (b"[" * 100_000, JSON),
    ],
)
async def test_a_malformed_document_is_422_about_the_whole_body(
    api: Api, engine: AsyncEngine, body: bytes, headers: dict[str, str]
) -> None:
    """Broken JSON/YAML, a non-mapping, YAML aliases, non-UTF-8, deep nesting: 422, no field."""
    async with api.client.post("/v1/tasks", data=body, headers=headers) as response:
        assert response.status == 422
        error = (await response.json())["error"]
    assert error["field"] is None and error["message"]
    assert await counts(engine) == (0, 0)


async def test_other_media_types_are_415(api: Api, engine: AsyncEngine) -> None:
    """Only JSON and YAML bodies are specs."""
    for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
        headers = {"Content-Type": content_type} if content_type else {}
        async with api.client.post("/v1/tasks", data=b"{}", headers=headers) as response:
            assert response.status == 415
            assert "application/json" in (await response.json())["error"]["message"]
    assert await counts(engine) == (0, 0)


async def test_a_body_over_the_cap_is_413_and_writes_nothing(
    start_api: ApiFactory, engine: AsyncEngine
) -> None:
    """[api] max_body bounds what a request may send (here 2 KiB)."""
    api = await start_api({"api": {"max_body": 2048}})
    big = {**SPEC, "prompts": ["a {animal} " + "y" * 3000], "variables": {"animal": ["cat"]}}
    status, body = await post_spec(api, big)
    assert status == 413
    assert body["error"]["message"] == "request body too large (limit 2048 bytes)"
    small = {**SPEC, "prompts": ["a {animal} wearing a {hat}"]}
    assert (await post_spec(api, small))[0] == 201  # under the cap it works
    assert await counts(engine) == (1, 6)


async def test_the_same_key_returns_the_same_task(api: Api, engine: AsyncEngine) -> None:
    """First 201, then 200 with the same id, also for the same spec sent as YAML."""
    key = {"Idempotency-Key": "nightly-2026-11-25"}
    first_status, first = await post_spec(api, SPEC, **key)
    second_status, second = await post_spec(api, SPEC, **key)
    async with api.client.post("/v1/tasks", data=SPEC_YAML, headers={**YAML, **key}) as response:
        third_status, third = response.status, await response.json()
    assert (first_status, second_status, third_status) == (201, 200, 200)
    assert first == second == third
    assert await counts(engine) == (1, 9)


async def test_the_same_key_with_another_spec_is_409(api: Api, engine: AsyncEngine) -> None:
    """A key guards one spec: a different body under it is refused and writes nothing."""
    key = {"Idempotency-Key": "k-1"}
    status, first = await post_spec(api, SPEC, **key)
    assert status == 201
    status, body = await post_spec(api, {**SPEC, "seed": 101}, **key)
    assert status == 409
    assert body["error"]["field"] == "Idempotency-Key"
    assert f"task {first['id']}" in body["error"]["message"]
    assert await counts(engine) == (1, 9)


async def test_concurrent_submits_with_one_key_make_one_task(api: Api, engine: AsyncEngine) -> None:
    """Eight clients retrying at the same moment: one task, one 201, everyone gets its id."""
    results: list[tuple[int, dict[str, Any]]] = []

    async def one() -> None:
        results.append(await post_spec(api, SPEC, **{"Idempotency-Key": "race"}))

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(one)
    assert sorted(status for status, _ in results) == [200] * 7 + [201]
    assert len({body["id"] for _, body in results}) == 1
    assert await counts(engine) == (1, 9)


@pytest.mark.parametrize("key", ["has space", "", "x" * 201, "naïve"])
async def test_a_malformed_key_is_400(api: Api, engine: AsyncEngine, key: str) -> None:
    """Keys are 1-200 printable ASCII characters."""
    status, body = await post_spec(api, SPEC, **{"Idempotency-Key": key})
    assert status == 400 and body["error"]["field"] == "Idempotency-Key"
    assert await counts(engine) == (0, 0)


async def test_list_pages_newest_first_like_the_cli(api: Api, engine: AsyncEngine) -> None:
    """The same rows as `imgrun tasks --json`; a Link header leads to the next page."""
    ids = [(await post_spec(api, {**SPEC, "name": f"t{i}"}))[1]["id"] for i in range(3)]
    async with api.client.get("/v1/tasks") as response:
        everything = await response.json()
    assert everything == jsonable(await queries.list_tasks(engine))
    async with api.client.get("/v1/tasks?limit=2") as response:
        first = await response.json()
        link = response.headers["Link"]
    assert [t["id"] for t in first] == [ids[2], ids[1]]
    assert link == f'</v1/tasks?limit=2&after={ids[1]}>; rel="next"'
    async with api.client.get(link[1 : link.index(">")]) as response:
        assert [t["id"] for t in await response.json()] == [ids[0]]
        assert "Link" not in response.headers


async def test_list_filters_by_status(api: Api) -> None:
    """?status= keeps only tasks in that status."""
    keep = (await post_spec(api, SPEC))[1]["id"]
    other = (await post_spec(api, SPEC))[1]["id"]
    async with api.client.post(f"/v1/tasks/{other}/cancel") as response:
        assert response.status == 200
    async with api.client.get("/v1/tasks?status=pending") as response:
        assert [t["id"] for t in await response.json()] == [keep]
    async with api.client.get("/v1/tasks?status=canceled") as response:
        assert [t["id"] for t in await response.json()] == [other]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("after=x", "after"),
        ("status=done", "status"),
    ],
)
async def test_list_refuses_bad_parameters(api: Api, query: str, field: str) -> None:
    """A bad query parameter is a 400 naming it."""
    async with api.client.get(f"/v1/tasks?{query}") as response:
        assert response.status == 400
        assert (await response.json())["error"]["field"] == field


async def test_show_cancel_retry_match_the_cli(api: Api, engine: AsyncEngine) -> None:
    """GET a task = `task --json`; cancel and retry answer as `cancel/retry --json` do."""
    task_id = (await post_spec(api, SPEC))[1]["id"]
    async with api.client.get(f"/v1/tasks/{task_id}") as response:
        assert await response.json() == jsonable(await queries.get_task(engine, task_id))
    async with api.client.post(f"/v1/tasks/{task_id}/cancel") as response:
        assert await response.json() == {
            "task_id": task_id,
            "previous_status": "pending",
            "canceled": 9,
            "in_flight": 0,
        }
    async with engine.begin() as connection:  # two subtasks failed for good
        await connection.execute(
            text("UPDATE subtasks SET status = 'failed' WHERE task_id = :id AND ordinal < 2"),
            {"id": task_id},
        )
        await connection.execute(
            text(
                "UPDATE tasks SET failed_subtasks = 2, canceled_subtasks = 7, status = 'partial'"
                " WHERE id = :id"
            ),
            {"id": task_id},
        )
    async with api.client.post(f"/v1/tasks/{task_id}/retry") as response:
        assert await response.json() == {"task_id": task_id, "requeued": 2}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/tasks/424242"),
        ("POST", "/v1/tasks/424242/cancel"),
        ("POST", "/v1/tasks/424242/retry"),
        ("GET", "/v1/tasks/424242/results"),
        ("GET", "/v1/tasks/99999999999999999999"),
        ("GET", "/v1/tasks/abc"),
        ("GET", "/v1/nothing/here"),
    ],
)
async def test_unknown_ids_and_paths_are_404(api: Api, method: str, path: str) -> None:
    """Unknown tasks, ids beyond bigint and unknown paths: a JSON 404."""
    async with api.client.request(method, path) as response:
        assert response.status == 404
        assert (await response.json())["error"]["message"]


async def test_a_wrong_method_is_a_json_405(api: Api) -> None:
    """DELETE on a task is not a route."""
    async with api.client.delete("/v1/tasks/1") as response:
        assert response.status == 405
        assert (await response.json())["error"]["message"] == "method not allowed"


async def test_errors_and_status_match_the_cli(api: Api, engine: AsyncEngine) -> None:
    """/v1/errors = `errors --json`; /v1/status has the snapshot of `status --json`."""
    task_id = (await post_spec(api, SPEC))[1]["id"]
    async with engine.connect() as connection:
        first = await connection.scalar(
            text("SELECT min(id) FROM subtasks WHERE task_id = :id"), {"id": task_id}
        )
    records = [
        ErrorRecord("TransientError", f"boom {n}", None, "standard", "sim", first) for n in "ab"
    ]
    await queries.record_errors(engine, [records[0], records[0], records[1]])
    async with api.client.get("/v1/errors?limit=1") as response:
        body = await response.json()
    assert body == jsonable(await queries.top_errors(engine, 1))
    assert [(e["error_message"], e["count"]) for e in body] == [("boom a", 2)]
    async with api.client.get("/v1/status") as response:
        status = await response.json()
    expected = (await load_status(PgStore(engine))).to_json()
    assert set(status) == set(expected)
    assert [t["id"] for t in status["tasks"]] == [task_id]


async def test_openapi_describes_exactly_the_routes(api: Api, engine: AsyncEngine) -> None:
    """Every route the app serves is in the document, and the document invents none."""
    from runner.api.app import build_app

    app = build_app(PgStore(engine), api.config, api.images)
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    described = {
        (method.upper(), path) for path, item in document()["paths"].items() for method in item
    }
    assert served == described
    async with api.client.get("/v1/openapi.json") as response:
        served_document = await response.json()
    assert served_document == document() and served_document["openapi"] == "3.1.0"
    # Every reference resolves, and every guarded operation documents its 401.
    refs = re.findall(r'"\$ref": "#/([^"]+)"', json.dumps(served_document))
    for ref in refs:
        node: Any = served_document
        for part in ref.split("/"):
            node = node[part]
    for path, item in served_document["paths"].items():
        for operation in item.values():
            assert ("401" in operation["responses"]) is (path != "/healthz"), path


async def test_a_stalled_upload_is_cut_off_at_the_request_timeout(
    start_api: ApiFactory, engine: AsyncEngine
) -> None:
    """A client that promises 1000 bytes and sends 10 gets a 408 after [api] request_timeout."""
    api = await start_api({"api": {"request_timeout": 0.5}})
    port = int(api.url.rsplit(":", 1)[1])
    head = (
        "POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {api.token}\r\nContent-Length: 1000\r\n\r\n"
    )
    with anyio.fail_after(10):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(head.encode() + b'{"name": "')
            reply = await stream.receive()
    assert reply.startswith(b"HTTP/1.1 408")
    assert b"request not finished within 0.5 s" in reply
    assert await counts(engine) == (0, 0)
