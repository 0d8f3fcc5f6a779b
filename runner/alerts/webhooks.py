"""Configured webhooks with their secrets, and one signed POST to one of them."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version

import aiohttp

from runner.alerts.policy import target_id
from runner.alerts.signing import SIGNATURE_HEADER, sign
from runner.config import AlertSettings, Environment, WebhookSettings
from runner.errors import UserError
from runner.policy.fingerprint import redact

MAX_ERROR_LEN = 300  # characters of a failure kept in the outbox row


@dataclass(frozen=True)
class Hook:
    """A webhook ready to sign with: its settings and the secret its `secret_env` names."""

    settings: WebhookSettings
    secret: str

    def __repr__(self) -> str:
        return f"Hook({self.label!r})"  # never the URL or the secret

    @property
    def label(self) -> str:
        """How logs name it."""
        return self.settings.label

    @property
    def target(self) -> str:
        """Its identity in the outbox's delivered_to."""
        return target_id(self.settings.url)

    def wants(self, event: str) -> bool:
        """Whether it subscribed to `event`."""
        return event in self.settings.events


def resolve_hooks(alerts: AlertSettings, env: Environment) -> tuple[Hook, ...]:
    """Every configured webhook with its secret; a missing secret variable is a UserError."""
    hooks = []
    for index, settings in enumerate(alerts.webhooks):
        secret = env.secret(settings.secret_env)
        if not secret:
            raise UserError(
                f"alerts.webhooks[{index}].secret_env: the variable {settings.secret_env}"
                " is not set"
            )
        hooks.append(Hook(settings, secret))
    return tuple(hooks)


def headers(hook: Hook, body: bytes, event: str, event_id: str) -> dict[str, str]:
    """The request headers of one delivery, signature included."""
    return {
        "Content-Type": "application/json",
        "User-Agent": f"imgrun/{version('imgrun')}",
        "X-Imgrun-Event": event,
        "X-Imgrun-Delivery": event_id,
        SIGNATURE_HEADER: sign(hook.secret, body),
    }


async def post(
    session: aiohttp.ClientSession, hook: Hook, body: bytes, *, event: str, event_id: str
) -> str | None:
    """POST one delivery; None when the hook answered 2xx, else a short, secret-free reason."""
    timeout = aiohttp.ClientTimeout(total=hook.settings.timeout)
    try:
        async with session.post(
            hook.settings.url,
            data=body,
            headers=headers(hook, body, event, event_id),
            timeout=timeout,
            allow_redirects=False,  # a redirect is a misconfigured hook, not a place to resend
        ) as response:
            if 200 <= response.status < 300:
                return None
            return f"{hook.label}: HTTP {response.status}"
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        detail = redact(str(exc) or type(exc).__name__, (hook.settings.url, hook.secret))
        return f"{hook.label}: {type(exc).__name__}: {detail}"[:MAX_ERROR_LEN]
