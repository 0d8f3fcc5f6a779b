"""Deterministic PNGs from prompt + seed, so equal requests give byte-identical images."""

from __future__ import annotations

import base64
import functools
import hashlib
import io
from collections import OrderedDict

from PIL import Image, ImageDraw

_GRADIENT = Image.linear_gradient("L")


@functools.lru_cache(maxsize=16)
def _gradient(width: int, height: int) -> Image.Image:
    """The blend mask for a size; resizing it was half of every render's cost."""
    return _GRADIENT.resize((width, height))


def render_png(prompt: str, seed: int, index: int, width: int, height: int) -> bytes:
    """Render a gradient with a few shapes whose colours and places come from a hash."""
    digest = hashlib.sha256(f"{seed}\0{index}\0{prompt}".encode()).digest()
    top = Image.new("RGB", (width, height), tuple(digest[0:3]))
    bottom = Image.new("RGB", (width, height), tuple(digest[3:6]))
    image = Image.composite(top, bottom, _gradient(width, height))
    draw = ImageDraw.Draw(image)
    for shape in range(4):
        b = digest[6 + shape * 6 : 12 + shape * 6]
        x0, y0 = b[0] * width // 256, b[1] * height // 256
        box = (x0, y0, x0 + 2 + b[2] * width // 384, y0 + 2 + b[3] * height // 384)
        colour = (b[4], b[5], b[0] ^ b[1])
        if shape % 2:
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    out = io.BytesIO()
    # compress_level=1: the sim's CPU is better spent answering than squeezing bytes.
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


class Rendered:
    """A rendered PNG and, computed once on demand, its base64 text."""

    __slots__ = ("_b64", "png")

    def __init__(self, png: bytes) -> None:
        self.png = png
        self._b64: str | None = None

    @property
    def b64(self) -> str:
        """The PNG as base64, as b64_json responses carry it."""
        if self._b64 is None:
            self._b64 = base64.b64encode(self.png).decode()
        return self._b64


RenderKey = tuple[str, int, int, int, int]


class RenderCache:
    """Small LRU of rendered PNGs; PNG encoding dominates the sim's CPU time."""

    def __init__(self, maxsize: int = 512) -> None:
        self._maxsize = maxsize
        self._items: OrderedDict[RenderKey, Rendered] = OrderedDict()

    def get(self, key: RenderKey) -> Rendered | None:
        """Return a cached render, refreshing its age."""
        rendered = self._items.get(key)
        if rendered is not None:
            self._items.move_to_end(key)
        return rendered

    def put(self, key: RenderKey, png: bytes) -> Rendered:
        """Remember a PNG, dropping the oldest beyond maxsize."""
        rendered = self._items[key] = Rendered(png)
        if len(self._items) > self._maxsize:
            self._items.popitem(last=False)
        return rendered
