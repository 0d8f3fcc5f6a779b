"""The params schema round-trips: what expansion writes is what the request is built from."""

from __future__ import annotations

import json

from runner.spec.model import expand, parse_spec
from runner.spec.params import SubtaskParams, image_request


def test_expansion_rows_become_the_requests_they_describe() -> None:
    """Seed per ordinal, the task's ratio, batch size and polish reach the provider."""
    spec = parse_spec(
        {
            "name": "t",
            "prompts": ["a {x}"],
            "variables": {"x": ["cat", "fox"]},
            "ratio": "16:9",
            "seed": 41,
            "batch_size": 3,
            "polish": True,
        }
    )
    rows = list(expand(spec).rows())
    requests = [
        image_request(task_id=7, subtask_id=100 + o, attempt=2, prompt=p, params=json.loads(j))
        for o, p, j in rows
    ]
    assert [(r.prompt, r.seed) for r in requests] == [("a cat", 41), ("a fox", 42)]
    assert {(r.ratio, r.batch_size, r.polish, r.size) for r in requests} == {
        ("16:9", 3, True, (1344, 768))
    }
    assert requests[1].idempotency_key == "imgrun-101-2"
    assert json.loads(rows[0][2])["size"] == "1344x768"


def test_rows_written_before_a_field_existed_get_its_default() -> None:
    """Only the seed is required; the rest defaults like the spec does."""
    assert SubtaskParams.from_json({"seed": 5}) == SubtaskParams(seed=5)
