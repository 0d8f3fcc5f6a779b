"""The API's CLI as a user runs it: token, submit --key, results, alerts test, serve."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import signal
import socket
from pathlib import Path

import aiohttp
import anyio
import pytest
from anyio.abc import Process
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from runner.api.auth import hash_token
from runner.loop.service import serve
from tests.api.conftest import SECRET, Receiver
from tests.cli.test_submit import imgrun
from tests.conftest import IMGRUN
from tests.runner.conftest import make_config, runner_settings, wait_until
from workers.sim.app import RunningSim

pytestmark = pytest.mark.anyio

SPEC = "name: cli\nprompts: ['a {x}']\nvariables: {x: [1, 2, 3]}\nseed: 5\nbatch_size: 2\n"


@pytest.fixture
def env(cli_env: dict[str, str], database_url: str) -> dict[str, str]:
    """CLI environment pointed at this test's database."""
    return {**cli_env, "IMGRUN_DATABASE_URL": database_url}


def one_line_error(status: int, stderr: str, *needles: str) -> None:
    """Exit 2, one line, no traceback, naming what is wrong."""
    assert status == 2, stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
    for needle in needles:
        assert needle in stderr, stderr


async def test_token_create_list_revoke(env: dict[str, str], engine: AsyncEngine) -> None:
    """The token is printed once and stored hashed; list shows names; revoke deletes."""
    status, stdout, stderr = await imgrun(env, "token", "create", "ci")
    assert status == 0, stderr
    token = stdout.strip()
    assert token.startswith("imgrun_") and "\n" not in token
    async with engine.connect() as connection:
        stored = (await connection.execute(text("SELECT * FROM api_tokens"))).mappings().one()
    assert stored["token_hash"] == hash_token(token) and token not in repr(dict(stored))
    status, stdout, _ = await imgrun(env, "token", "list", "--json")
    listed = json.loads(stdout)
    assert [t["name"] for t in listed] == ["ci"] and token not in stdout
    assert "token_hash" not in listed[0]
    status, _, stderr = await imgrun(env, "token", "create", "ci")
    one_line_error(status, stderr, "token ci: already exists")
    status, _, stderr = await imgrun(env, "token", "create", "bad name")
    one_line_error(status, stderr, "token name 'bad name'")
    status, stdout, _ = await imgrun(env, "token", "revoke", "ci")
    assert status == 0 and "revoked" in stdout
    status, _, stderr = await imgrun(env, "token", "revoke", "ci")
    one_line_error(status, stderr, "token ci: no such token")


async def test_submit_with_a_key_is_idempotent(
    env: dict[str, str], engine: AsyncEngine, tmp_path: Path
) -> None:
    """The same key and spec: the same task; another spec under the key: exit 2."""
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    status, stdout, stderr = await imgrun(env, "submit", str(spec), "--key", "k1", "--json")
    assert status == 0, stderr
    first = json.loads(stdout)
    status, stdout, _ = await imgrun(env, "submit", str(spec), "--key", "k1", "--json")
    again = json.loads(stdout)
    assert (first["created"], again["created"]) == (True, False)
    assert first["task_id"] == again["task_id"]
    status, stdout, _ = await imgrun(env, "submit", str(spec), "--key", "k1")
    assert status == 0 and "already submitted" in stdout
    spec.write_text(SPEC.replace("seed: 5", "seed: 6"))
    status, _, stderr = await imgrun(env, "submit", str(spec), "--key", "k1")
    one_line_error(status, stderr, "--key k1: already used", f"task {first['task_id']}")
    status, _, stderr = await imgrun(env, "submit", str(spec), "--key", "two words")
    one_line_error(status, stderr, "--key")
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM tasks")) == 1


async def test_environment_overrides_reach_the_cli(env: dict[str, str], tmp_path: Path) -> None:
    """IMGRUN_SUBMIT__MAX_SUBTASKS caps a submit; a bad variable is named in one line."""
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    status, _, stderr = await imgrun(
        {**env, "IMGRUN_SUBMIT__MAX_SUBTASKS": "2"}, "submit", str(spec)
    )
    one_line_error(status, stderr, "above the limit of 2")
    status, _, stderr = await imgrun(
        {**env, "IMGRUN_POOLS__STANDARD__MAX": "lots"}, "submit", str(spec)
    )
    one_line_error(status, stderr, "IMGRUN_POOLS__STANDARD__MAX")


async def completed_task(
    env: dict[str, str], engine: AsyncEngine, tmp_path: Path, database_url: str, sim: RunningSim
) -> int:
    """A task submitted by the CLI and run to the end in-process (output in tmp_path/out)."""
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    status, stdout, stderr = await imgrun(env, "submit", str(spec), "--json")
    assert status == 0, stderr
    config, run_env = make_config(tmp_path, database_url, runner_settings(sim.url))
    with anyio.fail_after(60):
        await serve(engine, config, run_env, until_idle=True)
    return int(json.loads(stdout)["task_id"])


