"""The webhook wire format: one canonical JSON body per event, signed with HMAC-SHA256 (pure)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

SIGNATURE_HEADER = "X-Imgrun-Signature"
SIGNATURE_PREFIX = "sha256="


def delivery_body(event_id: str, event: str, at: datetime | str, data: Any) -> bytes:
    """`{"id", "event", "at", "data"}` as compact, key-sorted JSON: the same bytes every retry."""
    when = at.isoformat() if isinstance(at, datetime) else at
    document = {"id": event_id, "event": event, "at": when, "data": data}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: `sha256=` and the hex HMAC-SHA256 of the raw body."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver does: recompute the signature and compare in constant time."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)
