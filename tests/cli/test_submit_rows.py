"""The rows `imgrun submit` writes, column by column, against what the spec says they are.

The submit path is tuned for speed (precompiled templates, params JSON by concatenation,
a streamed COPY); this test pins what it must still write, whatever it is tuned into.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from db.models import Subtask, Task
from tests.conftest import IMGRUN

pytestmark = pytest.mark.anyio

MAX_SEED = 2**31 - 1  # DESIGN: seeds are int4; subtask i gets (seed + i) wrapped at 2^31

# Two templates over different variables (one uses a variable twice, one has literal
# braces), a seed that wraps, non-default ratio, batch size, polish and a negative priority.
SPEC = {
    "name": "rows pinned",
    "provider": "sim",
    "priority": -5,
    "prompts": [
        "a {animal} wearing a {hat}, {{literal}} {animal}",
        "{n} {animal}s in {place}",
    ],
    "variables": {
        "animal": ["cat", "fox", "ünïcode owl"],
        "hat": ["beret", "top hat"],
        "place": ["snow"],
        "n": [1, 2.5],
    },
    "ratio": "16:9",
    "seed": MAX_SEED - 3,
    "batch_size": 3,
    "polish": True,
    "max_retries": 2,
}
SIZE_16_9 = "1344x768"  # DESIGN's ratio table

# The same spec in the other pool, at another priority: its own turns, its own seeds.
SECOND = {
    "name": "Lumina second",
    "priority": 7,
    "prompts": ["{x}"],
    "variables": {"x": ["a", "b", "c"]},
    "seed": 0,
}


def expected_rows(spec: dict[str, Any], pool: str) -> list[dict[str, Any]]:
    """The subtasks DESIGN says a spec expands to, computed here independently."""
    rows = []
    for template in spec["prompts"]:
        names = [n for n in spec["variables"] if "{" + n + "}" in template]
        names.sort(key=lambda n: template.index("{" + n + "}"))  # order of first use
        for values in itertools.product(*(spec["variables"][n] for n in names)):
            prompt = template
            for name, value in zip(names, values, strict=True):
                prompt = prompt.replace("{" + name + "}", str(value))
            prompt = prompt.replace("{{", "{").replace("}}", "}")
            rows.append(prompt)
    seed0 = spec["seed"]
    return [
        {
            "ordinal": ordinal,
            "prompt": prompt,
            "pool": pool,
            "provider": spec.get("provider", "sim"),
            "priority": spec.get("priority", 1),
            "turn": ordinal,  # the first task at its priority starts at turn 0
            "status": "pending",
            "attempts": 0,
            "retry_count": 0,
            "executor_id": None,
            "result": None,
            "params": {
                "seed": (seed0 + ordinal) % (MAX_SEED + 1),
                "ratio": spec.get("ratio", "1:1"),
                "size": SIZE_16_9 if spec.get("ratio") == "16:9" else "1024x1024",
                "batch_size": spec.get("batch_size", 1),
                "polish": spec.get("polish", False),
            },
        }
        for ordinal, prompt in enumerate(rows)
    ]


async def submit(env: dict[str, str], path: Path, spec: dict[str, Any]) -> int:
    """Submit `spec` with the real CLI; return the task id."""
    path.write_text(json.dumps(spec))
    done = await anyio.run_process([*IMGRUN, "submit", str(path), "--json"], env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return int(json.loads(done.stdout)["task_id"])


async def stored_rows(engine: AsyncEngine, task_id: int) -> list[dict[str, Any]]:
    """A task's subtasks as stored, in ordinal order, with the columns a submit sets."""
    columns = [getattr(Subtask, key) for key in expected_rows(SECOND, "lumina")[0]]
    async with engine.connect() as connection:
        result = await connection.execute(
            select(*columns).where(Subtask.task_id == task_id).order_by(Subtask.ordinal)
        )
        return [dict(row) for row in result.mappings()]


async def test_submitted_rows_are_exactly_the_specs_expansion(
    cli_env: dict[str, str], database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    """Every column of every subtask is what the spec says, for two tasks in two pools."""
    env = {**cli_env, "IMGRUN_DATABASE_URL": database_url}
    first = await submit(env, tmp_path / "first.json", SPEC)
    second = await submit(env, tmp_path / "second.json", SECOND)

    rows = await stored_rows(engine, first)
    assert len(rows) == 3 * 2 + 2 * 3 * 1  # animal × hat, then n × animal × place
    assert rows == expected_rows(SPEC, "standard")
    assert rows[4]["params"]["seed"] == 0  # wrapped past MAX_SEED
    assert rows[0]["prompt"] == "a cat wearing a beret, {literal} cat"
    assert rows[6]["prompt"] == "1 cats in snow" and rows[9]["prompt"] == "2.5 cats in snow"
    assert await stored_rows(engine, second) == expected_rows(SECOND, "lumina")

    async with engine.connect() as connection:
        task = (await connection.execute(select(Task).where(Task.id == first))).mappings().one()
    assert (task["total_subtasks"], task["total_images"]) == (12, 36)
    assert (task["seed"], task["ratio"], task["polish"]) == (MAX_SEED - 3, "16:9", True)
    assert task["turn_end"] == 12 and task["status"] == "pending"
