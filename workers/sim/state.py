"""Everything one sim instance keeps between requests."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from workers.sim.capacity import CapacityModel
from workers.sim.config import SimConfig
from workers.sim.faults import FaultInjector
from workers.sim.ratelimit import TokenBucket
from workers.sim.render import RenderCache, Rendered, render_png
from workers.sim.schedule import ScheduleCursor
from workers.sim.stats import SimStats

_EVICTION_SCAN = 100  # extra old jobs looked at when some of the oldest still run
# What POST /_sim/config may change while the sim runs.
LIVE_KEYS = ("capacity", "service_ms", "queue_limit", "rpm", "error_rate", "rate_limit_rate")


@dataclass
class Job:
    """One lumina queue job."""

    uuid: str
    status: str = "queued"  # queued | running | succeeded | failed | canceled
    image_ids: list[str] = field(default_factory=list)
    error: str | None = None
    retryable: bool = False
    task: asyncio.Task[None] | None = None
    key: str | None = None  # the submit's Idempotency-Key


class SimState:
    """Capacity, faults, stats, kept images and jobs of one sim app."""

    def __init__(self, config: SimConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock  # monotonic seconds; injectable so rate and schedule tests are exact
        start = clock()
        self.capacity = CapacityModel(
            capacity=config.capacity,
            queue_limit=config.queue_limit,
            service_ms=config.service_ms,
            sigma=config.service_sigma,
            seed=config.seed,
        )
        self.faults = FaultInjector(config)
        self.stats = SimStats()
        self.stopping = asyncio.Event()
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.jobs_by_key: dict[str, str] = {}
        self._images: OrderedDict[str, bytes] = OrderedDict()
        self._renders = RenderCache()
        self.bucket = TokenBucket(config.rpm, start) if config.rpm else None
        self.schedule = ScheduleCursor(config.capacity_schedule, start)
        self.refresh()  # a step at 0 s applies from the first request

    def refresh(self) -> float:
        """Apply the capacity schedule's due step, if any; return the clock's time."""
        now = self.clock()
        capacity = self.schedule.due(now)
        if capacity is not None and capacity != self.config.capacity:
            self.reconfigure({"capacity": capacity})
        return now

    def reconfigure(self, changes: Mapping[str, Any]) -> SimConfig:
        """Apply live changes all at once; a ValueError (from SimConfig) changes nothing."""
        config = dataclasses.replace(self.config, **changes)
        self.config = config
        self.capacity.reconfigure(
            capacity=config.capacity, queue_limit=config.queue_limit, service_ms=config.service_ms
        )
        self.faults.set_rates(config)
        if not config.rpm:
            self.bucket = None
        elif self.bucket is None:
            self.bucket = TokenBucket(config.rpm, self.clock())
        else:
            self.bucket.set_rpm(config.rpm, self.clock())
        return config

    def live_settings(self) -> dict[str, Any]:
        """The settings POST /_sim/config can change, as they are now."""
        return {key: getattr(self.config, key) for key in LIVE_KEYS}

    def take_request(self) -> int | None:
        """Spend a request from the rpm budget: None if allowed, else Retry-After seconds."""
        return None if self.bucket is None else self.bucket.take(self.clock())

    def ratelimit_headers(self) -> dict[str, str]:
        """The x-ratelimit-* headers every API response carries while rpm is set."""
        return {} if self.bucket is None else self.bucket.headers(self.clock())

    async def follow_schedule(self) -> None:
        """Apply each schedule step at its time, so waiters wake even with no new traffic."""
        while (at := self.schedule.next_at()) is not None:
            await asyncio.sleep(max(0.0, at - self.clock()))
            self.refresh()

    def scaled(self, width: int, height: int) -> tuple[int, int]:
        """Apply image_scale, keeping at least one pixel per side."""
        scale = self.config.image_scale
        return max(1, round(width * scale)), max(1, round(height * scale))

    async def render(self, prompt: str, seed: int, index: int, size: tuple[int, int]) -> Rendered:
        """A deterministic PNG; cache misses render in a thread to keep the loop answering."""
        key = (prompt, seed, index, *size)
        rendered = self._renders.get(key)
        if rendered is None:
            png = await asyncio.to_thread(render_png, prompt, seed, index, *size)
            rendered = self._renders.put(key, png)
        self.stats.images += 1
        return rendered

    def keep_image(self, png: bytes) -> str:
        """Store a PNG for GET /v1/images/{id}.png and return its id."""
        image_id = uuid.uuid4().hex
        self._images[image_id] = png
        while len(self._images) > self.config.max_images_kept:
            self._images.popitem(last=False)
        return image_id

    def image(self, image_id: str) -> bytes | None:
        """A kept PNG, if still there."""
        return self._images.get(image_id)

    def add_job(self, job: Job, key: str | None) -> None:
        """Track a job, forgetting the oldest finished ones beyond max_jobs_kept."""
        self.jobs[job.uuid] = job
        if key:
            self.jobs_by_key[key] = job.uuid
        excess = len(self.jobs) - self.config.max_jobs_kept
        if excess > 0:
            # Only the oldest few are looked at, so a full table costs O(1) per submit.
            oldest = itertools.islice(self.jobs.values(), excess + _EVICTION_SCAN)
            for old in [j for j in oldest if j.task is None or j.task.done()][:excess]:
                del self.jobs[old.uuid]
        if len(self.jobs_by_key) > 2 * self.config.max_jobs_kept:
            self.jobs_by_key = {k: u for k, u in self.jobs_by_key.items() if u in self.jobs}

    async def close(self) -> None:
        """Release hung handlers and stop running jobs."""
        self.stopping.set()
        tasks = [job.task for job in self.jobs.values() if job.task and not job.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


STATE: web.AppKey[SimState] = web.AppKey("sim_state", SimState)
