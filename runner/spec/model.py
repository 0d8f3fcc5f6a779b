"""The submit spec: parsing (YAML/JSON), validation, and expansion into subtasks (pure)."""

from __future__ import annotations

import itertools
import json
import math
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
)

from runner.config import describe_validation_error
from runner.errors import UserError, shown
from runner.spec.limits import DEFAULT_LIMITS, MAX_INT, MAX_SPEC_BYTES, SpecLimits
from runner.spec.loader import Format, load_data, parse_text
from runner.spec.params import row_json, shared_json
from runner.spec.size import check_sizes
from workers.kinds import PoolName, Ratio

MAX_SEED = 2**31 - 1


def _storable(text: str) -> str:
    """Text PostgreSQL can store: no NUL, no unpaired surrogate (both pass YAML and JSON)."""
    if "\x00" in text:
        raise ValueError("contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains invalid Unicode (an unpaired surrogate)") from None
    return text


def _variable_value(value: object) -> str | int | float:
    """Text or a finite number in bigint range; one clear message otherwise."""
    if isinstance(value, str):
        return _storable(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be text or a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number (not NaN or infinity)")
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise ValueError("integer out of range (at most 19 digits)")
    return value


SpecText = Annotated[str, AfterValidator(_storable)]
VariableValue = Annotated[str | int | float, PlainValidator(_variable_value)]


class Spec(BaseModel):
    """A task as the user writes it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: SpecText = Field(min_length=1, max_length=200)
    pool: PoolName | None = None
    provider: SpecText = Field(default="sim", min_length=1, max_length=200)
    priority: int = Field(default=1, ge=-1000, le=1000)
    prompts: list[SpecText] = Field(min_length=1)
    variables: dict[SpecText, list[VariableValue]] = Field(default_factory=dict)
    ratio: Ratio = "1:1"
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    batch_size: int = Field(default=1, ge=1, le=16)
    polish: bool = False
    max_retries: int = Field(default=3, ge=0, le=100)

    @field_validator("prompts")
    @classmethod
    def _prompts_not_blank(cls, prompts: list[str]) -> list[str]:
        for index, prompt in enumerate(prompts):
            if not prompt.strip():
                raise ValueError(f"prompt {index} is empty")
        return prompts

    @property
    def resolved_pool(self) -> str:
        """The pool: as given, else lumina when the name mentions it (the seed's rule)."""
        if self.pool is not None:
            return self.pool
        return "lumina" if "lumina" in self.name.lower() else "standard"


@dataclass(frozen=True)
class ExpandedSubtask:
    """One rendered prompt with its params, before it has a database id."""

    ordinal: int
    prompt: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Expansion:
    """A validated spec with its counts; `subtasks()` yields the rows lazily."""

    spec: Spec
    pool: str
    seed: int
    placeholders: tuple[tuple[str, ...], ...]

    @property
    def total_subtasks(self) -> int:
        """How many subtasks the spec expands to."""
        return sum(
            math.prod(len(self.spec.variables[name]) for name in names)
            for names in self.placeholders
        )

    @property
    def total_images(self) -> int:
        """Subtasks × batch size."""
        return self.total_subtasks * self.spec.batch_size

    def rows(self) -> Iterator[tuple[int, str, str]]:
        """(ordinal, prompt, params as JSON) for each prompt × each combination it uses.

        The bulk path: 100k rows must expand in well under a second, so templates are
        precompiled to positional format strings and params JSON shares a constant tail.
        """
        spec = self.spec
        tail = shared_json(spec.ratio, spec.batch_size, spec.polish)
        ordinal = 0
        for template, names in zip(spec.prompts, self.placeholders, strict=True):
            positional = _positional(template, names)
            columns = [[str(value) for value in spec.variables[name]] for name in names]
            for values in itertools.product(*columns):
                seed = (self.seed + ordinal) % (MAX_SEED + 1)
                yield ordinal, positional.format(*values), row_json(seed, tail)
                ordinal += 1

    def subtasks(self) -> Iterator[ExpandedSubtask]:
        """The rows as objects (for previews and tests)."""
        for ordinal, prompt, params in self.rows():
            yield ExpandedSubtask(ordinal, prompt, json.loads(params))


def _positional(template: str, names: tuple[str, ...]) -> str:
    """'a {animal} in {place}' → 'a {0} in {1}' (literal braces kept escaped)."""
    parts = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(literal.replace("{", "{{").replace("}", "}}"))
        if field is not None:
            parts.append(f"{{{names.index(field)}}}")
    return "".join(parts)


def placeholders_of(template: str, where: str) -> tuple[str, ...]:
    """Variable names a template uses, in order of first use."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UserError(f"{where}: {exc} (write {{{{ and }}}} for literal braces)") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            raise UserError(f"{where}: bad placeholder {{{shown(field)}}}: use {{name}} only")
        if field not in names:
            names.append(field)
    return tuple(names)


def expand(
    spec: Spec,
    *,
    max_subtasks: int | None = None,
    limits: SpecLimits = DEFAULT_LIMITS,
    rng: random.Random | None = None,
) -> Expansion:
    """Validate the spec's templates against its variables, its sizes, and count the expansion."""
    per_prompt = tuple(
        placeholders_of(template, f"prompts[{index}]")
        for index, template in enumerate(spec.prompts)
    )
    used = {name for names in per_prompt for name in names}
    for index, names in enumerate(per_prompt):
        for name in names:
            if name not in spec.variables:
                raise UserError(f"prompts[{index}]: unknown placeholder {{{shown(name)}}}")
    for name, values in spec.variables.items():
        if name not in used:
            raise UserError(f"variables.{shown(name)}: not used by any prompt")
        if not values:
            raise UserError(f"variables.{shown(name)}: empty list")
    cap = limits.max_subtasks if max_subtasks is None else max_subtasks
    check_sizes(spec.prompts, spec.variables, limits, max_subtasks=cap)
    seed = (
        spec.seed if spec.seed is not None else (rng or random.SystemRandom()).randint(0, MAX_SEED)
    )
    return Expansion(spec, spec.resolved_pool, seed, per_prompt)


def parse_spec(data: Any) -> Spec:
    """Validate raw spec data; bad input raises UserError naming the field."""
    if not isinstance(data, dict):
        raise UserError("spec: expected a mapping of keys (name, prompts, variables, …)")
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        raise UserError(describe_validation_error(exc)) from None


def decode_spec(text: str, fmt: Format, where: str) -> Spec:
    """Parse a JSON or YAML document (e.g. an HTTP body) into a Spec, as bounded as a file."""
    return parse_spec(parse_text(text, fmt, where))


def load_spec(path: Path, max_bytes: int = MAX_SPEC_BYTES) -> Spec:
    """Read a YAML or JSON spec file (bounded: see runner/spec_loader.py) and validate it."""
    return parse_spec(load_data(path, max_bytes))
