"""Hostile specs through the real `imgrun submit`: exit 2, one line, no traceback, no rows."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.cli.test_submit import counts, imgrun
from tests.fuzz_contract import Database, submit_in_process
from tests.runner.conftest import write_toml


@pytest.fixture
def env(cli_env: dict[str, str], database_url: str) -> dict[str, str]:
    """CLI environment pointed at this test's database."""
    return {**cli_env, "IMGRUN_DATABASE_URL": database_url}


HEAD = b"name: t\nprompts: ['{a}']\n"
JSON_HEAD = b'{"name": "t", "prompts": ["{a}"], "variables": {"a": ['

# (id, file suffix, file bytes, expected part of the one-line message). Each of these
# crashed with a traceback, or wrote what it should not, before issue 12.
HOSTILE: list[tuple[str, str, bytes, str]] = [
    (
        "alias amplification",
        ".yaml",
        b"name: t\nx: &p '" + b"p" * 1_000 + b"'\nprompts: [" + b", ".join([b"*p"] * 400) + b"]\n",
        "line 3: YAML aliases (*p) are not allowed",
    ),
    ("duplicate key", ".yaml", b"name: a\nname: b\nprompts: [x]\n", "duplicate key 'name'"),
    ("json duplicate key", ".json", b'{"name": "a", "name": "b"}', "duplicate key 'name'"),
    (
        "deep json nesting",
        ".json",
        b'{"name": "t", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "nested deeper than 32 levels",
    ),
    (
        "deep yaml nesting",
        ".yaml",
        HEAD + b"x:\n  " + b"- " * 5_000 + b"y\n",
        "nested deeper than 32 levels",
    ),
    (
        "5000-digit int yaml",
        ".yaml",
        HEAD + b"variables: {a: [" + b"7" * 5_000 + b"]}\n",
        "number longer than 40 characters",
    ),
    ("5000-digit int json", ".json", JSON_HEAD + b"7" * 5_000 + b"]}}", "number longer than 40"),
    ("!!float 1cat", ".yaml", HEAD + b"variables: {a: [!!float 1cat]}\n", "explicit YAML tag"),
    ("!!int x", ".yaml", HEAD + b"variables: {a: [!!int x]}\n", "explicit YAML tag !!int"),
    ("nan yaml", ".yaml", HEAD + b"variables: {a: [.nan]}\n", "variables.a.0: must be a finite"),
    ("inf yaml", ".yaml", HEAD + b"variables: {a: [-.inf]}\n", "variables.a.0: must be a finite"),
    ("nan json", ".json", JSON_HEAD + b"NaN]}}", "NaN is not a number a spec may use"),
    ("nul yaml", ".yaml", b'name: t\nprompts: ["x\\0y"]\n', "prompts.0: contains a NUL"),
    ("nul json", ".json", b'{"name": "t", "prompts": ["x\\u0000"]}', "prompts.0: contains a NUL"),
    ("surrogate json", ".json", b'{"name": "t", "prompts": ["\\ud800"]}', "invalid Unicode"),
    ("not utf-8", ".yaml", b"name: caf\xe9\nprompts: [x]\n", "not UTF-8 text"),
    (
        "oversized file",
        ".yaml",
        b"# " + b"x" * (1024 * 1024) + b"\n",
        "larger than 1,048,576 bytes",
    ),
    (
        "prompt too long",
        ".yaml",
        b"name: t\nprompts: ['" + b"p" * 20_000 + b"']\n",
        "prompts[0]: renders up to 20,000 characters, above the limit of 10,000",
    ),
    (
        "newline in a key",
        ".json",
        b'{"name": "t", "prompts": ["x"], "variables": {"a\\nb": ["v"]}}',
        "variables.a\\nb: not used by any prompt",
    ),
]


@pytest.mark.parametrize(
    ("case", "suffix", "content", "message"), HOSTILE, ids=[c[0] for c in HOSTILE]
)
def test_hostile_spec_exits_2_with_one_line_and_writes_nothing(
    case: str, suffix: str, content: bytes, message: str, in_process_env: Path, db: Database
) -> None:
    """The contract of `submit` holds for the inputs of issue 12 (items 6 and 7).

    In-process (main() itself, as the fuzz test runs it) to keep 19 cases fast; the tests
    below run the real process.
    """
    spec = in_process_env / f"spec{suffix}"
    spec.write_bytes(content)
    outcome = submit_in_process(spec)
    assert outcome.status == 2, (outcome.stdout, outcome.stderr[-2000:])
    assert message in outcome.stderr
    assert outcome.stderr.strip().count("\n") == 0 and "Traceback" not in outcome.stderr
    assert db.counts() == (0, 0)


@pytest.mark.anyio
async def test_limits_come_from_the_submit_section(
    env: dict[str, str], engine: AsyncEngine, tmp_path: Path
) -> None:
    """[submit] max_value_chars applies to `imgrun submit`."""
    write_toml(Path(env["IMGRUN_CONFIG"]), {"submit": {"max_value_chars": 3}})
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\nprompts: ['{a}']\nvariables: {a: [abc, abcd]}\n")
    status, _, stderr = await imgrun(env, "submit", str(spec))
    assert status == 2
    assert "variables.a[1]: 4 characters, above the limit of 3 (submit.max_value_chars)" in stderr
    assert await counts(engine) == (0, 0)


@pytest.mark.anyio
async def test_dry_run_preview_of_a_long_token_is_clipped_and_fast(
    env: dict[str, str], engine: AsyncEngine, tmp_path: Path
) -> None:
    """A 100 KB token (limits raised to let it through) took 291 s to preview; now clipped."""
    write_toml(Path(env["IMGRUN_CONFIG"]), {"submit": {"max_prompt_chars": 200_000}})
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\nprompts: ['" + "x" * 100_000 + "']\n")
    with anyio.fail_after(60):
        status, stdout, stderr = await imgrun(env, "submit", str(spec), "--dry-run")
    assert status == 0, stderr
    (line,) = [line for line in stdout.splitlines() if line.startswith("  #0 ")]
    assert line.endswith("x" * 200 + "…") and len(line) < 300
    assert await counts(engine) == (0, 0)


@pytest.mark.anyio
async def test_markup_in_user_text_is_printed_not_interpreted(
    env: dict[str, str], engine: AsyncEngine, tmp_path: Path
) -> None:
    """A "[/]" in a name or prompt crashed rich's markup parser (MarkupError traceback)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: 'x [/] y'\nprompts: ['a [/bold] b [red]c']\n")
    status, stdout, stderr = await imgrun(env, "submit", str(spec), "--dry-run")
    assert status == 0, stderr
    assert "x [/] y" in stdout and "a [/bold] b [red]c" in stdout
    status, stdout, stderr = await imgrun(env, "submit", str(spec))
    assert status == 0, stderr
    assert "(x [/] y)" in stdout and await counts(engine) == (1, 1)
