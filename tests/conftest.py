"""Session-wide fixtures: anyio on asyncio only (asyncpg is asyncio-only)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Run every anyio test on asyncio."""
    return "asyncio"
