"""Config dataclasses from plain dicts (JSON, TOML, CLI flags), checked the same way everywhere.

An unknown key is refused, naming the known ones; a value of the wrong type is refused, naming the field and
the type it wants (`"3"` is not a number, `true` is not 1, a string is not a list of names); a sub-table is
laid over the field's default, so that `[router] max_k = 3` keeps the council's other router settings.

pydantic (installed with Ray) could check types, but its lax mode converts "3" to 3 and its strict mode
refuses a JSON list for a tuple field: the checks below do what a config file needs, no more.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

T = TypeVar("T")


class FieldError(TypeError, ValueError):
    """A field whose value is not of its type: a TypeError, and a ValueError for callers checking values."""


def from_dict(cls: type[T], data: Mapping, *, what: str) -> T:
    """`cls(**data)`, after refusing keys that are not fields of `cls` (a typo must not pass silently)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} must be a table of settings, not {type(data).__name__} {data!r}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} key(s) {unknown}; known: {known}")
    return cls(**data)


def overlay(obj, name: str, sub: type) -> None:
    """Turn the dict in field `name` of `obj` into a `sub`, laid over the field's default value."""
    value = getattr(obj, name)
    if not isinstance(value, Mapping):
        return
    f = next(f for f in dataclasses.fields(obj) if f.name == name)
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    object.__setattr__(obj, name, sub.from_dict({**default.to_dict(), **value}))


def check_types(obj, *, prefix: str = "") -> None:
    """FieldError naming the first field of dataclass `obj` (as `prefix` + name) whose value does not match
    its annotation."""
    for name, hint in _hints(type(obj)).items():
        value = getattr(obj, name)
        if not _matches(value, hint):
            raise FieldError(f"{prefix}{name}={value!r}: must be {_describe(hint)}, not {type(value).__name__}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _matches(value, hint) -> bool:
    origin, args = get_origin(hint), get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):  # a sub-table, turned into one by `overlay`
        return isinstance(value, hint)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(_matches, value, args))
        return not args or all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, Mapping) and all(_matches(k, args[0]) and _matches(v, args[1])
                                                  for k, v in value.items())
    return True  # a type config files cannot hold (a Path, a callable): the field's own checks decide


def _describe(hint) -> str:
    origin, args = get_origin(hint), get_args(hint)
    names = {type(None): "none", bool: "true or false", int: "a whole number", float: "a number",
             str: "a string"}
    if hint in names:
        return names[hint]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return "a table of settings"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin in (list, tuple):
        return f"a list, each {_describe(args[0])}" if args else "a list"
    if origin is dict:
        return f"a table, each value {_describe(args[1])}"
    return getattr(hint, "__name__", str(hint))
