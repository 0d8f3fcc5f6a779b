"""Hostile specs, without a database: every one is a one-line UserError naming the problem."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from runner.config import Config
from runner.errors import UserError, shown
from runner.spec.limits import MAX_NESTING, SpecLimits
from runner.spec.loader import load_data, parse_text, read_bounded
from runner.spec.model import expand, parse_spec


def rejected_yaml(text: str) -> str:
    """The one-line message a YAML text is refused with."""
    with pytest.raises(UserError) as info:
        parse_spec(parse_text(text, "yaml", "s.yaml"))
    message = str(info.value)
    assert "\n" not in message
    return message


def rejected_json(text: str) -> str:
    """The one-line message a JSON text is refused with."""
    with pytest.raises(UserError) as info:
        parse_spec(parse_text(text, "json", "s.json"))
    message = str(info.value)
    assert "\n" not in message
    return message


HEAD = "name: t\nprompts: ['{a}']\n"


def test_yaml_aliases_are_refused_before_anything_is_built() -> None:
    """The amplification of the report: one anchored prompt referenced many times."""
    bomb = "name: t\nx: &p 'a long prompt'\nprompts: [" + ", ".join(["*p"] * 400) + "]\n"
    assert rejected_yaml(bomb) == "s.yaml: line 3: YAML aliases (*p) are not allowed"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: a\nname: b\nprompts: [x]\n", "s.yaml: line 2: duplicate key 'name'"),
        (HEAD + "variables:\n  a: [1]\n  a: [2]\n", "s.yaml: line 5: duplicate key 'a'"),
        (HEAD + "variables: {<<: {a: [1]}}\n", "s.yaml: line 3: merge keys (<<) are not allowed"),
    ],
)
def test_yaml_duplicate_and_merge_keys(text: str, message: str) -> None:
    """A key given twice would silently drop one value; YAML says so, we refuse it."""
    assert rejected_yaml(text) == message


def test_json_duplicate_keys() -> None:
    """JSON objects too: the second `name` is not silently the one used."""
    assert rejected_json('{"name": "a", "name": "b", "prompts": ["x"]}') == (
        "s.json: duplicate key 'name'"
    )


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("!!float 1cat", "!!float"),
        ("!!int x", "!!int"),
        ("!!bool maybe", "!!bool"),
        ("!!timestamp x", "!!timestamp"),
        ("!!binary aGk=", "!!binary"),
        ("!!python/name:os.system x", "!!python/name:os.system"),
    ],
)
def test_explicit_tags_are_refused(value: str, tag: str) -> None:
    """Tags force a constructor onto text (float('1cat') raised ValueError: a traceback)."""
    message = rejected_yaml(HEAD + f"variables: {{a: [{value}]}}\n")
    assert message == (
        f"s.yaml: line 3: explicit YAML tag {tag} is not allowed (quote the value instead)"
    )


def test_str_tag_is_fine() -> None:
    """`!!str 123` only says what quoting says."""
    spec = parse_spec(parse_text(HEAD + "variables: {a: [!!str 123]}\n", "yaml", "s.yaml"))
    assert spec.variables == {"a": ["123"]}


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 1_000, 100_000])
def test_deep_nesting_yaml_and_json(depth: int) -> None:
    """Past MAX_NESTING levels: refused (at ~1,000 the parsers used to raise RecursionError)."""
    nested = "[" * depth + "]" * depth
    # libyaml's scanner, reading ahead, may meet its own limit (1,000) before we count 33.
    assert re.search(
        f"nested deeper than {MAX_NESTING} levels|exceeded maximum nesting depth",
        rejected_yaml(f"{HEAD}x: {nested}\n"),
    )
    assert f"nested deeper than {MAX_NESTING} levels" in rejected_json(f'{{"x": {nested}}}')


def test_block_nesting_and_the_deepest_allowed() -> None:
    """Block style counts the same; MAX_NESTING levels exactly still parse."""
    assert "nested deeper" in rejected_yaml("- " * (MAX_NESTING + 1) + "x\n")
    assert parse_text("[" * MAX_NESTING + "]" * MAX_NESTING, "json", "s.json") is not None
    assert parse_text("- " * MAX_NESTING + "x\n", "yaml", "s.yaml") is not None


@pytest.mark.parametrize(
    "literal",
    ["1" * 5_000, "0x" + "f" * 5_000, "1" + ":1" * 3_000, "1" * 41],
)
def test_long_number_literals_yaml(literal: str) -> None:
    """int('1'*5000) raises ValueError; hex and base-60 ones are quadratic to build."""
    message = rejected_yaml(HEAD + f"variables: {{a: [{literal}]}}\n")
    assert message == (
        "s.yaml: line 3: number longer than 40 characters (quote it to make it text)"
    )


def test_long_number_literals_json() -> None:
    """The same limit for JSON numbers, checked before conversion."""
    text = '{"name": "t", "prompts": ["{a}"], "variables": {"a": [' + "1" * 5_000 + "]}}"
    assert rejected_json(text) == "s.json: number longer than 40 characters"


@pytest.mark.parametrize("literal", ["0x_", "0b_"])
def test_number_shaped_text_that_does_not_convert(literal: str) -> None:
    """YAML 1.1 resolves these to int, then int() fails: the line is named, no traceback."""
    assert rejected_yaml(HEAD + f"variables: {{a: [{literal}]}}\n").startswith(
        "s.yaml: line 3: invalid value:"
    )


def test_dates_stay_text() -> None:
    """YAML 1.1 timestamps (2001-02-30 raised ValueError) are read as the text written."""
    spec = parse_spec(parse_text(HEAD + "variables: {a: [2001-02-30, 2024-01-01]}\n", "yaml", "s"))
    assert spec.variables == {"a": ["2001-02-30", "2024-01-01"]}


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1.0e+999"])
def test_nan_and_infinity_in_variables_yaml(value: str) -> None:
    """They passed validation and crashed at submit."""
    assert rejected_yaml(HEAD + f"variables: {{a: [{value}]}}\n") == (
        "variables.a.0: must be a finite number (not NaN or infinity)"
    )


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_in_json(value: str) -> None:
    """Python's json accepts these non-JSON constants; a spec does not."""
    text = f'{{"name": "t", "prompts": ["{{a}}"], "variables": {{"a": [{value}]}}}}'
    assert rejected_json(text) == f"s.json: {value} is not a number a spec may use"


