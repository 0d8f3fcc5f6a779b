"""A pool's crew: workers started only as needed, deadlines kept by one watchdog."""

from __future__ import annotations

import anyio
import pytest

from runner.loop.crew import Crew, Shift

pytestmark = pytest.mark.anyio


async def test_workers_grow_to_the_peak_concurrency_only() -> None:
    """Five items running at once take five workers; five more after them take no new one."""
    gate = anyio.Event()
    started: list[int] = []
    done: list[int] = []

    async def run(item: int, _shift: Shift) -> None:
        started.append(item)
        await gate.wait()
        done.append(item)

    crew: Crew[int] = Crew(run)
    async with anyio.create_task_group() as group:
        for i in range(5):
            crew.hand(i, group)
        with anyio.fail_after(5):
            while len(started) < 5:
                await anyio.sleep(0)
        assert crew.workers == 5
        gate.set()
        with anyio.fail_after(5):
            while len(done) < 5:
                await anyio.sleep(0)
        for i in range(5, 10):
            crew.hand(i, group)
        with anyio.fail_after(5):
            while len(done) < 10:
                await anyio.sleep(0)
        assert crew.workers == 5
        group.cancel_scope.cancel()
    assert sorted(done) == list(range(10))


async def test_an_attempt_past_its_deadline_is_cut_off_and_the_worker_goes_on() -> None:
    """The hung item sees a cancellation with timed_out set; the next item runs normally."""
    outcomes: list[tuple[str, str]] = []

    async def run(item: str, shift: Shift) -> None:
        try:
            if item == "hangs":
                await anyio.sleep_forever()
            await anyio.sleep(0)
            outcomes.append((item, "done"))
        except anyio.get_cancelled_exc_class():
            outcomes.append((item, "timed out" if shift.timed_out else "cancelled"))
            raise

    crew: Crew[str] = Crew(run, timeout=0.2)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(crew.watch)
            crew.hand("hangs", group)
            while not outcomes:
                await anyio.sleep(0.01)
            crew.hand("quick", group)
            while len(outcomes) < 2:
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()
    assert outcomes == [("hangs", "timed out"), ("quick", "done")]
    assert crew.workers == 1


async def test_an_attempt_within_its_deadline_is_left_alone() -> None:
    """The watchdog cancels nothing that finishes in time, however many attempts run."""
    seen: list[str] = []

    async def run(item: int, shift: Shift) -> None:
        try:
            await anyio.sleep(0.01)
            seen.append("done")
        except anyio.get_cancelled_exc_class():
            seen.append("timed out" if shift.timed_out else "cancelled")
            raise

    crew: Crew[int] = Crew(run, timeout=0.5)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(crew.watch)
            for i in range(30):
                crew.hand(i, group)
                await anyio.sleep(0.02)
            while len(seen) < 30:
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()
    assert seen == ["done"] * 30


async def test_every_item_is_run_or_left_over_when_the_group_is_cancelled() -> None:
    """Cancelled straight after the hand-offs: no item is lost, none comes back twice."""
    ran: list[int] = []

    async def run(item: int, _shift: Shift) -> None:
        ran.append(item)
        await anyio.sleep_forever()

    crew: Crew[int] = Crew(run)
    async with anyio.create_task_group() as group:
        for i in range(3):
            crew.hand(i, group)
        group.cancel_scope.cancel()
    left = crew.leftovers()
    assert sorted(ran + left) == [0, 1, 2]
    assert crew.leftovers() == []
