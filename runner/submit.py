"""Queue a validated spec: the one path from a spec to rows (CLI, API, demo)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from db.records import NewTask
from runner.config import Config
from runner.errors import UserError, shown
from runner.spec.model import Expansion, Spec, expand

if TYPE_CHECKING:  # not at run time: `imgrun submit`'s quick path needs neither (nor SQLAlchemy)
    from db import api_queries
    from db.store import PgStore

# Printable ASCII without spaces, like the HTTP header it usually arrives in.
_KEY = re.compile(r"[\x21-\x7e]{1,200}")


def prepare(spec: Spec, config: Config) -> Expansion:
    """Every check `imgrun submit` makes: a configured provider, the expansion under its cap."""
    if spec.provider not in config.providers:
        known = ", ".join(sorted(config.providers))
        raise UserError(
            f"provider: unknown provider {shown(spec.provider)!r} (configured: {known})"
        )
    return expand(spec, limits=config.submit.limits)


def summary(expansion: Expansion) -> dict[str, Any]:
    """What a submit reports about the task it queues."""
    spec = expansion.spec
    return {
        "name": spec.name,
        "pool": expansion.pool,
        "provider": spec.provider,
        "priority": spec.priority,
        "seed": expansion.seed,
        "total_subtasks": expansion.total_subtasks,
        "total_images": expansion.total_images,
    }


def check_key(key: str, where: str) -> str:
    """An idempotency key: 1-200 printable ASCII characters, no spaces."""
    if not _KEY.fullmatch(key):
        raise UserError(f"{where}: expected 1-200 printable ASCII characters without spaces")
    return key


def request_hash(spec: Spec) -> str:
    """What "the same request" means for a key: the same spec, however it was formatted."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def new_task(expansion: Expansion, user_id: str) -> NewTask:
    """The task row for an expanded spec."""
    spec = expansion.spec
    return NewTask(
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
    store: PgStore,
    expansion: Expansion,
    user_id: str,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Write the task and all its subtasks in one transaction; returns the task id."""
    return await store.submit_task(
        new_task(expansion, user_id), expansion.rows(), on_progress=on_progress
    )


async def submit_once(
    store: PgStore, expansion: Expansion, user_id: str, key: str
) -> api_queries.Submitted:
    """Submit unless `key` was used before: then the same task (same spec) or KeyReused."""
    return await store.submit_task_once(
        new_task(expansion, user_id),
        expansion.rows(),
        key=key,
        request_hash=request_hash(expansion.spec),
    )
