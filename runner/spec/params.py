"""A subtask's params (the jsonb column): written at submit, read back into a request. Pure.

The one owner of the params schema: expansion writes it with `shared_json`/`row_json`, the
executor reads it with `image_request`, and nothing else looks inside.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from workers.kinds import RATIO_SIZES, Ratio
from workers.types import ImageRequest


class SubtaskParams(NamedTuple):
    """What a provider needs besides the prompt."""

    seed: int
    ratio: str = "1:1"
    batch_size: int = 1
    polish: bool = False

    @classmethod
    def from_json(cls, params: Mapping[str, Any]) -> SubtaskParams:
        """Read a stored params object (rows written before a field existed get its default)."""
        return cls(
            seed=int(params["seed"]),
            ratio=str(params.get("ratio", "1:1")),
            batch_size=int(params.get("batch_size", 1)),
            polish=bool(params.get("polish", False)),
        )


def shared_json(ratio: Ratio, batch_size: int, polish: bool) -> str:
    """The part of every subtask's params that a task shares, as a JSON object's tail.

    `row_json(seed, tail)` completes it: 100k rows are written by string concatenation, so
    expansion stays fast; the shape is still this module's alone.
    """
    shared = {
        "ratio": ratio,
        "size": "{}x{}".format(*RATIO_SIZES[ratio]),
        "batch_size": batch_size,
        "polish": polish,
    }
    return ", " + json.dumps(shared)[1:]


def row_json(seed: int, tail: str) -> str:
    """One subtask's params JSON: its seed, then the task's shared tail."""
    return f'{{"seed": {seed}{tail}'


def image_request(
    *, task_id: int, subtask_id: int, attempt: int, prompt: str, params: Mapping[str, Any]
) -> ImageRequest:
    """The provider request for one attempt of a claimed subtask."""
    p = SubtaskParams.from_json(params)
    return ImageRequest(
        task_id=task_id,
        subtask_id=subtask_id,
        attempt=attempt,
        prompt=prompt,
        seed=p.seed,
        ratio=p.ratio,
        batch_size=p.batch_size,
        polish=p.polish,
    )