async def test_results_as_json_csv_and_copied_files(
    env: dict[str, str], engine: AsyncEngine, tmp_path: Path, database_url: str, sim: RunningSim
) -> None:
    """--json: the manifest with paths; --csv: one line per image; --copy-to: verified copies."""
    task_id = await completed_task(env, engine, tmp_path, database_url, sim)
    status, stdout, stderr = await imgrun(env, "results", str(task_id), "--json")
    assert status == 0, stderr
    manifest = json.loads(stdout)
    assert [s["prompt"] for s in manifest["subtasks"]] == ["a 1", "a 2", "a 3"]
    images = [i for s in manifest["subtasks"] for i in s["images"]]
    assert len(images) == 6 and all(Path(i["path"]).is_file() for i in images)

    status, stdout, _ = await imgrun(env, "results", str(task_id), "--csv")
    rows = list(csv.DictReader(io.StringIO(stdout)))
    assert len(rows) == 6
    assert [(r["ordinal"], r["image"]) for r in rows[:2]] == [("0", "0"), ("0", "1")]
    assert {r["sha256"] for r in rows} == {i["sha256"] for i in images}

    dest = tmp_path / "gathered"
    status, _, stderr = await imgrun(env, "results", str(task_id), "--copy-to", str(dest))
    assert status == 0 and "copied 6 images" in stderr, stderr
    copies = sorted(dest.iterdir())
    assert [p.name for p in copies] == [f"{o:06d}-{n}.png" for o in range(3) for n in range(2)]
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in copies] == [
        i["sha256"] for i in images
    ]

    Path(images[0]["path"]).write_bytes(b"tampered")
    status, _, stderr = await imgrun(env, "results", str(task_id), "--copy-to", str(tmp_path / "2"))
    assert status == 1 and "1 did not match their sha256" in stderr
    assert not (tmp_path / "2" / "000000-0.png").exists()  # no unverified file left behind
    status, _, stderr = await imgrun(env, "results", "424242")
    one_line_error(status, stderr, "task 424242: no such task")


def hook_config(env: dict[str, str], url: str) -> dict[str, str]:
    """Write a config with one webhook to `url`; return the env with its secret set."""
    hook = {"url": url, "secret_env": "HOOK_SECRET", "name": "ops"}
    Path(env["IMGRUN_CONFIG"]).write_text(
        "[alerts]\ninterval = 0.1\n[[alerts.webhooks]]\n"
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in hook.items())
    )
    return {**env, "HOOK_SECRET": SECRET}


async def test_alerts_test_sends_a_signed_event_to_every_hook(
    env: dict[str, str], receiver: Receiver
) -> None:
    """Exit 0 and one signed alert.test when the hook takes it; exit 1 when it refuses."""
    hooked = hook_config(env, receiver.url)
    status, stdout, stderr = await imgrun(hooked, "alerts", "test")
    assert status == 0 and "ops: delivered" in stdout, stderr
    (delivery,) = receiver.deliveries
    assert delivery.signed and json.loads(delivery.body)["event"] == "alert.test"
    receiver.fail_next = 1
    status, stdout, _ = await imgrun(hooked, "alerts", "test")
    assert status == 1 and "ops: failed" in stdout and "HTTP 500" in stdout
    status, _, stderr = await imgrun(env, "alerts", "test")  # the secret variable is unset
    one_line_error(status, stderr, "HOOK_SECRET")


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def stop(process: Process) -> int:
    """SIGTERM, then wait (kill after 15 s); the exit status."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with anyio.move_on_after(15):
            return await process.wait()
        process.kill()
    return await process.wait()


async def test_serve_answers_delivers_alerts_and_stops_on_sigterm(
    env: dict[str, str], receiver: Receiver
) -> None:
    """`imgrun serve`: healthz without a token, /v1 with one, webhooks sent; SIGTERM exits 0."""
    status, stdout, _ = await imgrun(env, "token", "create", "ops")
    assert status == 0
    auth = {"Authorization": f"Bearer {stdout.strip()}"}
    port = free_port()
    served = hook_config(env, receiver.url)
    process = await anyio.open_process([*IMGRUN, "serve", "--port", str(port)], env=served)
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as client:

            async def healthy() -> bool:
                try:
                    async with client.get("/healthz") as response:
                        return response.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_until(healthy, timeout=30)
            async with client.get("/v1/tasks") as response:
                assert response.status == 401
            spec = {"name": "served", "prompts": ["a"]}
            async with client.post("/v1/tasks", json=spec, headers=auth) as response:
                task_id = (await response.json())["id"]
            async with client.post(f"/v1/tasks/{task_id}/cancel", headers=auth) as response:
                assert response.status == 200

            async def alerted() -> bool:
                return bool(receiver.accepted())

            await wait_until(alerted)
        body = json.loads(receiver.accepted()[0].body)
        assert (body["event"], body["data"]["task_id"]) == ("task.finished", task_id)
    finally:
        assert await stop(process) == 0


async def test_serve_refuses_to_start_unsafely(env: dict[str, str]) -> None:
    """Beyond loopback without a token, or with a webhook secret unset: exit 2, one line."""
    status, _, stderr = await imgrun(env, "serve", "--host", "0.0.0.0", "--port", "0")
    one_line_error(status, stderr, "--host 0.0.0.0: refusing to listen beyond loopback")
    hook_config(env, "http://127.0.0.1:9/hook")  # but HOOK_SECRET is not in `env`
    status, _, stderr = await imgrun(env, "serve", "--port", "0")
    one_line_error(status, stderr, "HOOK_SECRET is not set")
