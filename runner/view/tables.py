"""Rich renderables for one-shot CLI output (pure: rows in, renderable out)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

STATUS_STYLE = {
    "pending": "yellow",
    "running": "cyan",
    "processing": "cyan",
    "completed": "green",
    "failed": "red",
    "partial": "magenta",
    "canceled": "dim",
}


def age(moment: datetime | None, now: datetime | None = None) -> str:
    """Compact age like 5s, 3m, 2h, 4d."""
    if moment is None:
        return "-"
    seconds = max(0.0, ((now or datetime.now(UTC)) - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def progress_text(done: int, failed: int, canceled: int, total: int) -> str:
    """'120/400 (30%)' with failures and cancellations when there are any."""
    percent = 100 * (done + failed + canceled) / total if total else 100.0
    extra = "".join(
        f" {label} {count}"
        for label, count in (("failed", failed), ("canceled", canceled))
        if count
    )
    return f"{done}/{total} ({percent:.0f}%){extra}"


def status_text(status: str) -> Text:
    """A status word in its colour."""
    return Text(status, style=STATUS_STYLE.get(status, ""))


def tasks_table(rows: Sequence[Mapping[str, Any]], now: datetime | None = None) -> Table:
    """The `imgrun tasks` table."""
    table = Table(title="tasks", title_justify="left", expand=False)
    for column, justify in (
        ("id", "right"),
        ("name", "left"),
        ("pool", "left"),
        ("prio", "right"),
        ("progress", "right"),
        ("status", "left"),
        ("age", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["name"],
            row["pool"],
            str(row["priority"]),
            progress_text(
                row["completed_subtasks"],
                row["failed_subtasks"],
                row["canceled_subtasks"],
                row["total_subtasks"],
            ),
            status_text(row["status"]),
            age(row["created_at"], now),
        )
    return table


def task_detail(task: Mapping[str, Any], now: datetime | None = None) -> RenderableType:
    """The `imgrun task ID` view: fields, counts by status, first failures."""
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()
    for label, value in (
        ("task", f"{task['id']}  {task['name']}"),
        ("status", status_text(task["status"])),
        ("pool / provider", f"{task['pool']} / {task['provider']}"),
        ("priority", str(task["priority"])),
        ("user", task["user_id"]),
        ("subtasks", f"{task['total_subtasks']} ({task['total_images']} images)"),
        (
            "progress",
            progress_text(
                task["completed_subtasks"],
                task["failed_subtasks"],
                task["canceled_subtasks"],
                task["total_subtasks"],
            ),
        ),
        ("ratio / seed", f"{task['ratio']} / {task['seed']}"),
        ("created", f"{age(task['created_at'], now)} ago"),
    ):
        fields.add_row(label, value)
    counts = Table(title="subtasks by status", title_justify="left")
    counts.add_column("status")
    counts.add_column("count", justify="right")
    for status, count in sorted(task["counts"].items()):
        counts.add_row(status_text(status), str(count))
    parts: list[RenderableType] = [fields, counts]
    if task["failed"]:
        failures = Table(title="first failed subtasks", title_justify="left")
        for column in ("id", "ordinal", "attempts", "error"):
            failures.add_column(column)
        for row in task["failed"]:
            failures.add_row(
                str(row["id"]), str(row["ordinal"]), str(row["attempts"]), row["error"] or ""
            )
        parts.append(failures)
    return Group(*parts)


def error_count(row: Mapping[str, Any]) -> str:
    """A row's count and how many in-attempt retries absorbed: "38 (38 recovered)"."""
    recovered = row.get("recovered") or 0
    return f"{row['count']} ({recovered} recovered)" if recovered else str(row["count"])


def errors_table(rows: Sequence[Mapping[str, Any]], now: datetime | None = None) -> Table:
    """The `imgrun errors` table: aggregated failures, most frequent first."""
    table = Table(title="errors", title_justify="left")
    for column, justify in (
        ("count", "right"),
        ("type", "left"),
        ("message", "left"),
        ("pool", "left"),
        ("first", "right"),
        ("last", "right"),
    ):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for row in rows:
        table.add_row(
            error_count(row),
            row["error_type"],
            row["error_message"],
            row["pool"] or "-",
            age(row["first_occurred_at"], now),
            age(row["last_occurred_at"], now),
        )
    return table


def demo_summary(summary: Any) -> RenderableType:
    """What `imgrun demo` did: tasks, images and where they are, retries, errors, time."""
    parts: list[RenderableType] = [tasks_table(summary.tasks)]
    folders = sorted({str(path.parent) for path in summary.images})
    lines = Table.grid(padding=(0, 2))
    lines.add_column(style="bold")
    lines.add_column()
    lines.add_row("images", f"{len(summary.images)} PNGs in {', '.join(folders) or '-'}")
    if summary.images:
        lines.add_row("for example", str(summary.images[0]))
    lines.add_row("retries", f"{summary.retries} (plus {summary.deferrals} rate-limit deferrals)")
    lines.add_row("time", f"{summary.seconds:.1f} s")
    parts.append(lines)
    if summary.errors:
        errors = Table(title="errors seen (aggregated)", title_justify="left")
        for column in ("count", "type", "message"):
            errors.add_column(column, overflow="fold")
        for row in summary.errors:
            errors.add_row(error_count(row), row["error_type"], row["error_message"])
        parts.append(errors)
    return Group(*parts)
