"""How big a spec may be: bytes in, nesting, numbers, prompt and value lengths, bytes out."""

from __future__ import annotations

from dataclasses import dataclass

# Users may need to move these; each has a key under [submit] (runner/config.py).
MAX_SUBTASKS = 100_000  # subtasks one spec may expand to
MAX_SPEC_BYTES = 1024 * 1024  # bytes of a spec file; parsing 1 MiB of YAML takes ~2 s at worst
MAX_PROMPT_CHARS = 10_000  # characters of one rendered prompt (templates included)
MAX_VALUE_CHARS = 2_000  # characters of one variable value
MAX_EXPANDED_BYTES = 128 * 1024 * 1024  # UTF-8 bytes of all rendered prompts of one task

# Fixed: a valid spec never comes near them; they only keep the parsers safe.
MAX_NESTING = 32  # levels of lists/mappings (a valid spec needs 3; Python recursion ends ~1000)
MAX_NUMBER_CHARS = 40  # characters of one number literal (int() refuses 4,300 digits)
MAX_INT = 2**63 - 1  # variable values are stored as JSON numbers; keep them in bigint range


@dataclass(frozen=True)
class SpecLimits:
    """The configurable limits, as `expand` and `load_spec` apply them."""

    max_subtasks: int = MAX_SUBTASKS
    max_spec_bytes: int = MAX_SPEC_BYTES
    max_prompt_chars: int = MAX_PROMPT_CHARS
    max_value_chars: int = MAX_VALUE_CHARS
    max_expanded_bytes: int = MAX_EXPANDED_BYTES


DEFAULT_LIMITS = SpecLimits()
