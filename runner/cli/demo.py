"""`imgrun demo`: the sim, example tasks, a runner and the live view, to completion."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from db.store import PgStore
from runner.config import Config, Environment, merge_settings
from runner.loop.service import output_dir, serve
from runner.spec.model import expand, load_spec
from runner.submit import submit
from workers.sim.app import running
from workers.sim.config import SimConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEMO_SPECS = ("fox-portraits.yaml", "lumina-posters.yaml")

# A few faults so retries, backpressure and error aggregation have something to show.
DEMO_SIM = SimConfig(
    port=0,
    capacity=4,
    service_ms=600.0,
    queue_limit=64,
    error_rate=0.08,
    rate_limit_rate=0.05,
    lumina_fail_rate=0.1,
    seed=2026,
)
DEMO_SETTINGS: dict[str, Any] = {
    "pools": {"lumina": {"polling_interval": 0.3, "initial": 3}},
    "runner": {"retry_base": 0.5, "heartbeat_interval": 1.0},
}

# Shows progress until the event is set; gets the engine to read status from.
View = Callable[[PgStore, anyio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class DemoSummary:
    """What the demo did."""

    tasks: list[dict[str, Any]]
    images: list[Path]
    retries: int
    deferrals: int
    errors: list[dict[str, Any]]
    seconds: float
    output: Path


def demo_config(config: Config, sim_url: str) -> Config:
    """The user's config with the demo's sim as provider `sim` and brisk intervals."""
    data = merge_settings(config.model_dump(), DEMO_SETTINGS)
    data["providers"]["sim"] = {
        "type": "sim",
        "base_url": sim_url,
        "request_attempts": 2,
        "request_retry_wait": 0.2,
    }
    return Config.model_validate(data)


async def submit_examples(store: PgStore, config: Config, user_id: str) -> list[int]:
    """Queue the example specs; returns their task ids."""
    ids = []
    for name in DEMO_SPECS:
        spec = load_spec(EXAMPLES / name)
        expansion = expand(spec, max_subtasks=config.submit.max_subtasks)
        ids.append(await submit(store, expansion, user_id))
    return ids


async def run_demo(
    engine: AsyncEngine,
    config: Config,
    env: Environment,
    user_id: str,
    view: View,
    *,
    service_ms: float | None = None,
) -> DemoSummary:
    """Run everything to completion and summarise it."""
    started = time.monotonic()
    sim_config = DEMO_SIM if service_ms is None else replace(DEMO_SIM, service_ms=service_ms)
    async with running(sim_config) as sim:
        config = demo_config(config, sim.url)
        store = PgStore(engine)
        task_ids = await submit_examples(store, config, user_id)
        done = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(view, store, done)
            try:
                await serve(engine, config, env, until_idle=True)
            finally:
                done.set()
    report = await store.demo_report(task_ids)
    images = [Path(path) for path in report["images"]]
    return DemoSummary(
        tasks=report["tasks"],
        images=images,
        retries=report["retries"],
        deferrals=report["deferrals"],
        errors=report["errors"],
        seconds=time.monotonic() - started,
        output=output_dir(config, env),
    )
