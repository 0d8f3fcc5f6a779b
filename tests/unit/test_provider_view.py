"""The providers section of the status view without a database: rows in, snapshot and panel out."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from rich.console import Console

from db.status_queries import StatusRows
from runner.view.display import render
from runner.view.projection import PROVIDER_DECISIONS_KEPT, project, provider

NOW = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
T = NOW.timestamp()


def decision(ago: float, from_limit: int, to_limit: int, reason: str) -> dict[str, Any]:
    return {"at": T - ago, "from_limit": from_limit, "to_limit": to_limit, "reason": reason}


def provider_row(**overrides: Any) -> dict[str, Any]:
    """A providers status row as PostgreSQL returns it (numeric cooldown, jsonb decisions)."""
    base: dict[str, Any] = {
        "name": "sim",
        "policy": "adaptive",
        "min_limit": 1,
        "max_concurrency": 40,
        "rpm": None,
        "limit": 24,
        "cooldown": Decimal("0"),
        "decisions": [],
        "in_flight": 17,
        "requests": 200,
        "rate_limited": 5,
        "latency_p50": 0.4213,
    }
    return base | overrides


def rows(*providers: dict[str, Any]) -> StatusRows:
    return StatusRows(
        now=NOW,
        queue=(),
        processing=(),
        task_starts=(),
        active=(),
        recent=(),
        errors=(),
        executors=(),
        providers=providers,
    )


def test_provider_row_gives_limit_bounds_load_and_pressure() -> None:
    """5 of 200 requests were 429s: a 2.5 % share; cooldown and p50 rounded for people."""
    p = provider(provider_row(cooldown=Decimal("12.3456"), rpm=1200))
    assert (p.name, p.policy, p.limit, p.min_limit, p.max_concurrency) == (
        "sim",
        "adaptive",
        24,
        1,
        40,
    )
    assert (p.in_flight, p.rpm, p.requests_1m, p.rate_limited_1m) == (17, 1200, 200, 5)
    assert p.rate_limited_share == 0.025
    assert p.cooldown_for == 12.3
    assert p.latency_p50 == 0.421


def test_a_quiet_provider_has_no_share_and_no_latency() -> None:
    """No requests in the last minute: the share and p50 are unknown (None), not 0."""
    p = provider(provider_row(requests=0, rate_limited=0, latency_p50=None, cooldown=None))
    assert (p.rate_limited_share, p.latency_p50, p.cooldown_for) == (None, None, 0.0)


def test_decisions_newest_first_capped_and_malformed_entries_skipped() -> None:
    """Stored order does not matter; entries missing a key or of a wrong type are left out."""
    stored = [
        decision(30, 10, 20, "slow start: latency at baseline"),
        decision(5, 20, 14, "429 from the provider: cut ×0.7"),
        {"at": T - 1, "from_limit": 14},  # no to_limit, no reason
        "not an object",
        {"at": "yesterday", "from_limit": 1, "to_limit": 2, "reason": "x"},
        *(decision(100 + i, 1, 2, f"old {i}") for i in range(10)),
    ]
    decisions = provider(provider_row(decisions=stored)).decisions
    assert len(decisions) == PROVIDER_DECISIONS_KEPT
    assert [d.reason for d in decisions[:3]] == [
        "429 from the provider: cut ×0.7",
        "slow start: latency at baseline",
        "old 0",
    ]
    assert decisions[0].at == NOW - timedelta(seconds=5)
    assert (decisions[0].from_limit, decisions[0].to_limit) == (20, 14)


def test_decisions_that_are_not_a_list_give_none() -> None:
    """A decisions value of another JSON type shows no decisions rather than failing."""
    assert provider(provider_row(decisions={"at": 1})).decisions == ()


def test_snapshot_json_carries_the_providers_section() -> None:
    """`status --json` keys: one object per provider, decisions with ISO times."""
    data = project(rows(provider_row(decisions=[decision(5, 20, 14, "429")]))).to_json()
    (entry,) = data["providers"]
    assert set(entry) == {
        "name",
        "policy",
        "limit",
        "min_limit",
        "max_concurrency",
        "rpm",
        "in_flight",
        "cooldown_for",
        "requests_1m",
        "rate_limited_1m",
        "rate_limited_share",
        "latency_p50",
        "decisions",
    }
    assert entry["decisions"] == [
        {
            "at": (NOW - timedelta(seconds=5)).isoformat(),
            "from_limit": 20,
            "to_limit": 14,
            "reason": "429",
        }
    ]


def text_of(data: StatusRows) -> str:
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(render(project(data), width=120))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def test_panel_shows_each_provider_and_its_decisions() -> None:
    """Limit with bounds, in flight, cooldown, 429 share, p50, rpm, then the reasons."""
    out = text_of(
        rows(
            provider_row(
                cooldown=Decimal("42"),
                rpm=1200,
                decisions=[decision(65, 20, 14, "429 from the provider: cut")],
            ),
            provider_row(name="openai", policy="fixed", limit=8, max_concurrency=8, requests=0),
        )
    )
    sim_line = next(line for line in out.splitlines() if line.strip("│ ").startswith("sim "))
    for cell in ("adaptive", "24 (1..40)", "17", "paused 42s", "2.5%", "421 ms", "1,200"):
        assert cell in sim_line, cell
    openai_line = next(line for line in out.splitlines() if line.strip("│ ").startswith("openai"))
    assert "8 (1..8)" in openai_line and "fixed" in openai_line
    assert "1m ago" in out and "20→14" in out and "429 from the provider: cut" in out


def test_no_providers_no_panel() -> None:
    """Before any runner registered a provider, the view has no providers panel."""
    assert "providers" not in text_of(rows())
