"""Fuzz `imgrun submit` (in-process, real database): every input submits correctly or exits 2.

A few hundred examples, about 20 s; `bench/fuzz.py` runs the same check 10,000 times.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings

from tests.conftest import create_database, drop_database
from tests.fuzz_contract import check, database, submit_in_process
from tests.spec_strategies import SpecCase, spec_cases, valid_specs

_names = itertools.count()


@pytest.fixture
def database_url(pg_server: str, template_db: str) -> Iterator[str]:
    """A fresh database for this test, made without an event loop (main() runs its own)."""
    url = anyio.run(create_database, pg_server, template_db)
    try:
        yield url
    finally:
        anyio.run(drop_database, pg_server, url)


@pytest.fixture
def submit_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> Path:
    """The environment `main()` reads, pointed at this test's database; returns a spec dir."""
    monkeypatch.setenv("IMGRUN_DATABASE_URL", database_url)
    monkeypatch.setenv("IMGRUN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IMGRUN_CONFIG", str(tmp_path / "none.toml"))
    specs = tmp_path / "specs"
    specs.mkdir()
    return specs


FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,  # reproducible from the seed printed on failure, not from a local cache
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def test_every_spec_submits_correctly_or_exits_2(submit_env: Path, database_url: str) -> None:
    """Hostile and random files: the contract of submit (see tests/fuzz_contract.py)."""
    with database(database_url) as db:

        @FUZZ
        @given(case=spec_cases())
        def run(case: SpecCase) -> None:
            path = submit_env / f"spec{next(_names)}{case.suffix}"
            path.write_bytes(case.content)
            before = db.counts()
            check(case, submit_in_process(path), db, before)

        run()


def test_valid_specs_write_exactly_their_rows(submit_env: Path, database_url: str) -> None:
    """Valid specs only: the rows written equal the expansion computed independently."""
    with database(database_url) as db:
        seen: list[str] = []

        @settings(FUZZ, max_examples=40)
        @given(case=valid_specs())
        def run(case: SpecCase) -> None:
            path = submit_env / f"spec{next(_names)}{case.suffix}"
            path.write_bytes(case.content)
            before = db.counts()
            seen.append(check(case, submit_in_process(path), db, before))

        run()
        assert set(seen) == {"submitted"}
