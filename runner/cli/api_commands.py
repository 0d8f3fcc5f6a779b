"""CLI commands of the API and alerts: serve, token, results, alerts test."""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import click
from rich.table import Table

from runner.cli.app import App, err, out, pass_app, print_json
from runner.errors import UserError

LOG_LEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False)


@click.command()
@click.option("--host", help="Interface to listen on [default: [api] host, 127.0.0.1].")
@click.option("--port", type=click.IntRange(0, 65535), help="[default: [api] port, 8700]")
@click.option("--log-level", default="INFO", show_default=True, type=LOG_LEVELS)
@pass_app
def serve(app: App, host: str | None, port: int | None, log_level: str) -> None:
    """Serve the HTTP API (and deliver alerts) until Ctrl-C."""
    from runner.api.server import serve_api
    from runner.cli.logs import setup_logging

    setup_logging(log_level)
    settings = app.config.api
    app.with_engine(
        lambda engine: serve_api(
            engine,
            app.config,
            app.env,
            host=host or settings.host,
            port=settings.port if port is None else port,
        )
    )


@click.group("token")
def token_group() -> None:
    """API bearer tokens (only their hashes are stored)."""


@token_group.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def token_create(app: App, name: str, as_json: bool) -> None:
    """Make a token called NAME and print it, once."""
    from runner.api.auth import check_name, hash_token, new_token

    check_name(name)
    token = new_token()
    if not app.with_store(lambda store: store.create_token(name, hash_token(token))):
        raise UserError(f"token {name}: already exists (revoke it first to replace it)")
    if as_json:
        print_json({"name": name, "token": token})
        return
    click.echo(token)
    err.print(f"token {name!r} created: keep it now, it cannot be shown again", style="dim")


@token_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def token_list(app: App, as_json: bool) -> None:
    """Token names, when they were made and last used."""
    rows = app.with_store(lambda store: store.list_tokens())
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no tokens — create one with `imgrun token create NAME`")
        return
    table = Table(title="API tokens", title_justify="left")
    for column in ("name", "created", "last used"):
        table.add_column(column)
    for row in rows:
        used = row["last_used_at"]
        table.add_row(
            row["name"],
            f"{row['created_at']:%Y-%m-%d %H:%M}",
            f"{used:%Y-%m-%d %H:%M}" if used else "never",
        )
    out.print(table)


@token_group.command("revoke")
@click.argument("name")
@pass_app
def token_revoke(app: App, name: str) -> None:
    """Delete the token NAME: requests bearing it get 401 from now on."""
    if not app.with_store(lambda store: store.revoke_token(name)):
        raise UserError(f"token {name}: no such token")
    out.print(f"token {name} revoked")


@click.command()
@click.argument("task_id", type=int)
@click.option("--json", "fmt", flag_value="json", help="The whole manifest as JSON.")
@click.option("--csv", "fmt", flag_value="csv", help="One CSV line per image.")
@click.option(
    "--copy-to",
    type=click.Path(file_okay=False, path_type=Path),
    help="Copy the task's images into this folder (checked against their sha256).",
)
@pass_app
def results(app: App, task_id: int, fmt: str | None, copy_to: Path | None) -> None:
    """A task's results: each subtask's prompt, seed, status and images."""
    from runner.results import copy_images, load_manifest, to_csv

    manifest = app.with_store(lambda store: load_manifest(store, task_id))
    if fmt == "json":
        print_json(manifest)
    elif fmt == "csv":
        click.echo(to_csv(manifest), nl=False)
    elif copy_to is None:
        _show_results(manifest)
    if copy_to is not None:
        from rich.progress import Progress

        total = sum(len(s["images"]) for s in manifest["subtasks"])
        with Progress(console=err, transient=True) as bar:
            job = bar.add_task("copying images", total=total)
            report = copy_images(manifest, copy_to, on_file=lambda: bar.advance(job))
        err.print(
            f"copied {report.copied} images to {copy_to}"
            + (f"; {report.missing} not found on this machine" if report.missing else "")
            + (f"; {report.corrupt} did not match their sha256" if report.corrupt else "")
        )
        if report.missing or report.corrupt:
            raise SystemExit(1)


def _show_results(manifest: dict[str, Any], shown: int = 20) -> None:
    subtasks = manifest["subtasks"]
    images = sum(len(s["images"]) for s in subtasks)
    out.print(
        f"task [bold]{manifest['task_id']}[/] ({manifest['name']}): {manifest['status']},"
        f" {images} of {manifest['total_images']} images"
    )
    table = Table(show_edge=False)
    for column in ("ordinal", "status", "seed", "images", "prompt"):
        table.add_column(column, overflow="fold")
    for sub in subtasks[:shown]:
        table.add_row(
            str(sub["ordinal"]),
            sub["status"],
            str(sub["seed"]),
            str(len(sub["images"])),
            sub["prompt"],
        )
    out.print(table)
    if len(subtasks) > shown:
        out.print(f"… and {len(subtasks) - shown} more (--json or --csv for all)")


@click.group("alerts")
def alerts_group() -> None:
    """Webhook alerts."""


@alerts_group.command("test")
@pass_app
def alerts_test(app: App) -> None:
    """Send a signed test event to every configured webhook; exit 1 if any refuses it."""
    from runner.alerts.signing import delivery_body
    from runner.alerts.webhooks import post, resolve_hooks

    hooks = resolve_hooks(app.config.alerts, app.env)
    if not hooks:
        raise UserError("alerts: no [[alerts.webhooks]] configured")
    event_id = str(uuid.uuid4())
    data = {"message": "a test alert from imgrun", "host": socket.gethostname()}
    body = delivery_body(event_id, "alert.test", datetime.now(UTC), data)

    async def send() -> list[str | None]:
        import aiohttp  # here: every other command would pay for importing it

        async with aiohttp.ClientSession() as session:
            outcomes: list[str | None] = [None] * len(hooks)

            async def one(index: int) -> None:
                hook = hooks[index]
                outcomes[index] = await post(
                    session, hook, body, event="alert.test", event_id=event_id
                )

            async with anyio.create_task_group() as group:
                for index in range(len(hooks)):
                    group.start_soon(one, index)
            return outcomes

    failures = 0
    for hook, error in zip(hooks, anyio.run(send), strict=True):
        if error is None:
            out.print(f"{hook.label}: delivered")
        else:
            failures += 1
            out.print(f"{hook.label}: [red]failed[/]: {error}")
    if failures:
        raise SystemExit(1)


def register(cli: click.Group) -> None:
    """Add these commands to the `imgrun` group."""
    for command in (serve, token_group, results, alerts_group):
        cli.add_command(command)
