"""Results: a task's manifest, page by page, and the stored PNGs it points to."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from aiohttp import web

from runner.api.context import IMAGES, STORE
from runner.api.errors import ApiError
from runner.api.manifest import page, parse_image_path
from runner.api.params import int_param, path_id
from runner.api.tasks import json_response, next_link
from workers.names import is_image_of

routes = web.RouteTableDef()

MAX_ORDINAL = 2**31 - 1


@routes.get(r"/v1/tasks/{id:\d+}/results")
async def results(request: web.Request) -> web.Response:
    """Subtasks in ordinal order with their images' URLs and sha256; `after` pages."""
    task_id = path_id(request.match_info["id"])
    after = int_param(request.query, "after", default=-1, low=-1, high=MAX_ORDINAL)
    limit = int_param(request.query, "limit", default=500, low=1, high=1000)
    assert after is not None and limit is not None
    store = request.app[STORE]
    task = await store.task_header(task_id)
    if task is None:
        raise ApiError(404, f"task {task_id}: not found")
    rows = await store.manifest_page(task_id, after=after, limit=limit)
    manifest = page(task, rows, limit=limit)
    cursor = manifest["next_after"]
    return json_response(
        manifest, headers=next_link(request, cursor) if cursor is not None else None
    )


def image_file(
    root: Path, task_id: int, subtask_id: int, index: int, record: Mapping[str, Any]
) -> Path | None:
    """The recorded file of this image if it is a regular file inside `root` (no symlink out)."""
    # The URL names the image by its index; the file's name (attempt-scoped) comes from the
    # recorded result, and only if it is a name the store writes for these very ids.
    name = PurePath(str(record.get("path") or "")).name
    if not is_image_of(name, subtask_id, index):
        return None
    # Built from integers and a checked name; resolving catches a symlink planted inside.
    candidate = (root / str(task_id) / name).resolve()
    if not candidate.is_relative_to(root.resolve()) or not candidate.is_file():
        return None
    return candidate


@routes.get("/v1/images/{path:.*}")
async def image(request: web.Request) -> web.StreamResponse:
    """A stored PNG of a completed subtask; anything else (or any other path) is a 404."""
    ids = parse_image_path(request.match_info["path"])
    if ids is None:
        raise ApiError(404, "no such image")
    record = await request.app[STORE].stored_image(*ids)
    path = image_file(request.app[IMAGES], *ids, record) if record is not None else None
    if record is None or path is None:
        raise ApiError(404, "no such image")
    headers = {"Content-Type": "image/png", "X-Imgrun-Sha256": str(record.get("sha256", ""))}
    return web.FileResponse(path, headers=headers)
