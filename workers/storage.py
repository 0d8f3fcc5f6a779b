"""Writes images under `<root>/<task_id>/<subtask_id>-<attempt>-<n>.png`, atomically, with sha256.

Names are attempt-scoped (workers/names.py): a late attempt can never replace a file that
another attempt's recorded result points to. Files of attempts that will never be recorded
are removed: by the attempt itself when its outcome is dropped (`discard`), and by the next
attempt of the subtask for any attempt that crashed after writing (`save`).
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
from pathlib import Path

import anyio.to_thread
from PIL import Image

from workers.errors import PermanentError, TransientError
from workers.names import image_name, is_attempt_scoped
from workers.providers.limits import clip
from workers.types import StoredImage

# 4096 × 4096: larger than any generator's output; decoded as RGBA it is 64 MB already.
MAX_IMAGE_PIXELS = 4096 * 4096  # pixels of one image
# Earlier attempts whose leftovers a new attempt removes: bounds the unlinks of one save.
SWEEP_ATTEMPTS = 100  # attempts
# Pillow's own decompression-bomb guard follows ours: it warns past this, raises past twice it.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


class ImageTooLarge(PermanentError):
    """More pixels than MAX_IMAGE_PIXELS: a decompression bomb, or a request gone wrong."""


def _png(data: bytes) -> tuple[bytes, int, int]:
    """The image as PNG bytes with its size, fully decoded once; other formats are converted."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageTooLarge(_too_large(width, height))
            image_format = image.format
            # verify() checks the structure and checksums (a truncated PNG fails here)...
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            # ...and load() decodes every pixel (a corrupt stream with valid checksums fails).
            image.load()
            if image_format == "PNG":
                # Kept byte for byte, so its sha256 is the provider's.
                return data, width, height
            out = io.BytesIO()
            image.save(out, "PNG")
            return out.getvalue(), width, height
    except ImageTooLarge:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(_too_large(None, None)) from None
    except Exception as exc:
        # Decoders raise many types on hostile input (OSError, SyntaxError, struct.error…);
        # a corrupt download is worth another attempt, like any malformed response.
        raise TransientError(f"provider returned an unreadable image: {clip(str(exc))}") from None


def _too_large(width: int | None, height: int | None) -> str:
    image = f"a {width}x{height} image" if width is not None else "an image"
    return f"provider returned {image}, over the limit of {MAX_IMAGE_PIXELS:,} pixels"


def _id(value: int, name: str) -> int:
    # Only plain non-negative ints reach a path: no user text, no "..", no sign.
    if type(value) is not int or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


class ImageStore:
    """The output directory; the only code that writes image files."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.root = Path(root)
        # fsync makes files survive power loss; off by default because rename already
        # guarantees no reader sees a half-written file, and fsync costs ~ms per image.
        self._fsync = fsync

    def __repr__(self) -> str:
        return f"ImageStore({str(self.root)!r})"

    async def save(
        self, task_id: int, subtask_id: int, attempt: int, images: list[bytes]
    ) -> list[StoredImage]:
        """Write one attempt's images (in a worker thread) and describe them."""
        if not images:
            return []
        folder = self.root / str(_id(task_id, "task_id"))
        subtask = _id(subtask_id, "subtask_id")
        attempt = _id(attempt, "attempt")
        return await anyio.to_thread.run_sync(self._write_all, folder, subtask, attempt, images)

    def _write_all(
        self, folder: Path, subtask: int, attempt: int, images: list[bytes]
    ) -> list[StoredImage]:
        folder.mkdir(parents=True, exist_ok=True)
        stored = [
            self._write(folder / image_name(subtask, attempt, n), data)
            for n, data in enumerate(images)
        ]
        self._sweep_earlier(folder, subtask, attempt, len(images))
        return stored

    def _sweep_earlier(self, folder: Path, subtask: int, attempt: int, count: int) -> None:
        # Whoever holds attempt N holds the lease: attempts below N are fenced out for good,
        # so their files (a runner killed after writing) can never be recorded. A stale
        # holder still writing after this sweep removes its own files when its outcome is
        # dropped. Bounded: a few unlinks of absent files in the common case.
        for earlier in range(max(1, attempt - SWEEP_ATTEMPTS), attempt):
            for n in range(count):
                (folder / image_name(subtask, earlier, n)).unlink(missing_ok=True)

    async def discard(self, paths: list[str]) -> int:
        """Remove files this store wrote for an attempt that will never be recorded."""
        if not paths:
            return 0
        return await anyio.to_thread.run_sync(self._discard_all, paths)

    def _discard_all(self, paths: list[str]) -> int:
        root = self.root.resolve()
        removed = 0
        for raw in paths:
            path = Path(raw)
            # Only our own names, directly in a task folder of this root: a path from a
            # result (or a journal) never makes us delete anything else.
            if not is_attempt_scoped(path.name) or not path.parent.name.isdigit():
                continue
            if path.parent.resolve() != root / path.parent.name:
                continue
            try:
                (root / path.parent.name / path.name).unlink()
                removed += 1
            except FileNotFoundError:
                pass
        return removed

    def _write(self, path: Path, data: bytes) -> StoredImage:
        png, width, height = _png(data)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        # Not mkstemp: its 0600 would hide images from the other users of the output
        # directory. 0666 lets the process umask decide, as for any file the user creates.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(png)
                if self._fsync:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return StoredImage(
            path=str(path),
            sha256=hashlib.sha256(png).hexdigest(),
            bytes=len(png),
            width=width,
            height=height,
        )
