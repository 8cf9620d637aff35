"""One way to validate every config section: dataclasses describe it, :func:`build` checks it.

A section is a frozen dataclass; each field's annotation says its type (``int``, ``float``,
``bool``, ``str``, ``Literal[...]``, ``X | None``, ``tuple[str, ...]``), ``bounds(lo, hi)`` in its
metadata its range, and a field without a default is required. :func:`build` reports every unknown
key, wrong type, value out of range and missing key as a :class:`ConfigIssue` naming the file and
the dotted key path (``grid.transformers.T1.capacity_kw``), and returns what was valid; each
section's own module adds the rules a type cannot express (cross-field checks, shorthands, files
that must load). All issues are raised together as one :class:`ConfigError`, so an operator fixes
a broken config in one go: a typo in a safety limit is never ignored or fixed one restart at a time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin, get_type_hints


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key or '<root>'}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class Issues:
    """Collects the problems of one file."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[ConfigIssue] = []

    def add(self, key: str, message: str) -> None:
        self.items.append(ConfigIssue(self.file, key, message))

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(list(self.items))


def bounds(lo: float, hi: float) -> dict[str, Any]:
    """Field metadata: the value must lie in [lo, hi]."""
    return {"range": (lo, hi)}


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_value(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check a value against a simple annotation; returns (ok, value as the field keeps it)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return value in args, value
    if args and type(None) in args:
        if value is None:
            return True, None
        inner = [a for a in args if a is not type(None)]
        return check_value(value, inner[0])
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, list):
            return False, value
        items = [check_value(v, args[0]) for v in value]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if tp is float:
        return (True, float(value)) if is_number(value) else (False, value)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is str:
        return isinstance(value, str) and value != "", value
    return False, value


def describe(tp: Any) -> str:
    """How :func:`check_value`'s expectation reads in a message."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if args and type(None) in args:
        return " or ".join(describe(a) for a in args)
    if origin is tuple:
        return f"a list of {describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if tp is type(None):
        return "null"
    names = {"str": "a non-empty string", "float": "a number", "int": "an integer", "bool": "true or false"}
    return names.get(getattr(tp, "__name__", ""), str(tp))


def build(cls: type, data: Any, path: str, issues: Issues, skip: Iterable[str] = ()) -> dict[str, Any] | None:
    """Check a mapping against the dataclass ``cls``; returns the accepted keyword arguments.

    Reports unknown keys, wrong types, values outside a field's ``bounds`` and missing required
    fields. Fields in ``skip`` are left to the caller (nested sections, shorthands, lists of
    sections). None when ``data`` is not a mapping at all.
    """
    if not isinstance(data, dict):
        issues.add(path, f"expected a mapping, got {type(data).__name__}")
        return None
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    skipped = set(skip)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in fields:
            issues.add(key_path, f"unknown key (known: {', '.join(sorted(fields))})")
            continue
        if key in skipped:
            continue
        ok, coerced = check_value(value, hints[key])
        if not ok:
            issues.add(key_path, f"expected {describe(hints[key])}, got {value!r}")
            continue
        limits = fields[key].metadata.get("range")
        if limits and coerced is not None and not limits[0] <= coerced <= limits[1]:
            issues.add(key_path, f"must be between {_number(limits[0])} and {_number(limits[1])}, got {coerced!r}")
            continue
        kwargs[key] = coerced
    for name, f in fields.items():
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if no_default and name not in data:
            issues.add(f"{path}.{name}" if path else name, "required key is missing")
    return kwargs


def section(cls: type, data: Any, path: str, issues: Issues, skip: Iterable[str] = ()) -> Any:
    """``cls`` built from ``data`` (None or missing: the defaults); invalid entries keep their defaults."""
    kwargs = build(cls, {} if data is None else data, path, issues, skip)
    try:
        return cls(**(kwargs or {}))
    except TypeError:  # a required field was missing (already reported)
        return None
