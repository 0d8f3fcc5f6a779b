"""`imgrun status`: one snapshot (table or JSON), or a live view refreshed until Ctrl-C."""

from __future__ import annotations

import json
import signal
import time
from dataclasses import replace

import anyio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from db.store import PgStore
from runner.status_read import load_status
from runner.view.display import render
from runner.view.model import StatusSnapshot
from runner.view.projection import STALE_AFTER


async def show_status(
    store: PgStore,
    console: Console,
    *,
    live: bool,
    as_json: bool,
    refresh: float,
    stale_after: float = STALE_AFTER,
) -> None:
    """Print the status once (as a view or JSON), or keep a live view until SIGINT/SIGTERM."""
    if not live:
        snapshot = await load_status(store, stale_after=stale_after)
        if as_json:
            console.out(json.dumps(snapshot.to_json(), indent=2, sort_keys=True), highlight=False)
        else:
            console.print(render(snapshot, width=console.width))
        return
    # Our own handler (not KeyboardInterrupt): Ctrl-C is the normal way out, so it must end
    # the loop quietly with status 0 instead of unwinding through asyncio as an interrupt.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as group:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    group.cancel_scope.cancel()

            group.start_soon(stop_on_signal)
            await _live_loop(store, console, refresh, stale_after)


def fit(console: Console, snapshot: StatusSnapshot, height: int) -> RenderableType:
    """The view trimmed to at most `height` lines by dropping task rows."""
    # Recently finished tasks go first, then the lowest-priority active ones (the view
    # then says how many more there are).
    for _ in range(3):
        view = render(snapshot, width=console.width)
        overflow = len(console.render_lines(view, console.options, pad=False)) - height
        if overflow <= 0 or (not snapshot.recent and len(snapshot.tasks) <= 1):
            return view
        if snapshot.recent:
            keep = max(0, len(snapshot.recent) - overflow)
            snapshot = replace(snapshot, recent=snapshot.recent[:keep])
        else:
            # One more line is needed for the "… and N more active tasks" note.
            keep = max(1, len(snapshot.tasks) - overflow - 1)
            snapshot = replace(snapshot, tasks=snapshot.tasks[:keep])
    return render(snapshot, width=console.width)


def _view(
    console: Console, snapshot: StatusSnapshot | None, error: str | None, *, final: bool = False
) -> RenderableType:
    footer = (
        Text(f"refresh failed (retrying): {error}", style="bold red")
        if error is not None
        else Text("" if final else "Ctrl-C to quit", style="dim")
    )
    if snapshot is None:
        return Group(Text("loading…", style="dim"), footer)
    # Live crops whatever does not fit the terminal from the bottom (the executors); trim
    # the task list instead so every section stays on screen.
    return Group(fit(console, snapshot, console.height - 1), footer)


async def watch(
    store: PgStore,
    console: Console,
    *,
    until: anyio.Event | None = None,
    refresh: float = 1.0,
    stale_after: float = STALE_AFTER,
) -> None:
    """A live view on `console` until `until` is set (its final frame kept) or cancelled."""
    await _live_loop(store, console, refresh, stale_after, until)


async def _live_loop(
    store: PgStore,
    console: Console,
    refresh: float,
    stale_after: float,
    until: anyio.Event | None = None,
) -> None:
    snapshot: StatusSnapshot | None = None
    with Live(
        _view(console, None, None),
        console=console,
        auto_refresh=False,
        screen=False,
        transient=False,
        vertical_overflow="ellipsis",
    ) as view:
        while True:
            started = time.monotonic()
            error = None
            try:
                with anyio.fail_after(max(5.0, 5 * refresh)):
                    snapshot = await load_status(store, stale_after=stale_after)
            except Exception as exc:
                # A restarting database or a dropped connection must not end the view: keep
                # the last good snapshot on screen under the error and try again next tick.
                first_line = (str(exc).strip().splitlines() or ["(no message)"])[0]
                error = f"{type(exc).__name__}: {first_line}"
            finished = until is not None and until.is_set()
            view.update(_view(console, snapshot, error, final=finished), refresh=True)
            if finished:
                return  # the frame just drawn shows the finished state
            with anyio.move_on_after(max(0.0, refresh - (time.monotonic() - started))):
                await (until.wait() if until is not None else anyio.sleep_forever())
