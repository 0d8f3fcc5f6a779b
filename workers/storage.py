"""Writes images under `<root>/<task_id>/<subtask_id>-<n>.png`, atomically, with sha256."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
from pathlib import Path

import anyio.to_thread
from PIL import Image, UnidentifiedImageError

from workers.errors import TransientError
from workers.types import StoredImage


def _png(data: bytes) -> tuple[bytes, int, int]:
    """The image as PNG bytes with its size; other formats are converted."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            # Reads the header only; a PNG is kept byte for byte so its sha256 is the provider's.
            if image.format == "PNG":
                return data, image.width, image.height
            image.load()
            out = io.BytesIO()
            image.save(out, "PNG")
            return out.getvalue(), image.width, image.height
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        # A corrupt download is worth another attempt, like any malformed response.
        raise TransientError(f"provider returned an unreadable image: {exc}") from None


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

    async def save(self, task_id: int, subtask_id: int, images: list[bytes]) -> list[StoredImage]:
        """Write the images (in a worker thread) and describe them."""
        folder = self.root / str(_id(task_id, "task_id"))
        stem = str(_id(subtask_id, "subtask_id"))
        if not images:
            return []
        return await anyio.to_thread.run_sync(self._write_all, folder, stem, images)

    def _write_all(self, folder: Path, stem: str, images: list[bytes]) -> list[StoredImage]:
        folder.mkdir(parents=True, exist_ok=True)
        return [self._write(folder / f"{stem}-{n}.png", data) for n, data in enumerate(images)]

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
