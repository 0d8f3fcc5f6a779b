"""The vocabulary every layer shares: pool kinds, provider types, ratios. Declared once here.

A leaf module: it imports nothing of the project, so db/, workers/ and runner/ may all use it
(tests/unit/test_layering.py allows exactly this module across layers).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, get_args


class Execution(enum.Enum):
    """How a pool runs one subtask against its provider."""

    SYNCHRONOUS = "synchronous"  # one request answers with the images
    SUBMIT_AND_POLL = "submit-and-poll"  # submit a job, persist its id, poll, fetch


PoolName = Literal["standard", "lumina"]


@dataclass(frozen=True)
class PoolKind:
    """A concurrency pool: its name (stored on every subtask) and how it executes."""

    name: PoolName
    execution: Execution

    @property
    def polls(self) -> bool:
        """Whether its jobs live at the provider between polls (and so can be resumed)."""
        return self.execution is Execution.SUBMIT_AND_POLL


STANDARD = PoolKind("standard", Execution.SYNCHRONOUS)
LUMINA = PoolKind("lumina", Execution.SUBMIT_AND_POLL)
POOL_KINDS: dict[str, PoolKind] = {kind.name: kind for kind in (STANDARD, LUMINA)}
POOL_NAMES: tuple[PoolName, ...] = get_args(PoolName)

ProviderType = Literal["sim", "openai", "lumina", "comfyui", "null"]
PROVIDER_TYPES: tuple[ProviderType, ...] = get_args(ProviderType)

# Which pools each provider type can serve. "sim" serves both: the standard pool speaks the
# OpenAI-compatible API to it, the lumina pool its queue protocol.
PROVIDER_POOLS: dict[ProviderType, frozenset[PoolName]] = {
    "sim": frozenset({"standard", "lumina"}),
    "openai": frozenset({"standard"}),
    "lumina": frozenset({"lumina"}),
    "comfyui": frozenset({"lumina"}),
    "null": frozenset({"standard", "lumina"}),
}

Ratio = Literal["1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3"]

# Pixel sizes for each ratio at scale 1; providers may scale them (the sim shrinks them).
RATIO_SIZES: dict[Ratio, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "4:3": (1152, 864),
    "3:4": (864, 1152),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "3:2": (1216, 816),
    "2:3": (816, 1216),
}


def pool_kind(name: str) -> PoolKind:
    """The pool kind called `name`; KeyError for an unknown one (names come validated)."""
    return POOL_KINDS[name]
