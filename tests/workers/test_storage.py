"""Image storage: layout, atomic writes, sha256, sizes, and no user text in paths."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import warnings
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from workers.errors import PermanentError, TransientError
from workers.sim.render import render_png
from workers.storage import MAX_IMAGE_PIXELS, ImageStore, ImageTooLarge

pytestmark = pytest.mark.anyio


async def test_layout_hash_and_size(tmp_path: Path) -> None:
    """<root>/<task>/<subtask>-<n>.png, sha256 of the bytes, Pillow-read width/height."""
    images = [render_png("a", 1, n, 20, 10) for n in range(2)]
    stored = await ImageStore(tmp_path).save(3, 44, images)
    assert [Path(s.path) for s in stored] == [tmp_path / "3" / f"44-{n}.png" for n in range(2)]
    for image, data in zip(stored, images, strict=True):
        assert Path(image.path).read_bytes() == data
        assert image.sha256 == hashlib.sha256(data).hexdigest()
        assert (image.bytes, image.width, image.height) == (len(data), 20, 10)
    assert sorted(p.name for p in (tmp_path / "3").iterdir()) == ["44-0.png", "44-1.png"]


async def test_rewrite_replaces_whole_file(tmp_path: Path) -> None:
    """A second attempt overwrites atomically; no temp files are left behind."""
    store = ImageStore(tmp_path, fsync=True)
    await store.save(1, 1, [render_png("a", 1, 0, 8, 8)])
    second = await store.save(1, 1, [render_png("b", 1, 0, 9, 9)])
    assert (second[0].width, Path(second[0].path).read_bytes()) == (9, render_png("b", 1, 0, 9, 9))
    assert [p.name for p in (tmp_path / "1").iterdir()] == ["1-0.png"]


async def test_other_formats_become_png(tmp_path: Path) -> None:
    """A JPEG from a provider is stored as PNG (the file name says .png)."""
    out = io.BytesIO()
    Image.new("RGB", (5, 7), "red").save(out, "JPEG")
    stored = await ImageStore(tmp_path).save(1, 2, [out.getvalue()])
    with Image.open(stored[0].path) as image:
        assert (image.format, image.size) == ("PNG", (5, 7))


async def test_garbage_is_transient(tmp_path: Path) -> None:
    """Undecodable bytes are a retryable provider fault, and nothing is written."""
    with pytest.raises(TransientError, match="unreadable image"):
        await ImageStore(tmp_path).save(1, 2, [b"<html>oops</html>"])
    assert list((tmp_path / "1").iterdir()) == []


async def test_empty_batch_writes_nothing(tmp_path: Path) -> None:
    """The null provider's empty result creates no folder."""
    assert await ImageStore(tmp_path).save(1, 2, []) == []
    assert not (tmp_path / "1").exists()


@given(bad=st.one_of(st.text(), st.integers(max_value=-1), st.booleans(), st.floats()))
async def test_only_plain_ints_reach_paths(
    bad: object, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Strings ("../x"), negatives, bools and floats are refused before any path is built."""
    root = tmp_path_factory.mktemp("store")
    with pytest.raises(ValueError, match="non-negative int"):
        await ImageStore(root).save(bad, 1, [b""])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative int"):
        await ImageStore(root).save(1, bad, [b""])  # type: ignore[arg-type]
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
async def test_images_follow_the_umask(tmp_path: Path, umask: int) -> None:
    """Image files get 0666 minus the umask (not mkstemp's 0600), so the group can read them."""
    previous = os.umask(umask)
    try:
        stored = await ImageStore(tmp_path).save(1, 2, [render_png("a", 1, 0, 8, 8)])
    finally:
        os.umask(previous)
    assert stat.S_IMODE(Path(stored[0].path).stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in (tmp_path / "1").iterdir()] == ["2-0.png"]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def crafted_png(width: int, height: int, idat: bytes) -> bytes:
    """An 8-bit greyscale PNG with any header size and any IDAT, every checksum valid."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "data",
    [
        render_png("a", 1, 0, 20, 10)[:-30],  # cut inside the stream: IEND missing
        render_png("a", 1, 0, 20, 10)[:60],  # cut just after the header
        crafted_png(8, 8, b"not a zlib stream"),  # valid CRCs, undecodable pixels
    ],
    ids=["truncated", "header only", "corrupt stream"],
)
async def test_broken_pngs_are_not_stored(tmp_path: Path, data: bytes) -> None:
    """Only the header used to be read: a truncated PNG was stored and counted completed."""
    with pytest.raises(TransientError, match="unreadable image"):
        await ImageStore(tmp_path).save(1, 2, [data])
    assert list((tmp_path / "1").iterdir()) == []


async def test_decompression_bomb_is_a_permanent_provider_error(tmp_path: Path) -> None:
    """100,000 × 100,000 pixels in a few bytes: refused before decoding, nothing written."""
    bomb = crafted_png(100_000, 100_000, zlib.compress(b"\x00" * 1_000))
    with pytest.raises(PermanentError, match="over the limit of 16,777,216 pixels"):
        await ImageStore(tmp_path).save(1, 2, [bomb])
    assert list((tmp_path / "1").iterdir()) == []


def _bilevel_png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("1", (width, height)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("pillow_warns", [True, False])
async def test_pixel_limit_boundary(tmp_path: Path, pillow_warns: bool) -> None:
    """MAX_IMAGE_PIXELS exactly is stored; one row more is refused (warning as error or not)."""
    assert MAX_IMAGE_PIXELS == 4096 * 4096
    stored = await ImageStore(tmp_path).save(1, 1, [_bilevel_png(4096, 4096)])
    assert (stored[0].width, stored[0].height) == (4096, 4096)
    with warnings.catch_warnings():
        # Production does not turn Pillow's DecompressionBombWarning into an error as the
        # suite does: our own check must refuse the image either way.
        warnings.simplefilter("error" if pillow_warns else "ignore", Image.DecompressionBombWarning)
        with pytest.raises(ImageTooLarge, match=r"(a 4096x4097 image|an image), over the limit"):
            await ImageStore(tmp_path).save(1, 2, [_bilevel_png(4096, 4097)])
    assert [p.name for p in (tmp_path / "1").iterdir()] == ["1-0.png"]