def test_json_overflowing_float_is_not_finite() -> None:
    """1e999 parses to inf."""
    text = '{"name": "t", "prompts": ["{a}"], "variables": {"a": [1e999]}}'
    assert rejected_json(text) == "variables.a.0: must be a finite number (not NaN or infinity)"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "t", "prompts": ["a\x00b"]}, "prompts.0: contains a NUL character"),
        ({"name": "t\x00", "prompts": ["x"]}, "name: contains a NUL character"),
        (
            {"name": "t", "prompts": ["{a}"], "variables": {"a": ["x\x00"]}},
            "variables.a.0: contains a NUL character",
        ),
        (
            {"name": "t", "prompts": ["x"], "variables": {"a\x00": ["x"]}},
            "variables.a\\x00.[key]: contains a NUL character",
        ),
        (
            {"name": "t", "prompts": ["\ud800"]},
            "prompts.0: contains invalid Unicode (an unpaired surrogate)",
        ),
        (
            {"name": "t", "prompts": ["{a}"], "variables": {"a": [2**63]}},
            "variables.a.0: integer out of range (at most 19 digits)",
        ),
        (
            {"name": "t", "prompts": ["{a}"], "variables": {"a": [True]}},
            "variables.a.0: must be text or a number",
        ),
        (
            {"name": "t", "prompts": ["{a}"], "variables": {"a": [None]}},
            "variables.a.0: must be text or a number",
        ),
    ],
)
def test_values_postgres_cannot_store(raw: dict[str, object], message: str) -> None:
    """NUL and lone surrogates crashed the COPY at submit; now they fail validation."""
    with pytest.raises(UserError) as info:
        parse_spec(raw)
    assert str(info.value) == message


def test_nul_escapes_from_both_formats() -> None:
    """ "\\0" in YAML and "\\u0000" in JSON are where NUL characters come from."""
    assert rejected_yaml('name: t\nprompts: ["x\\0y"]\n') == "prompts.0: contains a NUL character"
    assert rejected_json('{"name": "t", "prompts": ["x\\u0000y"]}') == (
        "prompts.0: contains a NUL character"
    )


def test_echoed_user_text_is_escaped_and_clipped() -> None:
    """A newline in a key cannot split the message; a 1 MB key is not printed whole."""
    raw = {"name": "t", "prompts": ["x"], "variables": {"a\nb": ["v"]}}
    with pytest.raises(UserError) as info:
        expand(parse_spec(raw))
    assert str(info.value) == "variables.a\\nb: not used by any prompt"
    raw = {"name": "t", "prompts": ["{" + "z" * 100_000 + "}"]}
    with pytest.raises(UserError) as info:
        expand(parse_spec(raw))
    assert str(info.value) == "prompts[0]: unknown placeholder {" + shown("z" * 100_000) + "}"
    assert len(str(info.value)) < 120


# --- bytes: files, values, prompts, the whole expansion ------------------------------


