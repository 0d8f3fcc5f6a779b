"""`imgrun results`: a task's whole manifest, as CSV, and its images gathered into one folder."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db.store import PgStore
from runner.api.manifest import page
from runner.errors import UserError

PAGE = 1000  # subtasks read per query
CSV_COLUMNS = ("subtask_id", "ordinal", "seed", "status", "image", "url", "sha256", "path")
CHUNK = 1 << 20  # bytes copied at a time


async def load_manifest(store: PgStore, task_id: int) -> dict[str, Any]:
    """The full manifest of a task (every page), with each image's local path."""
    task = await store.task_header(task_id)
    if task is None:
        raise UserError(f"task {task_id}: no such task")
    subtasks: list[dict[str, Any]] = []
    after = -1
    while True:
        rows = await store.manifest_page(task_id, after=after, limit=PAGE)
        chunk = page(task, rows, limit=PAGE, local=True)
        subtasks.extend(chunk["subtasks"])
        if chunk["next_after"] is None:
            return {**chunk, "subtasks": subtasks, "next_after": None}
        after = chunk["next_after"]


def image_rows(manifest: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One row per image (and one per subtask without images), for CSV and copying."""
    for sub in manifest["subtasks"]:
        base = {k: sub[k] for k in ("ordinal", "seed", "status")} | {"subtask_id": sub["id"]}
        if not sub["images"]:
            yield {**base, "image": None, "url": None, "sha256": None, "path": None}
        for index, image in enumerate(sub["images"]):
            yield {**base, "image": index, **{k: image[k] for k in ("url", "sha256", "path")}}


def to_csv(manifest: dict[str, Any]) -> str:
    """The manifest as CSV, one line per image, with a header."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*CSV_COLUMNS, "prompt"], lineterminator="\n")
    writer.writeheader()
    prompts = {sub["id"]: sub["prompt"] for sub in manifest["subtasks"]}
    for row in image_rows(manifest):
        writer.writerow({**row, "prompt": prompts[row["subtask_id"]]})
    return buffer.getvalue()


@dataclass
class CopyReport:
    """What `--copy-to` did."""

    copied: int = 0
    missing: int = 0  # the stored file is not on this machine
    corrupt: int = 0  # its bytes no longer match the recorded sha256


def copy_name(row: dict[str, Any]) -> str:
    """The file name in the destination: ordinal and image index, never user text."""
    return f"{int(row['ordinal']):06d}-{int(row['image'])}.png"


def copy_images(
    manifest: dict[str, Any], dest: Path, on_file: Callable[[], None] | None = None
) -> CopyReport:
    """Copy every stored image into `dest`, checking each one's sha256 on the way."""
    dest.mkdir(parents=True, exist_ok=True)
    report = CopyReport()
    for row in image_rows(manifest):
        if row["image"] is None:
            continue
        source = Path(row["path"] or "")
        if not row["path"] or not source.is_file():
            report.missing += 1
        elif _copy_checked(source, dest / copy_name(row), row["sha256"]):
            report.copied += 1
        else:
            report.corrupt += 1
        if on_file is not None:
            on_file()
    return report


def _copy_checked(source: Path, target: Path, sha256: str | None) -> bool:
    # Temp file + rename: the destination never holds a partial or unverified image.
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with source.open("rb") as reader, os.fdopen(fd, "wb") as writer:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                writer.write(chunk)
        if sha256 is not None and digest.hexdigest() != sha256:
            Path(tmp).unlink()
            return False
        os.replace(tmp, target)
        return True
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
