"""Hypothesis strategies for spec files, shared by the fuzz test and `bench/fuzz.py`.

Two kinds of input:
- `valid_specs()`: specs built from parts, with the rows they must expand to computed here
  independently (itertools.product over the variables each prompt uses);
- `hostile_files()`: valid spec texts mutated with the fragments issue 12 found harmful
  (aliases, tags, deep nesting, long numbers, NaN, NUL, surrogates, markup, raw bytes),
  and plain random bytes. Their outcome is not predicted; the contract is checked instead.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

import yaml
from hypothesis import assume
from hypothesis import strategies as st

NAMES = ["a", "b", "animal", "hat", "ü"]
# Storable text: any Unicode scalar except NUL (surrogates are not UTF-8, so never here).
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
VALUES = st.one_of(
    TEXT.filter(lambda s: s != ""),
    st.integers(-(2**63) + 1, 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)


@dataclass(frozen=True)
class SpecCase:
    """A spec file and, for valid ones, the (prompt, seed) rows it must expand to."""

    suffix: str
    content: bytes
    rows: tuple[tuple[str, int], ...] | None = None


def _render(value: Any) -> str:
    return str(value)


@st.composite
def _prompt(draw: st.DrawFn, names: list[str]) -> list[tuple[str, str]]:
    """A template as segments: ("lit", text) or ("var", name)."""
    segments: list[tuple[str, str]] = [("lit", "p ")]  # never blank
    for _ in range(draw(st.integers(0, 4))):
        if names and draw(st.booleans()):
            segments.append(("var", draw(st.sampled_from(names))))
        else:
            segments.append(("lit", draw(TEXT)))
    return segments


def _template(segments: list[tuple[str, str]]) -> str:
    return "".join(
        "{" + value + "}" if kind == "var" else value.replace("{", "{{").replace("}", "}}")
        for kind, value in segments
    )


def _expected_rows(
    prompts: list[list[tuple[str, str]]], variables: dict[str, list[Any]], seed: int
) -> tuple[tuple[str, int], ...]:
    rows: list[tuple[str, int]] = []
    for segments in prompts:
        used = list(dict.fromkeys(value for kind, value in segments if kind == "var"))
        for combo in itertools.product(*(variables[name] for name in used)):
            chosen = dict(zip(used, combo, strict=True))
            text = "".join(_render(chosen[v]) if k == "var" else v for k, v in segments)
            rows.append((text, seed + len(rows)))
    return tuple(rows)


@st.composite
def valid_specs(draw: st.DrawFn) -> SpecCase:
    """A valid spec as YAML or JSON, with the rows it must produce."""
    names = draw(st.lists(st.sampled_from(NAMES), max_size=3, unique=True))
    variables = {name: draw(st.lists(VALUES, min_size=1, max_size=3)) for name in names}
    prompts = [draw(_prompt(names)) for _ in range(draw(st.integers(1, 3)))]
    unused = [n for n in names if not any(("var", n) in p for p in prompts)]
    if unused:
        prompts.append([("lit", "p ")] + [("var", n) for n in unused])
    seed = draw(st.integers(0, 10_000))
    data = {
        "name": draw(TEXT.filter(str.strip)),
        "prompts": [_template(p) for p in prompts],
        "variables": variables,
        "seed": seed,
        "batch_size": draw(st.integers(1, 4)),
    }
    rows = _expected_rows(prompts, variables, seed)
    if draw(st.booleans()):
        return SpecCase(".json", json.dumps(data, ensure_ascii=draw(st.booleans())).encode(), rows)
    text = yaml.safe_dump(data, allow_unicode=draw(st.booleans()))
    # PyYAML's dumper has round-trip gaps of its own (not ours to test): skip those.
    assume(yaml.safe_load(text) == data)
    return SpecCase(".yaml", text.encode(), rows)


FRAGMENTS = [
    b"*a",
    b"&a ",
    b"&a [x, y]\nb: *a",
    b"<<: {x: 1}",
    b"!!int x",
    b"!!float 1cat",
    b"!!binary aGk=",
    b"!!python/object:os.system",
    b".nan",
    b"-.inf",
    b"NaN",
    b"Infinity",
    b"1e999",
    b"0x_",
    b"9" * 4_400,
    b"0x" + b"f" * 60,
    b"[" * 1_200,
    b"{" * 40,
    b'"x\\0y"',
    b'"\\u0000"',
    b'"\\ud800"',
    b"\x00",
    b"\xff\xfe",
    b"\xef\xbb\xbf",
    b"[/]",
    b"[bold]",
    b"{a}",
    b"{{",
    b"}",
    b"{0}",
    b"{a.b}",
    b"{a!r}",
    b"\n",
    b"\t",
    b": ",
    b"- ",
    b"---\n",
    b"%YAML 1.1\n",
    b"? ",
    b"|\n",
    b"'",
    b'"',
    b"#",
    b"2001-02-30",
    b"yes",
    b"~",
    "\u202e".encode(),  # right-to-left override
    b"x" * 3_000,
]


@st.composite
def _mutated(draw: st.DrawFn) -> SpecCase:
    """A valid spec with a few slices replaced by hostile fragments or random bytes."""
    base = draw(valid_specs())
    data = bytearray(base.content)
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, len(data)))
        end = draw(st.integers(start, min(len(data), start + 8)))
        # Raw bytes mostly make "not UTF-8" refusals; the noise examples cover those.
        piece = draw(st.sampled_from(FRAGMENTS) | st.text(max_size=4).map(str.encode))
        data[start:end] = piece
    return SpecCase(base.suffix, bytes(data))


# Values a spec may not hold, or holds only within limits, placed where values go.
_KNOWN_BAD = st.sampled_from(
    [
        float("nan"),
        float("inf"),
        -float("inf"),
        2**63,
        -(2**64),
        10**50,
        True,
        None,
        "x\x00y",
        "\ud800",
        "[/]",
        "a\nb",
        "{a}",
        "}",
        "x" * 3_000,
        [],
        {},
        [[["deep"]]],
    ]
)
HOSTILE_VALUES = st.one_of(
    _KNOWN_BAD, _KNOWN_BAD, _KNOWN_BAD, st.text(max_size=8), st.integers(), st.floats()
)


@st.composite
def _structured(draw: st.DrawFn) -> SpecCase:
    """A valid spec with one hostile value put in one place (so it alone decides)."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=2, unique=True))
    data: dict[str, Any] = {
        "name": "t",
        "prompts": ["p " + " ".join("{" + n + "}" for n in names)],
        "variables": {n: draw(st.lists(VALUES, min_size=1, max_size=3)) for n in names},
    }
    value = draw(HOSTILE_VALUES)
    where = draw(st.sampled_from(["value", "value", "prompt", "name", "key", "field"]))
    if where == "value":
        values = data["variables"][draw(st.sampled_from(names))]
        values[draw(st.integers(0, len(values) - 1))] = value
    elif where == "prompt":
        data["prompts"].append(value)
    elif where == "key":
        data["variables"][value if isinstance(value, str) else str(value)] = ["v"]
    elif where == "field":
        field = draw(st.sampled_from(["seed", "batch_size", "priority", "ratio", "pool", "x"]))
        data[field] = value
    else:
        data["name"] = value
    as_json, ascii_only = draw(st.booleans()), draw(st.booleans())
    try:
        if as_json:
            return SpecCase(".json", json.dumps(data, ensure_ascii=ascii_only).encode())
        return SpecCase(".yaml", yaml.safe_dump(data, allow_unicode=not ascii_only).encode())
    except (yaml.YAMLError, UnicodeEncodeError):  # a lone surrogate written raw: not a file
        assume(False)
        raise


def hostile_files() -> st.SearchStrategy[SpecCase]:
    """Specs with hostile values, mutated spec texts, and random bytes, as YAML or JSON."""
    noise = st.builds(SpecCase, st.sampled_from([".yaml", ".json"]), st.binary(max_size=64))
    return st.one_of(*[_structured()] * 4, *[_mutated()] * 3, noise)


def spec_cases() -> st.SearchStrategy[SpecCase]:
    """What the fuzz runs draw from: a third valid specs, the rest hostile."""
    return st.one_of(valid_specs(), hostile_files(), hostile_files())
