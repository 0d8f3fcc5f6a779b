"""The outcome journal: round trip, and every malformed or foreign file skipped with a warning."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from db.records import Outcome
from runner.loop import journal as journal_module
from runner.loop.journal import BAD_SUFFIX, Journal, JournalError, decode, encode, file_stem

OUTCOMES = [
    Outcome(7, 2, "completed", "r1", result={"images": [{"path": "/o/1/7-2-0.png"}]}),
    Outcome(8, 1, "retry", "r1", error="HTTP 500", delay=1.5, reset_job=True),
    Outcome(9, 1, "release", "r1"),
]


def test_round_trip() -> None:
    """What encode writes, decode reads back unchanged."""
    assert decode(encode("r1", 42, OUTCOMES)) == OUTCOMES


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe\n",
        b"not json\n",
        b'{"imgrun_journal": 2, "executor_id": "r", "pid": 1, "outcomes": 0}\n',
        encode("r1", 1, OUTCOMES)[:-1],  # cut short: the last line is not whole
        encode("r1", 1, OUTCOMES).rsplit(b"\n", 2)[0] + b"\n",  # a line missing
        encode("r1", 1, OUTCOMES).replace(b'"retry"', b'"explode"'),
        encode("r1", 1, OUTCOMES).replace(b"1.5", b"NaN"),
        encode("r1", 1, OUTCOMES).replace(b'"subtask_id": 8', b'"subtask_id": "8"'),
        encode("r1", 1, OUTCOMES).replace(b'"subtask_id": 8', b'"subtask_id": -8'),
        b'{"imgrun_journal": 1, "executor_id": "r", "pid": 1, "outcomes": 0, "x": 1}\n',
        json.dumps({"imgrun_journal": 1, "executor_id": "r", "pid": 1, "outcomes": 1}).encode()
        + b"\n"
        + b'{"subtask_id": 1, "result": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}\n",
    ],
)
def test_malformed_journals_are_refused(data: bytes) -> None:
    """Anything but a whole journal of our format is a JournalError, never another error."""
    with pytest.raises(JournalError):
        decode(data)


def test_file_names_never_carry_user_text() -> None:
    """An executor id with slashes or dots becomes a plain, bounded stem."""
    assert file_stem("host-1", 42) == "host-1-42"
    assert file_stem("../../etc/x", 1) == "_.._etc_x-1"
    assert "/" not in file_stem("a/" * 100, 1) and len(file_stem("a" * 500, 1)) <= 70


def test_written_atomically_private_and_read_back(tmp_path: Path) -> None:
    """The folder is 0700, the file 0600, no temp file is left, and load reads it back."""
    journal = Journal(tmp_path, "r1", 42)
    path = journal.write(OUTCOMES)
    assert path == tmp_path / "journal" / "r1-42.jsonl"
    assert stat.S_IMODE((tmp_path / "journal").stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path / "journal") == ["r1-42.jsonl"]
    assert journal.pending() == [path]
    assert journal.load(path) == OUTCOMES
    journal.remove(path)
    assert journal.pending() == []


def test_corrupt_and_foreign_files_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage is set aside as .bad; a symlink is not followed; other names are ignored."""
    journal = Journal(tmp_path, "r1", 1)
    good = journal.write(OUTCOMES)
    folder = tmp_path / "journal"
    (folder / "garbage-2.jsonl").write_bytes(b"\x00not a journal")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    (folder / "link-3.jsonl").symlink_to(secret)
    (folder / "notes.txt").write_text("not ours")
    with caplog.at_level(logging.WARNING, logger=journal_module.__name__):
        loaded = {path.name: journal.load(path) for path in journal.pending()}
    assert loaded == {"garbage-2.jsonl": None, "link-3.jsonl": None, good.name: OUTCOMES}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and all("skipped" in w for w in warnings)
    assert "top secret" not in caplog.text
    assert (folder / ("garbage-2.jsonl" + BAD_SUFFIX)).exists()
    assert sorted(p.name for p in journal.pending()) == ["link-3.jsonl", good.name]


def test_an_oversized_journal_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file over the byte cap is not read into memory."""
    monkeypatch.setattr(journal_module, "MAX_FILE_BYTES", 100)
    journal = Journal(tmp_path, "r1", 1)
    path = journal.write(OUTCOMES)
    assert journal.load(path) is None
