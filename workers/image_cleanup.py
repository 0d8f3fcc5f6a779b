"""Deletes image files named by pruned rows: only regular files inside the output directory.

Paths come from the database, so they are checked as untrusted: each must lie under the
output directory, and it is reached one component at a time with O_NOFOLLOW, so neither a
`..` nor a symlink planted in the tree can point the deletion elsewhere.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIX = ".png"  # the only kind of file the image store writes
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass
class Cleanup:
    """What happened to the paths: removed, already gone, or refused (outside or not a file)."""

    removed: int = 0
    missing: int = 0
    refused: int = 0


def inside(root: Path, path: str) -> list[str] | None:
    """`path`'s components below `root`, or None when it does not lie inside it (pure)."""
    if "\x00" in path:
        return None
    base = os.path.abspath(root)
    # abspath, not resolve(): no symlink is followed while deciding.
    relative = os.path.relpath(os.path.abspath(path), base)
    parts = relative.split(os.sep)
    if relative.startswith(os.pardir) or any(p in ("", os.curdir, os.pardir) for p in parts):
        return None
    if not parts[-1].endswith(IMAGE_SUFFIX):
        return None
    return parts


def remove_images(root: Path, paths: Iterable[str]) -> Cleanup:
    """Delete each path that is a regular image file under `root`; removes emptied folders."""
    done = Cleanup()
    for path in paths:
        parts = inside(root, path)
        if parts is None:
            done.refused += 1
            continue
        outcome = _remove(root, parts)
        setattr(done, outcome, getattr(done, outcome) + 1)
    return done


def _remove(root: Path, parts: list[str]) -> str:
    """'removed', 'missing' or 'refused' for one file, walked without following symlinks."""
    try:
        fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY)]
    except FileNotFoundError:
        return "missing"
    try:
        for folder in parts[:-1]:
            fds.append(os.open(folder, _DIR_FLAGS, dir_fd=fds[-1]))
        info = os.stat(parts[-1], dir_fd=fds[-1], follow_symlinks=False)
        if not stat.S_ISREG(info.st_mode):
            return "refused"
        os.unlink(parts[-1], dir_fd=fds[-1])
        _remove_empty(fds, parts)
        return "removed"
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        # ELOOP/ENOTDIR: a symlink or a file where a folder should be — not ours to touch.
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return "refused"
        raise
    finally:
        for fd in fds:
            os.close(fd)


def _remove_empty(fds: list[int], parts: list[str]) -> None:
    # Deepest first; stops at the first folder that still holds something.
    for depth in range(len(parts) - 2, -1, -1):
        try:
            os.rmdir(parts[depth], dir_fd=fds[depth])
        except OSError:
            return
