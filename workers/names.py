"""The names of stored images: attempt-scoped, built from integers only (pure).

`<task_id>/<subtask_id>-<attempt>-<n>.png`. Two claims of a subtask never share an attempt
number unless the first ended in `release` (which records no result), so no attempt can
write a file that another attempt's recorded result points to.
"""

from __future__ import annotations

import re

# Earlier versions wrote `<subtask_id>-<n>.png`; such results may still be in the database.
_STORED = re.compile(r"([0-9]{1,19})-(?:([0-9]{1,10})-)?([0-9]{1,3})\.png")
# Only the attempt-scoped form is ever deleted: a legacy name is never an orphan we made.
_ATTEMPT_SCOPED = re.compile(r"[0-9]{1,19}-[0-9]{1,10}-[0-9]{1,3}\.png")


def image_name(subtask_id: int, attempt: int, index: int) -> str:
    """The file name of image `index` of one attempt of a subtask."""
    return f"{subtask_id}-{attempt}-{index}.png"


def is_image_of(name: str, subtask_id: int, index: int) -> bool:
    """True if `name` is a name the store writes for image `index` of `subtask_id`."""
    match = _STORED.fullmatch(name)
    return match is not None and (int(match[1]), int(match[3])) == (subtask_id, index)


def is_attempt_scoped(name: str) -> bool:
    """True if `name` has the attempt-scoped form (the only files the store removes)."""
    return _ATTEMPT_SCOPED.fullmatch(name) is not None
