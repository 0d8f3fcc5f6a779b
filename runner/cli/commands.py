"""The `imgrun` command line: reads the environment once, wires config, database and commands."""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import click
from rich.markup import escape
from rich.text import Text

from db.embedded import EmbeddedPostgres, EmbeddedPostgresError
from db.records import TaskIsCanceled
from db.url import DatabaseURLError
from runner.cli import api_commands as cli_api
from runner.cli import prune as cli_prune
from runner.cli.app import App, err, out, pass_app, print_json
from runner.config import Environment, load_config
from runner.errors import UserError, one_line, shown
from runner.spec.model import Expansion, load_spec
from runner.submit import check_key, new_task, prepare, submit_once, summary
from runner.submit import submit as submit_expansion
from runner.view.tables import demo_summary, errors_table, task_detail, tasks_table
from workers.kinds import POOL_NAMES

if TYPE_CHECKING:  # imported by the commands that use it: SQLAlchemy is slow to import
    from db.store import PgStore

PROGRESS_THRESHOLD = 20_000  # subtasks; smaller submits finish before a bar is worth drawing
PREVIEW_SUBTASKS = 5  # subtasks a dry run shows
PREVIEW_PROMPT_CHARS = 200  # characters of each previewed prompt


@click.group()
@click.version_option(package_name="imgrun")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """imgrun — adaptive-concurrency task runner for batch image generation."""
    env = Environment.from_environ(os.environ)
    config = load_config(env)
    ctx.obj = App(env.with_api_keys(config, os.environ), config)


@cli.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Show the expansion; write nothing.")
@click.option("--user", "user_id", help="Owner of the task (default: the OS user).")
@click.option("--key", help="Idempotency key: a repeat with the same spec returns the same task.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def submit(
    app: App, spec_path: Path, dry_run: bool, user_id: str | None, key: str | None, as_json: bool
) -> None:
    """Expand SPEC (YAML or JSON) into subtasks and queue them."""
    from runner.checks import validate_task_provider

    spec = load_spec(spec_path, app.config.submit.limits.max_spec_bytes)
    expansion = prepare(spec, app.config)
    validate_task_provider(app.config, app.env, spec.provider, expansion.pool)
    if key is not None:
        check_key(key, "--key")
    info = summary(expansion)
    if dry_run:
        _print_preview(expansion, info, as_json=as_json)
        return
    user = user_id or getpass.getuser()
    show_bar = expansion.total_subtasks >= PROGRESS_THRESHOLD and not as_json
    if key is not None:
        task_id, created = app.with_store(lambda store: _submit_once(store, expansion, user, key))
    else:
        task_id, created = _submit_new(app, expansion, user, show_bar=show_bar), True
    if as_json:
        print_json({"task_id": task_id, "created": created, **info})
    elif not created:
        out.print(f"task [bold]{task_id}[/] was already submitted with --key {key}; nothing new")
    else:
        out.print(
            f"submitted task [bold]{task_id}[/] ({escape(shown(spec.name, 200))}):"
            f" {expansion.total_subtasks:,} subtasks, {expansion.total_images:,} images,"
            f" pool {expansion.pool}"
        )


def _submit_new(app: App, expansion: Expansion, user: str, *, show_bar: bool) -> int:
    """Queue the expansion: on a bare connection, or through the engine when it must migrate."""
    with _progress(expansion.total_subtasks, show_bar) as advance:
        task_id = app.submit_quick(new_task(expansion, user), expansion.rows(), advance)
        if task_id is None:
            task_id = app.with_store(
                lambda store: submit_expansion(store, expansion, user, on_progress=advance)
            )
    return task_id


async def _submit_once(
    store: PgStore, expansion: Expansion, user: str, key: str
) -> tuple[int, bool]:
    """Queue the expansion unless `key` was used: (task id, whether this call created it)."""
    from db.api_queries import KeyReused

    try:
        done = await submit_once(store, expansion, user, key)
    except KeyReused as exc:
        raise UserError(f"--key {key}: {exc}") from None
    return done.task_id, done.created


@contextlib.contextmanager
def _progress(total: int, show: bool) -> Iterator[Callable[[int], None] | None]:
    """A transient bar on stderr (its advance callback), or None when it is not worth drawing."""
    if not show:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    columns = (*Progress.get_default_columns()[:2], BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=err, transient=True) as bar:
        job = bar.add_task("writing subtasks", total=total)
        yield lambda n: bar.advance(job, n)


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
    rows = app.with_store(lambda store: store.list_tasks(limit=limit, active_only=active))
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
    task = app.with_store(lambda store: store.get_task(task_id))
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

    async def noop(store: PgStore) -> None:
        return None

    app.with_store(noop)
    out.print("database is at the newest schema")


@db_group.command("url")
@click.option(
    "--hold", is_flag=True, help="Keep the embedded server (and the URL) up until Ctrl-C."
)
@pass_app
def db_url(app: App, hold: bool) -> None:
    """Print the database URL in use (starting the embedded server if that is the one)."""
    from runner.cli.dbshell import stop_signals_held

    if app.env.database_url:
        click.echo(app.env.database_url)
        return
    server = EmbeddedPostgres(app.env.home)
    url = server.start()
    try:
        if hold:
            with stop_signals_held() as wait_for_stop:
                click.echo(url)
                err.print("holding the embedded server: the URL works until Ctrl-C", style="dim")
                wait_for_stop()
            return
        click.echo(url)
        if not server.shared:
            err.print(
                "warning: no other imgrun process holds the embedded server, so it stops, and"
                " this URL stops working, as this command exits; use `imgrun db url --hold`"
                " or `imgrun db shell`",
                soft_wrap=True,
            )
    finally:
        server.release()