def test_file_over_the_limit_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    """One byte over max_spec_bytes; /dev/zero ends at the limit instead of filling memory."""
    spec = tmp_path / "big.yaml"
    spec.write_bytes(b"#" * 1_001)
    with pytest.raises(UserError, match=r"big.yaml: larger than 1,000 bytes"):
        read_bounded(spec, 1_000)
    spec.write_bytes(b"#" * 1_000)
    assert read_bounded(spec, 1_000) == "#" * 1_000
    with pytest.raises(UserError, match=r"larger than 1,048,576 bytes \(submit.max_spec_bytes\)"):
        load_data(Path("/dev/zero"))


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    """Bytes that do not decode are named, not a UnicodeDecodeError traceback."""
    spec = tmp_path / "latin1.yaml"
    spec.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(UserError, match=r"latin1.yaml: not UTF-8 text \(byte 9\)"):
        load_data(spec)


def test_config_keys_reach_the_limits() -> None:
    """[submit] keys map onto SpecLimits."""
    config = Config.model_validate({"submit": {"max_prompt_chars": 7, "max_spec_bytes": 9}})
    assert config.submit.limits == SpecLimits(max_prompt_chars=7, max_spec_bytes=9)


def _expand(raw: dict[str, object], **limits: int) -> int:
    """Total prompt bytes of the expansion, or UserError."""
    expansion = expand(parse_spec(raw), limits=SpecLimits(**limits))
    return sum(len(prompt.encode()) for _, prompt, _ in expansion.rows())


def test_value_length_limit() -> None:
    """A value longer than max_value_chars names the variable and index."""
    raw = {"name": "t", "prompts": ["{a}"], "variables": {"a": ["x" * 10, "y" * 11]}}
    with pytest.raises(UserError) as info:
        _expand(raw, max_value_chars=10)
    assert str(info.value) == (
        "variables.a[1]: 11 characters, above the limit of 10 (submit.max_value_chars)"
    )
    assert _expand(raw, max_value_chars=11) == 21


def test_prompt_length_counts_the_longest_rendering() -> None:
    """Literal text plus the longest value at each occurrence (a repeated {a} counts twice)."""
    raw = {"name": "t", "prompts": ["ab {a} {a}"], "variables": {"a": ["x", "yyyy"]}}
    longest = len("ab yyyy yyyy")  # 12
    assert _expand(raw, max_prompt_chars=longest) > 0
    with pytest.raises(UserError) as info:
        _expand(raw, max_prompt_chars=longest - 1)
    assert str(info.value) == (
        "prompts[0]: renders up to 12 characters, above the limit of 11 (submit.max_prompt_chars)"
    )


def test_expanded_bytes_equal_what_would_be_written() -> None:
    """The precomputed total equals the rendered rows' UTF-8 bytes: at it passes, below fails."""
    raw = {
        "name": "t",
        "prompts": ["é {a} und {b} {a}", "plain", "{b}{{literal}}"],
        "variables": {"a": ["ü", "xx", "日本"], "b": ["1", 22, 3.5]},
    }
    spec = parse_spec(raw)
    written = sum(len(p.encode()) for _, p, _ in expand(spec).rows())
    assert _expand(raw, max_expanded_bytes=written) == written
    with pytest.raises(UserError) as info:
        _expand(raw, max_expanded_bytes=written - 1)
    assert str(info.value) == (
        f"prompts × variables: {written:,} bytes of prompts, above the limit of"
        f" {written - 1:,} (submit.max_expanded_bytes)"
    )


def test_the_reported_amplification_is_refused_quickly() -> None:
    """A 900 KB template is over the default prompt limit; refused without rendering."""
    raw = {"name": "t", "prompts": ["p" * 900_000 + "{a}"], "variables": {"a": list(range(400))}}
    started = time.perf_counter()
    with pytest.raises(UserError, match=r"prompts\[0\]: renders up to 900,003 characters"):
        expand(parse_spec(raw))
    assert time.perf_counter() - started < 1.0


def test_expanded_bytes_default_limit() -> None:
    """100,000 subtasks of ~1,400-byte prompts: under every per-item limit, over the total."""
    values = [f"{i:05d}" for i in range(1_000)]
    raw = {
        "name": "t",
        "prompts": ["p" * 1_400 + "{a}{b}"],
        "variables": {"a": values, "b": values[:100]},
    }
    with pytest.raises(UserError, match=r"bytes of prompts, above the limit of 134,217,728"):
        expand(parse_spec(raw))


def test_json_specs_load_like_yaml(tmp_path: Path) -> None:
    """A JSON file within every limit loads (and JSON's BOM is tolerated)."""
    spec = tmp_path / "ok.json"
    spec.write_text(
        "\ufeff" + json.dumps({"name": "t", "prompts": ["{a}"], "variables": {"a": [1.5]}})
    )
    assert parse_spec(load_data(spec)).variables == {"a": [1.5]}
