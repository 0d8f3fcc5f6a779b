"""The heartbeat's pool snapshot codec: round trips, old rows, and values of the wrong type."""

from __future__ import annotations

import json
from typing import Any

import pytest

from db.snapshots import LimitChange, PoolSnapshot, decode_pools, encode_pools
from runner.config import PoolConfig
from runner.loop.pool import Pool
from runner.policy.scaling import Decision

FULL = PoolSnapshot(
    limit=15,
    max=50,
    running=3,
    pending=8,
    policy="adaptive",
    paused_for=2.5,
    history=(LimitChange(100.0, 10, 15, "up"), LimitChange(160.5, 15, 12, "cut")),
)


def test_round_trip_through_json_text_is_exact() -> None:
    """What the heartbeat writes (as jsonb text) decodes to the same record."""
    stored = json.loads(json.dumps(encode_pools({"standard": FULL})))
    assert decode_pools(stored) == {"standard": FULL}


def test_old_row_without_from_limit_reads_limit_as_target_and_never_parses_reason() -> None:
    """A row from before the typed record: `limit` is the target; origin assumed unchanged."""
    old = {"at": 50, "limit": 4, "reason": "rate_limited: 8 → 4"}
    assert LimitChange.from_json(old) == LimitChange(50.0, 4, 4, "rate_limited: 8 → 4")


def test_missing_keys_take_defaults() -> None:
    """An empty object is a pool with everything at zero and no history."""
    assert PoolSnapshot.from_json({}) == PoolSnapshot()
    assert LimitChange.from_json({"at": 1, "to_limit": 3}) == LimitChange(1.0, 3, 3, "")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("limit", "15"),
        ("limit", True),
        ("limit", 2.5),
        ("max", None),
        ("running", [1]),
        ("pending", {"n": 1}),
        ("paused_for", "soon"),
        ("paused_for", float("nan")),
    ],
)
def test_a_field_of_the_wrong_type_takes_its_default(field: str, value: Any) -> None:
    """The rest of the snapshot still decodes; only the bad field is reset."""
    raw = {**FULL.to_json(), field: value}
    decoded = PoolSnapshot.from_json(raw)
    assert decoded is not None
    assert getattr(decoded, field) == getattr(PoolSnapshot(), field)
    assert decoded.history == FULL.history


@pytest.mark.parametrize(
    "entry",
    [
        {"from_limit": 1, "to_limit": 2},  # no time
        {"at": "yesterday", "to_limit": 2},
        {"at": 5, "from_limit": 1},  # no target
        {"at": 5, "to_limit": "2"},
        {"at": False, "to_limit": 2},
        "at 5: 1 → 2",
        None,
    ],
)
def test_an_unusable_limit_change_is_dropped(entry: Any) -> None:
    """A change without a numeric time and target limit is left out, the others kept."""
    raw = {**FULL.to_json(), "history": [entry, *FULL.to_json()["history"]]}
    decoded = PoolSnapshot.from_json(raw)
    assert decoded is not None and decoded.history == FULL.history


def test_wrong_types_for_reason_policy_and_from_limit() -> None:
    """A non-text reason becomes empty, a non-text policy None, a bad origin the target."""
    change = LimitChange.from_json({"at": 1, "from_limit": "x", "to_limit": 3, "reason": 7})
    assert change == LimitChange(1.0, 3, 3, "")
    assert PoolSnapshot.from_json({"policy": 3}) == PoolSnapshot(policy=None)


def test_history_is_decoded_oldest_first() -> None:
    """Whatever order a row stored, readers get the changes in time order."""
    raw = {"history": [c.to_json() for c in reversed(FULL.history)]}
    decoded = PoolSnapshot.from_json(raw)
    assert decoded is not None and decoded.history == FULL.history


def test_pools_value_that_is_not_an_object() -> None:
    """A corrupt `executors.pools` reads as no pools; non-object entries are left out."""
    assert decode_pools(None) == {}
    assert decode_pools([1, 2]) == {}
    assert decode_pools({"standard": "busy", "lumina": {}}) == {"lumina": PoolSnapshot()}


def test_pool_apply_records_from_and_to_limit() -> None:
    """Pool.apply keeps the limit it changed from, so no one has to read the reason."""
    pool = Pool(
        "standard",
        PoolConfig(
            initial=10,
            max=50,
            step=5,
            scale_up_interval=60,
            scale_down_interval=180,
            timeout=120,
            policy="queue-depth",  # starts at initial (the default policy holds max)
        ),
        now=0.0,
    )
    assert pool.apply(Decision(limit=5, reason="worded any way at all"), wall_time=1000.0)
    assert not pool.apply(Decision(limit=5), wall_time=1001.0)  # no reason: no change
    assert pool.apply(Decision(limit=8, reason="again"), wall_time=1002.0)
    assert list(pool.history) == [
        LimitChange(1000.0, 10, 5, "worded any way at all"),
        LimitChange(1002.0, 5, 8, "again"),
    ]
    stored = pool.snapshot(now=0.0)
    assert PoolSnapshot.from_json(json.loads(json.dumps(stored))) == pool.state(now=0.0)
