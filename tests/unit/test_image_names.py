"""Stored image names: attempt-scoped, and which recorded names the API may serve (pure)."""

from __future__ import annotations

import pytest

from workers.names import image_name, is_attempt_scoped, is_image_of
from workers.types import image_paths


def test_names_are_attempt_scoped() -> None:
    """Two attempts of one subtask never share a name."""
    assert image_name(12, 1, 0) == "12-1-0.png"
    assert image_name(12, 1, 0) != image_name(12, 2, 0)


@pytest.mark.parametrize(
    ("name", "subtask", "index", "expected"),
    [
        ("12-3-0.png", 12, 0, True),
        ("12-0.png", 12, 0, True),  # written by earlier versions, still served
        ("12-3-1.png", 12, 0, False),  # another image of the result
        ("13-3-0.png", 12, 0, False),  # another subtask's file
        ("12-3-0.png.x1.tmp", 12, 0, False),
        ("../12-3-0.png", 12, 0, False),
        ("12-3-0.PNG", 12, 0, False),
        ("１２-3-0.png", 12, 0, False),
        ("12--0.png", 12, 0, False),
    ],
)
def test_which_recorded_names_are_served(
    name: str, subtask: int, index: int, expected: bool
) -> None:
    """Only a name the store writes for exactly that subtask and index."""
    assert is_image_of(name, subtask, index) is expected


def test_only_attempt_scoped_names_may_be_removed() -> None:
    """Legacy names and anything else are never discarded."""
    assert is_attempt_scoped("12-3-0.png")
    assert not is_attempt_scoped("12-0.png")
    assert not is_attempt_scoped("notes.txt")


def test_image_paths_tolerate_any_json() -> None:
    """Only string paths of a well-formed result are taken."""
    assert image_paths({"images": [{"path": "/o/1/2-1-0.png"}, {"path": 3}, "x"]}) == [
        "/o/1/2-1-0.png"
    ]
    assert image_paths(None) == image_paths({"images": "nope"}) == image_paths({}) == []
