"""The `imgrun` command line: reads the environment once, wires config, database and commands."""

from __future__ import annotations

import getpass
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncEngine

from db import queries
from db.engine import DatabaseURLError, database_url, open_engine
from runner.config import Config, Environment, load_config
from runner.errors import UserError, one_line, shown
from runner.spec import Expansion, expand, load_spec
from runner.submit import submit as submit_expansion
from runner.views import demo_summary, errors_table, task_detail, tasks_table

T = TypeVar("T")

out = Console()
err = Console(stderr=True)

PROGRESS_THRESHOLD = 20_000  # subtasks; smaller submits finish before a bar is worth drawing
PREVIEW_SUBTASKS = 5  # subtasks a dry run shows
PREVIEW_PROMPT_CHARS = 200  # characters of each previewed prompt


class App:
    """What every command needs: the environment read at start-up and the merged config."""

    def __init__(self, env: Environment, config: Config) -> None:
        self.env = env
        self.config = config

    def with_engine(
        self, work: Callable[[AsyncEngine], Awaitable[T]], *, upgrade: bool = True
    ) -> T:
        """Run `work` on an engine to the configured (or embedded) database."""

        async def main(url: str) -> T:
            async with open_engine(url, upgrade=upgrade) as engine:
                return await work(engine)

        with database_url(self.env.home, self.env.database_url) as url:
            return anyio.run(main, url)


pass_app = click.make_pass_decorator(App)


def print_json(data: Any) -> None:
    """Machine output: one JSON document on stdout."""
    click.echo(json.dumps(queries.jsonable(data), indent=2, sort_keys=True))


@click.group()
@click.version_option(package_name="imgrun")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """imgrun — adaptive-concurrency task runner for batch image generation."""
    env = Environment.from_environ(os.environ)
    ctx.obj = App(env, load_config(env))


