"""Provider adapters behind two small interfaces, and the shared HTTP session."""

from workers.headers import parse_retry_after
from workers.kinds import PoolName as Pool
from workers.kinds import ProviderType
from workers.providers.base import JobState, JobStatus, QueueProvider, StandardProvider
from workers.providers.config import ProviderConfig, ProviderConfigError
from workers.providers.factory import build_provider
from workers.providers.http import make_session
from workers.providers.retry import RequestRetryPolicy

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
