"""council: answer questions through a council of small LoRA specialists that must agree, or abstain.

    from council import Council
    with Council() as c:                       # the demo council: the catalog's specialists, the demo corpus
        verdict = c.ask("When did the Normans conquer England?")
    verdict.answer, verdict.confidence, verdict.votes

The names below load on first use (PEP 562): `import council` costs nothing until a model is needed.
"""

import importlib
import os

# No model hub at run time: a model that is not on disk must fail at once, not after ~47 s of retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_EXPORTS = {
    "AdapterError": "council.engine", "AdapterMismatchError": "council.engine",
    "AggregatorConfig": "council.aggregator", "Citation": "council.council", "ConfigError": "council.config",
    "Context": "council.retrieval", "Council": "council.council", "CouncilConfig": "council.config",
    "Document": "council.retrieval", "DocumentError": "council.retrieval", "DocumentStore": "council.retrieval",
    "HostsConfig": "council.hosts", "ModelNotFoundError": "council.base_model", "QuestionError": "council.council",
    "RouteChoice": "council.router", "Router": "council.router", "RouterConfig": "council.router",
    "StoreError": "council.retrieval", "Verdict": "council.council", "Vote": "council.aggregator",
    "aggregate": "council.aggregator",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'council' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