@cli.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Show the expansion; write nothing.")
@click.option("--user", "user_id", help="Owner of the task (default: the OS user).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def submit(app: App, spec_path: Path, dry_run: bool, user_id: str | None, as_json: bool) -> None:
    """Expand SPEC (YAML or JSON) into subtasks and queue them."""
    limits = app.config.submit.limits
    spec = load_spec(spec_path, limits.max_spec_bytes)
    if spec.provider not in app.config.providers:
        known = ", ".join(sorted(app.config.providers))
        raise UserError(
            f"provider: unknown provider {shown(spec.provider)!r} (configured: {known})"
        )
    expansion = expand(spec, limits=limits)
    summary = {
        "name": spec.name,
        "pool": expansion.pool,
        "provider": spec.provider,
        "priority": spec.priority,
        "seed": expansion.seed,
        "total_subtasks": expansion.total_subtasks,
        "total_images": expansion.total_images,
    }
    if dry_run:
        _print_preview(expansion, summary, as_json=as_json)
        return

    user = user_id or getpass.getuser()
    show_bar = expansion.total_subtasks >= PROGRESS_THRESHOLD and not as_json

    async def write(engine: AsyncEngine) -> int:
        if not show_bar:
            return await submit_expansion(engine, expansion, user)
        columns = (*Progress.get_default_columns()[:2], BarColumn(), MofNCompleteColumn())
        with Progress(*columns, TimeElapsedColumn(), console=err, transient=True) as bar:
            job = bar.add_task("writing subtasks", total=expansion.total_subtasks)
            return await submit_expansion(
                engine, expansion, user, on_progress=lambda n: bar.advance(job, n)
            )

    task_id = app.with_engine(write)
    if as_json:
        print_json({"task_id": task_id, **summary})
    else:
        out.print(
            f"submitted task [bold]{task_id}[/] ({escape(shown(spec.name, 200))}):"
            f" {expansion.total_subtasks:,} subtasks, {expansion.total_images:,} images,"
            f" pool {expansion.pool}"
        )


def _print_preview(expansion: Expansion, summary: dict[str, Any], *, as_json: bool) -> None:
    """The dry run: counts and the first few subtasks, their prompts clipped."""
    # Clipped because rich wraps a long unbroken token in quadratic time (a 100 KB token
    # took 291 s); escaped because a prompt's "[/]" would otherwise be read as markup.
    preview = [vars(s) for _, s in zip(range(PREVIEW_SUBTASKS), expansion.subtasks(), strict=False)]
    if as_json:
        print_json({**summary, "preview": preview})
        return
    spec = expansion.spec
    out.print(
        f"[bold]{escape(shown(spec.name, 200))}[/]: {expansion.total_subtasks:,} subtasks,"
        f" {expansion.total_images:,} images, pool {expansion.pool},"
        f" provider {escape(shown(spec.provider))}, seed {expansion.seed}"
        " (dry run: nothing written)"
    )
    for item in preview:
        prompt = escape(shown(item["prompt"], PREVIEW_PROMPT_CHARS))
        out.print(f"  #{item['ordinal']} seed {item['params']['seed']}: {prompt}", soft_wrap=True)
    if expansion.total_subtasks > len(preview):
        out.print(f"  … and {expansion.total_subtasks - len(preview):,} more")


@cli.command("tasks")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--active", is_flag=True, help="Only pending and running tasks.")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def tasks_command(app: App, limit: int, active: bool, as_json: bool) -> None:
    """List tasks, newest first."""
    rows = app.with_engine(lambda e: queries.list_tasks(e, limit=limit, active_only=active))
    if as_json:
        print_json([dict(r) for r in rows])
    elif not rows:
        out.print("no tasks yet — submit one with `imgrun submit SPEC`")
    else:
        out.print(tasks_table(rows))


@cli.command("task")
@click.argument("task_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@pass_app
def task_command(app: App, task_id: int, as_json: bool) -> None:
    """Show one task: counts by status and its first failures."""
    task = app.with_engine(lambda e: queries.get_task(e, task_id))
    if task is None:
        raise UserError(f"task {task_id}: no such task")
    if as_json:
        print_json(task)
    else:
        out.print(task_detail(task))


@cli.group("db")
def db_group() -> None:
    """Database maintenance."""


@db_group.command("upgrade")
@pass_app
def db_upgrade(app: App) -> None:
    """Migrate the database to the newest schema."""

    async def noop(engine: AsyncEngine) -> None:
        return None

    app.with_engine(noop)
    out.print("database is at the newest schema")


@db_group.command("url")
@pass_app
def db_url(app: App) -> None:
    """Print the database URL in use (starting the embedded server if that is the one)."""
    if app.env.database_url:
        click.echo(app.env.database_url)
        return
    with database_url(app.env.home, None) as url:
        click.echo(url)


@cli.command()
@click.option(
    "--until-idle",
    is_flag=True,
    help="Exit 0 once nothing is pending, processing or waiting to retry.",
)
@click.option("--executor-id", help="Name this runner (default: host-pid-random).")
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--log-format", default="auto", show_default=True, type=click.Choice(["auto", "rich", "json"])
)
@pass_app
def run(
    app: App, until_idle: bool, executor_id: str | None, log_level: str, log_format: str
) -> None:
    """Run the long-running runner: claim subtasks and generate their images."""
    from runner.logs import setup_logging
    from runner.service import serve

    setup_logging(log_level, log_format)  # type: ignore[arg-type]
    config = app.config
    if executor_id:
        config = config.model_copy(
            update={"runner": config.runner.model_copy(update={"executor_id": executor_id})}
        )

    async def main(engine: AsyncEngine) -> None:
        await serve(engine, config, app.env, until_idle=until_idle)

    app.with_engine(main)


@cli.command()
@click.argument("task_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@pass_app
def cancel(app: App, task_id: int, as_json: bool) -> None:
    """Cancel a task: pending subtasks now, in-flight ones at their next check."""
    result = app.with_engine(lambda e: queries.cancel_task(e, task_id))
    if result is None:
        raise UserError(f"task {task_id}: no such task")
    if as_json:
        print_json(result)
    else:
        out.print(
            f"task {task_id}: canceled {result['canceled']} pending subtasks;"
            f" {result['in_flight']} in flight will stop at their next check"
        )


@cli.command()
@click.argument("task_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@pass_app
def retry(app: App, task_id: int, as_json: bool) -> None:
    """Put a task's failed subtasks back to pending."""
    result = app.with_engine(lambda e: queries.retry_task(e, task_id))
    if result is None:
        raise UserError(f"task {task_id}: no such task")
    if as_json:
        print_json(result)
    else:
        out.print(f"task {task_id}: {result['requeued']} failed subtasks back to pending")


@cli.command()
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
@pass_app
def errors(app: App, limit: int, as_json: bool) -> None:
    """Aggregated errors, most frequent first."""
    rows = app.with_engine(lambda e: queries.top_errors(e, limit))
    if as_json:
        print_json(rows)
    elif not rows:
        out.print("no errors recorded")
    else:
        out.print(errors_table(rows))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8800, show_default=True, type=click.IntRange(0, 65535))
@click.option("--capacity", default=8, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--service-ms", default=200.0, show_default=True, type=click.FloatRange(0))
@click.option("--queue-limit", default=64, show_default=True, type=click.IntRange(0))
@click.option("--error-rate", default=0.0, type=click.FloatRange(0, 1))
@click.option("--rate-limit-rate", default=0.0, type=click.FloatRange(0, 1))
@click.option("--hang-rate", default=0.0, type=click.FloatRange(0, 1))
@click.option("--malformed-rate", default=0.0, type=click.FloatRange(0, 1))
@click.option("--lumina-fail-rate", default=0.0, type=click.FloatRange(0, 1))
@click.option("--seed", default=0, show_default=True, type=int)
def sim(**options: Any) -> None:
    """Serve the simulated image API (OpenAI-compatible + lumina queue) on loopback."""
    from runner.logs import setup_logging
    from workers.sim.app import run as run_sim
    from workers.sim.config import SimConfig

    setup_logging("INFO")
    run_sim(SimConfig(**options))


@cli.command()
@click.option("--live", is_flag=True, help="Keep refreshing until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="Print one snapshot as JSON.")
@click.option(
    "--refresh",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.1),
    metavar="SECONDS",
    help="Seconds between refreshes of the live view.",
)
@pass_app
def status(app: App, live: bool, as_json: bool, refresh: float) -> None:
    """Pools, throughput, ETA, task progress, top errors and runners (from the database)."""
    from runner.status import show_status

    if live and as_json:
        raise UserError("status: --live and --json cannot be combined")
    app.with_engine(lambda e: show_status(e, out, live=live, as_json=as_json, refresh=refresh))


@cli.command()
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--service-ms",
    type=click.FloatRange(0),
    help="The simulated API's mean time per image [default: 600].",
)
@pass_app
def demo(app: App, log_level: str, service_ms: float | None) -> None:
    """Run the simulated API, the example tasks and a runner, with the live view, to completion."""
    from runner.demo import run_demo
    from runner.logs import setup_logging
    from runner.status import watch

    setup_logging(log_level, "rich" if out.is_terminal else "json", console=out)

    async def main(engine: AsyncEngine) -> Any:
        async def view(engine: AsyncEngine, done: anyio.Event) -> None:
            await watch(engine, out, until=done)

        return await run_demo(
            engine, app.config, app.env, getpass.getuser(), view, service_ms=service_ms
        )

    summary = app.with_engine(main)
    out.print(demo_summary(summary))


def _exit_on_sigterm() -> None:
    # Turn SIGTERM into SystemExit so `finally` blocks run (the embedded server's release).
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors are one line and exit 2, never a traceback."""
    _exit_on_sigterm()
    try:
        cli.main(args=argv, prog_name="imgrun", standalone_mode=False)
    except (UserError, DatabaseURLError) as exc:
        err.print(Text.assemble(("imgrun: error: ", "red"), one_line(str(exc))), soft_wrap=True)
        sys.exit(2)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)
