"""The runner's completion rollup and its heartbeat codec, with times passed in (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from db.records import ClaimedSubtask
from db.snapshots import (
    BUCKETS_KEPT,
    MAX_TASKS_DECODED,
    Completions,
    decode_completions,
)
from db.status_queries import RATE_WINDOWS
from runner.config import PoolConfig
from runner.loop.pool import Pool
from runner.loop.rollup import CompletionRollup


def test_completions_land_in_ten_second_buckets_of_the_wall_clock() -> None:
    """Bucket = floor(t / 10) × 10; images add up by batch size; tasks are counted apart."""
    rollup = CompletionRollup(since=1_000.0)
    for at, task, images in ((1_000.0, 1, 2), (1_009.9, 1, 2), (1_010.0, 2, 1), (1_031.5, 1, 2)):
        rollup.add(task, images, at)
    c = rollup.snapshot(1_032.0)
    assert (c.at, c.since, c.bucket, c.first) == (1_032.0, 1_000.0, 10.0, 1_000.0)
    assert c.subtasks == (2, 1, 0, 1)  # 1_020 had none
    assert c.images == (4, 1, 0, 2)
    assert c.tasks == ((1, (2, 0, 0, 1)), (2, (0, 1, 0, 0)))


def test_buckets_older_than_the_kept_span_are_dropped() -> None:
    """31 buckets are kept: at t = 1_310 the oldest is 1_010; 1_000 is gone."""
    rollup = CompletionRollup(since=0.0)
    rollup.add(1, 1, 1_000.0)
    rollup.add(1, 1, 1_010.0)
    c = rollup.snapshot(1_310.0)
    assert (c.first, c.subtasks) == (1_010.0, (1,))
    assert rollup.snapshot(2_000.0).subtasks == ()


def test_the_kept_span_covers_the_longest_status_window() -> None:
    """Whole buckets inside a 5-minute window plus the one it starts in are all kept."""
    assert max(RATE_WINDOWS) <= (BUCKETS_KEPT - 1) * 10.0


def test_a_wall_clock_stepped_back_counts_in_the_newest_bucket() -> None:
    """Never reordered, never lost."""
    rollup = CompletionRollup(since=0.0)
    rollup.add(1, 1, 1_050.0)
    rollup.add(1, 1, 1_020.0)
    c = rollup.snapshot(1_055.0)
    assert (c.first, c.subtasks) == (1_050.0, (2,))


def test_only_the_busiest_tasks_are_kept_but_totals_stay_exact() -> None:
    """With 3 tasks kept of 5, the pool's counts still include every completion."""
    rollup = CompletionRollup(since=0.0, tasks_kept=3)
    for task in range(1, 6):
        for _ in range(task):  # task N completes N subtasks
            rollup.add(task, 1, 1_000.0)
    c = rollup.snapshot(1_001.0)
    assert [task for task, _ in c.tasks] == [3, 4, 5]
    assert c.subtasks == (15,)


def test_pool_snapshot_carries_the_rollup_and_counts_batch_size() -> None:
    """A completed batch-3 subtask is 1 subtask and 3 images in the heartbeat's JSON."""
    pool = Pool(
        "standard",
        PoolConfig(
            initial=10, max=50, step=5, scale_up_interval=60, scale_down_interval=180, timeout=120
        ),
        now=0.0,
    )
    row = ClaimedSubtask(
        7, 42, 0, "standard", "p", {"seed": 1, "batch_size": 3}, 1, 0, 0, None, "sim", 3
    )
    pool.record_completion(row, 5_000.0)
    stored = json.loads(json.dumps(pool.snapshot(now=0.0, wall=5_001.0)))
    c = decode_completions({"standard": stored})["standard"]
    assert (c.first, c.subtasks, c.images, c.tasks) == (5_000.0, (1,), (3,), ((42, (1,)),))


def test_round_trip_through_json_text_is_exact() -> None:
    """What the heartbeat writes decodes to the same record (task ids come back as keys)."""
    c = Completions(
        at=1_234.5,
        since=1_000.0,
        first=1_200.0,
        subtasks=(3, 0, 0, 1),
        images=(6, 0, 0, 2),
        tasks=((9, (3,)), (10, (0, 0, 0, 1))),
    )
    stored = json.loads(json.dumps({"standard": {"limit": 1, "completions": c.to_json()}}))
    assert decode_completions(stored) == {"standard": c}


@pytest.mark.parametrize(
    "value",
    [
        None,
        "x",
        [],
        {"since": 0, "bucket": 10},
        {"at": 1, "since": 0, "bucket": 0},
        {"at": True, "since": 0, "bucket": 10},
    ],
)
def test_a_rollup_without_a_clock_or_bucket_width_is_ignored(value: Any) -> None:
    """Rows from older runners (no rollup) or damaged ones add nothing to the rates."""
    assert decode_completions({"standard": {"limit": 1, "completions": value}}) == {}


def test_bad_counts_are_empty_buckets_and_the_decode_is_bounded() -> None:
    """A bad count is 0 (positions keep their times); over-long lists keep their newest end."""
    value = {
        "at": 100,
        "since": 0,
        "bucket": 10,
        "first": 0,
        "subtasks": [2, 0, -1, True, "x", None, 1.5, [3], 4],
        "images": [1] * 10_000,
        "tasks": {str(i): [1] for i in range(MAX_TASKS_DECODED + 50)} | {"-1": [], "a": []},
    }
    c = Completions.from_json(value)
    assert c is not None
    # 10,000 images buckets: the newest BUCKETS_KEPT + 1 stay, and `first` moves with them.
    assert c.first == (10_000 - (BUCKETS_KEPT + 1)) * 10
    assert c.images == (1,) * (BUCKETS_KEPT + 1)
    assert c.subtasks == ()  # all of them were older than the newest kept buckets
    assert len(c.tasks) == MAX_TASKS_DECODED
    short = Completions.from_json({**value, "images": [], "tasks": {}})
    assert short is not None and short.subtasks == (2, 0, 0, 0, 0, 0, 0, 0, 4)


def test_task_ids_beyond_bigint_or_not_plain_digits_are_dropped() -> None:
    """A key the tasks table could never hold would break the lookup of task starts."""
    keys = [str(2**63 - 1), str(2**63), "１２", "0012", "1e3", " 7"]
    value = {"at": 1, "since": 0, "bucket": 10, "first": 0, "tasks": {k: [1] for k in keys}}
    c = Completions.from_json(value)
    assert c is not None
    assert [task for task, _ in c.tasks] == [12, 2**63 - 1]
