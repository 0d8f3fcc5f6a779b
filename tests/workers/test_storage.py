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
    """<root>/<task>/<subtask>-<attempt>-<n>.png, sha256 of the bytes, Pillow-read size."""
    images = [render_png("a", 1, n, 20, 10) for n in range(2)]
    stored = await ImageStore(tmp_path).save(3, 44, 2, images)
    assert [Path(s.path) for s in stored] == [tmp_path / "3" / f"44-2-{n}.png" for n in range(2)]
    for image, data in zip(stored, images, strict=True):
        assert Path(image.path).read_bytes() == data
        assert image.sha256 == hashlib.sha256(data).hexdigest()
        assert (image.bytes, image.width, image.height) == (len(data), 20, 10)
    assert sorted(p.name for p in (tmp_path / "3").iterdir()) == ["44-2-0.png", "44-2-1.png"]


async def test_rewrite_replaces_whole_file(tmp_path: Path) -> None:
    """A rewrite by the same attempt replaces the file atomically; no temp files are left."""
    store = ImageStore(tmp_path, fsync=True)
    await store.save(1, 1, 1, [render_png("a", 1, 0, 8, 8)])
    second = await store.save(1, 1, 1, [render_png("b", 1, 0, 9, 9)])
    assert (second[0].width, Path(second[0].path).read_bytes()) == (9, render_png("b", 1, 0, 9, 9))
    assert [p.name for p in (tmp_path / "1").iterdir()] == ["1-1-0.png"]


async def test_other_formats_become_png(tmp_path: Path) -> None:
    """A JPEG from a provider is stored as PNG (the file name says .png)."""
    out = io.BytesIO()
    Image.new("RGB", (5, 7), "red").save(out, "JPEG")
    stored = await ImageStore(tmp_path).save(1, 2, 1, [out.getvalue()])
    with Image.open(stored[0].path) as image:
        assert (image.format, image.size) == ("PNG", (5, 7))


async def test_garbage_is_transient(tmp_path: Path) -> None:
    """Undecodable bytes are a retryable provider fault, and nothing is written."""
    with pytest.raises(TransientError, match="unreadable image"):
        await ImageStore(tmp_path).save(1, 2, 1, [b"<html>oops</html>"])
    assert list((tmp_path / "1").iterdir()) == []


async def test_empty_batch_writes_nothing(tmp_path: Path) -> None:
    """The null provider's empty result creates no folder."""
    assert await ImageStore(tmp_path).save(1, 2, 1, []) == []
    assert not (tmp_path / "1").exists()


