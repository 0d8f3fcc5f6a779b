"""A task's results as a manifest: subtasks with their images' URLs and hashes (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

IMAGE_PREFIX = "/v1/images/"
MAX_ID = 2**63 - 1  # ids are bigints
# An image's URL: <task_id>/<subtask_id>-<n>.png, digits only, n its index in the result
# (the file it serves is the one the result records, see runner/api/results.py).
_IMAGE_PATH = re.compile(r"([0-9]{1,19})/([0-9]{1,19})-([0-9]{1,3})\.png")


def image_url(task_id: int, subtask_id: int, index: int) -> str:
    """Where the API serves one stored image."""
    return f"{IMAGE_PREFIX}{task_id}/{subtask_id}-{index}.png"


def parse_image_path(path: str) -> tuple[int, int, int] | None:
    """(task_id, subtask_id, index) of a path below /v1/images/, or None for anything else."""
    match = _IMAGE_PATH.fullmatch(path)
    if match is None:
        return None
    ids = int(match[1]), int(match[2]), int(match[3])
    return ids if max(ids) <= MAX_ID else None


def entry(task_id: int, row: Mapping[str, Any], *, local: bool = False) -> dict[str, Any]:
    """One subtask of the manifest; `local` adds each image's path on this machine (CLI)."""
    images = []
    for index, image in enumerate(row["images"] or ()):
        item = {
            "url": image_url(task_id, int(row["id"]), index),
            "sha256": image.get("sha256"),
            "width": image.get("width"),
            "height": image.get("height"),
            "bytes": image.get("bytes"),
        }
        if local:
            item["path"] = image.get("path")
        images.append(item)
    return {
        "id": int(row["id"]),
        "ordinal": int(row["ordinal"]),
        "prompt": row["prompt"],
        "seed": row["seed"],
        "status": row["status"],
        "images": images,
    }


def page(
    task: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], *, limit: int, local: bool = False
) -> dict[str, Any]:
    """One page of the manifest; `next_after` is the cursor of the next page (None: last)."""
    entries = [entry(int(task["id"]), row, local=local) for row in rows]
    return {
        "task_id": int(task["id"]),
        "name": task["name"],
        "status": task["status"],
        "total_subtasks": task["total_subtasks"],
        "total_images": task["total_images"],
        "subtasks": entries,
        "next_after": entries[-1]["ordinal"] if len(entries) == limit else None,
    }
