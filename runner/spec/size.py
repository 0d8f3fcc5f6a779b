"""What a spec will cost before it is expanded: value and prompt lengths, subtasks, bytes. Pure.

Every figure is computed from the templates and the variable lists (sums and products), so
a spec that would write gigabytes is refused in microseconds, without rendering a prompt.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from runner.errors import UserError, shown
from runner.spec.limits import SpecLimits


@dataclass(frozen=True)
class _Template:
    """A prompt template as literal text plus the placeholders it fills, in order."""

    literal_chars: int
    literal_bytes: int
    fields: tuple[str, ...]  # one entry per occurrence

    @classmethod
    def parse(cls, template: str) -> _Template:
        """Split a template already checked by `placeholders_of`."""
        literal = ""
        fields: list[str] = []
        for text, field, _, _ in string.Formatter().parse(template):
            literal += text
            if field is not None:
                fields.append(field)
        return cls(len(literal), len(literal.encode()), tuple(fields))


def _text(value: object) -> str:
    return str(value)


def _check_values(variables: Mapping[str, Sequence[object]], limit: int) -> None:
    for name, values in variables.items():
        for index, value in enumerate(values):
            if len(_text(value)) > limit:
                raise UserError(
                    f"variables.{shown(name)}[{index}]: {len(_text(value)):,} characters,"
                    f" above the limit of {limit:,} (submit.max_value_chars)"
                )


def check_sizes(
    prompts: Sequence[str],
    variables: Mapping[str, Sequence[object]],
    limits: SpecLimits,
    *,
    max_subtasks: int,
) -> None:
    """Raise UserError when a value, a rendered prompt, the count or the total bytes is too big."""
    _check_values(variables, limits.max_value_chars)
    longest = {
        name: max((len(_text(v)) for v in values), default=0) for name, values in variables.items()
    }
    templates = [_Template.parse(prompt) for prompt in prompts]
    for index, template in enumerate(templates):
        chars = template.literal_chars + sum(longest[f] for f in template.fields)
        if chars > limits.max_prompt_chars:
            raise UserError(
                f"prompts[{index}]: renders up to {chars:,} characters,"
                f" above the limit of {limits.max_prompt_chars:,} (submit.max_prompt_chars)"
            )
    counts = [math.prod(len(variables[f]) for f in dict.fromkeys(t.fields)) for t in templates]
    total = sum(counts)
    if total > max_subtasks:
        raise UserError(
            f"prompts × variables: expands to {total:,} subtasks,"
            f" above the limit of {max_subtasks:,} (submit.max_subtasks)"
        )
    value_bytes = {
        name: sum(len(_text(v).encode()) for v in values) for name, values in variables.items()
    }
    # Over all combinations, each value of a placeholder appears count / len(values) times.
    expanded = sum(
        count * t.literal_bytes + sum(count // len(variables[f]) * value_bytes[f] for f in t.fields)
        for t, count in zip(templates, counts, strict=True)
    )
    if expanded > limits.max_expanded_bytes:
        raise UserError(
            f"prompts × variables: {expanded:,} bytes of prompts,"
            f" above the limit of {limits.max_expanded_bytes:,} (submit.max_expanded_bytes)"
        )
