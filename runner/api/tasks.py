"""Task routes: submit (optionally idempotent), list, show, cancel, retry."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from yarl import URL

from db import api_queries
from db.models import TASK_STATUSES
from db.records import TaskIsCanceled
from runner.api.context import CONFIG, STORE, TOKEN_NAME
from runner.api.errors import ApiError, split_field
from runner.api.params import MAX_ID, choice_param, int_param, path_id
from runner.errors import UserError
from runner.jsonable import jsonable
from runner.spec.model import decode_spec
from runner.submit import check_key, prepare, submit, submit_once

routes = web.RouteTableDef()

FORMATS: dict[str, Literal["json", "yaml"]] = {
    "application/json": "json",
    "application/yaml": "yaml",
    "application/x-yaml": "yaml",
    "text/yaml": "yaml",
    "text/x-yaml": "yaml",
}
KEY_HEADER = "Idempotency-Key"


def json_response(data: Any, status: int = 200, **kwargs: Any) -> web.Response:
    """JSON with datetimes as ISO 8601 strings."""
    return web.json_response(jsonable(data), status=status, **kwargs)


def next_link(request: web.Request, after: int) -> dict[str, str]:
    """A Link header to the next page (RFC 8288), keeping the other query parameters."""
    url = request.rel_url.update_query({"after": str(after)})
    return {"Link": f'<{URL(url.path_qs)}>; rel="next"'}


def _spec_error(exc: UserError, status: int = 422) -> ApiError:
    field, message = split_field(str(exc))
    # "body"/"spec" errors are about the whole document, not one field of it.
    return ApiError(status, message, None if field in ("body", "spec") else field)


@routes.post("/v1/tasks")
async def create_task(request: web.Request) -> web.Response:
    """Submit a spec (JSON or YAML); 201 with the task, or 200 for a repeated key."""
    fmt = FORMATS.get(request.content_type)
    if fmt is None:
        raise ApiError(415, "send the spec as application/json or application/yaml", None)
    body = await request.read()  # aiohttp enforces the size cap (413) while reading
    key = request.headers.get(KEY_HEADER)
    try:
        spec = decode_spec(body.decode("utf-8"), fmt, "body")
        expansion = prepare(spec, request.app[CONFIG])
    except UnicodeDecodeError:
        raise ApiError(422, "the body is not UTF-8 text") from None
    except UserError as exc:
        raise _spec_error(exc) from None
    try:
        key = check_key(key, KEY_HEADER) if key is not None else None
    except UserError as exc:
        raise _spec_error(exc, 400) from None
    store, user = request.app[STORE], request[TOKEN_NAME]
    created = True
    if key is None:
        task_id = await submit(store, expansion, user)
    else:
        try:
            submitted = await submit_once(store, expansion, user, key)
        except api_queries.KeyReused as exc:
            raise ApiError(409, str(exc), KEY_HEADER) from None
        task_id, created = submitted.task_id, submitted.created
    task = await store.task_header(task_id)
    if task is None:  # pruned between the key's lookup and now
        raise ApiError(409, f"task {task_id} of this key no longer exists", KEY_HEADER)
    fields = ("id", "name", "pool", "provider", "total_subtasks", "total_images")
    return json_response(
        {k: task[k] for k in fields},
        status=201 if created else 200,
        headers={"Location": f"/v1/tasks/{task_id}"},
    )


@routes.get("/v1/tasks")
async def list_tasks(request: web.Request) -> web.Response:
    """Tasks newest first, like `imgrun tasks --json`; `after` pages, a Link header leads on."""
    query = request.query
    status = choice_param(query, "status", TASK_STATUSES)
    limit = int_param(query, "limit", default=50, low=1, high=1000)
    after = int_param(query, "after", default=None, low=1, high=MAX_ID)
    assert limit is not None
    rows = await request.app[STORE].list_tasks_page(status=status, limit=limit, after=after)
    headers = next_link(request, int(rows[-1]["id"])) if len(rows) == limit else None
    return json_response(rows, headers=headers)


async def _task_or_404(request: web.Request, task_id: int) -> None:
    if await request.app[STORE].task_header(task_id) is None:
        raise ApiError(404, f"task {task_id}: not found")


@routes.get(r"/v1/tasks/{id:\d+}")
async def show_task(request: web.Request) -> web.Response:
    """One task, like `imgrun task ID --json`."""
    task_id = path_id(request.match_info["id"])
    task = await request.app[STORE].get_task(task_id)
    if task is None:
        raise ApiError(404, f"task {task_id}: not found")
    return json_response(task)


@routes.post(r"/v1/tasks/{id:\d+}/cancel")
async def cancel_task(request: web.Request) -> web.Response:
    """Cancel a task, like `imgrun cancel ID --json`."""
    task_id = path_id(request.match_info["id"])
    result = await request.app[STORE].cancel_task(task_id)
    if result is None:
        raise ApiError(404, f"task {task_id}: not found")
    return json_response(result)


@routes.post(r"/v1/tasks/{id:\d+}/retry")
async def retry_task(request: web.Request) -> web.Response:
    """Requeue a task's failed subtasks, like `imgrun retry ID --json`."""
    task_id = path_id(request.match_info["id"])
    try:
        result = await request.app[STORE].retry_task(task_id)
    except TaskIsCanceled as exc:
        raise ApiError(409, f"{exc}; a canceled task cannot be retried") from None
    if result is None:
        raise ApiError(404, f"task {task_id}: not found")
    return json_response(result)
