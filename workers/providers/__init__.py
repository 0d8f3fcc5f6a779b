"""Provider adapters behind two small interfaces, and the shared HTTP session."""

from typing import TYPE_CHECKING, Any

from workers.headers import parse_retry_after
from workers.kinds import PoolName as Pool
from workers.kinds import ProviderType
from workers.providers.base import JobState, JobStatus, QueueProvider, StandardProvider
from workers.providers.config import ProviderConfig, ProviderConfigError
from workers.providers.factory import build_provider
from workers.providers.retry import RequestRetryPolicy

if TYPE_CHECKING:
    from workers.providers.http import make_session


def __getattr__(name: str) -> Any:
    """`make_session` on first use: importing aiohttp is a cost `imgrun submit` need not pay."""
    if name == "make_session":
        from workers.providers.http import make_session

        return make_session
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "JobState",
    "JobStatus",
    "Pool",
    "ProviderConfig",
    "ProviderConfigError",
    "ProviderType",
    "QueueProvider",
    "RequestRetryPolicy",
    "StandardProvider",
    "build_provider",
    "make_session",
    "parse_retry_after",
]
