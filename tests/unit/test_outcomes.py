"""The outcome buffer: bounded batches, FIFO order, slots freed only once written."""

from __future__ import annotations

import pytest

from db.queries import ErrorRecord, Outcome
from runner.loop.outcomes import OutcomeBuffer


def outcome(subtask_id: int) -> Outcome:
    """A completed outcome for `subtask_id`."""
    return Outcome(subtask_id, 1, "completed", "r1")


def error(subtask_id: int) -> ErrorRecord:
    """An error record for `subtask_id`."""
    return ErrorRecord("TransientError", "boom", None, "standard", "sim", subtask_id)


def test_take_returns_at_most_max_batch_oldest_first() -> None:
    """Batches are bounded and FIFO; the rest waits for the next batch."""
    buffer = OutcomeBuffer(max_batch=3)
    for i in range(7):
        buffer.record(outcome(i))
    assert [o.subtask_id for o in buffer.take().outcomes] == [0, 1, 2]
    assert [o.subtask_id for o in buffer.take().outcomes] == [3, 4, 5]
    assert [o.subtask_id for o in buffer.take().outcomes] == [6]
    assert not buffer.take()
    assert len(buffer) == 0


def test_errors_are_bounded_independently_of_outcomes() -> None:
    """Error records ride along, also at most max_batch per batch."""
    buffer = OutcomeBuffer(max_batch=2)
    buffer.record(outcome(1))
    for i in range(3):
        buffer.record_error(error(i))
    batch = buffer.take()
    assert [o.subtask_id for o in batch.outcomes] == [1]
    assert [e.subtask_id for e in batch.errors] == [0, 1]
    assert [e.subtask_id for e in buffer.take().errors] == [2]


def test_slots_are_released_only_when_the_batch_is_released() -> None:
    """Taking a batch frees nothing; releasing it frees each slot exactly once."""
    freed: list[int] = []
    buffer = OutcomeBuffer(max_batch=10)
    buffer.record(outcome(1), lambda: freed.append(1))
    buffer.record(outcome(2))  # a row handed back at shutdown holds no slot
    buffer.record(outcome(3), lambda: freed.append(3))
    batch = buffer.take()
    assert freed == []
    assert buffer.outcomes_waiting == 0
    batch.release()
    assert freed == [1, 3]


def test_put_back_restores_order_and_pairing() -> None:
    """An unwritten batch goes back in front, each outcome still paired with its slot."""
    freed: list[int] = []
    buffer = OutcomeBuffer(max_batch=2)
    buffer.record(outcome(1))
    buffer.record(outcome(2), lambda: freed.append(2))
    buffer.record(outcome(3), lambda: freed.append(3))
    batch = buffer.take()
    buffer.record(outcome(4), lambda: freed.append(4))
    buffer.put_back(batch)
    again = buffer.take()
    assert [o.subtask_id for o in again.outcomes] == [1, 2]
    again.release()
    assert freed == [2]
    rest = buffer.take()
    assert [o.subtask_id for o in rest.outcomes] == [3, 4]
    rest.release()
    assert freed == [2, 3, 4]


def test_max_batch_must_be_positive() -> None:
    """A zero batch size would never flush anything."""
    with pytest.raises(ValueError, match="max_batch"):
        OutcomeBuffer(max_batch=0)
