"""The council's configuration: one typed object, loadable from a JSON or TOML file, validated with
messages that name the field, show the value and say the fix."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from council import strict
from council.aggregator import AggregatorConfig
from council.base_model import GEMMA_MODEL
from council.engine import Quantize
from council.hosts import HostsConfig
from council.router import RouterConfig

CONFIG_VERSION = 1
Overlong = Literal["error", "truncate"]
Fallback = Literal["base", "abstain"]


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the field or file."""


# Fitted on 60 shared SQuAD validation questions by benchmarks/hallucination.py (council_k3_grounded) at
# `--penalty 0.25`: a hallucination costs a quarter of a right answer, the trade the benchmark's goal asks
# for (halve hallucinations for at most 5 points of F1). The majority still decides (under `grounded` two
# agreeing votes outweigh one); the answer must be grounded in the context. At penalty 1 the fit asks for
# unanimity and the council abstained on 92 % of the test questions.
FITTED_AGGREGATOR = AggregatorConfig(min_agreement=0.0, min_grounding=0.9)


@dataclass
class CouncilConfig:
    """Everything a Council is built from. Paths in a config file are relative to that file."""

    # a local folder, a cached hub id or a built-in name; the catalog's reading specialists are trained on Gemma
    # 3 270M, the base that read better (README: "Which base reads best")
    base_model: str = GEMMA_MODEL
    catalog: str | None = None  # folder of specialist folders; None = the catalog shipped in the package
    specialists: list[str] | None = None  # who sits on the council; None = every routable catalog specialist
    # who fills the seats the router leaves to min_k (router.top_up="reserve"), in order; None = the catalog's
    # general readers on this base (cards of domain "reading"), [] = nobody: a council of those that fit
    reserve: list[str] | None = None
    store: str | None = None  # a saved document store folder; None = the demo store (built on first use)
    # Budget of the shared context in the prompt: about one SQuAD paragraph, the shape the specialists were
    # trained on. On 30 validation questions, 640 tokens (3-4 passages) cut their answerable F1 by a third to a
    # half and made them abstain as often on answerable as on unanswerable questions; it found one more answer.
    context_tokens: int = 256
    retrieve_k: int = 6  # passages retrieved before packing
    max_new_tokens: int = 32
    max_question_chars: int = 1000
    overlong: Overlong = "error"  # a longer question: refuse it, or cut it and say so in the verdict
    fallback: Fallback = "base"  # when no specialist fits: ask the base model, or abstain
    threads: int | None = None  # torch threads of the in-process host (None: torch's default)
    quantize: Quantize = "fp16"  # base weights of the host: fp16 keeps fp32 answers at half the bytes
    max_batch_rows: int = 12  # rows of one generate call when answering many questions
    # peer review: every voter scores every candidate answer from its own generation's KV cache (Vote.review)
    peer_review: bool = True
    # a calibrator JSON (council/calibrator.py): answer or abstain by the calibrated probability of being right;
    # None: the aggregator's thresholds decide
    calibrator: str | None = None
    # a council of 3 whenever one specialist fits: the general reader reads the same context and checks its answer
    router: RouterConfig = field(default_factory=lambda: RouterConfig(min_k=3, max_k=3))
    aggregator: AggregatorConfig = FITTED_AGGREGATOR
    hosts: HostsConfig = field(default_factory=HostsConfig)  # in-process or Ray actors, placement, deadline
    version: int = CONFIG_VERSION

    def __post_init__(self):
        try:  # every sub-table is laid over this config's own default for it, then every field type-checked
            for name, sub in (("router", RouterConfig), ("aggregator", AggregatorConfig), ("hosts", HostsConfig)):
                strict.overlay(self, name, sub)
            strict.check_types(self)
        except (TypeError, ValueError) as e:
            raise ConfigError(str(e)) from e
        for name in ("context_tokens", "retrieve_k", "max_new_tokens", "max_question_chars", "max_batch_rows"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"{name}={value!r}: must be a whole number of at least 1")
        if self.specialists is not None and not self.specialists:
            raise ConfigError("specialists=[]: name at least one specialist, or leave it out to seat the catalog")
        if self.calibrator and not self.peer_review:
            raise ConfigError(f"calibrator={self.calibrator!r} with peer_review=false: the calibrator reads the "
                              "peer review's support; set peer_review=true, or leave the calibrator out")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads={self.threads!r}: must be at least 1")
        if self.version > CONFIG_VERSION:
            raise ConfigError(f"version={self.version}: this code reads config version {CONFIG_VERSION} or older")

    def to_dict(self) -> dict:
        return {**asdict(self), "router": self.router.to_dict(), "aggregator": self.aggregator.to_dict(),
                "hosts": self.hosts.to_dict()}

    @classmethod
    def from_dict(cls, data: dict, *, base_dir: Path | None = None) -> CouncilConfig:
        data = dict(data)
        if base_dir is not None:  # relative paths are relative to the config file, not the working folder
            for key in ("catalog", "store", "calibrator"):
                if data.get(key):
                    data[key] = str((base_dir / data[key]).resolve())
            if data.get("base_model") and (base_dir / data["base_model"]).is_dir():
                data["base_model"] = str((base_dir / data["base_model"]).resolve())
        try:
            return strict.from_dict(cls, data, what="config")
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(str(e)) from e

    @classmethod
    def from_file(cls, path: str | Path) -> CouncilConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        if path.suffix not in (".toml", ".json"):
            raise ConfigError(f"{path}: a config file is .toml or .json, not {path.suffix or 'without a suffix'}")
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{path}: cannot be parsed as {'TOML' if path.suffix == '.toml' else 'JSON'} ({e})")
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be an object of settings")
        try:
            return cls.from_dict(data, base_dir=path.parent)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
