"""Image deletion for retention: paths from the database are checked before anything goes."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.image_cleanup import inside, remove_images


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("/out/7/12-0.png", ["7", "12-0.png"]),
        ("/out/7/../7/12-0.png", ["7", "12-0.png"]),
        ("/out/../etc/passwd.png", None),
        ("/elsewhere/7/1-0.png", None),
        ("/out", None),
        ("/out/7/notes.txt", None),
        ("/out/7/\x00.png", None),
        ("/outside/1.png", None),
    ],
)
def test_inside_accepts_only_images_below_the_root(path: str, parts: list[str] | None) -> None:
    """Lexical check (no symlink followed): below the root and a .png, else None."""
    assert inside(Path("/out"), path) == parts


def test_remove_images_refuses_symlinks_and_folders_that_are_links(tmp_path: Path) -> None:
    """A symlinked file or folder inside the root is refused; the real files elsewhere stay."""
    root, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (root / "1").mkdir(parents=True)
    elsewhere.mkdir()
    target = elsewhere / "2-0.png"
    target.write_bytes(b"x")
    (root / "1" / "1-0.png").write_bytes(b"mine")
    (root / "1" / "link-0.png").symlink_to(target)
    (root / "2").symlink_to(elsewhere, target_is_directory=True)

    done = remove_images(
        root,
        [
            str(root / "1" / "1-0.png"),
            str(root / "1" / "link-0.png"),
            str(root / "2" / "2-0.png"),
            str(root / "1" / "gone-0.png"),
        ],
    )

    assert (done.removed, done.refused, done.missing) == (1, 2, 1)
    assert target.read_bytes() == b"x"
    assert not (root / "1" / "1-0.png").exists()
    assert (root / "1").is_dir()  # still holds the refused link
