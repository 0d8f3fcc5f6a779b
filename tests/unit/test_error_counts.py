"""Recovered occurrences show beside an error's count: in `imgrun errors` and in status."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from rich.console import Console

from runner.view.projection import error
from runner.view.tables import error_count, errors_table

NOW = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)


def row(count: int, recovered: int | None) -> dict[str, object]:
    """An error_logs row as the queries return it (older rows have no `recovered`)."""
    fields: dict[str, object] = {
        "error_type": "TransientError",
        "error_message": "sim POST /v1/images/generations: HTTP 500: injected",
        "count": count,
        "pool": "standard",
        "provider": "sim",
        "first_occurred_at": NOW,
        "last_occurred_at": NOW,
    }
    if recovered is not None:
        fields["recovered"] = recovered
    return fields


def test_count_says_how_many_were_recovered() -> None:
    """ "38 (38 recovered)"; without recovered occurrences just the count."""
    assert error_count(row(38, 38)) == "38 (38 recovered)"
    assert error_count(row(5, 2)) == "5 (2 recovered)"
    assert error_count(row(5, 0)) == "5"
    assert error_count(row(5, None)) == "5"


def test_the_errors_table_shows_it() -> None:
    """The rendered `imgrun errors` table carries the recovered count."""
    console = Console(file=io.StringIO(), width=200)
    console.print(errors_table([row(38, 30)], now=NOW))
    assert "38 (30 recovered)" in console.file.getvalue()  # type: ignore[attr-defined]


def test_status_projection_keeps_it() -> None:
    """status --json and the live view get the recovered count from the projection."""
    assert error(row(38, 30)).recovered == 30
    assert error(row(38, None)).recovered == 0
