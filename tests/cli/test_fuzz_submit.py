"""Fuzz `imgrun submit` (in-process, real database): every input submits correctly or exits 2.

A few hundred examples, about 10 s; `bench/fuzz.py` runs the same check 10,000 times.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from tests.fuzz_contract import Database, check, submit_in_process
from tests.spec_strategies import SpecCase, spec_cases, valid_specs

_names = itertools.count()

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,  # reproducible from the seed printed on failure, not from a local cache
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _submit(folder: Path, case: SpecCase, db: Database) -> str:
    path = folder / f"spec{next(_names)}{case.suffix}"
    path.write_bytes(case.content)
    before = db.counts()
    return check(case, submit_in_process(path), db, before)


@FUZZ
@given(case=spec_cases())
def test_every_spec_submits_correctly_or_exits_2(
    in_process_env: Path, db: Database, case: SpecCase
) -> None:
    """Hostile and random files: the contract of submit (see tests/fuzz_contract.py)."""
    _submit(in_process_env, case, db)


@settings(FUZZ, max_examples=40)
@given(case=valid_specs())
def test_valid_specs_write_exactly_their_rows(
    in_process_env: Path, db: Database, case: SpecCase
) -> None:
    """Valid specs only: the rows written equal the expansion computed independently."""
    assert _submit(in_process_env, case, db) == "submitted"