@given(bad=st.one_of(st.text(), st.integers(max_value=-1), st.booleans(), st.floats()))
async def test_only_plain_ints_reach_paths(
    bad: object, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Strings ("../x"), negatives, bools and floats are refused before any path is built."""
    root = tmp_path_factory.mktemp("store")
    with pytest.raises(ValueError, match="non-negative int"):
        await ImageStore(root).save(bad, 1, 1, [b""])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative int"):
        await ImageStore(root).save(1, bad, 1, [b""])  # type: ignore[arg-type]
    assert list(root.iterdir()) == []


async def test_attempts_never_share_a_file(tmp_path: Path) -> None:
    """Attempt 2 writes its own names: attempt 1's recorded file is never rewritten by it."""
    store = ImageStore(tmp_path)
    first = await store.save(1, 7, 1, [render_png("a", 1, 0, 8, 8)])
    second = await store.save(1, 7, 2, [render_png("b", 1, 0, 9, 9)])
    assert first[0].path != second[0].path
    assert Path(second[0].path).read_bytes() == render_png("b", 1, 0, 9, 9)


async def test_a_new_attempt_removes_earlier_attempts_leftovers_only(tmp_path: Path) -> None:
    """Attempt 3's save removes files of attempts 1-2 of its subtask, and nothing else."""
    store = ImageStore(tmp_path)
    png = render_png("a", 1, 0, 8, 8)
    await store.save(1, 7, 1, [png, png])
    await store.save(1, 7, 2, [png, png])
    await store.save(1, 8, 1, [png])  # another subtask
    (tmp_path / "1" / "7-0.png").write_bytes(png)  # a legacy name: never ours to remove
    await store.save(1, 7, 3, [png, png])
    names = sorted(p.name for p in (tmp_path / "1").iterdir())
    assert names == ["7-0.png", "7-3-0.png", "7-3-1.png", "8-1-0.png"]


async def test_discard_removes_only_the_stores_own_files(tmp_path: Path) -> None:
    """Discard unlinks attempt-scoped names inside the root; other paths are left alone."""
    root = tmp_path / "out"
    store = ImageStore(root)
    (kept,) = await store.save(1, 2, 1, [render_png("k", 1, 0, 8, 8)])
    (dropped,) = await store.save(1, 3, 1, [render_png("d", 1, 0, 8, 8)])
    outside = tmp_path / "1" / "4-1-0.png"  # our name, another root
    outside.parent.mkdir()
    outside.write_bytes(b"x")
    legacy = root / "1" / "5-0.png"
    legacy.write_bytes(b"x")
    (tmp_path / "link").symlink_to(root / "1")
    via_link = str(tmp_path / "link" / "2-1-0.png")  # the kept file, through a symlink
    removed = await store.discard(
        [dropped.path, str(outside), str(legacy), via_link, str(root / "1" / "9-9-9.png")]
    )
    assert removed == 1
    assert not Path(dropped.path).exists()
    assert Path(kept.path).exists() and outside.exists() and legacy.exists()


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
async def test_images_follow_the_umask(tmp_path: Path, umask: int) -> None:
    """Image files get 0666 minus the umask (not mkstemp's 0600), so the group can read them."""
    previous = os.umask(umask)
    try:
        stored = await ImageStore(tmp_path).save(1, 2, 1, [render_png("a", 1, 0, 8, 8)])
    finally:
        os.umask(previous)
    assert stat.S_IMODE(Path(stored[0].path).stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in (tmp_path / "1").iterdir()] == ["2-1-0.png"]


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
        await ImageStore(tmp_path).save(1, 2, 1, [data])
    assert list((tmp_path / "1").iterdir()) == []


async def test_decompression_bomb_is_a_permanent_provider_error(tmp_path: Path) -> None:
    """100,000 × 100,000 pixels in a few bytes: refused before decoding, nothing written."""
    bomb = crafted_png(100_000, 100_000, zlib.compress(b"\x00" * 1_000))
    with pytest.raises(PermanentError, match="over the limit of 16,777,216 pixels"):
        await ImageStore(tmp_path).save(1, 2, 1, [bomb])
    assert list((tmp_path / "1").iterdir()) == []


def _bilevel_png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("1", (width, height)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("pillow_warns", [True, False])
async def test_pixel_limit_boundary(tmp_path: Path, pillow_warns: bool) -> None:
    """MAX_IMAGE_PIXELS exactly is stored; one row more is refused (warning as error or not)."""
    assert MAX_IMAGE_PIXELS == 4096 * 4096
    stored = await ImageStore(tmp_path).save(1, 1, 1, [_bilevel_png(4096, 4096)])
    assert (stored[0].width, stored[0].height) == (4096, 4096)
    with warnings.catch_warnings():
        # Production does not turn Pillow's DecompressionBombWarning into an error as the
        # suite does: our own check must refuse the image either way.
        warnings.simplefilter("error" if pillow_warns else "ignore", Image.DecompressionBombWarning)
        with pytest.raises(ImageTooLarge, match=r"(a 4096x4097 image|an image), over the limit"):
            await ImageStore(tmp_path).save(1, 2, 1, [_bilevel_png(4096, 4097)])
    assert [p.name for p in (tmp_path / "1").iterdir()] == ["1-1-0.png"]
