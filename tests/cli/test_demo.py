"""`imgrun demo` as a new user runs it: fresh home, embedded database, to completion."""

from __future__ import annotations

import json
import re
from pathlib import Path

import anyio
import pytest
from PIL import Image

from tests.cli.test_embedded import server_pid
from tests.conftest import IMGRUN

pytestmark = pytest.mark.anyio


async def test_demo_runs_to_completion_and_writes_images(cli_env: dict[str, str]) -> None:
    """Exit 0; both example tasks finish; every PNG decodes; nothing is left running."""
    home = Path(cli_env["IMGRUN_HOME"])
    with anyio.fail_after(180):
        done = await anyio.run_process(
            [*IMGRUN, "demo", "--service-ms", "30"], env=cli_env, check=False
        )
    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, stderr
    assert "Traceback" not in stdout + stderr
    assert "fox portraits" in stdout and "Lumina posters" in stdout

    images = sorted((home / "output").glob("*/*.png"))
    match = re.search(r"images\s+(\d+) PNGs", stdout)
    assert match and int(match.group(1)) == len(images) > 0
    for path in images:
        with Image.open(path) as image:
            image.verify()
    assert server_pid(home) is None, "the demo must not leave the embedded server running"

    # Both example tasks finished every subtask (4 animals × 3 hats + 4 = 16; 3 × 3 = 9),
    # most of them completed: a run whose subtasks all failed must not pass.
    with anyio.fail_after(60):
        listed = await anyio.run_process([*IMGRUN, "tasks", "--json"], env=cli_env)
    tasks = {t["name"]: t for t in json.loads(listed.stdout)}
    for name, total in (("fox portraits", 16), ("Lumina posters", 9)):
        task = tasks[name]
        done, failed = task["completed_subtasks"], task["failed_subtasks"]
        assert (task["total_subtasks"], done + failed) == (total, total), task
        assert done > failed, task  # faults are a few percent, each retried up to 3 times
        assert task["status"] == ("completed" if failed == 0 else "partial"), task
    assert server_pid(home) is None
