"""Everything one sim instance keeps between requests."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from aiohttp import web

from workers.sim.capacity import CapacityModel
from workers.sim.config import SimConfig
from workers.sim.faults import FaultInjector
from workers.sim.render import RenderCache, Rendered, render_png
from workers.sim.stats import SimStats

_EVICTION_SCAN = 100  # extra old jobs looked at when some of the oldest still run


@dataclass
class Job:
    """One lumina queue job."""

    uuid: str
    status: str = "queued"  # queued | running | succeeded | failed | canceled
    image_ids: list[str] = field(default_factory=list)
    error: str | None = None
    retryable: bool = False
    task: asyncio.Task[None] | None = None


class SimState:
    """Capacity, faults, stats, kept images and jobs of one sim app."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
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
