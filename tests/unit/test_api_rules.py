"""Pure rules of the API and alerts: parameters, image paths, the event feed, signing, backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runner.alerts.policy import Pressure, is_degraded, next_state, retry_delay, target_id
from runner.alerts.signing import delivery_body, sign, verify
from runner.api.auth import bearer, check_name, hash_token, new_token
from runner.api.errors import ApiError, split_field
from runner.api.feed import TaskFeed, sse_frame
from runner.api.manifest import image_url, parse_image_path
from runner.api.params import choice_param, int_param, path_id
from runner.api.server import is_loopback
from runner.errors import UserError


@pytest.mark.parametrize(
    ("message", "field", "rest"),
    [
        ("prompts[0]: unknown placeholder {x}", "prompts[0]", "unknown placeholder {x}"),
        ("variables.animal: not used by any prompt", "variables.animal", "not used by any prompt"),
        ("ratio: Input should be '1:1'", "ratio", "Input should be '1:1'"),
        (
            "prompts × variables: expands to 9 subtasks",
            "prompts × variables",
            "expands to 9 subtasks",
        ),
        ("something went wrong", None, "something went wrong"),
        ("a sentence with: a colon", None, "a sentence with: a colon"),
    ],
)
def test_split_field_names_the_field_of_a_user_error(
    message: str, field: str | None, rest: str
) -> None:
    """A UserError's leading 'field: ' becomes the error's field; prose stays whole."""
    assert split_field(message) == (field, rest)


@pytest.mark.parametrize(
    ("query", "expected"),
    [({}, 7), ({"n": ""}, 7), ({"n": "1"}, 1), ({"n": "10"}, 10), ({"n": "-1"}, -1)],
)
def test_int_param_accepts_integers_in_range(query: dict[str, str], expected: int) -> None:
    """Absent means the default; in-range integers pass through."""
    assert int_param(query, "n", default=7, low=-1, high=10) == expected


@pytest.mark.parametrize("raw", ["11", "-2", "1.5", "1e3", "abc", " 3", "+3", "1_0", "9" * 40])
def test_int_param_refuses_anything_else_naming_it(raw: str) -> None:
    """Out of range, non-integer, padded or huge: a 400 that names the parameter."""
    with pytest.raises(ApiError) as caught:
        int_param({"n": raw}, "n", default=None, low=-1, high=10)
    assert (caught.value.status, caught.value.field) == (400, "n")


def test_choice_param_and_path_id() -> None:
    """A choice outside the list is a 400; an id beyond bigint is a 404, not a crash."""
    assert choice_param({"s": "running"}, "s", ("pending", "running")) == "running"
    with pytest.raises(ApiError) as caught:
        choice_param({"s": "bogus"}, "s", ("pending", "running"))
    assert caught.value.status == 400
    assert path_id("9223372036854775807") == 2**63 - 1
    with pytest.raises(ApiError) as caught:
        path_id("9223372036854775808")
    assert caught.value.status == 404


@pytest.mark.parametrize(
    ("path", "ids"),
    [
        ("12/345-0.png", (12, 345, 0)),
        ("1/2-15.png", (1, 2, 15)),
        ("../../etc/passwd", None),
        ("12/../345-0.png", None),
        ("/etc/passwd", None),
        ("12/345-0.png/..", None),
        ("12/.345-0.png.x1y2.tmp", None),
        ("12/345-0.PNG", None),
        ("12/345-0.png\x00", None),
        ("12/345-0.png?x", None),
        ("12//345-0.png", None),
        ("-1/345-0.png", None),
        ("12/345-1000.png", None),
        ("99999999999999999999/1-0.png", None),
        ("１２/345-0.png", None),  # fullwidth digits are not ids
    ],
)
def test_image_paths_are_exactly_the_stores_names(path: str, ids: tuple[int, ...] | None) -> None:
    """Only <task>/<subtask>-<n>.png with ASCII digits parses; everything else is None."""
    assert parse_image_path(path) == ids


def test_image_url_round_trips() -> None:
    """The URL the manifest gives is one the image route parses back to the same ids."""
    url = image_url(7, 8, 1)
    assert url == "/v1/images/7/8-1.png"
    assert parse_image_path(url.removeprefix("/v1/images/")) == (7, 8, 1)


def _task(status: str, done: int, *, total: int = 3, task_id: int = 1) -> dict[str, Any]:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return {
        "id": task_id,
        "name": "t",
        "user_id": "u",
        "pool": "standard",
        "provider": "sim",
        "status": status,
        "total_subtasks": total,
        "completed_subtasks": done,
        "failed_subtasks": 0,
        "canceled_subtasks": 0,
        "total_images": total * 2,
        "batch_size": 2,
        "created_at": at,
        "started_at": at + timedelta(seconds=1),
        "finished_at": at + timedelta(seconds=11) if status == "completed" else None,
    }


def test_feed_reports_changes_in_order_and_finished_last() -> None:
    """First snapshot primes; then each change is a progress event and the end adds finished."""
    feed = TaskFeed()
    assert feed.update([_task("running", 0)]) == []
    assert feed.update([_task("running", 0)]) == []  # nothing changed
    step = feed.update([_task("running", 2)])
    assert [(e.event, e.data["completed_subtasks"]) for e in step] == [("task.progress", 2)]
    end = feed.update([_task("completed", 3)])
    assert [e.event for e in end] == ["task.progress", "task.finished"]
    finished = end[1].data
    assert finished["status"] == "completed" and finished["images"] == 6
    assert finished["duration_seconds"] == 10.0  # started 1 s after creation, finished at 11 s
    assert feed.update([_task("completed", 3)]) == []


def test_feed_sees_a_task_born_and_finished_between_two_looks() -> None:
    """A new task that is already final gets its progress and finished events."""
    feed = TaskFeed()
    feed.update([])
    events = feed.update([_task("completed", 3, task_id=9)])
    assert [(e.event, e.task_id) for e in events] == [("task.progress", 9), ("task.finished", 9)]


def test_sse_frame_format() -> None:
    """id, event and one data line of JSON, ended by a blank line."""
    feed = TaskFeed()
    feed.update([])
    event = feed.update([_task("running", 1)])[0]
    frame = sse_frame(event, 4).decode()
    lines = frame.split("\n")
    assert lines[0] == "id: 4" and lines[1] == "event: task.progress"
    assert lines[2].startswith("data: {") and frame.endswith("\n\n") and len(lines) == 5


def test_hmac_signature_matches_rfc_4231_vector() -> None:
    """RFC 4231 test case 2, HMAC-SHA256: key 'Jefe'."""
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert sign("Jefe", b"what do ya want for nothing?") == f"sha256={expected}"
    assert verify("Jefe", b"what do ya want for nothing?", f"sha256={expected}")
    assert not verify("Jefe", b"what do ya want for nothing!", f"sha256={expected}")
    assert not verify("jefe", b"what do ya want for nothing?", f"sha256={expected}")
    assert not verify("Jefe", b"", None)


def test_delivery_body_is_stable_and_complete() -> None:
    """The same event gives the same bytes (so a retry carries the same signature)."""
    at = datetime(2026, 1, 1, 12, tzinfo=UTC)
    one = delivery_body("e1", "task.finished", at, {"b": 1, "a": [1, 2]})
    two = delivery_body("e1", "task.finished", at, {"a": [1, 2], "b": 1})
    assert one == two
    assert one == (
        b'{"at":"2026-01-01T12:00:00+00:00","data":{"a":[1,2],"b":1},'
        b'"event":"task.finished","id":"e1"}'
    )


@pytest.mark.parametrize(
    ("attempts", "delay"), [(1, 5.0), (2, 10.0), (3, 20.0), (8, 640.0), (9, 1000.0), (500, 1000.0)]
)
def test_retry_delay_doubles_up_to_the_cap(attempts: int, delay: float) -> None:
    """base × 2^(n-1), never above the cap (and no overflow for absurd n)."""
    assert retry_delay(attempts, base=5.0, cap=1000.0) == delay


def test_next_state_gives_up_past_max_age() -> None:
    """A retry that would start after max_age is not scheduled."""
    assert next_state(age=100, retry_in=50, max_age=200) == "pending"
    assert next_state(age=100, retry_in=150, max_age=200) == "failed"


def test_target_id_hides_the_url() -> None:
    """The outbox stores a short hash, stable per URL, never the URL."""
    one = target_id("https://hooks.example.com/T000/secret-path")
    assert one == target_id("https://hooks.example.com/T000/secret-path")
    assert len(one) == 16 and "secret" not in one
    assert one != target_id("https://hooks.example.com/T000/other")


@pytest.mark.parametrize(
    ("errors", "completed", "degraded"),
    [(20, 20, True), (19, 0, False), (20, 21, False), (100, 0, True), (0, 0, False)],
)
def test_degraded_needs_enough_failures_and_a_high_share(
    errors: int, completed: int, degraded: bool
) -> None:
    """share ≥ 0.5 of outcomes and at least 20 failures in the window."""
    pressure = Pressure("p", errors, completed)
    assert is_degraded(pressure, share=0.5, min_events=20) is degraded


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("Bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer a b", None),
        ("", None),
        (None, None),
        ("Bearer " + "x" * 500, None),
    ],
)
def test_bearer_header_parsing(header: str | None, token: str | None) -> None:
    """Only `Bearer <one token>` of bounded length is accepted."""
    assert bearer(header) == token


def test_tokens_are_random_and_hashed() -> None:
    """Two tokens differ; the stored form is the sha256 hex, not the token."""
    one, two = new_token(), new_token()
    assert one != two and one.startswith("imgrun_") and len(one) > 40
    assert len(hash_token(one)) == 64 and one not in hash_token(one)
    assert check_name("ci-bot.1") == "ci-bot.1"
    with pytest.raises(UserError):
        check_name("no spaces")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.4", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    """Only addresses (and the name localhost) that stay on this machine are loopback."""
    assert is_loopback(host) is loopback
