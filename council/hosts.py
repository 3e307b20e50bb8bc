"""Hosts: each holds ONE engine (a base model and many adapters) and answers a mixed-adapter batch.

`Host` is a plain class, callable and testable in-process; Ray wraps the same class as an actor at the
edge (`ray.remote(Host)`), so the in-process mode of tests and notebooks runs exactly the code of a cluster.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from council.engine import Quantize, Request


@dataclass(frozen=True)
class AdapterSpec:
    """One adapter a host loads: its name, its PEFT folder and the base fingerprint its card records."""

    name: str
    path: str
    base_fingerprint: str | None = None


@dataclass(frozen=True)
class HostSpec:
    """What one host holds and how it runs: the base model, its adapters, its threads and precision."""

    base_model: str
    adapters: tuple[AdapterSpec, ...] = ()
    threads: int | None = None  # torch threads; on Ray, the host's num_cpus so hosts never oversubscribe cores
    quantize: Quantize = "fp16"
    cache_dir: str | None = None
    name: str = "host0"

    def to_dict(self) -> dict:
        return asdict(self)


class Host:
    """An engine with its adapters loaded; `generate` answers one mixed-adapter batch."""

    def __init__(self, spec: HostSpec):
        from council import base_model
        from council.engine import Engine

        self.spec = spec
        self.engine = Engine(base_model.load(spec.base_model, cache_dir=spec.cache_dir), threads=spec.threads,
                             quantize=spec.quantize)
        for a in spec.adapters:
            self.engine.load_adapter(a.name, Path(a.path), base_fingerprint=a.base_fingerprint)

    def generate(self, requests: Sequence[Request], **kw):
        """The engine's `generate`: one batched call, a Generation per request."""
        return self.engine.generate(requests, **kw)

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def health(self) -> HostHealth:
        return HostHealth(name=self.spec.name, pid=os.getpid(), adapters=self.engine.adapters,
                          base_fingerprint=self.engine.base.fingerprint)


@dataclass(frozen=True)
class HostHealth:
    name: str
    pid: int
    adapters: list[str] = field(default_factory=list)
    base_fingerprint: str = ""

    def to_dict(self) -> dict:
        return asdict(self)
