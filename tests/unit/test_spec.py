"""Spec validation and expansion, without a database."""

from __future__ import annotations

import math
import random
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.errors import UserError
from runner.spec.model import expand, parse_spec

NAMES = st.sampled_from(["a", "b", "c", "d"])


@st.composite
def specs(draw: st.DrawFn) -> dict[str, object]:
    """Random valid specs: each prompt uses a subset of the variables; every variable is used."""
    names = draw(st.lists(NAMES, min_size=0, max_size=4, unique=True))
    values = {
        n: draw(
            st.lists(st.text(string.ascii_letters, min_size=1, max_size=5), min_size=1, max_size=4)
        )
        for n in names
    }
    prompts = []
    for _ in range(draw(st.integers(1, 3))):
        used = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
        prompts.append("p " + " ".join(f"{{{n}}}" for n in used))
    unused = set(names) - {n for p in prompts for n in names if f"{{{n}}}" in p}
    if unused:
        prompts.append(" ".join(f"{{{n}}}" for n in sorted(unused)))
    return {
        "name": "t",
        "prompts": prompts,
        "variables": values,
        "seed": draw(st.integers(0, 1000)),
        "batch_size": draw(st.integers(1, 4)),
    }


@settings(max_examples=150, deadline=None)
@given(specs())
def test_expansion_counts_ordinals_and_seeds(raw: dict[str, object]) -> None:
    """Count = Σ over prompts of Π used variable lengths; ordinals dense; seeds distinct."""
    spec = parse_spec(raw)
    expansion = expand(spec, max_subtasks=10_000)
    rows = list(expansion.subtasks())
    expected = sum(
        math.prod(len(spec.variables[n]) for n in spec.variables if f"{{{n}}}" in prompt)
        for prompt in spec.prompts
    )
    assert len(rows) == expected == expansion.total_subtasks
    assert expansion.total_images == expected * spec.batch_size
    assert [r.ordinal for r in rows] == list(range(len(rows)))
    seeds = [r.params["seed"] for r in rows]
    assert len(set(seeds)) == len(seeds)
    assert all("{" not in r.prompt for r in rows)


def test_expansion_renders_every_combination_in_order() -> None:
    """The DESIGN example: 2 animals × 2 hats, seeds seed+i."""
    spec = parse_spec(
        {
            "name": "fox",
            "prompts": ["a {animal} wearing a {hat}"],
            "variables": {"animal": ["cat", "fox"], "hat": ["beret", "top hat"]},
            "seed": 42,
        }
    )
    rows = list(expand(spec, max_subtasks=100).subtasks())
    assert [r.prompt for r in rows] == [
        "a cat wearing a beret",
        "a cat wearing a top hat",
        "a fox wearing a beret",
        "a fox wearing a top hat",
    ]
    assert [r.params["seed"] for r in rows] == [42, 43, 44, 45]
    assert rows[0].params["size"] == "1024x1024"


@pytest.mark.parametrize(
    ("name", "pool", "expected"),
    [
        ("Lumina poster", None, "lumina"),
        ("LUMINA", None, "lumina"),
        ("fox", None, "standard"),
        ("lumina x", "standard", "standard"),
    ],
)
def test_pool_defaults_by_name(name: str, pool: str | None, expected: str) -> None:
    """The seed's rule: a name containing 'lumina' (any case) goes to the lumina pool."""
    raw: dict[str, object] = {"name": name, "prompts": ["x"]}
    if pool:
        raw["pool"] = pool
    assert parse_spec(raw).resolved_pool == expected


def test_omitted_seed_is_random_and_recorded() -> None:
    """Without a seed, one is drawn and every subtask derives from it."""
    spec = parse_spec({"name": "t", "prompts": ["x", "y"]})
    expansion = expand(spec, max_subtasks=10, rng=random.Random(1))
    assert [r.params["seed"] for r in expansion.subtasks()] == [expansion.seed, expansion.seed + 1]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "t", "prompts": ["a {b}"]}, "prompts[0]: unknown placeholder {b}"),
        (
            {"name": "t", "prompts": ["a"], "variables": {"b": ["x"]}},
            "variables.b: not used by any prompt",
        ),
        ({"name": "t", "prompts": ["a {b}"], "variables": {"b": []}}, "variables.b: empty list"),
        (
            {"name": "t", "prompts": ["a {b!r}"], "variables": {"b": ["x"]}},
            "prompts[0]: bad placeholder",
        ),
        ({"name": "t", "prompts": ["a {"]}, "prompts[0]:"),
        (
            {
                "name": "t",
                "prompts": ["{a}{b}"],
                "variables": {"a": list(range(400)), "b": list(range(400))},
            },
            "above the limit of 100,000",
        ),
    ],
)
def test_expansion_rejects(raw: dict[str, object], message: str) -> None:
    """Template/variable mismatches name the field."""
    with pytest.raises(UserError, match=None) as info:
        expand(parse_spec(raw), max_subtasks=100_000)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "t", "prompts": ["x"], "colour": "red"}, "colour: unknown key"),
        ({"name": "t", "prompts": ["x"], "ratio": "5:4"}, "ratio:"),
        ({"name": "t", "prompts": ["x"], "batch_size": 0}, "batch_size:"),
        ({"name": "t", "prompts": ["x"], "batch_size": "2"}, "batch_size:"),
        ({"name": "t", "prompts": ["x"], "pool": "gpu"}, "pool:"),
        ({"name": "t", "prompts": []}, "prompts:"),
        ({"name": "t", "prompts": ["  "]}, "prompts: prompt 0 is empty"),
        ({"prompts": ["x"]}, "name:"),
        (["not", "a", "mapping"], "spec: expected a mapping"),
    ],
)
def test_parse_rejects(raw: object, message: str) -> None:
    """Schema errors are one line naming the field."""
    with pytest.raises(UserError) as info:
        parse_spec(raw)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