@db_group.command(
    "shell", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@pass_app
def db_shell(app: App, psql_args: tuple[str, ...]) -> None:
    """psql on the database in use (extra arguments go to psql); the server stays up meanwhile."""
    from db.engine import normalise_url
    from db.pgconf import libpq_env
    from runner.cli.dbshell import run_psql

    if app.env.database_url:
        status = run_psql(os.environ, libpq_env(normalise_url(app.env.database_url)), psql_args)
    else:
        server = EmbeddedPostgres(app.env.home)
        server.start()
        try:
            status = run_psql(os.environ, server.client_env(), psql_args)
        finally:
            server.release()
    sys.exit(status)


@cli.command()
@click.option(
    "--until-idle",
    is_flag=True,
    help="Exit 0 once nothing is pending, processing or waiting to retry.",
)
@click.option("--executor-id", help="Name this runner (default: host-pid-random).")
@click.option(
    "--pool",
    "pools",
    multiple=True,
    type=click.Choice(POOL_NAMES),
    help="Claim only this pool (repeatable; default: every pool).",
)
@click.option(
    "--provider",
    "providers",
    multiple=True,
    help="Claim only this provider's subtasks (repeatable; default: every configured one).",
)
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
    app: App,
    until_idle: bool,
    executor_id: str | None,
    pools: tuple[str, ...],
    providers: tuple[str, ...],
    log_level: str,
    log_format: str,
) -> None:
    """Run the long-running runner: claim subtasks and generate their images."""
    from runner.checks import validate_providers
    from runner.cli.logs import setup_logging
    from runner.loop.service import serve

    flags: dict[str, object] = {"pools": pools, "providers": providers}
    if executor_id:
        flags["executor_id"] = executor_id
    config = app.config.with_runner(**flags)
    # Every provider, before the database is even opened: a typo must not fail claimed work.
    routed = {name for names in config.routes().values() for name in names}
    validate_providers(config, app.env, names=routed)
    setup_logging(log_level, log_format)  # type: ignore[arg-type]

    app.with_engine(lambda engine: serve(engine, config, app.env, until_idle=until_idle))


@cli.command()
@click.argument("task_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@pass_app
def cancel(app: App, task_id: int, as_json: bool) -> None:
    """Cancel a task: pending subtasks now, in-flight ones at their next check."""
    result = app.with_store(lambda store: store.cancel_task(task_id))
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
    try:
        result = app.with_store(lambda store: store.retry_task(task_id))
    except TaskIsCanceled as exc:
        raise UserError(f"{exc}; a canceled task cannot be retried, submit it again") from None
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
    rows = app.with_store(lambda store: store.top_errors(limit))
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
@click.option(
    "--rpm",
    default=0,
    type=click.IntRange(0, 10_000_000),
    help="Requests per minute (token bucket; 429 + x-ratelimit-* headers). 0 = unlimited.",
)
@click.option(
    "--capacity-schedule",
    metavar="SECONDS:SLOTS,...",
    help='Move the capacity over time, e.g. "0:40,60:10,120:40".',
)
def sim(capacity_schedule: str | None, **options: Any) -> None:
    """Serve the simulated image API (OpenAI-compatible + lumina queue) on loopback.

    Live changes: POST /_sim/config with JSON of any of capacity, service_ms, queue_limit,
    rpm, error_rate, rate_limit_rate.
    """
    from runner.cli.logs import setup_logging
    from workers.sim.app import run as run_sim
    from workers.sim.config import SimConfig
    from workers.sim.schedule import parse_schedule

    try:
        schedule = parse_schedule(capacity_schedule) if capacity_schedule else ()
        config = SimConfig(capacity_schedule=schedule, **options)
    except ValueError as exc:  # e.g. fault rates adding up to more than 1
        raise UserError(f"sim: {exc}") from None
    setup_logging("INFO")
    run_sim(config)


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
    from runner.cli.status_view import show_status

    if live and as_json:
        raise UserError("status: --live and --json cannot be combined")
    stale_after = app.config.runner.stale_after
    app.with_store(
        lambda store: show_status(
            store, out, live=live, as_json=as_json, refresh=refresh, stale_after=stale_after
        )
    )


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
    from runner.cli.demo import run_demo
    from runner.cli.logs import setup_logging
    from runner.cli.status_view import watch

    setup_logging(log_level, "rich" if out.is_terminal else "json", console=out)

    async def view(store: PgStore, done: anyio.Event) -> None:
        await watch(store, out, until=done, stale_after=app.config.runner.stale_after)

    summary = app.with_engine(
        lambda engine: run_demo(
            engine, app.config, app.env, getpass.getuser(), view, service_ms=service_ms
        )
    )
    out.print(demo_summary(summary))


cli_api.register(cli)
cli_prune.register(cli)


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
    except EmbeddedPostgresError as exc:
        # Not the user's input, but still one line: the message names the log to read.
        err.print(Text.assemble(("imgrun: error: ", "red"), str(exc)), soft_wrap=True)
        sys.exit(1)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)
