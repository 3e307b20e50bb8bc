"""Config dataclasses from plain dicts (JSON, TOML): an unknown key is refused, naming the known ones."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], data: Mapping, *, what: str) -> T:
    """`cls(**data)`, after refusing keys that are not fields of `cls` (a typo must not pass silently)."""
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} key(s) {unknown}; known: {known}")
    return cls(**data)
