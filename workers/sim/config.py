"""Settings of the simulated image API; every field has a CLI flag or a sane default."""

from __future__ import annotations

from dataclasses import dataclass

from workers.sim.schedule import MAX_CAPACITY, check_schedule


@dataclass(frozen=True)
class SimConfig:
    """How the simulated backend listens, how fast it is, and which faults it injects."""

    host: str = "127.0.0.1"
    port: int = 8800  # 0 = pick a free port
    capacity: int = 8  # service slots, like GPUs
    service_ms: float = 200.0  # mean service time per image; 0 = answer at once
    service_sigma: float = 0.35  # lognormal shape of the service time
    queue_limit: int = 64  # requests allowed to wait for a slot before 429
    error_rate: float = 0.0  # share of requests answered 500
    rate_limit_rate: float = 0.0  # share answered 429 + Retry-After
    hang_rate: float = 0.0  # share never answered (until the client leaves)
    malformed_rate: float = 0.0  # share answered 200 with a broken body
    seed: int = 0
    image_scale: float = 0.125  # keeps PNGs light: 1024x1024 becomes 128x128
    lumina_fail_rate: float = 0.0  # share of lumina jobs that end "failed"
    lumina_slow_rate: float = 0.0  # share of lumina jobs that run lumina_slow_factor x longer
    lumina_slow_factor: float = 10.0
    retry_after_s: int = 1  # Retry-After sent with injected 429s
    max_images_kept: int = 20_000  # fetchable images kept in memory (oldest dropped)
    max_jobs_kept: int = 50_000  # lumina jobs kept for polling (oldest finished dropped)
    max_n: int = 10  # most images per request, as OpenAI
    max_side: int = 4096  # largest accepted width or height before scaling
    rpm: int = 0  # requests per minute (token bucket, a minute's worth of burst); 0 = unlimited
    # (seconds since start, service slots), ascending: the capacity moves at those times.
    capacity_schedule: tuple[tuple[float, int], ...] = ()
    admin_body_timeout_s: float = 5.0  # a POST /_sim/config body must arrive within this

    def __post_init__(self) -> None:
        rates = {
            "error_rate": self.error_rate,
            "rate_limit_rate": self.rate_limit_rate,
            "hang_rate": self.hang_rate,
            "malformed_rate": self.malformed_rate,
            "lumina_fail_rate": self.lumina_fail_rate,
            "lumina_slow_rate": self.lumina_slow_rate,
        }
        for name, rate in rates.items():
            if not 0 <= rate <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {rate}")
        fault_total = sum(list(rates.values())[:4])
        if fault_total > 1:
            raise ValueError(f"the four fault rates add up to {fault_total:g}, more than 1")
        if self.capacity < 1 or self.queue_limit < 0 or self.service_ms < 0:
            raise ValueError("capacity must be >= 1, queue_limit >= 0 and service_ms >= 0")
        if self.capacity > MAX_CAPACITY:
            raise ValueError(f"capacity must be at most {MAX_CAPACITY}, got {self.capacity}")
        if not 0 < self.image_scale <= 1:
            raise ValueError(f"image_scale must be in (0, 1], got {self.image_scale}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if not 0 <= self.rpm <= MAX_RPM:
            raise ValueError(f"rpm must be 0..{MAX_RPM}, got {self.rpm}")
        check_schedule(self.capacity_schedule)


MAX_RPM = 10_000_000
