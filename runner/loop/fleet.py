"""This runner's side of fleet-wide provider control: what it saw, reported; pressure, shared.

Each provider's limit lives in its PostgreSQL row (db/provider_queries.py) and is enforced by
the claim. The runner counts what it sees per provider, sends each pressure signal to the
row at once (coalesced while one is being written), reports its counts about every second,
and offers to decide the window: the one runner whose compare-and-set wins does.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import anyio

from db.ports import FleetStore
from db.records import ProviderBounds, ProviderReport
from runner.loop.signals import SignalCounts
from runner.policy.classify import Signal as SignalKind
from runner.policy.control import ControllerConfig, Signal, initial_state
from runner.policy.fleet_rules import pressure_change, window_change
from workers.headers import RateLimitInfo

log = logging.getLogger(__name__)

REPORT_INTERVAL = 1.0  # seconds between reports (and offers to decide a window)
LATENCY_SAMPLE = 256  # latencies kept per report: the median needs no more


@dataclass
class _Counts:
    """What this runner saw of one provider since its last report."""

    completions: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLE))
    signals: SignalCounts = field(default_factory=SignalCounts)  # 429/503/timeouts/5xx, budget

    def report(self, provider: str) -> ProviderReport:
        signals = self.signals
        return ProviderReport(
            provider,
            self.completions,
            signals.rate_limited,
            signals.unavailable,
            signals.timeouts,
            signals.server_errors,
            tuple(self.latencies),
            signals.ratelimit_remaining,
            signals.ratelimit_limit,
            signals.ratelimit_reset,
        )


@dataclass
class _Pressure:
    """Signals waiting to be written: the strongest of them is what counts."""

    signal: Signal
    retry_after: float | None
    sent_at: float | None


@dataclass
class ProviderControl:
    """One provider as this runner sees it."""

    name: str
    config: ControllerConfig
    pools: tuple[str, ...]
    counts: _Counts = field(default_factory=_Counts)
    pressure: _Pressure | None = None
    wake: anyio.Event = field(default_factory=anyio.Event)


class Fleet:
    """The runner's providers: counting, reporting, and sharing pressure with the fleet."""

    def __init__(
        self,
        store: FleetStore,
        executor_id: str,
        providers: Mapping[str, tuple[ControllerConfig, Sequence[str]]],
        rpm: Mapping[str, int | None] | None = None,
    ) -> None:
        self.store = store
        self.executor_id = executor_id
        self.providers = {
            name: ProviderControl(name, config, tuple(pools))
            for name, (config, pools) in providers.items()
        }
        self._rpm = dict(rpm or {})

    async def register(self, now: float) -> None:
        """Create or update every provider's row with this runner's bounds."""
        await self.store.register_providers(
            [
                ProviderBounds(
                    name,
                    p.config.policy,
                    p.config.min,
                    p.config.max_concurrency,
                    self._rpm.get(name),
                    initial_state(p.config, now).to_json(),
                )
                for name, p in self.providers.items()
            ]
        )

    # --- what the executor tells us -------------------------------------------------

    def on_success(
        self,
        provider: str,
        latency: float,
        ratelimit: RateLimitInfo | None = None,
    ) -> None:
        """A request answered with images after `latency` seconds."""
        control = self.providers.get(provider)
        if control is None:
            return
        control.counts.completions += 1
        if math.isfinite(latency) and latency >= 0:
            control.counts.latencies.append(latency)
        control.counts.signals.note(ratelimit)

    def on_signal(
        self,
        provider: str,
        signal: SignalKind,
        retry_after: float | None = None,
        sent_at: float | None = None,
        ratelimit: RateLimitInfo | None = None,
    ) -> None:
        """A 429, 503, timeout or other server error, counted once; pressure is shared."""
        control = self.providers.get(provider)
        if control is None:
            return
        signals = control.counts.signals
        signals.note(ratelimit)
        signals.count(signal)
        if signal == "server_error":
            return  # counted for the window, but not pressure
        waiting = control.pressure
        if waiting is None or (retry_after or 0) > (waiting.retry_after or 0):
            control.pressure = _Pressure(signal, retry_after, sent_at)
        control.wake.set()

    # --- the loops ----------------------------------------------------------------

    async def pressure_loop(self, control: ProviderControl) -> None:
        """Write each provider's pressure to its row as it comes, one write at a time."""
        while True:
            await control.wake.wait()
            control.wake = anyio.Event()
            pressure, control.pressure = control.pressure, None
            if pressure is None:
                continue
            rule = partial(
                pressure_change,
                control.config,
                signal=pressure.signal,
                retry_after=pressure.retry_after,
                sent_at=pressure.sent_at,
            )
            reason = await self.store.record_pressure(control.name, rule)
            if reason:
                log.info("provider %s: %s", control.name, reason)

    async def report_loop(self, interval: float = REPORT_INTERVAL) -> None:
        """Report counts about every second and offer to decide each provider's window."""
        while True:
            await anyio.sleep(interval)
            await self.report_and_decide()

    async def report_and_decide(self) -> None:
        """One report of every provider's counts, then one offer to decide each window."""
        reports = []
        for control in self.providers.values():
            report = control.counts.report(control.name)
            control.counts = _Counts()
            if not report.empty:
                reports.append(report)
        await self.store.insert_reports(self.executor_id, reports)
        for control in self.providers.values():
            config = control.config
            reason = await self.store.decide_window(
                control.name,
                config.window,
                control.pools,
                4 * config.max_concurrency + 1,  # all the queue-depth rule and growth need
                partial(window_change, config),
            )
            if reason:
                log.info("provider %s: %s", control.name, reason)
