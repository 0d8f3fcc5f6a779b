"""Writes images under `<root>/<task_id>/<subtask_id>-<n>.png`, atomically, with sha256."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
from pathlib import Path

import anyio.to_thread
from PIL import Image

from workers.errors import PermanentError, TransientError
from workers.providers.limits import clip
from workers.types import StoredImage

# 4096 × 4096: larger than any generator's output; decoded as RGBA it is 64 MB already.
MAX_IMAGE_PIXELS = 4096 * 4096  # pixels of one image
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
