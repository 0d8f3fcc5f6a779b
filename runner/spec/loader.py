"""Reads a spec file into plain data, bounded: size, nesting, numbers, no aliases or duplicates.

YAML goes through libyaml twice: a cheap event pass rejects aliases (the 1 MB → 800 MB
amplification), explicit tags and deep nesting before anything is built, then a loader
whose constructors refuse duplicate keys and over-long numbers builds the data.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Literal

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from runner.errors import UserError, shown
from runner.spec.limits import MAX_NESTING, MAX_NUMBER_CHARS, MAX_SPEC_BYTES

Format = Literal["yaml", "json"]

try:  # libyaml: parses a 1 MB list of tiny items 30x faster than pure Python (0.3 s vs 11 s)
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # PyYAML built without libyaml: same behaviour, slower
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]
_STR_TAG = "tag:yaml.org,2002:str"
_ALLOWED_TAGS = frozenset({None, "!", _STR_TAG})


class SpecSyntaxError(Exception):
    """The file parses but uses something a spec may not: the message says what."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def _line(node_or_event: Any) -> int | None:
    mark = getattr(node_or_event, "start_mark", None)
    return mark.line + 1 if mark is not None else None


def _check_events(text: str) -> None:
    """Reject aliases, explicit tags and deep nesting from the event stream (nothing built)."""
    depth = 0
    for event in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(event, yaml.AliasEvent):
            raise SpecSyntaxError(
                f"YAML aliases (*{shown(event.anchor, 20)}) are not allowed", _line(event)
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                raise SpecSyntaxError(f"nested deeper than {MAX_NESTING} levels", _line(event))
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        if isinstance(event, yaml.NodeEvent) and getattr(event, "tag", None) not in _ALLOWED_TAGS:
            tag = str(event.tag).replace("tag:yaml.org,2002:", "!!")  # type: ignore[attr-defined]
            raise SpecSyntaxError(
                f"explicit YAML tag {shown(tag, 30)} is not allowed (quote the value instead)",
                _line(event),
            )


class _SpecLoader(_BaseLoader):
    """SafeLoader that refuses duplicate keys, merge keys and over-long numbers."""

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        """Any constructor failure (`0x_` resolves to int, then int() fails) is the spec's fault."""
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise SpecSyntaxError(f"invalid value: {shown(exc)}", _line(node)) from None

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        """A mapping whose keys are each given once."""
        mapping: dict[Hashable, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise SpecSyntaxError("merge keys (<<) are not allowed", _line(key_node))
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                raise SpecSyntaxError("a key must be a plain value", _line(key_node))
            if key in mapping:
                raise SpecSyntaxError(f"duplicate key {shown(key)!r}", _line(key_node))
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping

    def construct_number(self, node: ScalarNode) -> Any:
        """An int or float literal, refused before conversion when it is absurdly long."""
        if len(node.value) > MAX_NUMBER_CHARS:
            raise SpecSyntaxError(
                f"number longer than {MAX_NUMBER_CHARS} characters (quote it to make it text)",
                _line(node),
            )
        if node.tag.endswith(":int"):
            return self.construct_yaml_int(node)
        return self.construct_yaml_float(node)

    def construct_text(self, node: ScalarNode) -> str:
        """The scalar as written."""
        return str(self.construct_scalar(node))


_SpecLoader.add_constructor("tag:yaml.org,2002:int", _SpecLoader.construct_number)
_SpecLoader.add_constructor("tag:yaml.org,2002:float", _SpecLoader.construct_number)
# YAML 1.1 dates (2024-01-01) stay text, as YAML 1.2 and JSON read them.
_SpecLoader.add_constructor("tag:yaml.org,2002:timestamp", _SpecLoader.construct_text)


def _load_yaml(text: str) -> Any:
    _check_events(text)
    return yaml.load(text, Loader=_SpecLoader)  # a SafeLoader subclass: no object tags


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise SpecSyntaxError(f"duplicate key {shown(key)!r}")
        mapping[key] = value
    return mapping


def _number(kind: type[int] | type[float]) -> Any:
    def parse(literal: str) -> int | float:
        if len(literal) > MAX_NUMBER_CHARS:
            raise SpecSyntaxError(f"number longer than {MAX_NUMBER_CHARS} characters")
        return kind(literal)

    return parse


def _constant(name: str) -> Any:
    raise SpecSyntaxError(f"{name} is not a number a spec may use")


def _depth(data: Any) -> int:
    """Nesting depth of lists/dicts, without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
    return deepest


def _load_json(text: str) -> Any:
    try:
        data = json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_int=_number(int),
            parse_float=_number(float),
            parse_constant=_constant,
        )
    except RecursionError:
        raise SpecSyntaxError(f"nested deeper than {MAX_NESTING} levels") from None
    if _depth(data) > MAX_NESTING:
        raise SpecSyntaxError(f"nested deeper than {MAX_NESTING} levels")
    return data


def parse_text(text: str, fmt: Format, where: str) -> Any:
    """Spec text to plain data; every problem is a one-line UserError starting with `where`."""
    try:
        return _load_json(text) if fmt == "json" else _load_yaml(text)
    except SpecSyntaxError as exc:
        line = f" line {exc.line}:" if exc.line else ""
        raise UserError(f"{where}:{line} {exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise UserError(f"{where}: malformed YAML{line}: {shown(problem, 200)}") from None


def read_bounded(path: Path, max_bytes: int = MAX_SPEC_BYTES) -> str:
    """The file's text; refuses more than `max_bytes` without reading past them."""
    try:
        with path.open("rb") as handle:
            # One byte over the limit is enough to know; /dev/zero must not fill memory.
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise UserError(f"{path}: larger than {max_bytes:,} bytes (submit.max_spec_bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def load_data(path: Path, max_bytes: int = MAX_SPEC_BYTES) -> Any:
    """Read and parse a spec file: JSON by its suffix, else YAML."""
    fmt: Format = "json" if path.suffix.lower() == ".json" else "yaml"
    return parse_text(read_bounded(path, max_bytes), fmt, str(path))
