"""Provider adapters behind two small interfaces, and the shared HTTP session."""

from workers.headers import parse_retry_after
from workers.providers.base import JobState, JobStatus, QueueProvider, StandardProvider
from workers.providers.config import Pool, ProviderConfig, ProviderConfigError, ProviderType
from workers.providers.factory import build_provider
from workers.providers.http import make_session
from workers.providers.retry import RetryPolicy

__all__ = [
    "JobState",
    "JobStatus",
    "Pool",
    "ProviderConfig",
    "ProviderConfigError",
    "ProviderType",
    "QueueProvider",
    "RetryPolicy",
    "StandardProvider",
    "build_provider",
    "make_session",
    "parse_retry_after",
]
