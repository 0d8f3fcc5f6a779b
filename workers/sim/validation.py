"""Request checks shared by the OpenAI-compatible and lumina routes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from workers.kinds import RATIO_SIZES

_FORBIDDEN = re.compile(r"\bforbidden\b", re.IGNORECASE)
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
MAX_PROMPT = 32_000


class Invalid(Exception):
    """A request the sim refuses with 400; `code` distinguishes content policy."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass(frozen=True)
class Generation:
    """A validated generation request."""

    prompt: str
    seed: int
    count: int
    width: int
    height: int
    polish: bool

    @property
    def render_prompt(self) -> str:
        """The prompt the image is drawn from (polish rewrites it, so images differ)."""
        return f"{self.prompt}, polished" if self.polish else self.prompt


def _prompt(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise Invalid("prompt must be a non-empty string", param="prompt")
    if len(prompt) > MAX_PROMPT:
        raise Invalid(f"prompt is longer than {MAX_PROMPT} characters", param="prompt")
    if _FORBIDDEN.search(prompt):
        raise Invalid(
            "Your request was rejected as a result of our safety system.",
            code="content_policy_violation",
        )
    return prompt


def _int(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    # bool is an int subclass; JSON true is not a count.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise Invalid(f"{name} must be an integer from {low} to {high}", param=name)
    return value


def _size(body: dict[str, Any], max_side: int) -> tuple[int, int]:
    ratio, size = body.get("ratio"), body.get("size")
    if size is None and ratio is not None:
        if ratio not in RATIO_SIZES:
            raise Invalid(f"ratio must be one of {', '.join(RATIO_SIZES)}", param="ratio")
        return RATIO_SIZES[ratio]
    match = _SIZE.match(size if isinstance(size, str) else "1024x1024" if size is None else "")
    if not match:
        raise Invalid("size must look like 1024x1024", param="size")
    width, height = int(match[1]), int(match[2])
    if not (1 <= width <= max_side and 1 <= height <= max_side):
        raise Invalid(f"size sides must be from 1 to {max_side}", param="size")
    return width, height


def parse_generation(
    body: dict[str, Any], *, count_field: str, max_n: int, max_side: int
) -> Generation:
    """Validate prompt, seed, count, size/ratio and polish, or raise Invalid."""
    prompt = _prompt(body)
    seed = _int(body, "seed", 0, -(2**63), 2**63 - 1)
    count = _int(body, count_field, 1, 1, max_n)
    width, height = _size(body, max_side)
    polish = body.get("polish", False)
    if not isinstance(polish, bool):
        raise Invalid("polish must be a boolean", param="polish")
    return Generation(prompt, seed, count, width, height, polish)
