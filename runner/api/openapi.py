"""The OpenAPI 3.1 description of every route (a test keeps it in step with the router)."""

from __future__ import annotations

from functools import cache
from importlib.metadata import version
from typing import Any

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    reasons = {
        400: "a bad parameter or header (the error names it)",
        401: "no valid bearer token",
        404: "no such task or path",
        409: "the Idempotency-Key was used for a different spec",
        413: "request body too large",
        415: "not JSON or YAML",
        422: "invalid spec; nothing was written",
        503: "too many event streams",
    }
    return {str(code): _json(_ref("Error"), reasons[code]) for code in (401, *codes)}


def _query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "integer", **schema},
    }


TASK_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
OBJECT = {"type": "object"}


def _operation(summary: str, ok: dict[str, Any], *errors: int, **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": {**ok, **_errors(*errors)}, **extra}


def _paths() -> dict[str, Any]:
    submit_body = {
        "required": True,
        "content": {JSON: {"schema": _ref("Spec")}, "application/yaml": {"schema": _ref("Spec")}},
    }
    key = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "maxLength": 200},
        "description": "same key + same spec: 200 and the same task; other spec: 409",
    }
    page = [_query("limit", "page size", minimum=1), _query("after", "cursor from the Link header")]
    task_ops = {
        "cancel": "Cancel a task (like `imgrun cancel ID --json`)",
        "retry": "Requeue a task's failed subtasks (like `imgrun retry ID --json`)",
    }
    return {
        "/v1/tasks": {
            "post": _operation(
                "Submit a spec",
                {
                    "201": _json(_ref("Submitted"), "queued"),
                    "200": _json(_ref("Submitted"), "this key's earlier task"),
                },
                400,
                409,
                413,
                415,
                422,
                requestBody=submit_body,
                parameters=[key],
            ),
            "get": _operation(
                "List tasks, newest first (like `imgrun tasks --json`)",
                {"200": _json({"type": "array", "items": OBJECT}, "tasks")},
                400,
                parameters=[{"name": "status", "in": "query", "schema": {"type": "string"}}, *page],
            ),
        },
        "/v1/tasks/{id}": {
            "get": _operation(
                "One task (like `imgrun task ID --json`)",
                {"200": _json(OBJECT, "the task")},
                404,
                parameters=[TASK_ID],
            )
        },
        **{
            f"/v1/tasks/{{id}}/{action}": {
                "post": _operation(
                    summary, {"200": _json(OBJECT, "done")}, 404, parameters=[TASK_ID]
                )
            }
            for action, summary in task_ops.items()
        },
        "/v1/tasks/{id}/results": {
            "get": _operation(
                "The task's manifest: subtasks with image URLs and sha256",
                {"200": _json(_ref("Manifest"), "one page")},
                400,
                404,
                parameters=[TASK_ID, *page],
            )
        },
        "/v1/images/{path}": {
            "get": _operation(
                "A stored PNG: <task_id>/<subtask_id>-<n>.png",
                {"200": {"description": "the image", "content": {"image/png": {}}}},
                404,
                parameters=[
                    {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
            )
        },
        "/v1/status": {
            "get": _operation(
                "Pools, throughput, tasks, errors, runners (like `imgrun status --json`)",
                {"200": _json(OBJECT, "snapshot")},
            )
        },
        "/v1/errors": {
            "get": _operation(
                "Aggregated errors (like `imgrun errors --json`)",
                {"200": _json({"type": "array", "items": OBJECT}, "errors")},
                400,
                parameters=[_query("limit", "how many", minimum=1, maximum=1000)],
            )
        },
        "/v1/events": {
            "get": _operation(
                "Server-Sent Events: task.progress, task.finished; ?task=ID ends when it finishes",
                {"200": {"description": "an event stream", "content": {"text/event-stream": {}}}},
                400,
                404,
                503,
                parameters=[_query("task", "follow one task")],
            )
        },
        "/v1/openapi.json": {
            "get": _operation("This document", {"200": _json(OBJECT, "OpenAPI 3.1")})
        },
        "/healthz": {
            "get": {
                "summary": "Database reachability (no auth)",
                "security": [],
                "responses": {
                    "200": _json(OBJECT, "healthy"),
                    "503": _json(OBJECT, "database unreachable"),
                },
            }
        },
    }


def _schemas() -> dict[str, Any]:
    strings = {"type": "string"}
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {"field": {"type": ["string", "null"]}, "message": strings},
                }
            },
        },
        "Spec": {
            "type": "object",
            "required": ["name", "prompts"],
            "additionalProperties": False,
            "properties": {
                "name": strings,
                "pool": {"enum": ["standard", "lumina"]},
                "provider": strings,
                "priority": {"type": "integer"},
                "prompts": {"type": "array", "items": strings},
                "variables": {"type": "object", "additionalProperties": {"type": "array"}},
                "ratio": {"enum": ["1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3"]},
                "seed": {"type": "integer"},
                "batch_size": {"type": "integer"},
                "polish": {"type": "boolean"},
                "max_retries": {"type": "integer"},
            },
        },
        "Submitted": {
            "type": "object",
            "properties": {
                key: {"type": "integer"}
                if key in ("id", "total_subtasks", "total_images")
                else strings
                for key in ("id", "name", "pool", "provider", "total_subtasks", "total_images")
            },
        },
        "Manifest": {
            "type": "object",
            "properties": {
                "task_id": {"type": "integer"},
                "name": strings,
                "status": strings,
                "next_after": {"type": ["integer", "null"]},
                "subtasks": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "integer"},
                            "ordinal": {"type": "integer"},
                            "prompt": strings,
                            "seed": {"type": "integer"},
                            "status": strings,
                            "images": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {"url": strings, "sha256": strings},
                                },
                            },
                        },
                    },
                },
            },
        },
    }


@cache
def document() -> dict[str, Any]:
    """The whole document (built once)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "imgrun", "version": version("imgrun")},
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
