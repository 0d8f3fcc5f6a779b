"""Queue a validated spec: the one path from a spec to rows (CLI, demo)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from db import queries
from runner.spec import Expansion


def new_task(expansion: Expansion, user_id: str) -> queries.NewTask:
    """The task row for an expanded spec."""
    spec = expansion.spec
    return queries.NewTask(
        name=spec.name,
        user_id=user_id,
        pool=expansion.pool,
        provider=spec.provider,
        priority=spec.priority,
        prompts=list(spec.prompts),
        variables={name: list(values) for name, values in spec.variables.items()},
        ratio=spec.ratio,
        seed=expansion.seed,
        batch_size=spec.batch_size,
        polish=spec.polish,
        max_retries=spec.max_retries,
        total_subtasks=expansion.total_subtasks,
        total_images=expansion.total_images,
    )


async def submit(
    engine: AsyncEngine,
    expansion: Expansion,
    user_id: str,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Write the task and all its subtasks in one transaction; returns the task id."""
    return await queries.submit_task(
        engine, new_task(expansion, user_id), expansion.rows(), on_progress=on_progress
    )
