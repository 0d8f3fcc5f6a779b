"""The chaos soak's verdicts catch what they claim to (so a clean soak means something)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from bench.chaos_checks import Findings, check_files, check_generations


def rows(**attempts: int) -> dict[int, dict[str, Any]]:
    """Completed subtasks by id ('s7' -> 7) with their attempt counts."""
    return {int(k[1:]): {"status": "completed", "attempts": n} for k, n in attempts.items()}


def test_a_second_attempt_generated_is_explained_only_by_an_interruption() -> None:
    """Two attempts generated: fine for a subtask whose runner was stopped, flagged otherwise."""
    stats = {
        "by_key": {"imgrun-1-1": 1, "imgrun-1-2": 1, "imgrun-2-1": 1, "imgrun-2-2": 1},
        "generated_by_key": {"imgrun-1-1": 1, "imgrun-1-2": 1, "imgrun-2-1": 1, "imgrun-2-2": 1},
    }
    found = Findings()
    check_generations(rows(s1=2, s2=2), stats, {1}, found)
    assert found.paid_twice_after_kill == 1
    assert found.paid_twice_unexplained == [2]


def test_attempts_the_database_never_made_are_phantoms() -> None:
    """A key for an attempt past the row's count, or an unknown subtask, is reported."""
    stats = {
        "by_key": {"imgrun-1-1": 1, "imgrun-1-5": 1, "imgrun-9-1": 1},
        "generated_by_key": {"imgrun-1-1": 2},
    }
    found = Findings()
    check_generations(rows(s1=1, s3=1), stats, set(), found)
    assert sorted(found.phantom_attempts) == ["imgrun-1-5", "imgrun-9-1"]
    assert found.paid_twice_same_key == 1
    assert found.completed_without_generation == [3]


def test_checksums_are_compared_with_the_files(tmp_path: Path) -> None:
    """A changed or missing file is a bad checksum; an intact one is not."""
    good, changed = tmp_path / "a.png", tmp_path / "b.png"
    good.write_bytes(b"a")
    changed.write_bytes(b"overwritten")
    digest = hashlib.sha256(b"a").hexdigest()
    found = Findings()
    images = [
        {"path": str(good), "sha256": digest},
        {"path": str(changed), "sha256": hashlib.sha256(b"b").hexdigest()},
        {"path": str(tmp_path / "gone.png"), "sha256": digest},
    ]
    check_files({"images": images}, found)
    assert found.images_checked == 3
    assert found.bad_checksums == ["b.png", "gone.png"]
