"""Outcomes a stopping runner could not record, kept on disk until a runner records them.

A runner that stops while the database is down or hung writes what is left in its outcome
buffer to `$IMGRUN_HOME/journal/<executor_id>-<pid>.jsonl` (atomically, 0600); the next
runner started on that home replays it. Replaying is harmless: every outcome is fenced by
executor and attempt, so one whose row was meanwhile reaped or re-claimed is dropped.
Outcomes hold results and redacted errors only: a journal holds no secret.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from db.records import Outcome

log = logging.getLogger(__name__)

FORMAT = 1  # the header's `imgrun_journal` value
SUFFIX = ".jsonl"
BAD_SUFFIX = ".bad"  # a journal that could not be read is renamed so, kept for the operator
MAX_FILE_BYTES = 32 << 20  # bytes of one journal: far above a buffer of a few pools' outcomes
MAX_FILES = 1000  # journals replayed by one start; the rest wait for the next
MAX_TEXT = 64 << 10  # characters of an executor id or an error


class JournalError(ValueError):
    """A journal that is not one imgrun wrote, or not whole."""


class Header(BaseModel):
    """The first line: what wrote the journal."""

    model_config = ConfigDict(extra="forbid", strict=True)

    imgrun_journal: Literal[1]
    executor_id: str = Field(max_length=MAX_TEXT)
    pid: int
    outcomes: int = Field(ge=0)


class OutcomeLine(BaseModel):
    """One outcome, as written by `encode`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    subtask_id: int = Field(ge=1, le=2**63 - 1)
    attempt: int = Field(ge=0, le=2**31 - 1)
    kind: Literal["completed", "failed", "canceled", "retry", "defer", "release"]
    executor_id: str = Field(max_length=MAX_TEXT)
    result: dict[str, Any] | None = None
    error: str | None = Field(default=None, max_length=MAX_TEXT)
    delay: float = Field(ge=0.0, le=10.0**7)
    reset_job: bool

    @field_validator("delay", mode="before")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        # JSON ints are fine for a float field; NaN/inf never come from our own encoder.
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("delay must be finite")
        return value


def encode(executor_id: str, pid: int, outcomes: Sequence[Outcome]) -> bytes:
    """A journal's bytes: a header line, then one outcome per line (pure)."""
    header = {"imgrun_journal": FORMAT, "executor_id": executor_id, "pid": pid}
    lines = [json.dumps({**header, "outcomes": len(outcomes)})]
    lines += [
        json.dumps(OutcomeLine(**o._asdict()).model_dump(), allow_nan=False) for o in outcomes
    ]
    return ("\n".join(lines) + "\n").encode()


def decode(data: bytes) -> list[Outcome]:
    """The outcomes of a journal; JournalError if it is not a whole imgrun journal (pure)."""
    try:
        lines = data.decode().split("\n")
        if lines[-1] != "":
            raise JournalError("the last line is not terminated")
        header = Header.model_validate_json(lines[0])
        rows = [OutcomeLine.model_validate_json(line) for line in lines[1:-1]]
    except (UnicodeDecodeError, ValidationError) as exc:
        raise JournalError(_first_line(str(exc))) from None
    if len(rows) != header.outcomes:
        raise JournalError(f"{len(rows)} outcomes where the header says {header.outcomes}")
    return [Outcome(**row.model_dump()) for row in rows]


def _first_line(text: str) -> str:
    return text.splitlines()[0][:200] if text else "unreadable"


def file_stem(executor_id: str, pid: int) -> str:
    """A file name from an executor id (user text): only safe characters, bounded (pure)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", executor_id)[:64].lstrip(".") or "runner"
    return f"{safe}-{pid}"


class Journal:
    """The journal folder of one IMGRUN_HOME, as one runner process sees it."""

    def __init__(self, home: Path, executor_id: str, pid: int) -> None:
        self.folder = home / "journal"
        self.executor_id = executor_id
        self.pid = pid

    def __repr__(self) -> str:
        return f"Journal({str(self.folder)!r})"

    @property
    def path(self) -> Path:
        """This process's journal file."""
        return self.folder / (file_stem(self.executor_id, self.pid) + SUFFIX)

    def write(self, outcomes: Sequence[Outcome]) -> Path:
        """Write the outcomes atomically (temp file + rename, 0600, fsync'd); returns the path."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.path
        tmp = self.folder / f".{path.name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(encode(self.executor_id, self.pid, outcomes))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.folder)
        return path

    def pending(self) -> list[Path]:
        """Journals waiting to be replayed, oldest name first, at most MAX_FILES."""
        if not self.folder.is_dir():
            return []
        found: list[Path] = []
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
                    found.append(Path(entry.path))
                    if len(found) >= MAX_FILES:
                        break
        return sorted(found)

    def load(self, path: Path) -> list[Outcome] | None:
        """A journal's outcomes; None (with a warning) for one that is not ours or not whole."""
        try:
            data = _read_own_file(path)
            return decode(data)
        except (OSError, JournalError) as exc:
            log.warning("journal %s skipped: %s", path.name, exc)
            if isinstance(exc, JournalError):
                # Kept for the operator, out of the way of the next start.
                with contextlib.suppress(OSError):
                    path.replace(path.with_name(path.name + BAD_SUFFIX))
            return None

    def remove(self, path: Path) -> None:
        """Delete a replayed journal (another runner may have replayed it first)."""
        path.unlink(missing_ok=True)


def _read_own_file(path: Path) -> bytes:
    """The bytes of a regular file we own, bounded; OSError for anything else."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError("not a regular file")
        if info.st_uid != os.geteuid():
            raise OSError("owned by another user")
        data = file.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise OSError(f"over {MAX_FILE_BYTES} bytes")
        return data


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
