"""`imgrun prune`: remove finished tasks, old error rows and settled alert events."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from rich.table import Table

from runner.cli.app import App, out, pass_app, print_json
from runner.errors import UserError
from runner.policy.duration import parse_duration

if TYPE_CHECKING:
    from runner.retention import PruneReport

ROWS = (
    ("tasks", "tasks"),
    ("subtasks", "subtasks"),
    ("images", "image files"),
    ("error_logs", "error aggregates"),
    ("outbox", "alert events"),
)


def older_than_seconds(value: str) -> float:
    """The --older-than value in seconds; a UserError (exit 2) when malformed or zero."""
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise UserError(f"--older-than: {exc}") from None
    if seconds <= 0:
        raise UserError("--older-than: must be more than 0 (e.g. 30d, 12h, 90m, 45s)")
    return seconds


@click.command("prune")
@click.option(
    "--older-than",
    default="30d",
    show_default=True,
    help="Age past which finished work goes (units s, m, h, d).",
)
@click.option("--images", is_flag=True, help="Also delete the pruned subtasks' image files.")
@click.option("--dry-run", is_flag=True, help="Count what would go; delete nothing.")
@click.option("--batch", default=1_000, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_app
def prune_command(
    app: App, older_than: str, images: bool, dry_run: bool, batch: int, as_json: bool
) -> None:
    """Remove finished tasks (with subtasks), old error rows and settled alert events."""
    # Imported here, as `run` does: every other command starts without the runner's imports.
    from runner.loop.service import output_dir
    from runner.retention import prune

    seconds = older_than_seconds(older_than)
    root = output_dir(app.config, app.env) if images else None
    report = app.with_store(
        lambda store: prune(store, seconds, images_root=root, batch=batch, dry_run=dry_run)
    )
    if as_json:
        print_json(report.as_dict())
    else:
        out.print(_table(report))


def _table(report: PruneReport) -> Table:
    verb = "would remove" if report.dry_run else "removed"
    table = Table(title=f"prune: {verb} (older than {report.older_than:g} s)")
    table.add_column("what")
    table.add_column("count", justify="right")
    for field, label in ROWS:
        table.add_row(label, f"{getattr(report, field):,}")
    if report.images_refused:
        table.add_row("image paths refused (outside the output dir)", f"{report.images_refused:,}")
    return table


def register(cli: click.Group) -> None:
    """Add `prune` to the `imgrun` group."""
    cli.add_command(prune_command)
